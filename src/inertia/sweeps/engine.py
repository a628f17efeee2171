"""The vectorized trainer: N configurations x K folds trained at once.

Every parameter is stacked along a leading *member* axis ``[M, ...]`` (member =
one configuration on one fold, ordered fold-major). The update is the rule's own
``update`` called on the stacked tensors with ``[M]``-tensor hyperparameters
(:func:`inertia.rules.broadcast_hyper`), exactly as :class:`inertia.RuleOptimizer`
does for one model; the maths is never written here.

Forward/backward for all members at once, two interchangeable paths:

- ``"batched"`` (MLPs made of ``nn.Linear`` + ``nn.ReLU``): every member of a fold
  sees the same input batch, so the first layer of all members of a fold is one
  GEMM ``x @ [W_1 ... W_m]``; the later layers are ``baddbmm`` over members.
- ``"vmap"`` (any ``nn.Module`` without buffers): ``torch.func.functional_call``
  under ``torch.vmap``.

The loss is the sum over members of each member's mean loss, so one backward
gives every member its own gradient. Members never mix: a member that diverges
(NaN/inf, or loss above a threshold) is removed from the stack at that step and
the others go on unchanged.

Common random numbers: the minibatch at step ``t`` depends only on
``(seed, fold, t)``, the same for every configuration, and is recomputed, not
drawn from a stateful generator (so a resumed run sees the same batches).
"""
from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core import MemberHyper, Stack, validate_schedules, with_schedules
from .gemm import BatchedGemm, backend_for as gemm_backend_for

# ----------------------------------------------------------------- folds and batches


def make_folds(n: int, folds: int, seed: int, holdout: float = 0.2) -> list[tuple[Tensor, Tensor]]:
    """Split ``range(n)`` into ``folds`` (train, validation) index pairs.

    ``folds >= 2``: K-fold cross-validation over a seeded permutation; the
    validation parts partition the data. ``folds == 1``: one seeded holdout of
    ``holdout`` of the examples. Train and validation never share an index.
    """
    if folds < 1:
        raise ValueError(f"folds must be >= 1, got {folds}")
    g = torch.Generator().manual_seed(int(seed) * 7919 + 17)
    perm = torch.randperm(n, generator=g)
    if folds == 1:
        n_val = max(1, int(round(n * holdout)))
        if n - n_val < 1:
            raise ValueError(f"not enough examples ({n}) for a validation holdout")
        return [(perm[n_val:].sort().values, perm[:n_val].sort().values)]
    if n < folds:
        raise ValueError(f"{folds} folds need at least {folds} training examples, got {n}")
    parts = torch.tensor_split(perm, folds)
    out = []
    for k in range(folds):
        val = parts[k]
        train = torch.cat([parts[j] for j in range(folds) if j != k])
        out.append((train.sort().values, val.sort().values))
    return out


