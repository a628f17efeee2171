r"""Schedules: a schedule is a function of the step, ``schedule(t) -> value`` for t = 0, 1, 2, ...

As in optax, a schedule is a pure function of the step count, so it can drive
any hyperparameter (learning rate, momentum, Adam's betas, weight decay) and its
only state is the step. Base values may be Python numbers or tensors of shape
``[N]`` (one value per configuration, as the sweep engine uses): the shape of
the step-dependent factor is scalar, so ``cosine(torch.tensor([0.1, 0.2]), 100)(t)``
is a tensor of shape ``[2]``.

Step t counts optimizer steps already taken: ``schedule(0)`` is the value used
for the first update. This matches torch's ``lr_scheduler`` classes, whose
``last_epoch`` is t (``StepLR``, ``ExponentialLR``, ``CosineAnnealingLR``,
``CosineAnnealingWarmRestarts``, ``LinearLR``, ``OneCycleLR`` are reproduced
exactly, see tests/test_schedules.py). Past the end of a finite schedule the
final value is held.

:class:`HyperScheduler` applies schedules to the ``param_groups`` of any
``torch.optim.Optimizer``.

Schedules: :func:`constant`, :func:`step_decay`, :func:`exponential`,
:func:`cosine` (optional warm restarts), :func:`linear` (warm-up), :func:`join`
and :func:`warmup_cosine` (composition), :func:`one_cycle` and
:func:`one_cycle_momentum` (Smith 2018), :func:`sutskever_ramp` (Sutskever et
al. 2013), :func:`demon` (Chen et al.), :func:`half_life_warmup` and
:func:`ademamix_warmups` (AdEMAMix's warm-ups, Pagliardini et al. 2024).

Modules: :mod:`~inertia.schedules.functions` (the schedules),
:mod:`~inertia.schedules.specs` (schedules named as text, built once the base value
and the run's length are known), :mod:`~inertia.schedules.scheduler`
(:class:`HyperScheduler`) with :mod:`~inertia.schedules.checks` (what it checks before
it writes a value), :mod:`~inertia.schedules.per_configuration` (how torch's own
schedulers meet per-configuration values).
"""
from .functions import (
    Schedule,
    Value,
    as_schedule,
    constant,
    cosine,
    ademamix_warmups,
    demon,
    half_life_warmup,
    exponential,
    join,
    linear,
    one_cycle,
    one_cycle_momentum,
    step_decay,
    sutskever_ramp,
    warmup_cosine,
)
from .per_configuration import PerConfiguration, guard_per_configuration
from .scheduler import HyperScheduler
from .specs import ScheduleSpec, as_spec, check_spec, from_spec, parse_spec

__all__ = [
    "Schedule",
    "constant",
    "step_decay",
    "exponential",
    "cosine",
    "linear",
    "join",
    "warmup_cosine",
    "one_cycle",
    "one_cycle_momentum",
    "sutskever_ramp",
    "demon",
    "half_life_warmup",
    "ademamix_warmups",
    "HyperScheduler",
    "as_schedule",
    "ScheduleSpec",
    "parse_spec",
    "from_spec",
    "check_spec",
]

