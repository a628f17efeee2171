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
from dataclasses import dataclass
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


@dataclass(frozen=True)
class MomentumKnob:
    """The hyperparameter a rule's momentum slider moves: ``key``, or ``key[index]`` of a tuple (betas)."""

    key: str
    index: int | None
    symbol: str
    meaning: str

    def get(self, hyper: dict[str, Any]) -> Any:
        value = hyper[self.key]
        return value if self.index is None else value[self.index]

    def put(self, hyper: dict[str, Any], value: float) -> dict[str, Any]:
        """``hyper`` with the knob set to ``value`` (the tuple's other entries kept)."""
        if self.index is None:
            return {**hyper, self.key: value}
        entries = list(hyper[self.key])
        entries[self.index] = value
        return {**hyper, self.key: tuple(entries)}


_MU = MomentumKnob("momentum", None, "μ", "momentum")
_BETA1 = MomentumKnob("betas", 0, "β₁", "decay of the first-moment average: the momentum")
#: rule name -> the hyperparameter its report's momentum slider moves (other rules: ``momentum`` if they have one)
MOMENTUM_KNOBS = {
    "sgd": _MU, "lookahead_sgd": _MU, "qhm": _MU, "rmsprop": _MU,
    "schedulefree": MomentumKnob("momentum", None, "β", "interpolation momentum of Schedule-Free"),
    "adam": _BETA1, "nadam": _BETA1, "lookahead_adam": _BETA1, "ademamix": _BETA1,
    "lion": MomentumKnob("betas", 1, "β₂", "decay of Lion's momentum m (β₁ only mixes m with the gradient "
                                          "inside the sign)"),
}
#: rule name -> why its report shows no sliders
NO_MOMENTUM_SLIDER = {
    "aggmo": "AggMo averages several momenta (betas) at once: there is no single momentum to slide",
    "muon": "a point on a surface is a vector, which Muon hands to its AdamW fallback: Muon's momentum "
            "does not act in a race",
}
SLIDER_MOMENTA = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


def slider_grids(result: Any, schedules: dict[str, Any] | None = None) -> list[Any]:
    """For each configuration of ``result``, the races its report's lr and momentum sliders pick from,
    or a sentence saying why it has no sliders (:func:`inertia.report.write_race_report` draws them).

    The momentum is the rule's :data:`MOMENTUM_KNOBS` entry (μ for the SGD family, β₁ for Adam's,
    β₂ for Lion). Configurations of one rule with the same other settings share one grid, raced at
    once by the engine with the race's other schedules: learning rates lr × 2^(k/2), k = −6..6, around
    the first one's lr, momenta :data:`SLIDER_MOMENTA` (those the rule accepts), each grid holding
    every raced value exactly (and the heavy-ball optimum on a quadratic). A grid's ``extra`` holds
    ``lrs``, ``momenta``, ``knob``, ``theory`` (``"heavy_ball"``/``"nesterov"`` where the quadratic
    theory applies, else None) and ``drives``: configuration index -> its (lr, momentum) indices.
    """
    schedules = dict(schedules or {})
    groups: dict[tuple, list[int]] = {}
    out: list[Any] = []
    for i, config in enumerate(result.configs):
        key = _slider_group(config, schedules)
        out.append(key)
        if isinstance(key, tuple):
            groups.setdefault((key, tuple(result.positions[i, 0].tolist())), []).append(i)
    for members in groups.values():
        grid = _race_slider_grid(result, members, schedules)
        for i in members:
            out[i] = grid
    return out


def momentum_knob(rule: Any) -> MomentumKnob | str:
    """The hyperparameter ``rule``'s momentum slider moves, or why it has none."""
    if rule.name in NO_MOMENTUM_SLIDER:
        return NO_MOMENTUM_SLIDER[rule.name]
    knob = MOMENTUM_KNOBS.get(rule.name, _MU if "momentum" in rule.numeric else None)
    return knob or f"{rule.name} has no momentum hyperparameter to slide"


def _full_hyper(config: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The preset of ``config`` and its full hyperparameters (schedules as written)."""
    from .. import rules

    preset = rules.get(config.get("rule", "sgd"))
    return preset, {**preset.defaults, **{k: v for k, v in config.items() if k not in ("rule", "label")}}


def _slider_group(config: dict[str, Any], schedules: dict[str, Any]) -> tuple | str:
    """The key of the grid ``config``'s sliders share with others, or why it has no sliders."""
    preset, hyper = _full_hyper(config)
    knob = momentum_knob(preset.rule)
    if isinstance(knob, str):
        return knob
    scheduled = [k for k in ("lr", knob.key) if k in schedules or callable(hyper[k])]
    if scheduled:
        return f"its {scheduled[0]} follows a schedule; the sliders race constant values only"
    fixed = knob.put({k: v for k, v in hyper.items() if k != "lr"}, 0.0)
    return (preset.rule.name, repr(sorted(fixed.items())))


def _race_slider_grid(result: Any, members: list[int], schedules: dict[str, Any]) -> Any:
    """One grid of races for the configurations ``members`` (same rule, same other settings)."""
    from ..races import race

    configs = [result.configs[i] for i in members]
    preset, hyper = _full_hyper(configs[0])
    knob = momentum_knob(preset.rule)
    own_lrs = [float(_full_hyper(c)[1]["lr"]) for c in configs]
    own_mus = [float(knob.get(_full_hyper(c)[1])) for c in configs]
    own = {k: v for k, v in schedules.items() if k in preset.rule.numeric}
    s = result.surface
    theory = _theory(preset.rule.name, hyper) if s.is_quadratic and not own else None
    optimum = s.optimal("momentum") if theory else None
    lrs = sorted({float(f"{own_lrs[0] * 2 ** (k / 2):.6g}") for k in range(-6, 7)} | set(own_lrs)
                 | ({optimum[0]} if optimum else set()))
    momenta = sorted({m for m in SLIDER_MOMENTA if _accepts(preset, knob.put(hyper, m))} | set(own_mus)
                     | ({optimum[1]} if optimum else set()))
    base = {**{k: v for k, v in configs[0].items() if k != "label"}, knob.key: hyper[knob.key]}
    grid_configs = [knob.put({**base, "lr": lr}, mu) for lr in lrs for mu in momenta]
    grid = race(s, grid_configs, steps=result.steps, start=result.positions[members[0], 0],
                dtype=result.positions.dtype, schedules=own)
    grid.extra.update(lrs=lrs, momenta=momenta, knob=dict(symbol=knob.symbol, meaning=knob.meaning),
                      theory=theory,
                      drives={i: (lrs.index(lr), momenta.index(mu)) for i, lr, mu in zip(members, own_lrs, own_mus)})
    return grid


def _accepts(preset: Any, hyper: dict[str, Any]) -> bool:
    """Whether the rule accepts ``hyper`` (nesterov and Schedule-Free need a momentum > 0)."""
    try:
        preset.rule.check({k: (v(0) if callable(v) else v) for k, v in hyper.items()})
    except (TypeError, ValueError):
        return False
    return True


def _theory(rule: str, hyper: dict[str, Any]) -> str | None:
    """Which quadratic theory predicts this rule's rate (:meth:`inertia.surfaces.Surface.rate`): heavy ball
    or Nesterov in the ``torch``/``sutskever`` form with constant settings, no dampening, decay or extras."""
    plain = (rule == "sgd" and hyper["convention"] in ("torch", "sutskever") and hyper["dampening"] == 0
             and hyper["weight_decay"] == 0 and not hyper["maximize"] and not hyper["cautious"])
    return ("nesterov" if hyper["nesterov"] else "heavy_ball") if plain else None


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
