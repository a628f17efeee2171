"""The contract every update rule follows.

A rule is written once, as tensor arithmetic on ``(param, grad, state, hyper)``,
and three engines run it: the ``torch.optim`` adapter (one model), the sweep
(N models stacked along a leading configuration axis) and the race (N points on
a test surface). A rule knows nothing about those engines.

``update(param, grad, state, hyper)`` changes ``param`` and the tensors in
``state`` in place and returns nothing.

- ``hyper`` maps every hyperparameter name to a Python value or to a tensor that
  already broadcasts against ``param`` (the engine turns a per-configuration
  tensor of shape ``[N]`` into ``[N, 1, ..., 1]`` with :func:`broadcast_hyper`).
- ``hyper[FIXED_HYPER]``, where an engine sets it, names the numeric hyperparameters it knows
  to hold one value for the whole run (sweeps and races know their schedules); a rule may
  skip work that matters only when a value changes. An engine that cannot know (the
  optimizer: a group's value may be set at any time) leaves it out.
- ``hyper[MEMBER_AXIS]`` is True where ``param`` is stacked ``[N, ...]``, its first axis the
  member axis (the sweep and the race always; the optimizer for parameters marked stacked,
  :func:`inertia.stacked.mark`); absent or False, the whole tensor is one parameter. An
  elementwise rule never needs it; a rule that reduces over a parameter (Muon's matrix,
  the cautious mask's mean) reduces over each member's axes, :func:`member_dims`.
- ``state`` is a plain dict of tensors. The engine keeps ``state["step"]``, a
  0-dim tensor counting updates, incremented *before* ``update`` is called
  (so it is 1 on the first update, as in torch.optim).
- Structural options (``nesterov``, ``convention``, ...) are ordinary entries of
  ``hyper`` holding Python values; they are the same for every configuration.
- A rule declares the layout of every state entry it creates (:attr:`Rule.state`):
  ``"element"`` (the parameter's shape), ``"member"`` (one value per configuration:
  ``[N, 1, ..., 1]``, or 0-dim when every configuration shares it); ``step`` is the
  engine's counter, shared by all. Engines select, save and move state by this
  layout, never by guessing from shapes.
- A rule whose gradients are taken at another point than the one to evaluate
  (Schedule-Free: trains at y, evaluates at x) declares ``eval_point`` (the point to
  evaluate, computed out of place from the training point) and ``train_point``
  (its inverse).
- A rule declares which numeric hyperparameter is its momentum (:attr:`Rule.momentum`, a
  :class:`MomentumHyper`: ``momentum`` itself, μ, unless it says otherwise; Adam's is β₁,
  ``betas[0]``), or in a sentence why it has no single one (AggMo averages several), so that
  every layer (the race report's sliders, ...) reads it from the rule, not from a table of names.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Callable, Mapping, MutableMapping

from torch import Tensor

Hyper = Mapping[str, Any]
State = MutableMapping[str, Tensor]
Point = Callable[[Tensor, State, Hyper], Tensor]

STATE_KINDS = ("element", "member")
"""Layouts of a rule's state entries (see the module docstring); ``step`` is ``"shared"``."""
FIXED_HYPER = "fixed_hyper"
"""The key of ``hyper`` naming the numeric hyperparameters fixed for the run (module docstring)."""
MEMBER_AXIS = "member_axis"
"""The key of ``hyper`` that is True where the parameter's first axis is the member axis (module docstring)."""


@dataclass(frozen=True)
class MomentumHyper:
    """Which hyperparameter is a rule's momentum: ``key``, or component ``index`` of the tuple ``key``
    (Adam's β₁ is ``betas[0]``), with the ``symbol`` and a short ``meaning`` people read it by."""

    key: str = "momentum"
    index: int | None = None
    symbol: str = "μ"
    meaning: str = "momentum"

    def get(self, hyper: Hyper) -> Any:
        """The momentum's value in ``hyper``."""
        value = hyper[self.key]
        return value if self.index is None else value[self.index]

    def put(self, hyper: Hyper, value: Any) -> dict[str, Any]:
        """``hyper`` with the momentum set to ``value`` (a tuple's other components kept)."""
        if self.index is None:
            return {**hyper, self.key: value}
        entries = list(hyper[self.key])
        entries[self.index] = value
        return {**hyper, self.key: tuple(entries)}


