"""The stacked forward of a convolutional chain: the members' channels side by side in one network.

A chain of ``Conv2d``, ``BatchNorm2d``, ``ReLU``, pooling, ``Flatten`` and ``Linear`` layers
(:func:`conv_layout` finds it in a module and proves that the module's forward computes it) runs for
M members as one network whose activations hold the members' channels side by side,
``[B, M*C, H, W]`` in channels-last memory (each pixel's M*C channels contiguous):

- the first convolution, whose input every member of a split shares, is a product of the batch's
  patches ``[B*H*W, Ci*k*k]`` with each member's filters ``[Ci*k*k, C]`` (one batched product of
  fixed-shape members, :class:`_MemberProducts`); a BatchNorm right after it is folded into that
  product (:class:`_FirstConv`);
- every later convolution is one grouped convolution (groups = M x its own), which oneDNN runs
  fast in channels-last memory (vmap's grouped convolutions are channels-first, and slow);
- BatchNorm is one ``batch_norm`` over the M*C channels: each member's running statistics are its
  own rows of the stacked buffers, updated in place;
- ReLU and pooling act on each channel alone and run as they are; a ReLU right before a max pool
  runs after it (``relu(max(a)) = max(relu(a))``, on a quarter of the values);
- ``Flatten`` hands each member its own ``[B, H*W*C]`` (``[M, B, F]``, the features in channels-last
  order; the Linear after it takes its weight's columns in that order) and a ``Linear`` is a
  batched product.

Gradients are autograd's (:class:`~.backends.AutogradStep`), so any loss works, except that a
stride-1 grouped convolution's input gradient is a forward convolution (:class:`_GroupedConv`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Groups = Sequence[tuple[Tensor, int, int]]  # (input batch [B, ...], first member, end member)

VECTOR_LANES = 16
"""The most fp32 lanes a CPU convolution kernel packs channels into (AVX-512): oneDNN packs the
groups of a grouped convolution of few channels per group into one vector register, so that its
sums for one group change with the number of groups until they fill it."""

_CHANNEL_WISE = (nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_MAX_POOLS = (nn.MaxPool2d, nn.AdaptiveMaxPool2d)


@dataclass
class _Run:
    """What every stage of one forward needs: the stacked parameters and buffers, members, mode."""

    params: Sequence[Tensor]
    buffers: Sequence[Tensor]
    members: int
    training: bool


def _wide(h: Tensor) -> Tensor:
    """``[B, M*C, H, W]`` in channels-last memory (a no-op when it is already)."""
    return h.contiguous(memory_format=torch.channels_last)


class _BatchNorm:
    """BatchNorm2d over the members' channels side by side; running statistics per member, in place."""

    def __init__(self, bn: nn.BatchNorm2d, params: tuple[int, int], buffers: tuple[int, int, int]):
        self.momentum, self.eps = float(bn.momentum), float(bn.eps)
        self.params, self.buffers = params, buffers

    def statistics(self, run: _Run) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The members' ``gamma, beta, running_mean, running_var``, each ``[M*C]`` (views: updates land in place)."""
        (gamma, beta), (mean, var, _) = (run.params[i] for i in self.params), (run.buffers[i] for i in self.buffers)
        return gamma.reshape(-1), beta.reshape(-1), mean.view(-1), var.view(-1)

    def count_batch(self, run: _Run) -> None:
        if run.training:
            run.buffers[self.buffers[2]].add_(1)   # num_batches_tracked, as nn.BatchNorm2d counts

    def __call__(self, h: Tensor, run: _Run) -> Tensor:
        gamma, beta, mean, var = self.statistics(run)
        self.count_batch(run)
        return F.batch_norm(h, mean, var, gamma, beta, run.training, self.momentum, self.eps)


