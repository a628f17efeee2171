"""How a stack of members computes its outputs and gradients: four interchangeable backends.

- ``"batched"`` (MLPs made of ``nn.Linear`` + ``nn.ReLU``, cross-entropy): every member of a
  split sees the same input batch, so the first layer of all members of a split is one
  product with that batch; the later layers are batched products over members; the
  backward pass is written by hand (same maths as autograd, checked against separately
  trained models).
- ``"conv"`` (chains of Conv2d, BatchNorm2d, ReLU, pooling, Flatten and Linear, any loss): the
  members' channels side by side in one channels-last network (:mod:`.conv`), gradients by autograd.
- ``"vmap"`` (any ``nn.Module``, any loss): ``torch.func.functional_call`` under
  ``torch.vmap``, with each member's buffers (BatchNorm running statistics, updated in
  training mode) and its own random numbers: dropout from the member's stream
  (:func:`inertia.pipeline.dropout_draws`, the draws of a lone model under ``fit``), any other
  draw from a generator seeded by the caller at every step (``randomness="different"``);
  ``nn.RNN``/``nn.GRU``/``nn.LSTM`` as batched matrix products (:mod:`.recurrent`).
- ``"loop"`` (a model ``vmap`` cannot batch, found by a trial step before the study opens,
  :func:`step_failure`): the same, one member after another.

All give ``loss(params, buffers, groups, targets, seed, streams)`` -> each member's mean loss ``[M]``,
then ``backward(apply)`` hands every parameter's gradient ``[M, ...]`` to ``apply``;
``outputs(params, buffers, groups)`` evaluates (eval mode).
"""
from __future__ import annotations

import warnings
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..pipeline import dropout_draws
from .gemm import BatchedGemm
from .objective import Objective
from .recurrent import batchable


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

    def outputs(self, params: Sequence[Tensor], buffers: Sequence[Tensor], groups: Groups) -> Tensor:
        """Logits ``[M, B, C]`` (a view of this object's buffer: valid until its next call)."""
        return self._forward(self._plan_for(params, groups), params, groups).transpose(1, 2)

    def loss(self, params: Sequence[Tensor], buffers: Sequence[Tensor], groups: Groups, targets: Tensor,
             seed: int = 0, streams: Tensor | None = None) -> Tensor:
        """Per-member mean cross-entropy ``[M]`` (``targets`` ``[M, B]``); :meth:`backward` may follow.
        An MLP of Linear and ReLU layers draws nothing (``seed`` and ``streams`` are unused)."""
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
    """The same interface through autograd, for any model and loss: a sum of per-member mean
    losses gives each member its own gradient."""

    def __init__(self, forward: "VmapForward | LoopForward | ConvChainForward", objective: Objective):
        self.forward, self.objective = forward, objective
        self._pending: tuple[list[Tensor], Tensor] | None = None

    def outputs(self, params: Sequence[Tensor], buffers: Sequence[Tensor], groups: Groups) -> Tensor:
        return self.forward(params, buffers, groups, training=False)

    def loss(self, params: Sequence[Tensor], buffers: Sequence[Tensor], groups: Groups, targets: Tensor,
             seed: int = 0, streams: Tensor | None = None) -> Tensor:
        """Per-member mean loss ``[M]``: dropout drawn from each member's stream of ``streams`` ``[M]``
        (:func:`inertia.pipeline.draw_stream`), any other draw from a generator seeded with ``seed``, so
        a step run again (a resume) draws the same."""
        draws = {"streams": streams} if self.forward.draws_random else {}
        with torch.enable_grad(), torch.random.fork_rng(devices=[], enabled=self.forward.draws_random):
            if self.forward.draws_random:
                _seed_draws(seed, params[0].device)
            leaves = [p.detach().requires_grad_(True) for p in params]
            losses = self.objective.member_losses(self.forward(leaves, buffers, groups, training=True, **draws),
                                                  targets)
            self._pending = (leaves, losses.sum())
        return losses.detach()

    def backward(self, apply: ApplyGrad) -> None:
        assert self._pending is not None, "backward() needs a loss() first"
        leaves, total = self._pending
        self._pending = None
        # materialize_grads: a parameter the loss does not depend on (a conv bias right before a
        # BatchNorm in train mode, in the conv backend) gets a zero gradient, as nn.Module's autograd gives it
        for i, grad in enumerate(torch.autograd.grad(total, leaves, materialize_grads=True)):
            apply(i, grad)


BATCHING_NOTICE = "There is a performance drop because we have not yet implemented the batching rule"
"""How torch's warning begins that ``vmap`` runs an operator one member at a time, for want of a batching rule."""


def quiet_batching_fallbacks() -> None:
    """Silence :data:`BATCHING_NOTICE` in this process (attention's CPU kernels: every Transformer sweep printed
    it, twice): the numbers are unchanged, and the user can do nothing about it. The filter is added once:
    changing the filters (or a ``catch_warnings`` around each step) clears every location's once-only record,
    and a model's own warning would print again."""
    if not any(action == "ignore" and message is not None and message.pattern == BATCHING_NOTICE
               for action, message, *_ in warnings.filters):
        warnings.filterwarnings("ignore", message=BATCHING_NOTICE, category=UserWarning)


def _seed_draws(seed: int, device: torch.device) -> None:
    """Seed the generator that ``device``'s draws come from: on the CPU its generator alone, since
    ``torch.manual_seed`` also queues a seeding of every uninitialized accelerator, formatting the call's
    stack for each (1.3 ms a step, a tenth of a GRU member's step)."""
    if device.type == "cpu":
        torch.default_generator.manual_seed(seed)
    else:
        torch.manual_seed(seed)