@dataclass(frozen=True)
class Rule:
    """An update rule: its name, hyperparameter defaults, update and checks.

    ``numeric`` names the hyperparameters that may be tensors of shape ``[N]``
    (one value per configuration) and that schedules may drive; every other
    entry of ``defaults`` is a structural option. ``state`` maps each state entry
    the rule creates (a name or an ``fnmatch`` pattern such as ``velocity_*``) to its
    layout in :data:`STATE_KINDS`. ``eval_point``/``train_point``: see the module docstring.

    ``momentum`` declares which numeric hyperparameter is the rule's momentum (a
    :class:`MomentumHyper`), or is a sentence saying why it has no single one. Left out, it is
    ``MomentumHyper()`` (μ = ``momentum``) when ``momentum`` is numeric, else None: no momentum.
    """

    name: str
    defaults: Mapping[str, Any]
    numeric: tuple[str, ...]
    update: Callable[[Tensor, Tensor, State, Hyper], None]
    validate: Callable[[Hyper], None]
    summary: str = ""
    state: Mapping[str, str] = field(default_factory=dict)
    eval_point: Point | None = None
    train_point: Point | None = None
    momentum: MomentumHyper | str | None = None

    def __post_init__(self) -> None:
        bad = {k: v for k, v in self.state.items() if v not in STATE_KINDS}
        if bad:
            raise ValueError(f"{self.name}: state layouts must be one of {STATE_KINDS}, got {bad}")
        if (self.eval_point is None) != (self.train_point is None):
            raise ValueError(f"{self.name}: eval_point and train_point go together")
        if self.momentum is None and "momentum" in self.numeric:
            object.__setattr__(self, "momentum", MomentumHyper())
        self._check_momentum()

    def _check_momentum(self) -> None:
        """The declared momentum is a numeric hyperparameter (a tuple's component where it is one), or a reason."""
        declared = self.momentum
        if declared is None or (isinstance(declared, str) and declared):
            return
        if not isinstance(declared, MomentumHyper):
            raise ValueError(f"{self.name}: momentum must be a MomentumHyper, a sentence saying why the rule has "
                             f"no single momentum, or None; got {declared!r}")
        if declared.key not in self.numeric:
            raise ValueError(f"{self.name}: momentum names {declared.key!r}, which is not one of its numeric "
                             f"hyperparameters {list(self.numeric)}")
        default = self.defaults.get(declared.key)
        size = len(default) if isinstance(default, (tuple, list)) else None
        if (declared.index is None) != (size is None) or (size is not None and not 0 <= declared.index < size):
            where = f"a tuple of {size}: give an index in [0, {size})" if size is not None else "not a tuple: give no index"
            raise ValueError(f"{self.name}: momentum index {declared.index!r} of {declared.key!r}, whose default "
                             f"{default!r} is {where}")

    def state_kind(self, entry: str) -> str:
        """The declared layout of state entry ``entry``: ``"shared"`` for ``step``, else from :attr:`state`."""
        if entry == "step":
            return "shared"
        for pattern, kind in self.state.items():
            if fnmatchcase(entry, pattern):
                return kind
        raise KeyError(f"rule {self.name!r} keeps state {entry!r} but does not declare its layout "
                       f"(Rule.state); declared: {sorted(self.state)}")

    def check(self, hyper: Hyper) -> dict[str, Any]:
        """Merge ``hyper`` over the defaults, reject unknown names, validate."""
        unknown = set(hyper) - set(self.defaults)
        if unknown:
            raise TypeError(
                f"{self.name}: unknown hyperparameter(s) {sorted(unknown)}; "
                f"known: {sorted(self.defaults)}"
            )
        merged = {**self.defaults, **hyper}
        self.validate(merged)
        return merged


# ---------------------------------------------------------------- helpers