def batch_at(train_idx: Tensor, step: int, batch_size: int, seed: int, fold: int) -> Tensor:
    """Indices of the minibatch at 0-based ``step``: epoch-wise reshuffled, last partial batch dropped."""
    n = len(train_idx)
    b = min(batch_size, n)
    epoch, i = divmod(step, n // b)
    return train_idx.index_select(0, _epoch_order(n, seed, fold, epoch)[i * b:(i + 1) * b])


@functools.lru_cache(maxsize=16)
def _epoch_order(n: int, seed: int, fold: int, epoch: int) -> Tensor:
    """The shuffled order of epoch ``epoch`` (a pure function of its arguments; cached, never mutated)."""
    g = torch.Generator().manual_seed((int(seed) * 1_000_003 + fold * 10_007 + epoch) % (2**63 - 1))
    return torch.randperm(n, generator=g)


# ----------------------------------------------------------------- forward paths


def mlp_layout(model: nn.Module) -> list[str] | None:
    """Parameter names of a module the batched path can run, else None.

    The batched path runs the chain Linear, ReLU, Linear, ..., Linear (biases on) of the
    module's leaves in registration order. A module qualifies only if it is built of
    those leaves and its own forward, on a random input with random parameters, gives
    the chain's output: a residual connection or another call order does not.
    """
    leaves = [m for m in model.modules() if len(list(m.children())) == 0]
    if not leaves or any(not isinstance(m, (nn.Linear, nn.ReLU)) for m in leaves):
        return None
    kinds = "".join("L" if isinstance(m, nn.Linear) else "R" for m in leaves)
    if kinds[0] != "L" or kinds[-1] != "L" or "RR" in kinds or "LL" in kinds:
        return None
    linears = [m for m in leaves if isinstance(m, nn.Linear)]
    if any(m.bias is None for m in linears) or list(model.buffers()):
        return None
    if any(a.out_features != b.in_features for a, b in zip(linears, linears[1:])):
        return None
    named = list(model.named_parameters())
    chain = [p for m in linears for p in (m.weight, m.bias)]
    if len(named) != len(chain) or any(p is not q for (_, p), q in zip(named, chain)):
        return None
    names = [n for n, _ in named]
    return names if _forward_is_chain(model, names, linears) else None


def _forward_is_chain(model: nn.Module, names: list[str], linears: list[nn.Linear]) -> bool:
    """Does ``model``'s forward compute the Linear/ReLU chain? Checked in float64 on CPU with random
    parameters and input (a private generator: the global random state is left alone)."""
    from torch.func import functional_call

    g = torch.Generator().manual_seed(0)
    params = [torch.randn(p.shape, generator=g, dtype=torch.float64) for _, p in model.named_parameters()]
    x = torch.randn(5, linears[0].in_features, generator=g, dtype=torch.float64)
    expected = x
    for i in range(len(linears)):
        expected = F.linear(expected, params[2 * i], params[2 * i + 1])
        if i < len(linears) - 1:
            expected = expected.relu()
    try:
        with torch.no_grad():
            out = functional_call(model, dict(zip(names, params)), (x,))
    except Exception:  # a forward that cannot even take the chain's input is not the chain
        return False
    return (isinstance(out, Tensor) and out.shape == expected.shape
            and bool(torch.allclose(out, expected, rtol=1e-9, atol=1e-9)))


Groups = Sequence[tuple[Tensor, int, int]]  # (input batch [B, f], first member, end member)
ApplyGrad = Callable[[int, Tensor], None]   # (parameter index, its finished gradient [M, ...])


class _MLPPlan:
    """Buffers of one stack's batched step and the views of them and of the parameters, made once.

    A step of a 64-member stack writes about a dozen 1 MB intermediates. Allocated
    afresh every step, glibc hands that memory back to the kernel and takes it
    again, so every step paid ~2000 page faults (measured: up to 1.6x slower).
    Views (reshapes, transposes, per-fold slices) are made once too: every call
    into torch costs microseconds, and a GIL hand-off when stacks train side by side
    in threads (fewer calls: 6 % faster steps, measured).
    """

    def __init__(self, params: Sequence[Tensor], rows: tuple[tuple[int, int], ...], batch: int):
        self.params = list(params)
        self.rows, self.batch = rows, batch
        w0 = params[0]
        self.gemm = BatchedGemm(w0.device, w0.dtype)
        m_all = w0.shape[0]
        self.z = [self._empty(m_all, params[2 * i].shape[1], batch) for i in range(len(params) // 2)]
        self.bias = [params[2 * i + 1].unsqueeze(2) for i in range(len(self.z))]
        self.first = [(self.bias[0][start:end], w0[start:end], self.z[0][start:end])   # per fold: bias, weight,
                      for start, end in rows]                                         # output of layer 1
        self._backward: tuple | None = None

    def _empty(self, *shape: int) -> Tensor:
        return torch.empty(shape, dtype=self.params[0].dtype, device=self.params[0].device)

    def fits(self, params: Sequence[Tensor], rows: tuple[tuple[int, int], ...], batch: int) -> bool:
        return (rows == self.rows and batch == self.batch and len(params) == len(self.params)
                and all(a is b for a, b in zip(params, self.params)))

    def backward_buffers(self) -> tuple:
        """Gradients, input-gradient outputs, -1s and the per-fold views of layer 1, made on first use."""
        if self._backward is None:
            z, params = self.z, self.params
            input_grad: list[Tensor | None] = [None] * len(z)
            for i in range(len(z) - 1, 0, -1):
                # the input gradient of layer i (shape of z[i-1]) goes where z[i] was: dead by then (if it fits)
                need = z[i - 1].numel()
                room = z[i] if z[i].numel() >= need else self._empty(need)
                input_grad[i] = room.view(-1)[:need].view(z[i - 1].shape)
            minus_one = torch.full((z[0].shape[0], 1, self.batch), -1.0, dtype=z[0].dtype, device=z[0].device)
            grads = [torch.empty_like(p) for p in params]
            first = [(grads[0][start:end],                                    # per fold: weight gradient,
                      None if len(z) == 1 else input_grad[1][start:end])      # input of the layer above
                     for start, end in self.rows]
            self._backward = (grads, input_grad, minus_one, first)
        return self._backward


class BatchedMLP:
    """Forward and hand-written backward of stacked MLPs (``nn.Linear`` + ``nn.ReLU``), in
    feature-major layout: activations ``[M, features, B]``, all contiguous.

    Layer 1 of all members of a fold multiplies their shared batch; every layer is a
    batched GEMM over members (:mod:`.gemm`: torch's, or OpenBLAS's AVX-512 kernels
    where MKL would not use them). Same maths as
    autograd through ``nn.Linear`` + ``nn.ReLU`` + ``cross_entropy`` (checked
    against separately trained models). :meth:`backward` hands each gradient to
    ``apply`` as soon as it is final and its parameter no longer needed, so the
    update reads it while it is still in cache.
    """

    def __init__(self) -> None:
        self._plan: _MLPPlan | None = None
        self._pending: tuple[_MLPPlan, Sequence[Tensor], Tensor, Tensor] | None = None

    def _plan_for(self, params: Sequence[Tensor], groups: Groups) -> _MLPPlan:
        rows = tuple((start, end) for _, start, end in groups)
        batch = groups[0][0].shape[0]
        if self._plan is None or not self._plan.fits(params, rows, batch):
            self._plan = _MLPPlan(params, rows, batch)
        return self._plan

    def _forward(self, plan: _MLPPlan, params: Sequence[Tensor], groups: Groups) -> Tensor:
        gemm = plan.gemm
        for (x, _, _), (bias, weight, out) in zip(groups, plan.first):
            gemm(weight, x, out.copy_(bias.expand_as(out)), trans_b=True, beta=1.0)
        for i in range(1, len(plan.z)):
            plan.z[i - 1].relu_()
            gemm(params[2 * i], plan.z[i - 1], plan.z[i].copy_(plan.bias[i].expand_as(plan.z[i])), beta=1.0)
        return plan.z[-1]

    def logits(self, params: Sequence[Tensor], groups: Groups) -> Tensor:
        """Logits ``[M, B, C]`` (a view of this object's buffer: valid until its next call)."""
        return self._forward(self._plan_for(params, groups), params, groups).transpose(1, 2)

    def loss(self, params: Sequence[Tensor], groups: Groups, targets: Tensor) -> Tensor:
        """Per-member mean cross-entropy ``[M]`` (``targets`` ``[M, B]``); :meth:`backward` may follow."""
        plan = self._plan_for(params, groups)
        logp = torch.log_softmax(self._forward(plan, params, groups), dim=1)
        self._pending = (plan, groups, targets, logp)
        return F.nll_loss(logp, targets, reduction="none").mean(1)

    def backward(self, apply: ApplyGrad) -> None:
        """Gradients of the last :meth:`loss`, top layer first, each passed to ``apply(index, grad)``."""
        assert self._pending is not None, "backward() needs a loss() first"
        plan, groups, targets, logp = self._pending
        self._pending = None
        grads, input_grad, minus_one, first = plan.backward_buffers()
        batch, gemm = plan.batch, plan.gemm
        dz = logp.exp_()                                   # (softmax - one_hot) / B
        dz.scatter_add_(1, targets.unsqueeze(1), minus_one)
        dz.div_(batch)
        for i in range(len(plan.z) - 1, 0, -1):
            gemm(dz, plan.z[i - 1], grads[2 * i], trans_b=True)
            torch.sum(dz, 2, out=grads[2 * i + 1])
            da = gemm(plan.params[2 * i], dz, input_grad[i], trans_a=True)
            apply(2 * i, grads[2 * i])
            apply(2 * i + 1, grads[2 * i + 1])
            dz = torch.ops.aten.threshold_backward.grad_input(da, plan.z[i - 1], 0, grad_input=da)  # ReLU'
        for (x, start, end), (grad, rows) in zip(groups, first):
            gemm(dz[start:end] if rows is None else rows, x, grad)
        apply(0, grads[0])
        apply(1, torch.sum(dz, 2, out=grads[1]))


class AutogradStep:
    """The same interface through autograd, for any model: a sum of per-member mean losses
    gives each member its own gradient."""

    def __init__(self, forward: Callable[[Sequence[Tensor], Groups], Tensor]):
        self.forward = forward
        self._pending: tuple[list[Tensor], Tensor] | None = None

    def logits(self, params: Sequence[Tensor], groups: Groups) -> Tensor:
        return self.forward(params, groups)

    def loss(self, params: Sequence[Tensor], groups: Groups, targets: Tensor) -> Tensor:
        with torch.enable_grad():
            leaves = [p.detach().requires_grad_(True) for p in params]
            logits = self.forward(leaves, groups)
            m, b, c = logits.shape
            losses = F.cross_entropy(logits.reshape(m * b, c), targets.reshape(m * b),
                                     reduction="none").view(m, b).mean(1)
            self._pending = (leaves, losses.sum())
        return losses.detach()

    def backward(self, apply: ApplyGrad) -> None:
        assert self._pending is not None, "backward() needs a loss() first"
        leaves, total = self._pending
        self._pending = None
        for i, grad in enumerate(torch.autograd.grad(total, leaves)):
            apply(i, grad)


def make_vmap_forward(model: nn.Module, names: Sequence[str]) -> Callable[[Sequence[Tensor], Groups], Tensor]:
    """Forward of stacked copies of ``model`` through ``functional_call`` under ``vmap``."""
    from torch.func import functional_call, vmap

    def one(p: tuple[Tensor, ...], x: Tensor) -> Tensor:
        return functional_call(model, dict(zip(names, p)), (x,))

    batched = vmap(one, in_dims=(0, 0))

    def forward(params: Sequence[Tensor], groups: Groups) -> Tensor:
        xs = [x.unsqueeze(0).expand(end - start, *x.shape) for x, start, end in groups]
        x = xs[0] if len(xs) == 1 else torch.cat(xs)
        return batched(tuple(params), x)

    return forward


# ----------------------------------------------------------------- the job


class Split(NamedTuple):
    """One (seed, fold) pair: where its members' initialization, batches and validation come from."""

    seed: int            # initialization, batch order and fold assignment
    fold: int
    train: Tensor        # indices into the training pool (on the job's device)
    val: Tensor
    cpu_train: Tensor    # the same, on the CPU (the batches are drawn there)


@dataclass
class Job:
    """Everything the engine needs that is the same for every member."""

    model_factory: Callable[[], nn.Module]
    x: Tensor                      # training pool [n, f] (folds are drawn from it)
    y: Tensor                      # [n]
    folds: list[tuple[Tensor, Tensor]]
    preset: Any                    # inertia.rules.Preset
    fixed: dict[str, Any]          # hyperparameters shared by every configuration
    steps: int
    batch_size: int
    seed: int = 0
    x_test: Tensor | None = None
    y_test: Tensor | None = None
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    backend: str = "auto"          # auto | batched | vmap
    diverge_factor: float = 10.0   # loss > factor x (first-step loss) counts as diverged
    diverge_above: float | None = None  # absolute threshold instead of the factor
    curve_points: int = 200
    schedules: dict[str, Any] = field(default_factory=dict)  # name -> schedule spec (inertia.core.with_schedules)
    eval_every: int = 0            # validation and test metrics every this many steps (0: at the end only)
    seeds: int = 1                 # seed s = seed + s: its own initialization, batch order and folds

    def __post_init__(self) -> None:
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or self.seeds < 1:
            raise ValueError(f"seeds must be an integer >= 1, got {self.seeds!r}")
        self.templates = []
        for s in range(self.seeds):
            torch.manual_seed(self.seed + s)
            self.templates.append(self.model_factory().to(device=self.device, dtype=self.dtype))
        self.template = self.templates[0]
        self.names = [n for n, _ in self.template.named_parameters()]
        if list(self.template.buffers()):
            raise ValueError("sweeps need models without buffers (e.g. no BatchNorm running statistics)")
        layout = mlp_layout(self.template)
        backend = self.backend
        if backend == "auto":
            backend = "batched" if layout is not None else "vmap"
        if backend == "batched" and layout is None:
            raise ValueError("the batched backend needs an MLP of nn.Linear and nn.ReLU layers")
        if backend not in ("batched", "vmap"):
            raise ValueError(f"backend must be auto, batched or vmap, got {self.backend!r}")
        self.backend = backend
        self._vmap_forward = make_vmap_forward(self.template, self.names) if backend == "vmap" else None
        self.x = self.x.to(self.device, self.dtype)
        self.y = self.y.to(self.device)
        if self.x_test is not None:
            self.x_test = self.x_test.to(self.device, self.dtype)
            self.y_test = self.y_test.to(self.device)
        self.folds = [(t.to(self.device), v.to(self.device)) for t, v in self.folds]
        self.splits = [Split(self.seed + s, k, t.to(self.device), v.to(self.device), t.cpu())
                       for s in range(self.seeds)
                       for k, (t, v) in enumerate(self.folds if s == 0 else
                                                  make_folds(len(self.y), len(self.folds), self.seed + s))]

    @property
    def n_folds(self) -> int:
        return len(self.folds)

    @property
    def members_per_config(self) -> int:
        """Members that train each configuration: one per (seed, fold)."""
        return len(self.splits)

    @property
    def eval_steps(self) -> list[int]:
        """The steps after which every member's validation and test metrics are recorded (the last is ``steps``)."""
        every = int(self.eval_every)
        return [*(range(every, self.steps, every) if every > 0 else ()), self.steps]

    @property
    def matmul(self) -> str:
        """What does the batched MLP's matrix products: ``"openblas"`` or ``"torch"`` (see :mod:`.gemm`)."""
        return gemm_backend_for(self.device, self.dtype) if self.backend == "batched" else "torch"

    def make_step(self) -> BatchedMLP | AutogradStep:
        """A fresh forward/backward of this job's backend (it keeps buffers: one per stack)."""
        return BatchedMLP() if self.backend == "batched" else AutogradStep(self._vmap_forward)

    def member_bytes(self) -> int:
        """Rough bytes one member needs (parameters, gradient, rule state, activations)."""
        n_params = sum(p.numel() for p in self.template.parameters())
        size = torch.finfo(self.dtype).bits // 8
        widths = sum(p.shape[0] for p in self.template.parameters() if p.dim() >= 2) or 1
        if self.backend == "vmap":
            widths *= 4  # unknown model: be generous with activations
        n_eval = max(len(split.val) for split in self.splits)
        if self.x_test is not None:
            n_eval = max(n_eval, len(self.x_test))
        return size * (6 * n_params + 4 * self.batch_size * widths + 2 * n_eval * widths)


def default_memory_budget(device: str) -> int:
    """Bytes the sweep may use: 60 % of free GPU memory, or 25 % of available RAM."""
    if str(device).startswith("cuda") and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free * 0.6)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // 4
    except OSError:
        pass
    return 2 * 1024**3


def configs_per_chunk(job: Job, memory_budget: int | None = None) -> int:
    """How many configurations (each with all its folds) fit in memory at once (at least 1)."""
    budget = default_memory_budget(job.device) if memory_budget is None else int(memory_budget)
    per_config = job.member_bytes() * job.members_per_config
    return max(1, budget // per_config)


# ----------------------------------------------------------------- the members


class Members:
    """The stacked state of one chunk of configurations, trained together step by step.

    ``configs`` is a list of dicts of per-configuration hyperparameters (numbers);
    ``keys`` identifies each configuration to the caller (e.g. an Optuna trial number).
    """

    def __init__(self, job: Job, configs: Sequence[dict[str, float]], keys: Sequence[Any]):
        if not configs:
            raise ValueError("no configurations to train")
        self.job = job
        self.keys = list(keys)
        self.configs = [dict(c) for c in configs]
        n, k = len(configs), job.members_per_config
        # member m: split m // n (job.splits: seed-major, then fold), configuration m % n
        self.config_of = torch.arange(n).repeat(k)
        self.split_of = torch.arange(k).repeat_interleave(n)
        self.step = 0
        self.swept = sorted({name for c in configs for name in c})
        self.stack = Stack(job.preset.rule, [
            torch.cat([p.detach().unsqueeze(0).expand(n, *p.shape) for p in (
                list(job.templates[split.seed - job.seed].parameters())[i] for split in job.splits)]).contiguous()
            for i in range(len(job.names))
        ], member_hyper(job, [self.configs[int(c)] for c in self.config_of], self.swept))
        self.curves = torch.full((n * k, job.steps), float("nan"), dtype=torch.float64)
        self.first_loss: Tensor | None = None
        self.alive = torch.ones(n * k, dtype=torch.bool)     # per original member
        self.diverged_step: dict[int, int] = {}               # config -> step (1-based)
        self.pruned: dict[int, int] = {}                      # config -> step
        # val loss, val accuracy, test loss, test accuracy of each original member at each of job.eval_steps
        self.history = torch.full((len(METRIC_NAMES), n * k, len(job.eval_steps)), math.nan, dtype=torch.float64)
        self._point = {s: i for i, s in enumerate(job.eval_steps)}
        self._split_rows: list[tuple[int, int, int]] | None = None
        self._limit: Tensor | None = None   # divergence threshold per stack row
        self._step = job.make_step()
        self._eval_step = job.make_step()

    @property
    def params(self) -> list[Tensor]:
        return self.stack.params

    @property
    def live(self) -> Tensor:
        """The original member index of each stack row."""
        return self.stack.rows

    # -- structure ---------------------------------------------------------
    def split_rows(self) -> list[tuple[int, int, int]]:
        """``(split, first row, end row)`` of every split present in the stack (cached until rows leave)."""
        if self._split_rows is None:
            splits = self.split_of[self.live]
            out, start = [], 0
            for g in range(self.job.members_per_config):
                count = int((splits == g).sum())
                if count:
                    out.append((g, start, start + count))
                start += count
            self._split_rows = out
        return self._split_rows

    @property
    def done(self) -> bool:
        return self.step >= self.job.steps or len(self.live) == 0

    def remove(self, rows: Tensor) -> None:
        """Drop stack rows (diverged or pruned members); the rest is copied unchanged."""
        if len(rows) == 0:
            return
        keep = torch.ones(len(self.live), dtype=torch.bool)
        keep[rows] = False
        self.alive[self.live[~keep]] = False
        self.stack.keep(keep.nonzero().squeeze(1))
        self._split_rows = None
        self._limit = None

    def prune_configs(self, configs: Sequence[int]) -> None:
        configs = set(int(c) for c in configs)
        rows = torch.tensor([i for i, c in enumerate(self.config_of[self.live].tolist()) if c in configs], dtype=torch.long)
        for c in configs:
            self.pruned.setdefault(c, self.step)
        self.remove(rows)

    # -- training ----------------------------------------------------------
    @torch.no_grad()
    def train_step(self) -> None:
        """One step of every live member: loss, divergence check, then the rule's update of each
        parameter as soon as the backward pass has its gradient."""
        job = self.job
        t = self.step
        rows = self.split_rows()
        batches = [batch_at(job.splits[g].cpu_train, t, job.batch_size, job.splits[g].seed, job.splits[g].fold)
                   for g, _, _ in rows]
        if job.x.device.type != "cpu":
            batches = [b.to(job.x.device) for b in batches]
        groups = [(job.x.index_select(0, b), start, end) for b, (_, start, end) in zip(batches, rows)]
        if len(rows) == 1:
            target = job.y.index_select(0, batches[0]).expand(len(self.live), -1)
        else:
            target = torch.cat([job.y.index_select(0, b).expand(end - start, -1)
                                for b, (_, start, end) in zip(batches, rows)])
        losses = self._step.loss(self.params, groups, target)
        values = losses.to("cpu", torch.float64)
        self.curves[self.live, t] = values
        if self.first_loss is None:
            self.first_loss = values.clone()
            self._first_by_member = torch.full((len(self.alive),), float("nan"), dtype=torch.float64)
            self._first_by_member[self.live] = values
        within = values.abs() <= self._divergence_limit()    # NaN and +-inf compare False
        kept = None
        if not bool(within.all()):
            for c in self.config_of[self.live[~within]].tolist():
                self.diverged_step.setdefault(int(c), t + 1)
            # a configuration diverged on one fold is diverged: drop all its folds
            dead = torch.tensor(sorted(self.diverged_step))
            gone = torch.isin(self.config_of[self.live], dead)
            kept = (~gone).nonzero().squeeze(1).to(job.device)
            self.remove(gone.nonzero().squeeze(1))   # the backward below still sees every row
        stack = self.stack
        stack.begin_step()

        def apply(i: int, grad: Tensor) -> None:
            stack.update(i, grad if kept is None else grad.index_select(0, kept))

        self._step.backward(apply)
        stack.end_step()
        self.step = t + 1

    def _divergence_limit(self) -> Tensor:
        """Loss above which each stack row counts as diverged (finite, so that inf is always above it)."""
        if self._limit is None:
            job = self.job
            if job.diverge_above is not None:
                limit = torch.full((len(self.live),), float(job.diverge_above), dtype=torch.float64)
            else:
                limit = job.diverge_factor * self._first_by_member[self.live]
            self._limit = limit.clamp(max=torch.finfo(torch.float64).max)
        return self._limit

    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor, rows: tuple[int, int] | None = None, chunk: int = 512) -> tuple[Tensor, Tensor]:
        """Mean loss and accuracy of stack rows ``rows`` (default all) on ``(x, y)``: two ``[m]`` tensors."""
        start, end = rows if rows is not None else (0, len(self.live))
        if end <= start:
            return torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.float64)
        params = [p[start:end] for p in self.stack.eval_params()]
        loss_sum = torch.zeros(end - start, dtype=torch.float64, device=x.device)
        correct = torch.zeros(end - start, dtype=torch.float64, device=x.device)
        for i in range(0, len(x), chunk):
            xb, yb = x[i:i + chunk], y[i:i + chunk]
            logits = self._eval_step.logits(params, [(xb, 0, end - start)])
            m, b, c = logits.shape
            loss = F.cross_entropy(logits.reshape(m * b, c), yb.expand(m, -1).reshape(m * b), reduction="none")
            loss_sum += loss.view(m, b).sum(1).double()
            correct += (logits.argmax(-1) == yb).sum(1).double()
        return (loss_sum / len(x)).cpu(), (correct / len(x)).cpu()

    def record(self) -> None:
        """Validation metrics of every live member on its fold's validation part, and test metrics,
        at this step (one of ``job.eval_steps``), at the rule's evaluation point."""
        p = self._point[self.step]
        for g, start, end in self.split_rows():
            val_idx = self.job.splits[g].val
            loss, acc = self.evaluate(self.job.x[val_idx], self.job.y[val_idx], (start, end))
            self.history[0, self.live[start:end], p] = loss
            self.history[1, self.live[start:end], p] = acc
        if self.job.x_test is not None and len(self.live):
            loss, acc = self.evaluate(self.job.x_test, self.job.y_test)
            self.history[2, self.live, p] = loss
            self.history[3, self.live, p] = acc

    def config_means(self) -> dict[int, tuple[float, float]]:
        """Per live configuration: (mean validation loss, mean accuracy) over its folds at this step's record."""
        p = self._point[self.step]
        out = {}
        for c in sorted(set(self.config_of[self.live].tolist())):
            members = self.live[self.config_of[self.live] == c]
            out[c] = (float(self.history[0, members, p].mean()), float(self.history[1, members, p].mean()))
        return out

    def finish(self) -> None:
        """Record the final metrics of the surviving members (unless this step's are recorded)."""
        if len(self.live) and self.step in self._point and not bool(
                torch.isfinite(self.history[0, self.live, self._point[self.step]]).all()):
            self.record()

    def results(self) -> list[dict[str, Any]]:
        """One record per configuration (in input order)."""
        n = len(self.configs)
        out = []
        for c in range(n):
            members = [m for m in range(len(self.alive)) if int(self.config_of[m]) == c]
            rec: dict[str, Any] = dict(self.configs[c])
            if c in self.diverged_step:
                rec["status"], rec["diverged_step"] = "diverged", self.diverged_step[c]
            elif c in self.pruned:
                rec["status"], rec["diverged_step"] = "pruned", None
                rec["pruned_step"] = self.pruned[c]
            else:
                rec["status"], rec["diverged_step"] = "ok", None
            rec.update(self._metrics(members, rec["status"] == "ok"))
            if self.job.seeds > 1:
                rec["per_seed"] = [{"seed": seed, **self._metrics(
                    [m for m in members if self.job.splits[int(self.split_of[m])].seed == seed], rec["status"] == "ok")}
                    for seed in range(self.job.seed, self.job.seed + self.job.seeds)]
            curve = self.curves[members].mean(0)  # mean over folds per step
            rec["train_loss_final"] = _last_finite(curve)
            rec["train_loss_curve"] = _subsample(curve, self.job.curve_points)
            rec["steps"] = self.job.steps
            out.append(rec)
        return out

    def _metrics(self, members: list[int], finished: bool) -> dict[str, Any]:
        """Mean and std over a configuration's members (seeds and folds) of each metric: at the end (``val_loss_mean``, ...;
        None unless ``finished``) and at every evaluation point (``val_loss_mean_curve``, ...)."""
        rows = self.history[:, members]                       # [metric, member, point]
        mean, std = rows.mean(1), rows.std(1, unbiased=False)
        out: dict[str, Any] = {"eval_steps": list(self.job.eval_steps)}
        for i, name in enumerate(METRIC_NAMES):
            out[f"{name}_mean"] = _number(mean[i, -1]) if finished else None
            out[f"{name}_std"] = _number(std[i, -1]) if finished else None
            out[f"{name}_mean_curve"] = [_number(v) for v in mean[i]]
            out[f"{name}_std_curve"] = [_number(v) for v in std[i]]
        return out

    # -- checkpointing ---------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "keys": self.keys, "configs": self.configs, "step": self.step,
            "stack": self.stack.state_dict(),
            "curves": self.curves, "alive": self.alive, "history": self.history,
            "first": getattr(self, "_first_by_member", None), "first_loss": self.first_loss,
            "diverged_step": self.diverged_step, "pruned": self.pruned,
        }

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.step = int(sd["step"])
        self.stack.load_state_dict(sd["stack"])
        self.curves, self.alive, self.history = sd["curves"], sd["alive"], sd["history"]
        if sd["first"] is not None:
            self._first_by_member = sd["first"]
        self.first_loss = sd["first_loss"]
        self.diverged_step, self.pruned = dict(sd["diverged_step"]), dict(sd["pruned"])
        self._split_rows = None
        self._limit = None