class VmapForward:
    """Outputs ``[M, B, ...]`` of stacked copies of ``model`` through ``functional_call`` under ``vmap``.

    ``nn.RNN``, ``nn.GRU`` and ``nn.LSTM`` run as their :mod:`.recurrent` equivalents (torch's fused
    kernels have no batching rule). ``buffers`` (BatchNorm running statistics) are the members' own and
    are updated in place in training mode. A stack of one member runs as two (itself twice, the copy's
    outputs and buffer updates dropped): batched kernels take another path for one member than for
    several (grouped convolutions do), and a member's numbers must not depend on how many share its stack.
    """

    draws_random = True   # a model may (dropout): each step's draws are seeded, so that a resume repeats them
    pads_single = True

    def __init__(self, model: nn.Module, names: Sequence[str], buffer_names: Sequence[str]):
        from torch.func import functional_call

        original, self.model = model, self._runnable(model)
        model = self.model

        def one(p: tuple[Tensor, ...], b: tuple[Tensor, ...], x: Tensor, stream: Tensor) -> Tensor:
            with dropout_draws(original, stream):   # the original: recurrent layers as the user built them
                return functional_call(model, (dict(zip(names, p)), dict(zip(buffer_names, b))), (x,))

        self._batched = self._over_members(one)
        quiet_batching_fallbacks()

    @staticmethod
    def _runnable(model: nn.Module) -> nn.Module:
        return batchable(model)

    @staticmethod
    def _over_members(one: Callable) -> Callable:
        from torch.func import vmap

        return vmap(one, in_dims=(0, 0, 0, 0), randomness="different")

    def __call__(self, params: Sequence[Tensor], buffers: Sequence[Tensor], groups: Groups, *,
                 training: bool, streams: Tensor | None = None) -> Tensor:
        """Outputs ``[M, B, ...]``; in training, dropout drawn from each member's stream of ``streams``."""
        self.model.train(training)
        xs = [x.unsqueeze(0).expand(end - start, *x.shape) for x, start, end in groups]
        x = xs[0] if len(xs) == 1 else torch.cat(xs)
        if streams is None:
            streams = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
        if x.shape[0] != 1 or not self.pads_single:
            return self._batched(tuple(params), tuple(buffers), x, streams)
        return run_padded(lambda p, b: self._batched(tuple(p), tuple(b), torch.cat([x, x]), torch.cat([streams] * 2)),
                          params, buffers, 2)


class LoopForward(VmapForward):
    """:class:`VmapForward`'s outputs computed member after member (``functional_call`` on each member's
    own parameters, buffers and dropout stream), for a model that ``vmap`` cannot batch (an operator
    without a batching rule, ``.item()``, control flow on the data): each member computes what it would
    alone, so its numbers are those of a separate run."""

    pads_single = False

    @staticmethod
    def _runnable(model: nn.Module) -> nn.Module:
        return model

    @staticmethod
    def _over_members(one: Callable) -> Callable:
        def loop(params: tuple[Tensor, ...], buffers: tuple[Tensor, ...], x: Tensor, streams: Tensor) -> Tensor:
            return torch.stack([one(tuple(p[i] for p in params), tuple(b[i] for b in buffers), x[i], streams[i])
                                for i in range(x.shape[0])])

        return loop


def step_failure(forward: type[VmapForward], model: nn.Module, names: Sequence[str], buffer_names: Sequence[str],
                 objective: Objective, x: Tensor, target: Tensor) -> str | None:
    """Why ``forward`` (:class:`VmapForward` or :class:`LoopForward`) cannot train ``model`` (the exception
    and its first line), or None when it can: one training forward and backward of two stacked copies of
    ``model`` on the real batch ``x``, ``target`` (its buffers copied, so the model is left as it was)."""
    params = [p.detach().unsqueeze(0).expand(2, *p.shape).clone() for p in model.parameters()]
    buffers = [b.detach().unsqueeze(0).expand(2, *b.shape).clone() for b in model.buffers()]
    step = AutogradStep(forward(model, names, buffer_names), objective)
    try:
        step.loss(params, buffers, [(x, 0, 2)], target.unsqueeze(0).expand(2, *target.shape),
                  streams=torch.zeros(2, dtype=torch.int64, device=x.device))
        step.backward(lambda i, grad: None)
    except Exception as error:
        first = (str(error).strip().splitlines() or [""])[0]
        return f"{type(error).__name__}: {first}"
    return None


def run_padded(forward: Callable[[list[Tensor], list[Tensor]], Tensor], params: Sequence[Tensor],
               buffers: Sequence[Tensor], count: int) -> Tensor:
    """``forward(params, buffers)`` of a stack of fewer than ``count`` members, computed on the stack padded
    to ``count`` with copies of its last member: batched kernels take other paths for few members than
    for many (a grouped convolution of one group, or of too few channels to fill a vector register),
    and a member's numbers must not depend on how many share its stack. The copies' outputs and
    buffer updates are dropped (so are their gradients: their outputs feed no loss)."""
    m = len(params[0])

    def pad(t: Tensor) -> Tensor:
        return torch.cat([t, t[-1:].expand(count - m, *t.shape[1:])])

    padded = [pad(b) for b in buffers]
    out = forward([pad(p) for p in params], padded)
    for b, both in zip(buffers, padded):
        b.copy_(both[:m])
    return out[:m]
