"""The races behind the race report's sliders: for each raced configuration, a grid of
(learning rate, momentum) pairs raced at once around it by the race engine.

The momentum is the one its rule declares (:attr:`inertia.rules.Rule.momentum`: μ for the SGD
family, β₁ for Adam's, β₂ for Lion, your own rule's declaration); a rule that declares none, or a
configuration whose lr or momentum follows a schedule, gets a sentence saying why it has no sliders.
:func:`inertia.report.write_race_report` draws both.

    >>> import inertia
    >>> from inertia.race_sliders import slider_grids
    >>> result = inertia.race("marble", [dict(rule="momentum", lr=0.02), dict(rule="adam", lr=0.05)], steps=100)
    >>> grids = slider_grids(result)   # grids[1].extra["knob"]["symbol"] == "β₁"
"""
from __future__ import annotations

from typing import Any

from . import rules
from .races import RaceResult, race
from .rules.base import MomentumHyper

SLIDER_MOMENTA = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
"""The momenta every grid races (those its rule accepts), besides the configurations' own."""


def slider_grids(result: RaceResult, schedules: dict[str, Any] | None = None) -> list[RaceResult | str]:
    """For each configuration of ``result``, the races its report's lr and momentum sliders pick from,
    or a sentence saying why it has no sliders.

    Configurations of one rule with the same other settings share one grid, raced at once by the
    engine with the race's other ``schedules``: learning rates lr × 2^(k/2), k = −6..6, around the
    first one's lr, momenta :data:`SLIDER_MOMENTA` (those the rule accepts), each grid holding every
    raced value exactly (and the heavy-ball optimum on a quadratic). A grid's ``extra`` holds ``lrs``,
    ``momenta``, ``knob`` (the momentum's ``symbol`` and ``meaning``), ``theory`` (``"heavy_ball"``/
    ``"nesterov"`` where the quadratic theory applies, else None) and ``drives``: configuration
    index -> its (lr, momentum) indices.
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


def _momentum(rule: rules.Rule) -> MomentumHyper | str:
    """The hyperparameter ``rule``'s momentum slider moves, or why it has none."""
    return rule.momentum if rule.momentum is not None else f"{rule.name} has no momentum hyperparameter to slide"


def _full_hyper(config: dict[str, Any]) -> tuple[rules.Preset, dict[str, Any]]:
    """The preset of ``config`` and its full hyperparameters (schedules as written)."""
    preset = rules.get(config.get("rule", "sgd"))
    return preset, {**preset.defaults, **{k: v for k, v in config.items() if k not in ("rule", "label")}}


def _slider_group(config: dict[str, Any], schedules: dict[str, Any]) -> tuple | str:
    """The key of the grid ``config``'s sliders share with others, or why it has no sliders."""
    preset, hyper = _full_hyper(config)
    knob = _momentum(preset.rule)
    if isinstance(knob, str):
        return knob
    scheduled = [k for k in ("lr", knob.key) if k in schedules or callable(hyper[k])]
    if scheduled:
        return f"its {scheduled[0]} follows a schedule; the sliders race constant values only"
    fixed = knob.put({k: v for k, v in hyper.items() if k != "lr"}, 0.0)
    return (preset.rule.name, repr(sorted(fixed.items())))


def _race_slider_grid(result: RaceResult, members: list[int], schedules: dict[str, Any]) -> RaceResult:
    """One grid of races for the configurations ``members`` (same rule, same other settings)."""
    configs = [result.configs[i] for i in members]
    preset, hyper = _full_hyper(configs[0])
    knob = _momentum(preset.rule)
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


def _accepts(preset: rules.Preset, hyper: dict[str, Any]) -> bool:
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


__all__ = ["slider_grids", "SLIDER_MOMENTA"]
