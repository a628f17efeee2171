"""Benchmark: the sweep engine's batched matrix products, OpenBLAS (inertia.sweeps.gemm) against torch.

The batched MLP of the sweep benchmark (40-100-100-10, batch 100, 16-member stacks)
multiplies, per layer, the weights by the activations (forward), the output
gradient by the activations' transpose (weight gradient) and the weights'
transpose by the output gradient (input gradient). Each product is timed on one
thread, as a sweep lane runs it, through torch (``bmm``, MKL on x86) and through
OpenBLAS's strided batched GEMM, in the same run. Prints a table and writes JSON
(``--json``, default benchmarks/results/gemm_speed.json).

OpenBLAS picks its kernels when it is loaded, by the CPU or by ``OPENBLAS_CORETYPE``;
the kernel it ran is in the table's title and the JSON.

    python benchmarks/gemm_speed.py
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

from _results import write_json

from inertia.sweeps import gemm

# (out, in) of the MLP's layers; the engine multiplies layer 1 of a fold's members as one
# product (they share the batch), timed here as a batched product like the others
LAYERS = [(100, 40), (100, 100), (10, 100)]
PRODUCTS = {  # name: (a, b, out, trans_a, trans_b) as shapes of one member's matrices
    "forward W @ A": lambda o, i, b: ((o, i), (i, b), (o, b), False, False),
    "weight grad dZ @ A^T": lambda o, i, b: ((o, b), (i, b), (o, i), False, True),
    "input grad W^T @ dZ": lambda o, i, b: ((o, i), (o, b), (i, b), True, False),
}


def gflops(run, flops: float, seconds: float) -> float:
    """GFLOP/s of ``run()``, repeated for ``seconds`` after one warm-up call."""
    run()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run()
        count += 1
    return flops * count / (time.perf_counter() - start) / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=0.5, help="per product and backend, twice (interleaved)")
    parser.add_argument("--json", default="benchmarks/results/gemm_speed.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    core = gemm.openblas_core()
    if core is None:
        print("OpenBLAS (scipy-openblas32) is not installed: nothing to compare")
        return 1
    os.environ["INERTIA_GEMM"] = "openblas"
    openblas = gemm.BatchedGemm()
    os.environ["INERTIA_GEMM"] = "torch"
    reference = gemm.BatchedGemm()
    rows = []
    g = args.members
    for out_f, in_f in LAYERS:
        for name, shapes in PRODUCTS.items():
            sa, sb, so, ta, tb = shapes(out_f, in_f, args.batch_size)
            a, b, c = torch.randn(g, *sa), torch.randn(g, *sb), torch.empty(g, *so)
            flops = 2.0 * g * out_f * in_f * args.batch_size
            rates = {"torch": [], "openblas": []}
            for _ in range(2):  # interleaved, so both see the same stretch of the machine
                for label, product in (("torch", reference), ("openblas", openblas)):
                    rates[label].append(gflops(lambda: product(a, b, c, trans_a=ta, trans_b=tb), flops, args.seconds))
            best = {k: max(v) for k, v in rates.items()}
            rows.append({"layer": f"{in_f}->{out_f}", "product": name, "torch_gflops": best["torch"],
                         "openblas_gflops": best["openblas"], "speedup": best["openblas"] / best["torch"]})
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"{g} members, batch {args.batch_size}, 1 thread: GFLOP/s (OpenBLAS kernels: {core})")
        for col in ("layer", "product", "torch", "OpenBLAS", "speedup"):
            table.add_column(col, justify="right")
        for r in rows:
            table.add_row(r["layer"], r["product"], f"{r['torch_gflops']:.0f}", f"{r['openblas_gflops']:.0f}",
                          f"{r['speedup']:.2f}x")
        Console().print(table)
    except ImportError:
        print(json.dumps(rows, indent=1))
    payload = {"benchmark": "gemm_speed", "command": " ".join([sys.executable.split("/")[-1], *sys.argv]),
               "members": g, "batch_size": args.batch_size, "openblas_core": core, "torch": torch.__version__,
               "rows": rows}
    write_json(payload, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
