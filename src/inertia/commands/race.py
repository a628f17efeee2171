"""``inertia race``: race optimizers on a test surface and write the pictures and the interactive report.

    inertia race --surface marble --optimizer sgd:lr=0.02 \\
        --optimizer momentum:lr=0.02,momentum=0.9 --optimizer nesterov:lr=0.02,momentum=0.9 \\
        --steps 300 --out DIR

writes DIR/race.png (contours + trajectories), DIR/race.gif (the marbles rolling),
DIR/loss.png (loss against step, log scale; theory lines on quadratics),
DIR/report.html (self-contained, interactive) and DIR/race.json (the numbers).

    inertia race --surface marble --map lr=1e-3:1:40 --map momentum=0:0.99:40 --out DIR

also races the whole (lr, momentum) grid at once and writes DIR/basins.png: for every pair,
which minimum the marble ends in (or that it diverged), shaded by the steps it took; on a
quadratic, the measured rate with the stability edge lr·λ_max = 2 + 2μ.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from .._text import parse_literal
from . import options


OPTIMAL_KINDS = {"sgd": "gd", "momentum": "momentum"}  # rule name -> the theory's optimum it takes
RACED = ("sgd:lr=0.02", "momentum:lr=0.02,momentum=0.9")   # the configurations raced when none is given


def parse_optimizer(spec: str, surface: Any = None) -> dict[str, Any]:
    """``"momentum:lr=0.02,momentum=0.9"`` -> ``{"rule": "momentum", "lr": 0.02, "momentum": 0.9}``.

    ``"sgd:optimal"`` and ``"momentum:optimal"`` take the theoretical optimum of a quadratic
    ``surface`` exactly (γ = 2/(λ₁+λₙ); heavy ball γ* = (2/(√λ₁+√λₙ))², μ* = ((√κ−1)/(√κ+1))²):
    the optimum is a double root of the rate, so rounded values give visibly slower rates.
    The rule name is checked against the registry and the hyperparameters against the rule
    (unknown names and bad values are a ``ValueError`` naming them).
    """
    from .. import rules

    name, colon, rest = spec.partition(":")
    name = name.strip()
    if not name:
        raise ValueError(f"malformed --optimizer {spec!r}: expected NAME or NAME:key=value,key=value")
    config: dict[str, Any] = {"rule": name}
    if rest.strip() == "optimal":
        if name not in OPTIMAL_KINDS:
            raise ValueError(f"--optimizer {spec!r}: 'optimal' is known for {', '.join(OPTIMAL_KINDS)} only")
        if not hasattr(surface, "optimal"):
            raise ValueError(f"--optimizer {spec!r}: 'optimal' needs a quadratic surface (it has the theory)")
        lr, momentum = surface.optimal(OPTIMAL_KINDS[name])
        config.update(lr=float(lr), **({"momentum": float(momentum)} if name == "momentum" else {}))
    elif colon and rest.strip():
        for item in _split_top_level(rest):
            key, eq, raw = item.partition("=")
            key = key.strip()
            if not eq or not key or not raw.strip():
                raise ValueError(f"malformed --optimizer {spec!r}: {item!r} is not key=value")
            raw = raw.strip()
            config[key] = _schedule(raw, spec) if "(" in raw else parse_literal(raw)
    preset = rules.get(name)  # unknown optimizer: ValueError listing the known names
    hyper = {k: (v(0) if callable(v) else v) for k, v in config.items() if k != "rule"}
    try:
        preset.hyper(**hyper)
    except TypeError as error:
        raise ValueError(f"--optimizer {spec!r}: {error}") from None
    except ValueError as error:
        raise ValueError(f"--optimizer {spec!r}: {error}") from None
    return config


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside parentheses (schedule arguments keep their commas)."""
    items, depth, current = [], 0, []
    for ch in text:
        if ch == "," and depth == 0:
            items.append("".join(current))
            current = []
            continue
        depth += (ch == "(") - (ch == ")")
        current.append(ch)
    items.append("".join(current))
    return items


