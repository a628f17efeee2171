"""Benchmark: YellowFin (smoothed and raw values applied) against hand-tuned momentum SGD, and on quadratics.

1. MNIST-1D (MLP): momentum SGD at the README main sweep's best (``docs/main-job.json``: its lr and μ,
   over the sweep's steps, scored at the best validation point as the sweep scores it) against
   ``inertia.sweep(optimizer="yellowfin")`` with ``apply`` smoothed and raw, the same steps, seeds and
   selection.
2. digits (MLP): momentum SGD tuned here by a small sweep (lr 1e-3..1, 7 log-spaced, x μ 0, 0.9, 0.99),
   against YellowFin, smoothed and raw.
   Both: ``--seeds`` seeds, test accuracy mean ± std over seeds at each run's selected step; YellowFin's
   last μ and lr (mean over seeds).
3. Quadratics f(w) = ½ Σ λᵢwᵢ², λ log-spaced from 1 to κ (10 dimensions), κ = 10, 100, 1000: YellowFin
   with its own estimates (smoothed) from w₀ ~ N(0, I); its last μ against heavy ball's μ* =
   ((√κ − 1)/(√κ + 1))², its lr against γ* = (2/(√λ₁ + √λₙ))², and its measured rate (per step, of
   ‖w‖, over the second half of the run or until ‖w‖ falls below 1e-12·‖w₀‖) against heavy ball's
   optimal rate (√κ − 1)/(√κ + 1) and heavy ball run at (γ*, μ*) measured the same way.

    python benchmarks/yellowfin_compare.py                       # the full run (a few minutes)
    python benchmarks/yellowfin_compare.py --steps-scale 0.05 --seeds 1   # smoke run
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import write_json  # noqa: E402

DIGITS_STEPS = 500
DIGITS_LRS = "1e-3:1:7"
DIGITS_MOMENTA = [0.0, 0.9, 0.99]
KAPPAS = (10, 100, 1000)
QUADRATIC_STEPS = {10: 1000, 100: 3000, 1000: 6000}


def _summary(record: dict, tuned: bool) -> dict:
    out = {key: record.get(key) for key in ("test_accuracy_mean", "test_accuracy_std", "best_step",
                                            "final_test_accuracy_mean", "final_test_accuracy_std")}
    out["final_test_accuracy_per_seed"] = [seed.get("test_accuracy_mean") for seed in record.get("per_seed") or []]
    if tuned:
        out["last_lr"], out["last_momentum"] = record["lr_curve"][-1], record["momentum_curve"][-1]
    else:
        out["lr"], out["momentum"] = record["lr"], record["momentum"]
    return out


def real_data(data: str, steps: int, seeds: int, sgd_grid: tuple) -> dict:
    """Momentum SGD's best of ``sgd_grid`` (lr values, μ values) and YellowFin smoothed and raw on ``data``."""
    import inertia

    common = dict(steps=steps, seeds=seeds, eval_every=max(1, steps // 10))
    started = time.perf_counter()
    sgd = inertia.sweep(data, "mlp", optimizer="momentum", lr=sgd_grid[0], momentum=sgd_grid[1], **common)
    out = {"steps": steps, "seeds": seeds, "sgd_grid": {"lr": sgd_grid[0], "momentum": sgd_grid[1]},
           "sgd": _summary(sgd.best, tuned=False)}
    for apply in ("smoothed", "raw"):
        tuned = inertia.sweep(data, "mlp", optimizer="yellowfin", fixed={"apply": apply}, **common)
        out[f"yellowfin_{apply}"] = _summary(tuned.records()[0], tuned=True)
    out["seconds"] = time.perf_counter() - started
    return out


def _rate(norms: list[float], steps: int) -> float:
    """Per-step contraction of ‖w‖ over the second half of the run (or up to where it fell below 1e-12·‖w₀‖)."""
    end = next((t for t, n in enumerate(norms) if n < 1e-12 * norms[0]), steps)
    start = end // 2
    return (norms[end] / norms[start]) ** (1 / (end - start))


def quadratic(kappa: float, steps: int) -> dict:
    import torch

    import inertia

    lam = torch.logspace(0, math.log10(kappa), 10, dtype=torch.float64)
    root = math.sqrt(kappa)
    mu_star, lr_star = ((root - 1) / (root + 1)) ** 2, (2 / (1 + math.sqrt(kappa))) ** 2
    out = {"kappa": kappa, "steps": steps, "mu_star": mu_star, "lr_star": lr_star,
           "optimal_rate": (root - 1) / (root + 1)}
    for name in ("yellowfin", "heavy_ball"):
        torch.manual_seed(0)
        w = torch.nn.Parameter(torch.randn(10, dtype=torch.float64))
        opt = (inertia.YellowFin([w]) if name == "yellowfin"
               else torch.optim.SGD([w], lr=lr_star, momentum=mu_star))
        norms = [float(w.detach().norm())]
        for _ in range(steps):
            opt.zero_grad()
            (0.5 * (lam * w * w).sum()).backward()
            opt.step()
            norms.append(float(w.detach().norm()))
        out[f"{name}_rate"] = _rate(norms, steps)
        if name == "yellowfin":
            out["mu"], out["lr"] = opt.param_groups[0]["momentum"], opt.param_groups[0]["lr"]
            out["relative_distance"] = norms[-1] / norms[0]
    return out


def _acc(entry: dict, prefix: str = "") -> str:
    mean, std = entry.get(f"{prefix}test_accuracy_mean"), entry.get(f"{prefix}test_accuracy_std")
    return "-" if mean is None else f"{100 * mean:.1f} ± {100 * (std or 0):.1f}"


def print_tables(payload: dict) -> None:
    print(f"\n{'data':<8} {'method':<22} {'test acc % (best val step)':>27} {'at step':>8} {'final test acc %':>17} "
          f"{'last mu':>8} {'last lr':>9}  final per seed")
    for data in ("mnist1d", "digits"):
        entry = payload[data]
        sgd = entry["sgd"]
        rows = [(f"SGD lr={sgd['lr']:.3g} mu={sgd['momentum']:g}", sgd, sgd["momentum"], sgd["lr"])]
        rows += [(f"YellowFin {apply}", entry[f"yellowfin_{apply}"], entry[f"yellowfin_{apply}"]["last_momentum"],
                  entry[f"yellowfin_{apply}"]["last_lr"]) for apply in ("smoothed", "raw")]
        for label, row, mu, lr in rows:
            seeds = " ".join(f"{100 * v:.1f}" for v in row["final_test_accuracy_per_seed"] if v is not None)
            print(f"{data:<8} {label:<22} {_acc(row):>27} {row['best_step'] or '-':>8} {_acc(row, 'final_'):>17} "
                  f"{mu:>8.3f} {lr:>9.3g}  {seeds}")
    print(f"\n{'kappa':>6} {'steps':>6} {'mu':>7} {'mu*':>7} {'lr':>9} {'lr*':>9} {'YF rate':>8} {'HB* rate':>9} "
          f"{'optimal':>8} {'|w_T|/|w_0|':>12}")
    for q in payload["quadratics"]:
        print(f"{q['kappa']:>6g} {q['steps']:>6} {q['mu']:>7.4f} {q['mu_star']:>7.4f} {q['lr']:>9.4g} "
              f"{q['lr_star']:>9.4g} {q['yellowfin_rate']:>8.4f} {q['heavy_ball_rate']:>9.4f} "
              f"{q['optimal_rate']:>8.4f} {q['relative_distance']:>12.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps-scale", type=float, default=1.0, help="multiply every step count (smoke runs)")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "yellowfin_compare.json"))
    args = parser.parse_args()
    scale = (lambda steps: max(20, round(steps * args.steps_scale)))
    main_job = json.loads((ROOT / "docs" / "main-job.json").read_text())
    best = main_job["best"]
    main_steps = int(main_job["command"].split("--steps ")[1].split()[0])
    started = time.perf_counter()
    payload = {
        "command": " ".join(["python", "benchmarks/yellowfin_compare.py", *sys.argv[1:]]),
        "mnist1d": real_data("mnist1d", scale(main_steps), args.seeds, ([best["lr"]], [best["momentum"]])),
        "digits": real_data("digits", scale(DIGITS_STEPS), args.seeds, (DIGITS_LRS, DIGITS_MOMENTA)),
        "quadratics": [quadratic(kappa, scale(QUADRATIC_STEPS[kappa])) for kappa in KAPPAS],
    }
    payload["seconds"] = time.perf_counter() - started
    print_tables(payload)
    print(f"\n{payload['seconds']:.0f} s in all")
    write_json(payload, args.json)


if __name__ == "__main__":
    main()
