"""Time per optimizer step: inertia against torch.optim and against plain per-tensor loops.

    .venv/bin/python benchmarks/step_speed.py            # 1M/200, 10M/100, 50M/50 tensors
    .venv/bin/python benchmarks/step_speed.py --quick    # 1M/200 and 10M/100, fewer repeats

Two comparisons, each within one run on the same parameters and gradients:

1. ``inertia.SGD(momentum=0.9)`` (defaults: execution="auto", nonfinite="raise")
   against ``torch.optim.SGD(momentum=0.9)`` with ``foreach=True`` and with
   ``fused=True``, timed two ways:
   - "loop": what a training loop runs, ``zero_grad(set_to_none=True)``, a gradient
     write (each gradient is a fresh copy of a fixed tensor: the same cost of
     backward for both sides), then ``step()``;
   - "step": ``step()`` alone, gradients kept between steps.
   Also shown: inertia with the non-finite check off, and torch fused behind torch's own
   non-finite check (GradScaler's kernel over every gradient, its flag handed to the fused
   step): what checking every gradient inside step() costs torch itself. Bars: <= 1.0x
   torch fused in the loop, <= 1.1x in step() alone, at every size. The same two timings
   for ``inertia.Adam`` (its fused path, torch's fused Adam kernel) against
   ``torch.optim.Adam`` with torch's default (foreach) and with ``fused=True``.
2. Each rule without a torch counterpart (QHM, AggMo, Schedule-Free SGD) against
   the same maths written as a plain per-tensor loop of in-place torch ops
   (below), step() alone.
3. ``inertia.Muon`` against ``torch.optim.Muon`` (the same numbers) on matrices of a few
   shapes (``--muon-sizes``), in the loop and in step() alone: Newton–Schulz in bfloat16 dominates.

What to expect: inertia's SGD runs torch's fused kernel (execution="fused"), so the
difference is its non-finite check, torch's mixed-precision check of every gradient on the
device (one more read of the gradients, while a fused SGD step reads and writes 5 parameter-sized
streams), and the Python around the call. Implementations are timed in interleaved
rounds (every round times each implementation once, over several steps) and the median
per step is reported, to be fair on a noisy, shared machine. Prints a table and writes
JSON (``--json``). On CUDA it also reports the achieved bandwidth against a measured
device copy bandwidth.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from _results import write_json

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import inertia  # noqa: E402

SIZES = [(1_000_000, 200), (10_000_000, 100), (50_000_000, 50)]
QUICK_SIZES = [(1_000_000, 200), (10_000_000, 100)]
MUON_SIZES = "1024x1024x8,4096x1024x4"   # rows x cols x count of the matrices Muon updates
QUICK_MUON_SIZES = "1024x1024x8"
LR = 1e-4  # small, so that parameters stay tame over many timed steps


# ---------------------------------------------------------------- plain per-tensor loops (the baselines)

class Loop:
    """A plain per-tensor loop of in-place torch ops: what one writes without inertia."""

    def __init__(self, params: list[torch.Tensor]):
        self.params = params
        self.state = [dict() for _ in params]

    @torch.no_grad()
    def step(self) -> None:
        for p, s in zip(self.params, self.state):
            self.update(p, p.grad, s)


class QHMLoop(Loop):
    beta, nu = 0.999, 0.7

    def update(self, p, g, s):
        b = s.get("b")
        if b is None:
            b = s["b"] = torch.zeros_like(p)
        b.mul_(self.beta).add_(g, alpha=1 - self.beta)
        p.add_(g, alpha=-LR * (1 - self.nu))
        p.add_(b, alpha=-LR * self.nu)


class AggMoLoop(Loop):
    betas = (0.0, 0.9, 0.99)

    def update(self, p, g, s):
        vs = s.get("v")
        if vs is None:
            vs = s["v"] = [torch.zeros_like(p) for _ in self.betas]
        for beta, v in zip(self.betas, vs):
            v.mul_(beta).sub_(g)
            p.add_(v, alpha=LR / len(self.betas))


class ScheduleFreeLoop(Loop):
    """The authors' in-place form (schedulefree.SGDScheduleFree), per tensor."""

    beta = 0.9

    def __init__(self, params):
        super().__init__(params)
        self.k, self.weight_sum, self.lr_max = 0, 0.0, 0.0

    @torch.no_grad()
    def step(self) -> None:
        self.lr_max = max(self.lr_max, LR)
        weight = self.lr_max**2
        self.weight_sum += weight
        c = weight / self.weight_sum
        for p, s in zip(self.params, self.state):
            z = s.get("z")
            if z is None:
                z = s["z"] = p.detach().clone()
            p.lerp_(z, c)
            p.add_(p.grad, alpha=LR * (self.beta * (1 - c) - 1))
            z.sub_(p.grad, alpha=LR)
        self.k += 1