def is_tensor(value: Any) -> bool:
    return isinstance(value, Tensor)


def is_zero(value: Any) -> bool:
    """True only for a Python number equal to 0 (a tensor is never 'known zero')."""
    return not is_tensor(value) and value == 0


def member_dims(param: Tensor, hyper: Hyper) -> tuple[int, ...]:
    """The axes of one member's values: all of ``param``'s but the first where it is stacked
    (``hyper[MEMBER_AXIS]``), else all of them."""
    return tuple(range(1 if hyper.get(MEMBER_AXIS, False) else 0, param.dim()))


def broadcast_hyper(value: Any, param: Tensor, name: str = "a per-configuration hyperparameter") -> Any:
    """Shape a hyperparameter for ``param``; the one shaping function of every engine.

    A Python value is returned as is; a tuple (``betas``) is shaped component by
    component. A 0-dim tensor is moved to the parameter's device and dtype. A 1-D
    tensor of length N (one value per configuration) is reshaped to
    ``[N, 1, ..., 1]`` so that it broadcasts along the parameter's leading
    configuration axis; a tensor already of that shape is kept (shaping twice is
    shaping once). A 1-D tensor of one value broadcasts against any parameter (the
    optimizer's compiled path hands values in that shape). ``name`` names the hyperparameter in errors.
    """
    if isinstance(value, (tuple, list)):
        return tuple(broadcast_hyper(v, param, name) for v in value)
    if not is_tensor(value):
        return value
    value = value.to(device=param.device, dtype=param.dtype if param.is_floating_point() else None)
    if value.dim() == 0:
        return value
    if value.dim() == param.dim() > 1 and value.shape[1:].numel() == 1 and value.shape[0] == param.shape[0]:
        return value
    if value.dim() == 1 and value.shape[0] == 1:
        return value.view([1] * param.dim())
    if value.dim() != 1:
        raise ValueError(f"{name} must be 1-D (one value per configuration), got shape {tuple(value.shape)}")
    if param.dim() == 0 or param.shape[0] != value.shape[0]:
        raise ValueError(
            f"{name} with {value.shape[0]} configurations needs parameters whose first "
            f"dimension is {value.shape[0]}, got a parameter of shape {tuple(param.shape)}"
        )
    return value.view(value.shape[0], *([1] * (param.dim() - 1)))


def is_schedule(value: Any) -> bool:
    """Whether a hyperparameter's value is a schedule ``step -> value`` (any callable but a tensor or a
    class); a tuple is one when any component is."""
    if isinstance(value, (tuple, list)):
        return any(is_schedule(v) for v in value)
    return callable(value) and not isinstance(value, (Tensor, type))


def add_scaled_(target: Tensor, tensor: Tensor, scale: Any) -> Tensor:
    """``target += scale * tensor`` in place, for a number or a broadcastable tensor scale (a sparse
    ``tensor``, which ``addcmul_`` does not take, is scaled first)."""
    if is_tensor(scale):
        return target.add_(tensor * scale) if tensor.is_sparse else target.addcmul_(tensor, scale)
    return target.add_(tensor, alpha=scale)


def sub_scaled_(target: Tensor, tensor: Tensor, scale: Any) -> Tensor:
    """``target -= scale * tensor`` in place: :func:`add_scaled_` with ``-scale``, without
    materializing ``-scale`` when it is a tensor (same numbers: negation is exact)."""
    if is_tensor(scale):
        return target.sub_(tensor * scale) if tensor.is_sparse else target.addcmul_(tensor, scale, value=-1)
    return target.add_(tensor, alpha=-scale)


# ---------------------------------------------------------------- validation

def _values(value: Any) -> list[float]:
    if is_tensor(value):
        return [float(v) for v in value.detach().reshape(-1).cpu().tolist()]
    return [float(value)]


def _where(value: Any, index: int) -> str:
    return f" (configuration {index})" if is_tensor(value) and value.dim() > 0 else ""


def _show(value: Any) -> str:
    if is_tensor(value):
        return repr(value.detach().cpu().tolist())
    return repr(value)


