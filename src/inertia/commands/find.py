"""``inertia find``: the learning-rate range test for several momenta and seeds at once, with the stability edge."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from . import options

DESCRIPTION = """\
A learning-rate range test that knows momentum: the learning rate rises exponentially
from --start to --end over --steps steps for every momentum x seed at once (one stacked
run, the sweep's engine), the training loss is smoothed (bias-corrected EMA) and each
momentum stops when its loss diverges (smoothed loss > --diverge x its lowest).

Writes --plot (loss against lr and against the effective lr lr/(1-mu), one curve per
momentum with the seeds' band, the suggested range thick, the stability edge dashed),
--json if given, and prints the suggested lr range per momentum from three rules
(steepest descent over log lr, valley, min/10), the sharpness lambda_max of the loss
at initialization (Hessian-vector products, power iteration), the largest stable lr
lr * lambda_max < 2 + 2 mu per momentum, and the `inertia sweep` command around the range.

example:
  inertia find --data mnist1d --model mlp --momentum 0,0.9,0.99 --plot finder.png --json finder.json
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "find", help="range test of the learning rate for several momenta and seeds at once; plot, range, edge",
        description=DESCRIPTION, formatter_class=options.HelpFormatter)
    what = parser.add_argument_group("what to train")
    options.add_data(what)
    options.add_model(what)
    options.add_optimizer(what)
    what.add_argument("--momentum", default="0,0.9,0.99", help="momentum values, a comma list")
    what.add_argument("--fixed", action="append", default=[], metavar="NAME=VALUE",
                      help="a hyperparameter of the rule, e.g. --fixed convention=ema (repeatable)")
    options.add_loss(what)
    ramp = parser.add_argument_group("the ramp")
    ramp.add_argument("--start", type=options.finite_float, default=1e-5, help="first learning rate")
    ramp.add_argument("--end", type=options.finite_float, default=10.0, help="last learning rate")
    ramp.add_argument("--steps", type=options.positive_int, default=300, help="steps of the ramp")
    ramp.add_argument("--smoothing", type=options.finite_float, default=0.98, metavar="BETA",
                      help="EMA factor of the loss")
    ramp.add_argument("--diverge", type=options.finite_float, default=4.0, metavar="X",
                      help="diverged once the smoothed loss exceeds X times its lowest")
    ramp.add_argument("--no-sharpness", dest="sharpness", action="store_false",
                      help="skip the Hessian's top eigenvalue and the stability edge")
    how = parser.add_argument_group("how to train")
    how.add_argument("--batch-size", type=options.positive_int, default=100, help="examples per step")
    how.add_argument("--seed", type=int, default=0, help="the first seed")
    how.add_argument("--seeds", type=options.positive_int, default=3, metavar="K",
                     help="initializations and batch orders")
    options.add_dtype(how)
    options.add_device(how)
    options.add_backend(how)
    how.add_argument("--standardize", action="store_true", help="standardize the inputs with the training part")
    options.add_threads(how)
    out = parser.add_argument_group("outputs")
    out.add_argument("--plot", default="finder.png", metavar="PATH", help="the figure")
    out.add_argument("--json", default=None, metavar="PATH", help="the ranges, divergence, sharpness and edge as JSON")
    parser.set_defaults(run=run_command)
    return parser


def run_command(args: argparse.Namespace) -> int:
    import torch

    from ..finder import find

    options.check_device(args.device)
    options.check_writable(args.plot, "--plot", folder=False)
    if args.json:
        options.check_writable(args.json, "--json", folder=False)
    from ..plots.finder import finder_plot

    started = time.time()
    result = find(args.data, args.model, momentum=args.momentum, optimizer=args.optimizer,
                  fixed=options.literals(args.fixed, "--fixed"), loss=args.loss, model_args=options.literals(args.model_arg, "--model-arg"),
                  start=args.start, end=args.end, steps=args.steps, smoothing=args.smoothing, diverge=args.diverge,
                  measure_sharpness=args.sharpness, batch_size=args.batch_size, seed=args.seed, seeds=args.seeds,
                  dtype=getattr(torch, args.dtype), device=args.device, backend=args.backend,
                  standardize=args.standardize, threads=args.threads)
    for line in summary(result):
        print(line)
    finder_plot(result, args.plot)
    written = [Path(args.plot)]
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result.to_json(), indent=2))
        written.append(path)
    command = result.sweep_command()
    if command:
        print(f"sweep around the suggestion:\n  {command}")
    print(f"took {time.time() - started:.1f} s on {result.meta.get('device')} ({result.meta.get('backend')} backend)")
    for path in written:
        print(f"wrote {path}")
    return 0


def summary(result: Any) -> list[str]:
    """The suggestion per momentum, its rules, where it diverged and its stable edge, as lines of text."""
    lines = []
    if result.sharpness is not None:
        lines.append(f"sharpness at initialization: lambda_max = {result.sharpness:.4g} "
                     f"(seeds: {', '.join(f'{v:.3g}' for v in result.sharpness_init)})")
    lines.append(f"{'momentum':>8}  {'lr range':>19}  {'steepest':>9} {'valley':>9} {'min/10':>9}  "
                 f"{'agree':>6}  {'diverged':>9}  {'stable lr':>9}")
    for i, mu in enumerate(result.momenta):
        rules, span = result.rules(i), result.lr_range(i)
        diverged, edge = result.diverged_at(i), result.stable_lr(mu)
        shown = "".join(f"{rules[k]:>10.3g}" for k in ("steepest", "valley", "min/10")) if rules else f"{'-':>30}"
        lines.append(f"{mu:>8g}  " + (f"{span[0]:>9.3g}-{span[1]:<9.3g}" if span else f"{'(too short)':>19}")
                     + f" {shown}  " + (f"{_decades(span):>6}" if span else f"{'':>6}")
                     + f"  {'' if diverged is None else f'{diverged:.3g}':>9}  {'' if edge is None else f'{edge:.3g}':>9}")
    lines.append("agree: the range's width in decades (the three rules' spread); stable lr: lr * lambda_max < 2 + 2 mu")
    return lines


def _decades(span: tuple[float, float]) -> str:
    import math

    return f"{math.log10(span[1] / span[0]):.1f}"
