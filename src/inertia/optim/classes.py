"""The optimizer classes: one per registered name, each with a signature made from its rule's defaults.

``class Adam(PresetOptimizer, preset="adam", torch_flags=True)`` is all a class needs: its ``__init__``
takes ``(params, lr=..., *, <every hyperparameter of the preset, with its default>, nonfinite="raise",
execution="auto")``, so ``inspect.signature``, ``help()`` and editors list ``betas``, ``eps``,
``amsgrad``. :func:`optimizer_class` gives the class of any registered name (made on first use for a
name without a public class), and :func:`make_optimizer` builds it, so every name builds the same kind of
object.
"""
from __future__ import annotations

import inspect
from typing import Any

from .. import rules
from .optimizer import RuleOptimizer

TORCH_FLAGS = {"foreach": None, "fused": None, "capturable": False, "differentiable": False}
"""torch.optim's execution flags and their defaults: the torch-named classes accept and ignore them
(``execution=`` chooses the path)."""
_CLASSES: dict[str, type] = {}   # preset name -> its class
_KEYWORD = inspect.Parameter.KEYWORD_ONLY


def _signature(preset: rules.Preset, lr: Any, torch_flags: bool) -> inspect.Signature:
    """``(self, params, lr=lr, *, <the preset's other defaults>, nonfinite, execution[, torch's flags])``."""
    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    fields = [inspect.Parameter("self", positional), inspect.Parameter("params", positional),
              inspect.Parameter("lr", positional, default=lr)]
    fields += [inspect.Parameter(name, _KEYWORD, default=value) for name, value in preset.defaults.items()
               if name != "lr"]
    fields += [inspect.Parameter("nonfinite", _KEYWORD, default="raise"),
               inspect.Parameter("execution", _KEYWORD, default="auto")]
    fields += [inspect.Parameter(name, _KEYWORD, default=value) for name, value in TORCH_FLAGS.items()
               if torch_flags]
    return inspect.Signature(fields)