def require(name: str, value: Any, ok: Callable[[float], bool], what: str) -> None:
    """Raise ``ValueError`` naming ``name`` and the offending value unless ``ok`` holds.

    ``what`` describes the accepted range, e.g. ``"in [0, 1)"``. NaN never passes. A tensor holds one
    value (0-dim) or one per configuration (1-D ``[N]``, :func:`broadcast_hyper`); any other shape is refused.
    """
    if isinstance(value, bool) or not (is_tensor(value) or isinstance(value, (int, float))):
        raise ValueError(f"{name} must be a number or a tensor, got {value!r}")
    if is_tensor(value) and value.dim() > 1:
        raise ValueError(f"{name} must be a number, a 0-dim tensor or a 1-D tensor of one value per configuration "
                         f"[N], got a tensor of shape {tuple(value.shape)}")
    for index, v in enumerate(_values(value)):
        if math.isnan(v) or not ok(v):
            raise ValueError(f"{name} must be {what}, got {v!r}{_where(value, index)} from {name}={_show(value)}")


def non_negative(name: str, value: Any) -> None:
    require(name, value, lambda v: 0 <= v < math.inf, "a finite number >= 0")


def in_unit_interval(name: str, value: Any, closed_right: bool = False) -> None:
    if closed_right:
        require(name, value, lambda v: 0 <= v <= 1, "in [0, 1]")
    else:
        require(name, value, lambda v: 0 <= v < 1, "in [0, 1)")


def one_of(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")


def boolean(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")


def decoupled_decay_(param: Tensor, lr: Any, weight_decay: Any) -> None:
    """Decoupled weight decay θ ← θ(1 − γλ) (Loshchilov & Hutter 2019)."""
    if not is_zero(weight_decay):
        param.mul_(1 - lr * weight_decay)


def prepare_gradient(param: Tensor, grad: Tensor, hyper: Hyper) -> Tensor:
    """Apply ``maximize`` (g ← −g) and coupled L2 decay (g ← g + λθ).

    With ``decoupled_weight_decay`` the decay is applied to the parameter
    instead (see :func:`decoupled_decay_`). Never modifies ``grad`` in place.
    """
    if hyper.get("maximize", False):
        grad = -grad
    wd = hyper.get("weight_decay", 0.0)
    if not is_zero(wd) and not hyper.get("decoupled_weight_decay", False):
        grad = grad + wd * param if is_tensor(wd) else grad.add(param, alpha=wd)
    elif not is_zero(wd):
        decoupled_decay_(param, hyper["lr"], wd)
    return grad


# ---------------------------------------------------------------- cautious masking

CAUTIOUS_FLOOR = 1e-3
"""The least mean of the cautious mask a rescaling divides by (the authors' C-AdamW code, timm)."""


def cautious(update: Tensor, grad: Tensor, hyper: Hyper) -> Tensor:
    r"""The update ``u`` of a rule stepping θ ← θ − γu, masked where ``hyper["cautious"]`` is set.

    Cautious optimizers (Liang, Chen, Liu & Liu 2024, "Cautious optimizers: improving training
    with one line of code"): the components whose update disagrees in sign with the gradient g
    (after ``maximize`` and coupled L2 decay) are dropped, the others rescaled::

        φ = 1[u ⊙ g > 0];   u ← u ⊙ φ / max(mean(φ), 10⁻³)

    mean(φ) over each member's elements (:func:`member_dims`). This normalization is the
    authors' C-AdamW code's and timm's: where every sign agrees u is unchanged. The paper's
    C-Lion and pytorch-optimizer scale by n/(Σφ + 1) instead, which shrinks every update by
    n/(n + 1) (a third for a 2-element parameter). Decoupled weight decay is not masked.
    Returns a new tensor (``update`` is not changed), or ``update`` itself when not cautious.
    """
    if not hyper.get("cautious", False):
        return update
    mask = (update * grad > 0).to(update.dtype)
    dims = member_dims(update, hyper)
    share = mask.mean(dim=dims, keepdim=True) if dims else mask
    return update * mask / share.clamp(min=CAUTIOUS_FLOOR)