def _schedule(raw: str, spec: str) -> Any:
    """``cosine(0.05, 300)`` or ``sutskever_ramp(mu_max=0.99, every=100)`` -> that :mod:`inertia.schedules` schedule
    (a literal call, parsed, never evaluated: :func:`inertia.schedules.parse_spec`)."""
    from ..schedules import parse_spec

    try:
        return parse_spec(raw).build()
    except ValueError as error:
        raise ValueError(f"--optimizer {spec!r}: {error}") from None


def parse_map(items: list[str]) -> tuple[list[float], list[float]]:
    """``["lr=1e-3:1:40", "momentum=0:0.99:40"]`` -> (lrs, momenta): each ``start:stop:count``
    (log-spaced when both bounds are > 0, else linear) or a comma list, as ``inertia sweep`` reads them."""
    from ..sweeps.specs import parse_values

    axes: dict[str, list[float]] = {}
    for item in items:
        name, eq, spec = item.partition("=")
        name = name.strip()
        if not eq or name not in ("lr", "momentum"):
            raise ValueError(f"--map expects lr=START:STOP:COUNT or momentum=START:STOP:COUNT, got {item!r}")
        if name in axes:
            raise ValueError(f"--map {name} is given twice")
        axes[name] = parse_values(spec, f"--map {name}")
    missing = [n for n in ("lr", "momentum") if n not in axes]
    if missing:
        raise ValueError(f"--map needs both lr=... and momentum=...; {missing[0]} is missing")
    return axes["lr"], axes["momentum"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "race",
        help="race optimizers on a test surface (contour PNG, GIF, loss plot, interactive HTML report)",
        description=__doc__,
        formatter_class=options.HelpFormatter,
    )
    p.add_argument("--surface", default="marble",
                   help="surface NAME or NAME:key=value,... (e.g. quadratic:condition=100,rotate=0.5); "
                        "`inertia surfaces` lists them (default: marble)")
    p.add_argument("--optimizer", action="append", metavar="NAME[:key=value,...]",
                   help="a configuration to race, e.g. momentum:lr=0.02,momentum=0.9 (repeat for several); "
                        "a value may be a schedule from inertia.schedules, e.g. "
                        "'momentum:lr=0.02,momentum=sutskever_ramp(0.99,every=50)'; on a quadratic, "
                        "sgd:optimal and momentum:optimal take the theory's optimal lr (and momentum) "
                        f"(default: {' and '.join(RACED)})")
    options.add_schedule(p, "for every configuration that has NAME, starting from its value over --steps")
    p.add_argument("--map", action="append", default=[], metavar="NAME=START:STOP:COUNT",
                   help="race a whole grid with the first --optimizer's rule (default momentum) and draw where "
                        "each pair ends (basins.png, and a layer of the report): give both "
                        "--map lr=1e-3:1:40 --map momentum=0:0.99:40 (log-spaced when both bounds are > 0, "
                        "else linear; or a comma list)")
    p.add_argument("--steps", type=int, default=300, help="steps per configuration (default 300)")
    p.add_argument("--start", default=None, help="starting point x,y (default: the surface's own)")
    p.add_argument("--out", default="race-out", help="output folder (default race-out)")
    p.add_argument("--frames", type=int, default=60, help="frames in the GIF (default 60)")
    p.add_argument("--no-gif", action="store_true", help="skip the animation")
    p.add_argument("--no-report", action="store_true", help="skip the interactive HTML report")
    p.add_argument("--float32", action="store_true", help="race in float32 (default float64)")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    import torch

    from .. import surfaces
    from ..races import race

    surface = surfaces.parse(args.surface)
    specs = args.optimizer or list(RACED)
    configs = [parse_optimizer(s, surface) for s in specs]
    schedules = options.schedules(args.schedule)
    grid_axes = parse_map(args.map) if args.map else None
    if grid_axes and schedules:
        raise ValueError("--map races constant (lr, momentum) pairs; it does not take --schedule")
    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    start = None
    if args.start:
        try:
            start = [float(v) for v in args.start.split(",")]
        except ValueError:
            raise ValueError(f"--start must be numbers separated by commas, got {args.start!r}") from None
        if len(start) != surface.dim:
            raise ValueError(f"--start needs {surface.dim} numbers for {surface.name}, got {len(start)}")
        if not all(math.isfinite(v) for v in start):
            raise ValueError(f"--start must be finite numbers, got {args.start!r}")
    dtype = torch.float32 if args.float32 else torch.float64
    result = race(surface, configs, steps=args.steps, start=start, dtype=dtype, schedules=schedules)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    summary = result.summary()
    (out / "race.json").write_text(json.dumps(dict(surface=surface.name, steps=args.steps, configs=configs,
                                                   schedules={k: str(v) for k, v in schedules.items()},
                                                   labels=result.labels, summary=summary), indent=1, default=repr))
    written.append(out / "race.json")
    from ..plots.race import animate, plot_contour, plot_losses

    written.append(plot_losses(result, out / "loss.png"))
    bmap = None
    if grid_axes:
        bmap = _basin_map(surface, configs if args.optimizer else [], grid_axes, args.steps, start, dtype)
        written += _write_basin_map(bmap, out)
    if surface.dim == 2:
        written.append(plot_contour(result, out / "race.png"))
        if not args.no_gif:
            written.append(animate(result, out / "race.gif", frames=args.frames))
        if not args.no_report:
            from ..race_sliders import slider_grids
            from ..report import write_race_report

            written.append(write_race_report(out / "report.html", result, slider_grids(result, schedules),
                                             images={"loss against step": out / "loss.png"}, basins=bmap))
    else:
        print(f"{surface.name} is {surface.dim}-D: no contour plot, animation or report (loss plot only)")
    for row in summary:
        where = ""
        if "nearest_minimum" in row:
            which = "global minimum" if row["nearest_minimum"] == 0 else f"local minimum #{row['nearest_minimum']}"
            where = f", {row['distance_to_minimum']:.2g} from the {which}"
        status = f"diverged at step {row['diverged_step']}" if row["diverged_step"] >= 0 else f"final loss {row['final_loss']:.6g}{where}"
        print(f"{row['label']:<45} {status}")
    for path in written:
        print(f"wrote {path}")
    return 0


