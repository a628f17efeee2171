"""Update rules, written once as pure tensor arithmetic, and the names users call them by.

A :class:`Rule` is the maths (see :mod:`inertia.rules.base` for the contract).
A :class:`Preset` is a rule under a user-facing name with some defaults changed:
``"momentum"`` is the SGD rule with ``momentum=0.9``. The optimizer classes,
``inertia train --optimizer NAME``, sweeps and races all look names up here.

Your own rule is registered the same way, and declares its momentum on the :class:`Rule`
(:class:`MomentumHyper`; a numeric ``momentum`` is μ unless it says otherwise)::

    rules.register("signum", Rule("signum", {"lr": 0.01, "beta": 0.9}, ("lr", "beta"), update, validate,
                                  state={"exp_avg": "element"},
                                  momentum=MomentumHyper("beta", symbol="β", meaning="decay of the average")),
                   "sign of the averaged gradient")

so the race report's sliders (:func:`inertia.race_sliders.slider_grids`) move ``beta``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from .base import MomentumHyper, Rule, broadcast_hyper
from .adaptive import ADAM_RULE, NADAM_RULE, RMSPROP_RULE
from .ademamix import ADEMAMIX_RULE
from .lion import LION_RULE
from .muon import muon
from .sgd import CONVENTIONS, SGD_RULE
from .tuned import TUNED, tuned
from .variants import AGGMO_RULE, QHM_RULE, SCHEDULEFREE_RULE, lookahead


@dataclass(frozen=True)
class Preset:
    """A rule under a user-facing name, with some of its defaults overridden."""

    name: str
    rule: Rule
    overrides: Mapping[str, Any] = field(default_factory=dict)
    summary: str = ""
    tuner: str | None = None   # a tuner (TUNERS) sets lr and momentum at every step
    base: str | None = None    # the preset the tuner drives (tuned presets only)

    @property
    def defaults(self) -> dict[str, Any]:
        return {**self.rule.defaults, **self.overrides}

    def hyper(self, **given: Any) -> dict[str, Any]:
        """The full, validated hyperparameters: rule defaults < preset overrides < ``given`` (a tuned preset's
        without lr and momentum: its tuner sets them)."""
        full = self.rule.check({**self.overrides, **given})
        return full if self.tuner is None else {k: v for k, v in full.items() if k not in TUNED}


PRESETS: dict[str, Preset] = {}


def register(name: str, rule: Rule, summary: str, **overrides: Any) -> Preset:
    """Make ``rule`` available under ``name`` (with ``overrides`` as its defaults); its momentum is the one
    ``rule`` declares (:attr:`Rule.momentum`)."""
    preset = Preset(name, rule, overrides, summary)
    PRESETS[name] = preset
    return preset


TUNERS = {"yellowfin": "YellowFin (Zhang & Mitliagkas 2017): lr and momentum tuned at every step, over heavy "
                        "ball, or over the rule NAME"}
"""Tuners by name: ``yellowfin`` tunes ``momentum``, ``yellowfin:NAME`` any registered rule with a momentum
(:mod:`inertia.yellowfin`); they are not rules, so they are not in :data:`PRESETS`."""
_TUNED: dict[str, Preset] = {}


def get(name: str) -> Preset:
    """Look up a rule by its user-facing name, or a tuned rule (``yellowfin``, ``yellowfin:nesterov``);
    the error lists the known names."""
    key = name.lower().replace("-", "_")
    if key in PRESETS:
        return PRESETS[key]
    tuner, _, base = key.partition(":")
    if tuner not in TUNERS:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(sorted(PRESETS))}, "
                         f"{', '.join(f'{t}[:NAME]' for t in TUNERS)}")
    return _tuned_preset(tuner, base or "momentum")


def _tuned_preset(tuner: str, base: str) -> Preset:
    """The preset ``base`` under ``tuner`` (made once): the tuner's settings added, lr and μ left to it."""
    name = tuner if base == "momentum" else f"{tuner}:{base}"
    if name not in _TUNED:
        preset = get(base)
        if "momentum" not in preset.rule.numeric:
            raise ValueError(f"{tuner}: rule {base!r} has no momentum to tune; rules with one: "
                             f"{', '.join(n for n, p in PRESETS.items() if 'momentum' in p.rule.numeric)}")
        _TUNED[name] = Preset(name, tuned(preset.rule), dict(preset.overrides), f"{preset.summary}; {TUNERS[tuner]}",
                              tuner=tuner, base=preset.name)
    return _TUNED[name]


register("sgd", SGD_RULE, "plain stochastic gradient descent (momentum 0 unless given)")
register("momentum", SGD_RULE, "heavy-ball momentum, 0.9 by default", momentum=0.9)
register("nesterov", SGD_RULE, "Nesterov momentum, 0.9 by default", momentum=0.9, nesterov=True)
register("adam", ADAM_RULE, "Adam (amsgrad=True for AMSGrad), as torch.optim.Adam")
register("adamw", ADAM_RULE, "AdamW: Adam with decoupled weight decay 0.01, as torch.optim.AdamW",
         weight_decay=1e-2, decoupled_weight_decay=True)
register("nadam", NADAM_RULE, "NAdam with momentum decay 0.004, as torch.optim.NAdam")
register("rmsprop", RMSPROP_RULE, "RMSprop (momentum, centered), as torch.optim.RMSprop")
register("qhm", QHM_RULE, "quasi-hyperbolic momentum (Ma & Yarats 2019), nu=0.7, momentum=0.999")
register("aggmo", AGGMO_RULE, "aggregated momentum (Lucas et al. 2019), betas=(0, 0.9, 0.99)")
register("schedulefree", SCHEDULEFREE_RULE, "Schedule-Free SGD (Defazio et al. 2024), momentum=0.9")
LOOKAHEAD_MOMENTUM_RULE = lookahead(SGD_RULE)
LOOKAHEAD_ADAM_RULE = lookahead(ADAM_RULE)
register("lookahead", LOOKAHEAD_MOMENTUM_RULE, "Lookahead (k=5, alpha=0.5) around heavy-ball momentum 0.9",
         momentum=0.9)
register("lookahead_adam", LOOKAHEAD_ADAM_RULE, "Lookahead (k=5, alpha=0.5) around Adam")
MUON_RULE = muon(ADAM_RULE, weight_decay=1e-2, decoupled_weight_decay=True)
register("muon", MUON_RULE, "Muon (Jordan et al. 2024), as torch.optim.Muon on matrices; AdamW for the rest")
register("lion", LION_RULE, "Lion (Chen et al. 2023): sign of the interpolated momentum, betas=(0.9, 0.99)")
register("ademamix", ADEMAMIX_RULE, "AdEMAMix (Pagliardini et al. 2024): Adam plus a slow EMA, alpha=5")

__all__ = [
    "Rule", "MomentumHyper", "Preset", "PRESETS", "register", "get", "broadcast_hyper", "SGD_RULE", "CONVENTIONS",
    "ADAM_RULE", "NADAM_RULE", "RMSPROP_RULE", "QHM_RULE", "AGGMO_RULE", "SCHEDULEFREE_RULE",
    "LOOKAHEAD_MOMENTUM_RULE", "LOOKAHEAD_ADAM_RULE", "lookahead", "MUON_RULE", "muon", "LION_RULE",
    "ADEMAMIX_RULE", "TUNERS", "TUNED",
]