def member_hyper(job: Job, configs: Sequence[dict[str, float]], swept: Sequence[str]) -> MemberHyper:
    """The hyperparameters of stacked members (one configuration dict per member), validated with the
    rule: swept values as ``[M]`` tensors, the job's fixed ones as given, its schedules over its steps."""
    per_member = {name: _per_member([c[name] for c in configs]) for name in swept}
    rule = job.preset.rule
    values = with_schedules(rule, job.preset.hyper(**{**job.fixed, **per_member}), job.schedules, job.steps, swept)
    validate_schedules(rule, values, job.steps)
    return MemberHyper(rule, values)


def _per_member(values: list[Any]) -> Any:
    """One hyperparameter's values, one per member: an ``[M]`` tensor, or a tuple of them (``betas``)."""
    if isinstance(values[0], (tuple, list)):
        return tuple(_per_member([v[i] for v in values]) for i in range(len(values[0])))
    return torch.tensor([float(v) for v in values], dtype=torch.float64)


METRIC_NAMES = ("val_loss", "val_accuracy", "test_loss", "test_accuracy")
"""What :meth:`Members.record` measures at every evaluation point (``Members.history``'s first axis)."""


def _number(value: Tensor) -> float | None:
    """A float, or None for NaN/inf (a member that diverged, or no test set)."""
    v = float(value)
    return v if math.isfinite(v) else None


