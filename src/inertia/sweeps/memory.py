"""How much memory a sweep's member needs, how much there is, and so how many configurations a stack holds."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .._grid import ram_budget


def member_bytes(job: Any) -> int:
    """Rough bytes one member of ``job`` (a :class:`~inertia.sweeps.engine.Job`) needs: parameters, gradient
    and rule state (6 copies), and the activations of a training batch (4 per value: saved for backward, and
    their gradients) and of an evaluation. An MLP's activations are its layers' widths; any other model's are
    counted on one example (:func:`activation_count`)."""
    n_params = sum(p.numel() for p in job.template.parameters())
    size = torch.finfo(job.dtype).bits // 8
    if job.backend == "batched":
        values = sum(p.shape[0] for p in job.template.parameters() if p.dim() >= 2) or 1
    else:
        values = activation_count(job.template, job.x[:1])
    n_eval = max(len(split.val) for split in job.splits)
    if job.x_test is not None:
        n_eval = max(n_eval, len(job.x_test))
    return size * (6 * n_params + 4 * job.batch_size * values + 2 * n_eval * values)


def activation_count(model: nn.Module, example: Tensor) -> int:
    """Values the leaf modules of ``model`` output for the one-example batch ``example`` (a forward in
    eval mode without gradients, counted by forward hooks): a convolution counts channels x height x width."""
    count = 0

    def add(module: nn.Module, inputs: Any, output: Any) -> None:
        nonlocal count
        count += _numel(output)

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(add) for m in leaves]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return max(count, 1)


def _numel(output: Any) -> int:
    """Values in a module's output: a tensor, or tensors in tuples, lists and dicts (an LSTM's)."""
    if isinstance(output, Tensor):
        return output.numel()
    if isinstance(output, (tuple, list)):
        return sum(map(_numel, output))
    return sum(map(_numel, output.values())) if isinstance(output, dict) else 0


def default_memory_budget(device: str) -> int:
    """Bytes the sweep may use: 60 % of free GPU memory, or 25 % of available RAM (``MemAvailable`` of
    ``/proc/meminfo``; 2 GiB where there is none)."""
    if str(device).startswith("cuda") and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free * 0.6)
    return ram_budget()


def configs_per_chunk(job: Any, memory_budget: int | None = None) -> int:
    """How many configurations (each with all its seeds and folds) fit in memory at once (at least 1)."""
    budget = default_memory_budget(job.device) if memory_budget is None else int(memory_budget)
    per_config = member_bytes(job) * job.members_per_config
    return max(1, budget // per_config)
