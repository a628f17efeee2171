"""The optimizer engine: any :class:`~inertia.rules.Rule` as a ``torch.optim.Optimizer``.

Param groups, closures, ``state_dict``/``load_state_dict``, hooks and torch's own
``lr_scheduler`` classes work as with ``torch.optim``, and state dicts move both ways
between inertia's SGD, Adam, AdamW, NAdam, RMSprop and torch.optim's (missing group
keys are filled from the optimizer's defaults on load; no others are added). A hyperparameter may be a
Python number, a 0-dim tensor, or a 1-D tensor of length N, one value per
configuration: then the group's parameters must be stacked ``[N, ...]`` with N members
(:func:`inertia.stack` marks them, :func:`inertia.stacked.mark` marks tensors stacked
another way) and member i uses the i-th value; on a parameter that is not stacked it is
a ``ValueError``, never a reading of its rows as configurations. Tuple hyperparameters
(``betas``) are tuples of such values. One optimizer holds stacked parameters of one
member count.

The optimizer never changes what a user's parameters are: each keeps its own storage,
and ``optimizer.state[p]`` is the state the step reads and writes (``step`` is a
per-parameter tensor, of torch.optim's dtype). Complex parameters are updated as
``torch.view_as_real`` (as torch.optim does); their state is stored complex.

The parts: :mod:`~inertia.optim.classes` (one class per registered name, :func:`make_optimizer`),
:mod:`~inertia.optim.optimizer` (:class:`RuleOptimizer`, the orchestration),
:mod:`~inertia.optim.paths` (the execution paths, ``execution=``: ``"auto"`` takes torch's fused kernel
where it gives torch.optim's numbers, else the simple path; ``"simple"``, ``"fused"``, ``"compiled"``),
:mod:`~inertia.optim.guard` (the non-finite guard), :mod:`~inertia.optim.lookahead`.

Non-finite gradients (``nonfinite=``): every step computes, on the device, one flag (some gradient
holds NaN or inf); when it is set the whole step is skipped on the device: parameters and state are left
untouched. ``"skip"`` counts such steps on the device (``skipped_steps`` reads the count). ``"raise"``
(default) raises :class:`NonFiniteGradientError` at the next call of ``step()`` or ``zero_grad()`` after
the flag has reached the host, naming the first parameter whose gradient is then non-finite
(``zero_grad()`` looks before it clears them); ``check_nonfinite()`` waits for the flags and raises at
once. On the fast paths ``step()`` reads nothing from the device; the simple path reads the flag to skip.
Unstacked parameters' new values are not checked: that would be one more read of every parameter on the
fused path.

Stacked parameters are guarded per member: the rule runs out of place, and member i
takes its new parameters and state only if its gradients and new values (parameters
and state, every stacked parameter) are all finite, and no unstacked gradient is
non-finite; otherwise its parameters and state are left untouched, and the other
members step exactly as they would alone. State shared by the members (the step
counter, 0-dim entries) advances when any member steps, so after a skipped step a
rule that reads the step (Adam's bias corrections) counts it for that member too; an
entry the rule creates at a step a member skips starts at zero for that member.
``skipped_steps`` is then an ``[n]`` count, one per member, and the error of
``"raise"`` names the members and a parameter. ``step()`` reads nothing from the
device on this path.
"""
from __future__ import annotations

from .classes import (
    SGD,
    TORCH_FLAGS,
    Adam,
    AdEMAMix,
    AdamW,
    AggMo,
    Lion,
    Momentum,
    Muon,
    NAdam,
    PresetOptimizer,
    QHM,
    RMSprop,
    ScheduleFreeSGD,
    make_optimizer,
    optimizer_class,
)
from .guard import NONFINITE_POLICIES, NonFiniteGradientError, NonFiniteGuard
from .lookahead import Lookahead
from .optimizer import RuleOptimizer
from .paths import EXECUTIONS, FUSED_KERNELS

__all__ = [
    "RuleOptimizer", "PresetOptimizer", "optimizer_class", "make_optimizer", "NonFiniteGradientError",
    "NonFiniteGuard", "NONFINITE_POLICIES", "EXECUTIONS", "FUSED_KERNELS", "TORCH_FLAGS", "Lookahead",
    "SGD", "Momentum", "Adam", "AdamW", "NAdam", "RMSprop", "QHM", "AggMo", "ScheduleFreeSGD", "Muon", "Lion",
    "AdEMAMix",
]