class _FirstConv:
    """The first convolution (its input shared by a split's members) as one product of the split's patches
    ``P [N, K]`` (``N = B*Ho*Wo``, ``K = Ci*k*k``) with the members' filters ``W [M*C, K]`` and bias ``b``.

    Followed by BatchNorm (training): the output ``a = P W^T + b`` has per channel the mean
    ``mu = W m + b`` (``m``: the patches' mean) and the variance ``var = diag(W S W^T)`` (``S``: their
    covariance), so ``bn(a) = (P - m) (W * s)^T + beta`` with ``s = gamma / sqrt(var + eps)``: one
    product, no pass over ``a`` for its statistics. In eval mode ``s`` comes from the running
    variance and ``bn(a) = P (W * s)^T + beta + (b - running_mean) * s``.

    The shift rides in the product as a last column of ones in ``P`` (``[P, 1] [W, shift]^T``), so that
    its gradient is a column of the weights' gradient product: a sum over the batch in the same
    order whatever the number of members (a column sum of the wide output is not). A ReLU right
    after runs in place on the product (``relu``), not on the image-shaped view of it: an in-place
    op on a view costs autograd a copy of the whole tensor.
    """

    def __init__(self, conv: nn.Conv2d, input_shape: tuple[int, ...], out_size: tuple[int, int],
                 params: tuple[int, int | None], bn: _BatchNorm | None, relu: bool):
        self.input_shape, self.out_size, self.params, self.bn, self.relu = input_shape, out_size, params, bn, relu
        self.channels = conv.out_channels
        self.unfold = dict(kernel_size=conv.kernel_size, dilation=conv.dilation, padding=conv.padding,
                           stride=conv.stride)

    def _patches(self, x: Tensor) -> Tensor:
        """``[B*Ho*Wo, Ci*k*k]``: row ``(b, y, x)`` holds the input values output pixel ``(y, x)`` of example ``b`` sees."""
        cols = F.unfold(x.reshape(len(x), *self.input_shape), **self.unfold)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])

    def __call__(self, groups: Groups, run: _Run) -> Tensor:
        weight, bias = run.params[self.params[0]], (None if self.params[1] is None else run.params[self.params[1]])
        c = self.channels
        outs = []
        for x, start, end in groups:
            w = weight[start:end].reshape((end - start) * c, -1)
            b = None if bias is None else bias[start:end].reshape(-1)
            outs.append(self._product(self._patches(x), w, b, slice(start * c, end * c), run))
        if self.bn is not None:
            self.bn.count_batch(run)
        out = outs[0] if len(outs) == 1 else torch.cat(outs, 1)
        if self.relu:
            out.relu_()
        return out.view(len(groups[0][0]), *self.out_size, -1).permute(0, 3, 1, 2)

    def _product(self, patches: Tensor, w: Tensor, b: Tensor | None, rows: slice, run: _Run) -> Tensor:
        """``[patches, 1] @ [w', shift]^T``: the conv (+ BatchNorm) output ``[N, members * C]``."""
        if self.bn is None:
            shift = torch.zeros(len(w), dtype=w.dtype, device=w.device) if b is None else b
        elif not run.training:
            gamma, beta, mean, var = (t[rows] for t in self.bn.statistics(run))
            scale = gamma * (var + self.bn.eps).rsqrt()
            w, shift = w * scale.unsqueeze(1), beta - mean * scale if b is None else beta + (b - mean) * scale
        else:
            patches, w, shift = self._normalized(patches, w, b, rows, run)
        ones = torch.ones(len(patches), 1, dtype=patches.dtype, device=patches.device)
        filters = torch.cat([w, shift.unsqueeze(1)], 1).view(-1, self.channels, w.shape[1] + 1)
        return _MemberProducts.apply(torch.cat([patches, ones], 1), filters)

    def _normalized(self, patches: Tensor, w: Tensor, b: Tensor | None, rows: slice, run: _Run):
        """Training: centered patches, ``W * s`` and ``beta``; the batch's statistics into the running ones."""
        gamma, beta, mean, var = (t[rows] for t in self.bn.statistics(run))
        # one product per member (bmm), so that a member's bits do not depend on how many share the stack
        per_member = w.view(-1, self.channels, w.shape[1])    # [members, C, K]
        count, n, momentum = len(per_member), len(patches), self.bn.momentum
        with torch.no_grad():
            m = patches.mean(0)
            centered = patches - m
            covariance = centered.t() @ centered / n
            mu = torch.bmm(per_member, m.view(1, -1, 1).expand(count, -1, 1)).view(-1)
        batch_var = (torch.bmm(per_member, covariance.expand(count, -1, -1)) * per_member).sum(2).view(-1)
        with torch.no_grad():
            mean.mul_(1 - momentum).add_(mu if b is None else mu + b, alpha=momentum)
            var.mul_(1 - momentum).add_(batch_var * (n / (n - 1)), alpha=momentum)
        return centered, w * (gamma * (batch_var + self.bn.eps).rsqrt()).unsqueeze(1), beta