def _last_finite(curve: Tensor) -> float | None:
    finite = curve[torch.isfinite(curve)]
    return float(finite[-1]) if len(finite) else None


def _subsample(curve: Tensor, points: int) -> list[float | None]:
    n = len(curve)
    if n > points:
        idx = torch.linspace(0, n - 1, points).round().long()
        curve = curve[idx]
    return [float(v) if math.isfinite(float(v)) else None for v in curve]


def train(job: Job, configs: Sequence[dict[str, float]], *, memory_budget: int | None = None,
          on_eval: Callable[[Members, dict[int, tuple[float, float]]], Sequence[int]] | None = None,
          on_step: Callable[[Members], None] | None = None) -> list[dict[str, Any]]:
    """Train every configuration (x every fold of ``job``) and return one record per configuration.

    Configurations run in chunks sized by :func:`configs_per_chunk`. ``on_eval``
    (at every ``job.eval_steps``) gets the per-configuration mean validation
    (loss, accuracy) and returns configurations to prune.
    """
    per_chunk = configs_per_chunk(job, memory_budget)
    records: list[dict[str, Any]] = []
    for start in range(0, len(configs), per_chunk):
        part = list(configs[start:start + per_chunk])
        members = Members(job, part, list(range(start, start + len(part))))
        run_members(members, on_eval=on_eval, on_step=on_step)
        records.extend(members.results())
    return records


def run_members(members: Members, *, on_eval=None, on_step=None,
                on_checkpoint: Callable[[Members], None] | None = None) -> Members:
    """Train ``members`` from their current step to the end, recording metrics at ``job.eval_steps``;
    hooks for pruning (``on_eval(members, config_means)`` returns configurations to prune), progress
    and checkpoints."""
    points = set(members.job.eval_steps)
    while not members.done:
        members.train_step()
        if members.step in points and len(members.live):
            members.record()
            if on_eval is not None and not members.done:
                prune = list(on_eval(members, members.config_means()) or [])
                if prune:
                    members.prune_configs(prune)
        if on_step is not None:
            on_step(members)
        if on_checkpoint is not None:
            on_checkpoint(members)
    members.finish()
    return members


def set_threads() -> None:
    """Use every core for the batched kernels unless the user set OMP_NUM_THREADS."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, os.cpu_count() or 1))