class PresetOptimizer(RuleOptimizer):
    """The base of the classes of registered names: ``class X(PresetOptimizer, preset=NAME, lr=...,
    torch_flags=...)`` runs the preset's rule with the preset's defaults; ``lr`` overrides the preset's
    default learning rate (``inertia.SGD`` takes torch's 1e-3); ``torch_flags`` accepts and ignores
    :data:`TORCH_FLAGS`."""

    preset: str

    def __init_subclass__(cls, preset: str | None = None, lr: Any = None, torch_flags: bool = False,
                          **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if preset is None:  # a user's subclass of a preset's class keeps its __init__
            return
        registered = rules.get(preset)
        signature = _signature(registered, registered.defaults["lr"] if lr is None else lr, torch_flags)

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            given = {k: v for k, v in bound.arguments.items() if k != "self" and not (torch_flags and k in TORCH_FLAGS)}
            params, nonfinite, execution = given.pop("params"), given.pop("nonfinite"), given.pop("execution")
            RuleOptimizer.__init__(self, params, registered.rule, nonfinite=nonfinite, execution=execution, **given)

        __init__.__signature__ = signature
        __init__.__qualname__ = f"{cls.__qualname__}.__init__"
        cls.__init__, cls.rule, cls.preset = __init__, registered.rule, registered.name
        _CLASSES.setdefault(registered.name, cls)

    def __reduce_ex__(self, protocol: Any) -> Any:
        """A class made by :func:`optimizer_class` is found again by its preset's name."""
        if _CLASSES.get(self.preset) is type(self):
            return _blank, (self.preset,), self.__getstate__()
        return super().__reduce_ex__(protocol)


def _blank(name: str) -> PresetOptimizer:
    cls = optimizer_class(name)
    return cls.__new__(cls)


def optimizer_class(name: str) -> type[PresetOptimizer]:
    """The class of a registered name (``"adam"`` gives :class:`Adam`); a name without a public class gets
    one, ``RuleOptimizer[name]``, documented by its registry summary."""
    preset = rules.get(name)
    if preset.tuner is not None:
        raise ValueError(f"{preset.name} is a tuner around the rule {preset.base!r}, not a rule: "
                         f"inertia.YellowFin(params, rule={preset.base!r}), or make_optimizer({preset.name!r}, params)")
    if preset.name not in _CLASSES:
        type(f"RuleOptimizer[{preset.name}]", (PresetOptimizer,), {"__doc__": preset.summary, "__module__": __name__},
             preset=preset.name)
    return _CLASSES[preset.name]


def make_optimizer(name: str, params: Any, **hyper: Any) -> PresetOptimizer:
    """The optimizer for a registered name (``"momentum"``, ``"adam"``, ``"qhm"``, ...): an instance of
    ``optimizer_class(name)`` with the registry's defaults (for ``"sgd"``, lr 0.01, where ``inertia.SGD``
    takes torch's 1e-3); for a tuned name (``"yellowfin"``, ``"yellowfin:nesterov"``) a
    :class:`~inertia.YellowFin` over its rule."""
    preset = rules.get(name)
    if preset.tuner is not None:
        from ..yellowfin import YellowFin   # the tuner's optimizer, built on this package

        return YellowFin(params, rule=preset.base, **hyper)
    return optimizer_class(preset.name)(params, **{"lr": preset.defaults["lr"], **hyper})


class SGD(PresetOptimizer, preset="sgd", lr=1e-3, torch_flags=True):
    r"""SGD with optional heavy-ball or Nesterov momentum, in the ``torch``, ``sutskever`` or ``ema`` convention.

    With ``convention="torch"`` (the default) it gives the same numbers as ``torch.optim.SGD``, whose
    default learning rate it takes. The equations are in :mod:`inertia.rules.sgd`.
    """


class Momentum(PresetOptimizer, preset="momentum"):
    """Heavy-ball momentum SGD with the common starting point ``lr=0.01, momentum=0.9``; ``nesterov=True``
    gives Nesterov momentum. The equations are in :mod:`inertia.rules.sgd`."""


class Adam(PresetOptimizer, preset="adam", torch_flags=True):
    r"""Adam, as ``torch.optim.Adam`` (same numbers, same state names).

    Each beta may be a number or a tensor (``[N]`` per configuration). Equations: :mod:`inertia.rules.adaptive`.
    """


class AdamW(PresetOptimizer, preset="adamw", torch_flags=True):
    r"""AdamW, as ``torch.optim.AdamW``: Adam with decoupled weight decay (default 0.01)."""


class NAdam(PresetOptimizer, preset="nadam", torch_flags=True):
    r"""NAdam, as ``torch.optim.NAdam``. Equations: :mod:`inertia.rules.adaptive`."""


class RMSprop(PresetOptimizer, preset="rmsprop", torch_flags=True):
    r"""RMSprop, as ``torch.optim.RMSprop``. Equations: :mod:`inertia.rules.adaptive`."""


class QHM(PresetOptimizer, preset="qhm"):
    r"""Quasi-hyperbolic momentum (Ma & Yarats, ICLR 2019)::

        b ← βb + (1 − β)g;  θ ← θ − γ[(1 − ν)g + νb]

    ν = 1 is ``inertia.SGD(convention="ema")``, ν = 0 is plain SGD.
    """


class AggMo(PresetOptimizer, preset="aggmo"):
    r"""Aggregated momentum (Lucas et al., ICLR 2019)::

        vᵢ ← βᵢvᵢ − g;  θ ← θ + (γ/K)Σᵢvᵢ
    """


class ScheduleFreeSGD(PresetOptimizer, preset="schedulefree"):
    r"""Schedule-Free SGD (Defazio et al. 2024, "The road less scheduled").

    During training the parameters hold y = (1 − β)z + βx, where gradients are taken. Call
    ``optimizer.eval()`` before evaluating (or saving a model for inference): the parameters then hold
    the averaged iterate x (the rule's declared evaluation point); call ``optimizer.train()`` before
    training again. ``step()`` in eval mode is an error. Equations: :mod:`inertia.rules.variants`.
    """


class Muon(PresetOptimizer, preset="muon"):
    r"""Muon (Jordan et al. 2024), as ``torch.optim.Muon`` on matrices, AdamW for the other parameters.

    The momentum (EMA by default, ``convention="torch"`` for the classical buffer) is orthogonalized by five
    Newton–Schulz steps; conv weights are orthogonalized flattened to 2-D; parameters with fewer than two
    axes go to AdamW (lr · ``fallback_lr_ratio``), or are an error with ``fallback=False``.
    Equations: :mod:`inertia.rules.muon`.
    """


class Lion(PresetOptimizer, preset="lion"):
    r"""Lion (Chen et al. 2023): the sign of the interpolated momentum, decoupled weight decay.
    Equations: :mod:`inertia.rules.lion`."""


class AdEMAMix(PresetOptimizer, preset="ademamix"):
    r"""AdEMAMix (Pagliardini et al. 2024): a fast and a slow EMA of the gradient over Adam's denominator.
    The paper's warm-ups of α and β₃: ``HyperScheduler(opt, **inertia.schedules.ademamix_warmups(T))``.
    Equations: :mod:`inertia.rules.ademamix`."""