class _MemberProducts(torch.autograd.Function):
    """``P [N, K]`` times each member's filters ``W_m [C, K]``: ``[P W_1^T, ..., P W_M^T]`` as ``[N, M*C]``,
    and the filters' gradients ``dW_m = dY_m^T P``, one fixed-shape product per member (``bmm``).

    One product ``P [W_1; ...; W_M]^T`` and its gradient ``dY^T P`` are the same sums, but the BLAS picks its
    blocking of the sum over N by the width M*C (and its kernel by the leading dimension of a strided
    ``dY_m``), so that a member's last bits changed with the number of members beside it; here every
    member's products see the same shapes, strides and alignment whatever the stack."""

    @staticmethod
    def forward(ctx, patches: Tensor, filters: Tensor) -> Tensor:
        ctx.save_for_backward(patches, filters)
        count, n = len(filters), len(patches)
        out = torch.bmm(patches.expand(count, -1, -1), filters.transpose(1, 2))   # [M, N, C]
        return out.permute(1, 0, 2).reshape(n, -1)

    @staticmethod
    def backward(ctx, grad: Tensor):
        patches, filters = ctx.saved_tensors
        count, n = len(filters), len(patches)
        per_member = grad.reshape(n, count, -1).permute(1, 0, 2).contiguous()     # [M, N, C]
        grad_filters = torch.bmm(per_member.transpose(1, 2), patches.expand(count, -1, -1))
        grad_patches = grad @ filters.flatten(0, 1) if ctx.needs_input_grad[0] else None
        return grad_patches, grad_filters


class _Conv:
    """A later Conv2d: one grouped convolution over the members' channels (groups = M x its own groups)."""

    def __init__(self, conv: nn.Conv2d, params: tuple[int, int | None]):
        self.params = params
        self.options = dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation)
        self.groups = conv.groups
        self.group_channels = min(conv.in_channels, conv.out_channels) // conv.groups
        pads = [d * (k - 1) - p for k, p, d in zip(conv.kernel_size, conv.padding, conv.dilation)]
        self.transposed_padding = pads if conv.stride == (1, 1) and min(pads) >= 0 else None

    def __call__(self, h: Tensor, run: _Run) -> Tensor:
        weight = run.params[self.params[0]].flatten(0, 1)
        bias = None if self.params[1] is None else run.params[self.params[1]].reshape(-1)
        groups = run.members * self.groups
        if self.transposed_padding is None:
            return _wide(F.conv2d(h, weight, bias, groups=groups, **self.options))
        return _GroupedConv.apply(h, weight, bias, groups, self.options, self.transposed_padding)