def _basin_map(surface: Any, configs: list[dict[str, Any]], axes: tuple[list[float], list[float]], steps: int,
               start: Any, dtype: Any) -> Any:
    """The basin map of ``--map``, raced with the first configuration's rule and other settings."""
    from .. import rules
    from ..basins import basin_map

    first = configs[0] if configs else {"rule": "momentum"}
    if "momentum" not in rules.get(first["rule"]).rule.defaults:
        raise ValueError(f"--map races lr x momentum with the first --optimizer's rule; {first['rule']} has no "
                         f"momentum (give e.g. --optimizer momentum:lr=0.02 first)")
    fixed = {k: v for k, v in first.items() if k not in ("rule", "lr", "momentum", "label")}
    return basin_map(surface, *axes, steps=steps, rule=first["rule"], start=start, dtype=dtype, **fixed)


def _write_basin_map(bmap: Any, out: Path) -> list[Path]:
    """DIR/basins.png and DIR/basins.json (the grid, each pair's outcome, settling step and rate)."""
    from ..basins import DIVERGED, UNSETTLED
    from ..plots.basins import plot_basin_map

    data = dict(outcomes={"k >= 0": "index into the surface's minima (0: global)", str(DIVERGED): "diverged",
                          str(UNSETTLED): "not settled"}, rule=bmap.rule, lrs=bmap.lrs, momenta=bmap.momenta, steps=bmap.steps, tolerance=bmap.tolerance,
                outcome=bmap.outcome.tolist(), settle_step=bmap.settle_step.tolist(),
                rate=None if bmap.rate is None else [[v if math.isfinite(v) else None for v in row]
                                                     for row in bmap.rate.tolist()])
    (out / "basins.json").write_text(json.dumps(data))
    return [out / "basins.json", plot_basin_map(bmap, out / "basins.png")]
