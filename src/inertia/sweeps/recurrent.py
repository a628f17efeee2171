"""Recurrent layers that ``vmap`` can batch: ``nn.RNN``, ``nn.GRU`` and ``nn.LSTM`` as plain matrix products.

torch runs its recurrent modules as one fused kernel (``aten::gru.input``, ...) that has no batching
rule, so a stack of members cannot run them under ``vmap``. :func:`batchable` returns a copy of a
model in which every such module is replaced by :class:`BatchableRecurrent`: the same parameters
under the same names, and a forward written as the cell of torch's documentation, one time step
at a time (the input projections of all steps in one product). Under ``vmap`` each product is a
batched product over the members.

Cells (torch's docs; ``W x`` for ``x Wᵀ``, gates in torch's order):

- RNN:  h' = tanh(W_ih x + b_ih + W_hh h + b_hh)   (or relu)
- GRU:  r = σ(W_ir x + b_ir + W_hr h + b_hr), z = σ(W_iz x + b_iz + W_hz h + b_hz),
        n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)), h' = (1 − z) ⊙ n + z ⊙ h
- LSTM: i, f, g, o = W_ih x + b_ih + W_hh h + b_hh split in four; c' = σ(f) ⊙ c + σ(i) ⊙ tanh(g),
        h' = σ(o) ⊙ tanh(c')
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

RECURRENT = (nn.RNN, nn.GRU, nn.LSTM)


def batchable(model: nn.Module) -> nn.Module:
    """``model`` itself when it has no recurrent module, else a copy with each replaced by its
    :class:`BatchableRecurrent` (same parameter names, so ``functional_call`` takes the same dict)."""
    if not any(isinstance(m, RECURRENT) for m in model.modules()):
        return model
    out = copy.deepcopy(model)
    if isinstance(out, RECURRENT):
        return BatchableRecurrent(out)
    for name, module in list(out.named_modules()):
        if isinstance(module, RECURRENT):
            parent, _, child = name.rpartition(".")
            setattr(out.get_submodule(parent), child, BatchableRecurrent(module))
    return out


class BatchableRecurrent(nn.Module):
    """The forward of an ``nn.RNN`` / ``nn.GRU`` / ``nn.LSTM`` in matrix products that ``vmap`` batches;
    the module's own parameters, under their own names. Packed sequences and LSTM projections
    (``proj_size``) are refused."""

    def __init__(self, module: nn.RNNBase):
        super().__init__()
        if getattr(module, "proj_size", 0):
            raise ValueError(f"{type(module).__name__}(proj_size={module.proj_size}): projections are not "
                             "supported in a sweep's stacked recurrent layers")
        self.kind = type(module).__name__
        self.nonlinearity = getattr(module, "nonlinearity", "tanh")
        for key in ("hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional"):
            setattr(self, key, getattr(module, key))
        for name, param in module.named_parameters(recurse=False):
            self.register_parameter(name, param)
        self.training = module.training

    def _weights(self, layer: int, suffix: str) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        get = lambda name: getattr(self, f"{name}_l{layer}{suffix}", None)  # noqa: E731
        return get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh")

    def _cell(self, gx: Tensor, h: Tensor, c: Tensor | None, w_hh: Tensor, b_hh: Tensor | None):
        """One step from the input's projection ``gx``: (h', c')."""
        gh = F.linear(h, w_hh, b_hh)
        if self.kind == "GRU":
            xr, xz, xn = gx.chunk(3, -1)
            hr, hz, hn = gh.chunk(3, -1)
            r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            n = torch.tanh(xn + r * hn)
            return (1 - z) * n + z * h, None
        if self.kind == "LSTM":
            i, f, g, o = (gx + gh).chunk(4, -1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            return torch.sigmoid(o) * torch.tanh(c), c
        act = torch.tanh if self.nonlinearity == "tanh" else torch.relu
        return act(gx + gh), None

    def _direction(self, x: Tensor, h: Tensor, c: Tensor | None, layer: int, reverse: bool):
        """Run one layer in one direction over ``x`` [T, B, F]: outputs [T, B, H] and the last (h, c)."""
        w_ih, w_hh, b_ih, b_hh = self._weights(layer, "_reverse" if reverse else "")
        # unbind, not gx[t]: the backward of T selects writes each step's gradient into zeros of all T
        # steps (T² work: more than half of a GRU sweep's time at T = 40); unbind's stacks the T gradients once
        gx = F.linear(x, w_ih, b_ih).unbind(0)
        steps = range(len(gx) - 1, -1, -1) if reverse else range(len(gx))
        outputs: list[Tensor] = []
        for t in steps:
            h, c = self._cell(gx[t], h, c, w_hh, b_hh)
            outputs.append(h)
        if reverse:
            outputs.reverse()
        return torch.stack(outputs), h, c

    def forward(self, x: Any, hx: Any = None):
        if isinstance(x, nn.utils.rnn.PackedSequence):
            raise ValueError(f"{self.kind}: packed sequences are not supported in a sweep's stacked recurrent layers")
        unbatched = x.dim() == 2
        if unbatched:
            x = x.unsqueeze(1)
        elif self.batch_first:
            x = x.transpose(0, 1)
        directions = 2 if self.bidirectional else 1
        h0, c0 = self._initial(x, hx, directions, unbatched)
        last_h, last_c = [], []
        for layer in range(self.num_layers):
            runs = [self._direction(x, h0[layer * directions + d], None if c0 is None else c0[layer * directions + d],
                                    layer, reverse=d == 1) for d in range(directions)]
            x = torch.cat([out for out, _, _ in runs], -1) if directions == 2 else runs[0][0]
            last_h += [h for _, h, _ in runs]
            last_c += [c for _, _, c in runs]
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, training=True)
        h_n = torch.stack(last_h)
        state = (h_n, torch.stack(last_c)) if self.kind == "LSTM" else h_n
        if unbatched:
            x = x.squeeze(1)
            state = tuple(s.squeeze(1) for s in state) if isinstance(state, tuple) else state.squeeze(1)
        elif self.batch_first:
            x = x.transpose(0, 1)
        return x, state

    def _initial(self, x: Tensor, hx: Any, directions: int, unbatched: bool) -> tuple[Tensor, Tensor | None]:
        """(h0, c0) as [layers · directions, B, H]: zeros, or the given state."""
        if hx is None:
            zeros = x.new_zeros(self.num_layers * directions, x.shape[1], self.hidden_size)
            return zeros, (zeros if self.kind == "LSTM" else None)
        h0, c0 = hx if self.kind == "LSTM" else (hx, None)
        if unbatched:
            h0, c0 = h0.unsqueeze(1), (None if c0 is None else c0.unsqueeze(1))
        return h0, c0


__all__ = ["batchable", "BatchableRecurrent", "RECURRENT"]