class _GroupedConv(torch.autograd.Function):
    """A stride-1 grouped convolution whose input gradient is a forward convolution of the output gradient
    with each group's filters transposed and flipped (``dx = conv(dy, flip(W)^T)``, padding ``d(k-1) - p``):
    oneDNN's forward kernels run it in channels-last memory ~1.5x faster than its backward-data ones."""

    @staticmethod
    def forward(ctx, h: Tensor, weight: Tensor, bias: Tensor | None, groups: int, options: dict,
                transposed_padding: list[int]) -> Tensor:
        ctx.save_for_backward(h, weight)
        ctx.has_bias, ctx.groups, ctx.options, ctx.transposed_padding = bias is not None, groups, options, transposed_padding
        return _wide(F.conv2d(h, weight, bias, groups=groups, **options))

    @staticmethod
    def backward(ctx, grad: Tensor):
        h, weight = ctx.saved_tensors
        grad = _wide(grad)
        grad_input = None
        if ctx.needs_input_grad[0]:
            out_channels, group_in, kh, kw = weight.shape
            flipped = (weight.view(ctx.groups, out_channels // ctx.groups, group_in, kh, kw).transpose(1, 2)
                       .flip(3, 4).reshape(ctx.groups * group_in, out_channels // ctx.groups, kh, kw))
            grad_input = _wide(F.conv2d(grad, flipped, groups=ctx.groups, padding=ctx.transposed_padding,
                                        dilation=ctx.options["dilation"]))
        o = ctx.options
        _, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
            grad, h, weight, [weight.shape[0]] if ctx.has_bias else None, list(o["stride"]), list(o["padding"]),
            list(o["dilation"]), False, [0, 0], ctx.groups, [False, True, ctx.has_bias])
        return grad_input, grad_weight, grad_bias, None, None, None


class _ChannelWise:
    """ReLU or pooling: each channel alone, so the members' channels side by side run as one input."""

    def __init__(self, module: nn.Module):
        self.module = module

    def __call__(self, h: Tensor, run: _Run) -> Tensor:
        return h.relu_() if isinstance(self.module, nn.ReLU) else self.module(h)


class _Flatten:
    """``[B, M*C, H, W]`` -> each member's flattened ``[B, H*W*C]`` (``[M, B, H*W*C]``): the features in
    channels-last order (the next Linear's weight columns permuted to match), so that the copy and its
    gradient move contiguous runs of C values (in Flatten's order ``C*H*W`` both ran ~3x slower, and
    the gradient came back in a layout on which the ReLU backward before it ran ~4x slower)."""

    def __call__(self, h: Tensor, run: _Run) -> Tensor:
        b, _, height, width = h.shape
        pixels = h.permute(0, 2, 3, 1).reshape(b, height * width, run.members, -1)
        return pixels.permute(2, 0, 1, 3).reshape(run.members, b, -1)


class _Linear:
    """A Linear layer of every member: ``[M, B, F] @ W^T + b`` as one batched product. Right after the
    flatten of images ``image = (C, H, W)``, its weight's columns are taken in the flatten's ``H*W*C`` order."""

    def __init__(self, params: tuple[int, int | None], image: tuple[int, int, int] | None = None):
        self.params, self.image = params, image

    def __call__(self, h: Tensor, run: _Run) -> Tensor:
        weight = run.params[self.params[0]]
        if self.image is not None:
            weight = weight.unflatten(2, self.image).permute(0, 1, 3, 4, 2).flatten(2)
        weight = weight.transpose(1, 2)
        if self.params[1] is None:
            return torch.bmm(h, weight)
        return torch.baddbmm(run.params[self.params[1]].unsqueeze(1), h, weight)


_RELU = _ChannelWise(nn.ReLU())


@dataclass
class ConvChain:
    """The stages of a chain: the first convolution (on the shared input), then the rest in order."""

    first: _FirstConv
    rest: list

    @property
    def min_members(self) -> int:
        """The fewest members a stack runs with: 2 (a grouped convolution of one group takes another
        kernel), or enough for every grouped convolution's channels to fill a vector register."""
        convs = [stage for stage in self.rest if isinstance(stage, _Conv)]
        return max([2, *(-(-VECTOR_LANES // max(1, conv.group_channels)) for conv in convs)])


class ConvChainForward:
    """Outputs ``[M, B, ...]`` of M stacked copies of a :class:`ConvChain`, in train or eval mode.

    A stack of fewer than the chain's ``min_members`` runs padded with copies of its last member
    (:func:`~.backends.run_padded`), so that a member's numbers do not depend on its stack's size.
    """

    draws_random = False   # none of a chain's layers does (no dropout): no generator to seed per step

    def __init__(self, chain: ConvChain):
        self.chain = chain

    def __call__(self, params: Sequence[Tensor], buffers: Sequence[Tensor], groups: Groups, *,
                 training: bool) -> Tensor:
        from .backends import run_padded

        count = self.chain.min_members
        if groups[-1][2] >= count:
            return self._forward(params, buffers, groups, training)
        padded = [*groups[:-1], (groups[-1][0], groups[-1][1], count)]
        return run_padded(lambda p, b: self._forward(p, b, padded, training), params, buffers, count)

    def _forward(self, params: Sequence[Tensor], buffers: Sequence[Tensor], groups: Groups, training: bool) -> Tensor:
        run = _Run(params, buffers, groups[-1][2], training)
        h = self.chain.first(groups, run)
        for stage in self.chain.rest:
            h = stage(h, run)
        return h


def conv_layout(model: nn.Module, input_shape: Sequence[int]) -> ConvChain | None:
    """The chain that :class:`ConvChainForward` runs for ``model`` on inputs ``[B, *input_shape]``, else None.

    The module must be built of Conv2d (zero padding), BatchNorm2d (affine, running statistics, a
    momentum), ReLU, max/average pooling, Flatten and Linear leaves, each called once, with nothing
    between them but ReLUs and reshapes (read from one forward on a random input): a Conv2d first,
    then those layers, then a flatten and Linears. It qualifies only if its own forward equals
    the chain's on another random input with random parameters and running statistics, for two
    members, in train mode (outputs and updated statistics) and in eval mode.
    """
    if not _leaves_fit(model):
        return None
    calls = _trace(model, tuple(input_shape))
    chain = None if calls is None else _chain(model, calls, tuple(input_shape))
    return chain if chain is not None and _forward_is_chain(model, chain, tuple(input_shape)) else None


def _leaves_fit(model: nn.Module) -> bool:
    """Only supported leaves, every parameter in a Conv2d, BatchNorm2d or Linear, every buffer a BatchNorm's."""
    kinds = (nn.Conv2d, nn.BatchNorm2d, nn.Linear, nn.Flatten, *_CHANNEL_WISE)
    leaves = [m for m in model.modules() if not list(m.children())]
    if not leaves or any(type(m) not in kinds for m in leaves):
        return False
    for m in leaves:
        if isinstance(m, nn.Conv2d) and m.padding_mode != "zeros":
            return False
        if isinstance(m, nn.BatchNorm2d) and not (m.affine and m.track_running_stats and m.momentum is not None):
            return False
        if isinstance(m, nn.AdaptiveMaxPool2d) and m.return_indices or isinstance(m, nn.MaxPool2d) and m.return_indices:
            return False
    owned = {id(t) for m in leaves for t in [*m.parameters(recurse=False), *m.buffers(recurse=False)]}
    return all(id(t) in owned for t in [*model.parameters(), *model.buffers()])


def _random_state(model: nn.Module, g: torch.Generator, members: int = 0) -> tuple[list[Tensor], list[Tensor]]:
    """Random float64 parameters and BatchNorm statistics of ``model`` (stacked ``[members, ...]`` if members)."""
    lead = (members,) if members else ()
    params = [torch.randn(*lead, *p.shape, generator=g, dtype=torch.float64) for p in model.parameters()]
    buffers = [torch.randint(0, 5, (*lead, *b.shape), generator=g) if not b.is_floating_point()
               else (torch.rand(*lead, *b.shape, generator=g, dtype=torch.float64) + 0.5 if name.endswith("var")
                     else torch.randn(*lead, *b.shape, generator=g, dtype=torch.float64))
               for name, b in model.named_buffers()]
    return params, buffers


def _call(model: nn.Module, params: Sequence[Tensor], buffers: Sequence[Tensor], x: Tensor, training: bool):
    """``model``'s forward with these parameters and buffers (updated in place in train mode), no autograd."""
    from torch.func import functional_call

    names = [n for n, _ in model.named_parameters()]
    buffer_names = [n for n, _ in model.named_buffers()]
    was = model.training
    try:
        model.train(training)
        with torch.no_grad():
            return functional_call(model, (dict(zip(names, params)), dict(zip(buffer_names, buffers))), (x,))
    finally:
        model.train(was)


def _trace(model: nn.Module, input_shape: tuple[int, ...]) -> list | None:
    """The leaves in call order with what came between them: ``("relu",)``, ``("reshape", shape)`` or
    ``("leaf", module, output shape)``; None if a leaf is called twice, or anything else comes between."""
    g = torch.Generator().manual_seed(1)
    params, buffers = _random_state(model, g)
    x = torch.randn(4, *input_shape, generator=g, dtype=torch.float64)
    seen: list[tuple[nn.Module, Tensor, Tensor]] = []
    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append((m, i[0].clone(), o.clone()))) for m in leaves]
    try:
        out = _call(model, params, buffers, x, True)
    except Exception:  # a forward that cannot take the input is not a chain
        return None
    finally:
        for hook in hooks:
            hook.remove()
    if len(seen) != len(leaves) or len({id(m) for m, _, _ in seen}) != len(leaves) or not isinstance(out, Tensor):
        return None
    calls, previous = [], x
    for module, inp, output in [*seen, (None, out, None)]:
        glue = _glue(previous, inp)
        if glue is None:
            return None
        calls += glue
        if module is not None:
            calls.append(("leaf", module, tuple(output.shape[1:])))
            previous = output
    return calls


def _glue(before: Tensor, after: Tensor) -> list | None:
    """What turns one leaf's output into the next one's input: nothing, a ReLU, a reshape, both; else None."""
    for relu in (False, True):
        value = before.relu() if relu else before
        if value.numel() == after.numel() and torch.equal(value.reshape(after.shape), after):
            return [("relu",)] * relu + ([("reshape", tuple(after.shape[1:]))] if after.shape != before.shape else [])
    return None


def _chain(model: nn.Module, calls: list, input_shape: tuple[int, ...]) -> ConvChain | None:
    """The stages for the traced ``calls``: a Conv2d first (a BatchNorm after it folded in), then the
    convolutional part, one flatten, and the Linear part; None for any other order."""
    index = {id(t): i for i, t in enumerate(model.parameters())}
    buffer_index = {id(t): i for i, t in enumerate(model.buffers())}

    def params(m: nn.Module) -> tuple[int, int | None]:
        return index[id(m.weight)], None if m.bias is None else index[id(m.bias)]

    def batch_norm(m: nn.BatchNorm2d) -> _BatchNorm:
        return _BatchNorm(m, params(m), tuple(buffer_index[id(b)] for b in (m.running_mean, m.running_var,
                                                                            m.num_batches_tracked)))

    ops = list(calls)
    if ops and ops[0][0] == "reshape":
        input_shape = ops.pop(0)[1]
    if not ops or ops[0][0] != "leaf" or not isinstance(ops[0][1], nn.Conv2d) or ops[0][1].groups != 1:
        return None
    _, conv, shape = ops.pop(0)
    bn = batch_norm(ops.pop(0)[1]) if ops and ops[0][0] == "leaf" and isinstance(ops[0][1], nn.BatchNorm2d) else None
    relu = bool(ops) and (ops[0][0] == "relu" or ops[0][0] == "leaf" and isinstance(ops[0][1], nn.ReLU))
    if relu:
        ops.pop(0)
    first = _FirstConv(conv, input_shape, shape[1:], params(conv), bn, relu)
    rest: list = []
    image = None   # the flattened images' (C, H, W), until the Linear that takes them
    for op in ops:
        module = op[1] if op[0] == "leaf" else None
        new = op[2] if module is not None else op[1] if op[0] == "reshape" else shape
        flat = _Flatten in map(type, rest)
        if op[0] == "relu" or isinstance(module, nn.ReLU):
            rest.append(_RELU)
        elif op[0] == "reshape" or isinstance(module, nn.Flatten):
            if flat or len(shape) != 3 or new != (shape[0] * shape[1] * shape[2],):
                return None
            rest.append(_Flatten())
            image = shape
        elif not flat and isinstance(module, nn.Conv2d):
            rest.append(_Conv(module, params(module)))
        elif not flat and isinstance(module, nn.BatchNorm2d):
            rest.append(batch_norm(module))
        elif not flat and isinstance(module, _CHANNEL_WISE):
            rest.append(_ChannelWise(module))
        elif flat and isinstance(module, nn.Linear):
            rest.append(_Linear(params(module), image))
            image = None
        else:
            return None
        shape = new
    if _Flatten not in map(type, rest):
        return None
    for i in range(len(rest) - 1):   # ReLU then max pool: pool first (they commute)
        if rest[i] is _RELU and isinstance(getattr(rest[i + 1], "module", None), _MAX_POOLS):
            rest[i], rest[i + 1] = rest[i + 1], rest[i]
    return ConvChain(first, rest)


def _forward_is_chain(model: nn.Module, chain: ConvChain, input_shape: tuple[int, ...]) -> bool:
    """Does ``model``'s forward equal :class:`ConvChainForward`'s for two random members, in train mode
    (outputs and updated buffers) and eval mode? In float64 on CPU, a private generator."""
    g = torch.Generator().manual_seed(2)
    params, buffers = _random_state(model, g, members=2)
    x = torch.randn(3, *input_shape, generator=g, dtype=torch.float64)
    for training in (True, False):
        ours = [b.clone() for b in buffers]
        try:
            with torch.no_grad():
                out = ConvChainForward(chain)(params, ours, [(x, 0, 2)], training=training)
        except Exception:  # the chain cannot run this model's shapes
            return False
        for m in range(2):
            theirs = [b[m].clone() for b in buffers]
            expected = _call(model, [p[m] for p in params], theirs, x, training)
            if not (isinstance(expected, Tensor) and expected.shape == out[m].shape
                    and torch.allclose(out[m], expected, rtol=1e-9, atol=1e-9)
                    and all(torch.allclose(a[m].double(), b.double(), rtol=1e-9, atol=1e-9)
                            for a, b in zip(ours, theirs))):
                return False
    return True