# ---------------------------------------------------------------- timing

def make_params(total: int, count: int, device: str) -> list[torch.Tensor]:
    size = total // count
    gen = torch.Generator(device="cpu").manual_seed(0)
    params = []
    for _ in range(count):
        p = torch.randn(size, generator=gen).to(device).requires_grad_()
        p.grad = torch.randn(size, generator=gen).to(device) * 1e-2
        params.append(p)
    return params


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_round_robin(steps: dict[str, Callable[[], None]], rounds: int, per_round: int, warmup: int,
                     device: str) -> dict[str, float]:
    """Median seconds per step of each callable, timed in interleaved rounds."""
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    sync(device)
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, fn in steps.items():
            sync(device)
            start = time.perf_counter()
            for _ in range(per_round):
                fn()
            sync(device)
            samples[name].append((time.perf_counter() - start) / per_round)
    return {name: statistics.median(values) for name, values in samples.items()}


def copy_bandwidth(device: str) -> float | None:
    """Measured device copy bandwidth in bytes/s (read + write), CUDA only."""
    if device != "cuda":
        return None
    a = torch.empty(2**28 // 4, device=device)
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    sync(device)
    start = time.perf_counter()
    for _ in range(20):
        b.copy_(a)
    sync(device)
    return 2 * a.numel() * 4 * 20 / (time.perf_counter() - start)


def read_bandwidth_of(device: str) -> float:
    """Measured bytes/s of one read stream (a sum over 512 MB, far beyond any cache)."""
    a = torch.ones(2**27, device=device)
    for _ in range(2):
        a.sum()
    sync(device)
    start = time.perf_counter()
    for _ in range(5):
        a.sum()
    sync(device)
    return a.numel() * 4 * 5 / (time.perf_counter() - start)


def in_the_loop(opt: torch.optim.Optimizer, params: list[torch.Tensor], sources: list[torch.Tensor]):
    """One iteration as a training loop runs it: zero_grad(set_to_none=True), a gradient write, step()."""
    def iteration() -> None:
        opt.zero_grad(set_to_none=True)
        for p, g in zip(params, sources):
            p.grad = g.clone()
        opt.step()
    return iteration


class CheckedTorchFused:
    """``torch.optim.SGD(fused=True)`` behind torch's own non-finite check, as ``torch.amp.GradScaler``
    runs it for a fused optimizer: its kernel (``_amp_foreach_non_finite_check_and_unscale_``, unit
    scale) over every gradient, the device flag handed to the fused step as ``found_inf``. What any
    check of every gradient inside ``step()`` costs on top of torch's fused step."""

    def __init__(self, params: list[torch.Tensor]):
        self.params = params
        self.opt = torch.optim.SGD(params, lr=LR, momentum=0.9, fused=True)
        self.unit = torch.ones(1, device=params[0].device)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.opt.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        found = torch.zeros(1, device=self.params[0].device)
        torch._amp_foreach_non_finite_check_and_unscale_([p.grad for p in self.params], found, self.unit)
        self.opt.found_inf = found  # read by torch's fused SGD step, as GradScaler sets it
        self.opt.step()


SGD_VARIANTS = {
    "inertia.SGD": lambda ps: inertia.SGD(ps, lr=LR, momentum=0.9),
    "inertia.SGD nonfinite=off": lambda ps: inertia.SGD(ps, lr=LR, momentum=0.9, nonfinite="off"),
    "torch foreach": lambda ps: torch.optim.SGD(ps, lr=LR, momentum=0.9, foreach=True),
    "torch fused": lambda ps: torch.optim.SGD(ps, lr=LR, momentum=0.9, fused=True),
    "torch fused + torch's check": CheckedTorchFused,
}
ADAM_VARIANTS = {
    "inertia.Adam": lambda ps: inertia.Adam(ps, lr=LR),
    "torch Adam (default: foreach)": lambda ps: torch.optim.Adam(ps, lr=LR),
    "torch Adam fused": lambda ps: torch.optim.Adam(ps, lr=LR, fused=True),
}


def bench_against_torch(group, variants, baseline, total, count, device, rounds, per_round, warmup, bars=None):
    """Each of ``variants`` (name -> optimizer factory) in the loop and in step() alone, as ratios to
    ``baseline``; ``bars`` (timing -> ratio) for ``inertia.*`` rows."""
    sources = [p.grad for p in make_params(total, count, device)]
    impls: dict[str, Callable[[], None]] = {}
    for name, make in variants.items():
        params = make_params(total, count, device)
        opt = make(params)
        impls[f"{name} | step"] = opt.step
        impls[f"{name} | loop"] = in_the_loop(opt, params, sources)
    times = time_round_robin(impls, rounds, per_round, warmup, device)
    rows = []
    streams = {"sgd": SGD_STREAMS, "adam": ADAM_STREAMS}[group]
    for key, t in times.items():
        name, timing = key.split(" | ")
        base = times[f"{baseline} | {timing}"]
        row = dict(group=group, timing=timing, params=total, tensors=count, impl=name, ms_per_step=t * 1e3,
                   vs=baseline, ratio=t / base, bytes_per_step=streams * total * 4)
        if bars and name.startswith("inertia.") and "nonfinite" not in name:
            row["bar"] = bars[timing]
            row["meets_bar"] = t / base <= row["bar"]
        rows.append(row)
    return rows


def make_matrices(rows: int, cols: int, count: int, device: str) -> list[torch.Tensor]:
    gen = torch.Generator(device="cpu").manual_seed(0)
    params = []
    for _ in range(count):
        p = torch.randn(rows, cols, generator=gen).to(device).requires_grad_()
        p.grad = torch.randn(rows, cols, generator=gen).to(device) * 1e-2
        params.append(p)
    return params


MUON_VARIANTS = {
    "inertia.Muon": lambda ps: inertia.Muon(ps, lr=LR),
    "torch Muon": lambda ps: torch.optim.Muon(ps, lr=LR),
}


def bench_muon(rows_cols_count: tuple[int, int, int], device, rounds, per_round, warmup):
    """``inertia.Muon`` and ``torch.optim.Muon`` on ``count`` matrices ``rows x cols``, in the loop and in
    step() alone, as ratios to torch."""
    rows, cols, count = rows_cols_count
    sources = [p.grad for p in make_matrices(rows, cols, count, device)]
    impls: dict[str, Callable[[], None]] = {}
    for name, make in MUON_VARIANTS.items():
        params = make_matrices(rows, cols, count, device)
        opt = make(params)
        impls[f"{name} | step"] = opt.step
        impls[f"{name} | loop"] = in_the_loop(opt, params, sources)
    times = time_round_robin(impls, rounds, per_round, warmup, device)
    out = []
    for key, t in times.items():
        name, timing = key.split(" | ")
        base = times[f"torch Muon | {timing}"]
        out.append(dict(group="muon", timing=timing, params=rows * cols * count, tensors=count,
                        shape=f"{rows}x{cols}", impl=name, ms_per_step=t * 1e3, vs="torch Muon", ratio=t / base,
                        bytes_per_step=4 * rows * cols * count * 4))   # read p, g, b; write p, b (NS aside)
    return out


def parse_muon_sizes(text: str) -> list[tuple[int, int, int]]:
    """``"1024x1024x8,4096x1024x4"`` -> [(rows, cols, count), ...]."""
    try:
        sizes = [tuple(int(n) for n in part.split("x")) for part in text.split(",")]
    except ValueError:
        sizes = []
    if not sizes or any(len(size) != 3 or min(size) < 1 for size in sizes):
        raise SystemExit(f"--muon-sizes must be ROWSxCOLSxCOUNT[,...] with positive numbers, got {text!r}")
    return sizes


# (name, hyperparameters, loop baseline, parameter-sized memory streams of one fused pass)
RULES = [
    ("qhm", dict(momentum=0.999, nu=0.7), QHMLoop, 5),              # read p, g, b; write p, b
    ("aggmo", dict(betas=(0.0, 0.9, 0.99)), AggMoLoop, 9),           # read p, g, v1..v3; write p, v1..v3
    ("schedulefree", dict(momentum=0.9), ScheduleFreeLoop, 5),      # read p, z, g; write p, z
]
SGD_STREAMS = 5
ADAM_STREAMS = 7  # read p, g, m, v; write p, m, v


def bench_rules(total, count, device, rounds, per_round, warmup, only=None, fused_ms=None):
    """Each rule against its loop. With ``fused_ms`` (torch's fused SGD, one pass over 5 streams, at this
    size), also the best ratio any single-pass kernel could reach: ``fused_ms * streams / 5`` over the loop."""
    rows = []
    for name, hyper, loop_cls, streams in RULES:
        if only and name not in only:
            continue
        ours = inertia.make_optimizer(name, make_params(total, count, device), lr=LR, **hyper)
        loop = loop_cls(make_params(total, count, device))
        times = time_round_robin({f"inertia {name}": ours.step, f"per-tensor loop {name}": loop.step},
                                 rounds, per_round, warmup, device)
        base = times[f"per-tensor loop {name}"]
        for impl, t in times.items():
            row = dict(group=name, params=total, tensors=count, impl=impl, ms_per_step=t * 1e3,
                       vs=f"per-tensor loop {name}", ratio=t / base)
            row["bytes_per_step"] = streams * total * 4
            if impl.startswith("inertia"):
                row["bar"] = 0.5
                row["meets_bar"] = t / base <= 0.5
                if fused_ms is not None:
                    row["one_pass_floor_ms"] = fused_ms * streams / SGD_STREAMS
                    row["best_possible_ratio"] = row["one_pass_floor_ms"] / (base * 1e3)
            rows.append(row)
        del ours, loop
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1M and 10M only, fewer repeats")
    parser.add_argument("--json", default=str(Path(__file__).resolve().parent / "results" / "step_speed.json"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved timing rounds (median taken)")
    parser.add_argument("--rules", default=None, help="comma-separated subset of qhm,aggmo,schedulefree")
    parser.add_argument("--skip-sgd", action="store_true", help="skip the SGD and Adam comparisons with torch")
    parser.add_argument("--muon-sizes", default=None,
                        help=f"Muon's matrices, ROWSxCOLSxCOUNT[,...] (default {MUON_SIZES}; --quick {QUICK_MUON_SIZES})")
    parser.add_argument("--skip-muon", action="store_true", help="skip the Muon comparison with torch")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    sizes = QUICK_SIZES if args.quick else SIZES
    muon_sizes = parse_muon_sizes(args.muon_sizes or (QUICK_MUON_SIZES if args.quick else MUON_SIZES))
    rounds = args.rounds or (5 if args.quick else 9)
    only = set(args.rules.split(",")) if args.rules else None
    bandwidth = copy_bandwidth(args.device)
    read_bandwidth = read_bandwidth_of(args.device)
    rows = []
    for total, count in sizes:
        per_round = max(2, min(50, int(2e8 // total)))
        warmup = 3
        fused_ms = None
        if not args.skip_sgd:
            sgd_rows = bench_against_torch("sgd", SGD_VARIANTS, "torch fused", total, count, args.device, rounds,
                                           per_round, warmup, bars={"loop": 1.0, "step": 1.1})
            rows += sgd_rows
            rows += bench_against_torch("adam", ADAM_VARIANTS, "torch Adam fused", total, count, args.device,
                                        rounds, per_round, warmup)
            fused_ms = next(r["ms_per_step"] for r in sgd_rows if r["impl"] == "torch fused" and r["timing"] == "step")
        rows += bench_rules(total, count, args.device, rounds, per_round, warmup, only, fused_ms)
        print(f"... {total:,} params done", file=sys.stderr, flush=True)
    if not args.skip_muon:
        for size in muon_sizes:
            rows += bench_muon(size, args.device, rounds, 3, 2)
    for row in rows:
        row["achieved_GBps"] = row["bytes_per_step"] / (row["ms_per_step"] / 1e3) / 1e9
        if bandwidth:
            row["copy_GBps"] = bandwidth / 1e9

    header = f"{'params':>12} {'tensors':>7}  {'implementation':<31} {'timing':<6} {'ms/step':>9}  {'ratio':>6}  vs"
    print(header)
    print("-" * len(header))
    for r in rows:
        mark = ""
        if "bar" in r:
            mark = f"  (bar <= {r['bar']}: {'met' if r['meets_bar'] else 'NOT met'})"
        if "best_possible_ratio" in r:
            mark += f"  [one-pass floor {r['one_pass_floor_ms']:.2f} ms = {r['best_possible_ratio']:.2f}x the loop]"
        impl = f"{r['impl']} {r['shape']}" if "shape" in r else r["impl"]
        print(f"{r['params']:>12,} {r['tensors']:>7}  {impl:<31} {r.get('timing', 'step'):<6} {r['ms_per_step']:>9.3f}  "
              f"{r['ratio']:>6.2f}  {r['vs']}{mark}")
    out = dict(
        device=args.device,
        machine=platform.machine(),
        processor=platform.processor(),
        cpu_count=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        torch=torch.__version__,
        quick=args.quick,
        rounds=rounds,
        copy_bandwidth_GBps=bandwidth / 1e9 if bandwidth else None,
        read_bandwidth_GBps=read_bandwidth / 1e9,
        rows=rows,
    )
    write_json(out, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
