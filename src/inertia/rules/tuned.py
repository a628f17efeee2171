"""A momentum rule under a tuner: the rule YellowFin drives (the tuner itself is :mod:`inertia.yellowfin`).

``tuned(rule)`` is ``rule`` with YellowFin's settings as hyperparameters:

- ``beta`` (numeric, so a sweep may give each configuration its own): the smoothing of every running
  average, in (0, 1);
- ``window`` (a positive integer): the sliding window of squared gradient norms;
- ``apply`` (``"smoothed"`` or ``"raw"``): which (lr, μ) the step uses;
- ``slow_start``, ``clip`` (True/False): the reference code's warm-up of lr and its adaptive clipping.

Its update is ``rule``'s, with the ``lr`` and ``momentum`` the engine's tuner set for the step.
"""
from __future__ import annotations

from typing import Any, Collection

from .base import Hyper, Rule, boolean, one_of, require

TUNER_DEFAULTS: dict[str, Any] = {"beta": 0.999, "window": 20, "apply": "smoothed", "slow_start": True,
                                  "clip": True}
APPLY = ("smoothed", "raw")
TUNED = ("lr", "momentum")
"""The hyperparameters a tuner sets at every step: none of them can be given, swept or scheduled."""


def check_tuner(h: Hyper) -> None:
    """Reject bad YellowFin settings with a message naming the argument and value."""
    require("beta", h["beta"], lambda v: 0 < v < 1, "in (0, 1)")
    window = h["window"]
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive integer, got {window!r}")
    one_of("apply", h["apply"], APPLY)
    boolean("slow_start", h["slow_start"])
    boolean("clip", h["clip"])


def check_tuned_names(tuner: str, *, swept: Collection[str] = (), given: Collection[str] = (),
                      scheduled: Collection[str] = ()) -> None:
    """A tuner's lr and momentum are its own, and its ``beta`` holds for the whole run: one line naming the
    first hyperparameter swept, given or scheduled against that."""
    for how, names in (("swept", swept), ("given", given), ("scheduled", scheduled)):
        bad = [name for name in TUNED if name in names]
        if bad:
            hint = (" (sweep its other hyperparameters, such as beta or weight_decay, or only seeds)"
                    if how == "swept" else "")
            raise ValueError(f"{tuner} tunes lr and momentum at every step; {bad[0]} cannot be {how}{hint}")
    if "beta" in scheduled:
        raise ValueError(f"{tuner}: beta cannot be scheduled (it smooths every running average of the tuner)")


def tuned(rule: Rule) -> Rule:
    """``rule`` (which must have a numeric ``momentum``) with YellowFin's settings (module docstring)."""
    clash = sorted(set(TUNER_DEFAULTS) & set(rule.defaults))
    if "momentum" not in rule.numeric or clash:
        raise ValueError(f"rule {rule.name!r} cannot be tuned: "
                         + (f"its {clash} are the tuner's settings" if clash else "it has no momentum"))

    def validate(h: Hyper) -> None:
        rule.validate(h)
        check_tuner(h)

    return Rule(
        name=f"yellowfin_{rule.name}",
        defaults={**rule.defaults, **TUNER_DEFAULTS},
        numeric=(*rule.numeric, "beta"),
        update=rule.update,
        validate=validate,
        summary=f"{rule.name} with lr and momentum tuned by YellowFin (Zhang & Mitliagkas 2017)",
        state=dict(rule.state),
        eval_point=rule.eval_point,
        train_point=rule.train_point,
        momentum=rule.momentum,
    )
