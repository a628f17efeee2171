"""How many threads a piece of work gets: from its size, the cores this process may use and how
busy they are, never more than asked.

torch starts one intra-op thread per core, and its OpenMP threads spin while they wait for the next
parallel region. For the small products of a small model (a 40-100-100-10 MLP on batches of 100)
the threads gain nothing, and on a machine whose other processes keep the cores busy the spinning
threads fight them for the cores: a 1200-step ``inertia train`` took 176 s with torch's default
threads and 3.4 s with one on a busy 2-core machine. So work below :data:`SMALL_FLOPS` per step runs
on one thread, and larger work on at most the cores that are free (cores less the load average of
the others, at least one). ``OMP_NUM_THREADS`` and an explicit ``--threads`` are always honoured.
"""
from __future__ import annotations

import os
from typing import Callable

SMALL_FLOPS = 5e7
"""Below this many floating-point operations a step (forward and backward), one thread is fastest."""


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least one."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def free_cores(load: Callable[[], float] = lambda: os.getloadavg()[0]) -> int:
    """Usable cores less those the rest of the machine keeps busy (the whole part of the 1-minute load
    average: a recent short job leaves a fraction, which is no busy core), at least one."""
    try:
        busy = load()
    except OSError:
        busy = 0.0
    return max(1, usable_cores() - int(busy))   # whole processes: a core counts busy at load 1


def choose_threads(flops_per_step: float, requested: int | None = None, *,
                   environ: dict | None = None, free: Callable[[], int] = free_cores) -> int:
    """The intra-op threads for work of ``flops_per_step``: ``requested`` (``--threads``) if given, else
    ``OMP_NUM_THREADS`` if set, else one for small work and the free cores for large work."""
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise ValueError(f"threads must be a positive integer, got {requested!r}")
        return requested
    environ = os.environ if environ is None else environ
    if environ.get("OMP_NUM_THREADS", "").strip().isdigit() and int(environ["OMP_NUM_THREADS"]) > 0:
        return int(environ["OMP_NUM_THREADS"])
    if flops_per_step < SMALL_FLOPS:
        return 1
    return min(free(), usable_cores())


def step_flops(model, batch) -> float:
    """Floating-point operations of one training step of ``model`` on ``batch``: the products of its
    ``Linear``, convolution, recurrent and attention layers, read from their shapes in one forward (hooks;
    nothing else is imported or traced), times 3 for forward and backward. Eval mode, no gradient and the
    random state restored: counting changes no statistic and no later draw."""
    import math

    import torch
    from torch import nn

    total = 0.0

    def count(module: nn.Module, inputs: tuple, output: object) -> None:
        nonlocal total
        out = output[0] if isinstance(output, tuple) else output
        if isinstance(module, nn.Linear):
            total += 2.0 * out.numel() * module.in_features
        elif isinstance(module, nn.modules.conv._ConvNd):
            total += 2.0 * out.numel() * module.in_channels // module.groups * math.prod(module.kernel_size)
        elif isinstance(module, (nn.RNNBase, nn.MultiheadAttention)):
            tokens = out.numel() / out.shape[-1]
            total += 2.0 * tokens * sum(p.numel() for p in module.parameters(recurse=False))

    kinds = (nn.Linear, nn.modules.conv._ConvNd, nn.RNNBase, nn.MultiheadAttention)
    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, kinds)]
    training, rng = model.training, torch.get_rng_state()
    try:
        model.eval()
        with torch.no_grad():
            model(batch)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(training)
        torch.set_rng_state(rng)
    return 3.0 * total


def use_threads(count: int) -> int:
    """Set torch's intra-op threads to ``count``; returns the previous count (to restore it)."""
    import torch

    previous = torch.get_num_threads()
    if count != previous:
        torch.set_num_threads(count)
    return previous


__all__ = ["SMALL_FLOPS", "usable_cores", "free_cores", "choose_threads", "step_flops", "use_threads"]
