"""The data pipeline that the sweep and ``fit`` both stand on, so that a sweep's member and a fit
with the same settings see the same numbers.

- the folds (:func:`make_folds`: K-fold, or a seeded 20 % holdout) and the minibatch of every step
  (:func:`batch_at`, a pure function of ``(seed, fold, step)``: common random numbers for every
  configuration, and a resumed run sees the same batches);
- the inputs' dtype (:func:`input_dtype`): integer inputs stay integer for a model that takes them;
- the seeded initialization (:func:`seeded_models`: ``torch.manual_seed(seed + s)``, then one model
  from the factory, for seed ``s``);
- the splits (:func:`make_splits`: seed-major, then fold; with ``standardize`` the inputs standardized
  with each split's training part, never its validation part);
- the evaluation (:func:`measure`: an objective's metrics summed over chunks of examples);
- the dropout draws (:class:`SeededDropout`, :func:`draw_stream`): a pure function of the split and the
  step, common to every configuration, so a configuration's numbers never depend on its neighbours and a
  lone model draws what its stacked copy drew. Other random draws inside a model's forward are the
  engine's own (a functional ``F.dropout`` outside a dropout layer among them).
"""
from __future__ import annotations

import contextlib
import functools
import math
from typing import Any, Callable, NamedTuple, Sequence

import torch
from torch import Tensor, nn


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


def input_dtype(model: nn.Module, x: Tensor, dtype: torch.dtype, *more: Tensor | None) -> torch.dtype:
    """The dtype in which ``model`` gets the inputs ``x`` (and ``more``, the test set): floats in the training
    ``dtype``; integers as int64 when the model's forward takes two of them (token ids into an
    ``nn.Embedding``), else as floats (an MLP over raw pixel values). Integers out of the model's
    Embedding's range are a ValueError."""
    if x.is_floating_point() or x.dtype == torch.bool or not len(x):
        return dtype
    for part in (x, *more):
        if part is not None and len(part):
            _check_embedding_range(model, part)
    was_training = model.training
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            model.eval()(x[:2].long())
    except Exception:
        return dtype
    finally:
        model.train(was_training)
    return torch.int64


def _check_embedding_range(model: nn.Module, x: Tensor) -> None:
    sizes = [m.num_embeddings for m in model.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag))]
    low, high = int(x.min()), int(x.max())
    if sizes and (low < 0 or high >= max(sizes)):
        raise ValueError(f"data: the integer inputs range over {low}..{high}, outside the model's Embedding "
                         f"(num_embeddings {max(sizes)}: indices 0..{max(sizes) - 1}); give the model an "
                         f"Embedding of at least {high + 1} entries, or inputs in its range")


def seeded_models(factory: Callable[[], nn.Module], seed: int, seeds: int, device: Any,
                  dtype: torch.dtype) -> list[nn.Module]:
    """One model per seed ``s`` in ``range(seeds)``: ``torch.manual_seed(seed + s)``, then ``factory()``."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be an integer >= 1, got {seeds!r}")
    models = []
    for s in range(seeds):
        torch.manual_seed(seed + s)
        models.append(factory().to(device=device, dtype=dtype))
    return models


class Split(NamedTuple):
    """One (seed, fold) pair: where its members' initialization, batches and validation come from."""

    seed: int            # initialization, batch order and fold assignment
    fold: int
    train: Tensor        # indices into the training pool (on the inputs' device)
    val: Tensor
    cpu_train: Tensor    # the same, on the CPU (the batches are drawn there)
    x: Tensor            # the training pool's inputs (standardized with this split's training part, if asked)
    x_test: Tensor | None


def make_splits(x: Tensor, x_test: Tensor | None, folds: Sequence[tuple[Tensor, Tensor]], seed: int, seeds: int,
                standardize: bool = False) -> list[Split]:
    """Every (seed, fold) split, seed-major: seed ``seed``'s folds are ``folds``, seed ``seed + s``'s
    :func:`make_folds` with its own seed; with ``standardize`` each split's inputs (and test inputs) are
    standardized with the statistics of its training part."""
    if standardize and not (x.is_floating_point() or x.is_complex()):
        raise ValueError(f"standardize: the inputs are integers ({str(x.dtype).removeprefix('torch.')}, kept so "
                         "for a model that takes them, such as token ids for an Embedding); standardizing "
                         "would change what they mean: leave standardize off")
    out = []
    for s in range(seeds):
        pairs = folds if s == 0 else make_folds(len(x), len(folds), seed + s)
        for k, (train, val) in enumerate(pairs):
            split_x, split_test = x, x_test
            if standardize:
                from .data import Standardizer

                scaler = Standardizer.fit(x.index_select(0, train.to(x.device)))
                split_x, split_test = scaler(x), None if x_test is None else scaler(x_test)
            out.append(Split(seed + s, k, train.to(x.device), val.to(x.device), train.cpu(), split_x, split_test))
    return out


@torch.no_grad()
def measure(outputs: Callable[[Tensor], Tensor], objective: Any, x: Tensor, y: Tensor, members: int = 1,
            chunk: int = 512) -> Tensor:
    """The metrics ``[members, len(objective.metrics)]`` of ``members`` models on ``(x, y)``: ``outputs(x)``
    gives their outputs ``[members, len(x), ...]``; the objective's sums over chunks of ``chunk`` examples."""
    sums = torch.zeros(members, len(objective.metrics), dtype=torch.float64, device=x.device)
    for start in range(0, len(x), chunk):
        sums += objective.sums(outputs(x[start:start + chunk]), y[start:start + chunk])
    return objective.finish(sums, y).cpu()


# ----------------------------------------------------------------- random draws

_MASK32 = 0xFFFFFFFF


def draw_stream(seed: int, fold: int, step: int) -> int:
    """The stream of split ``(seed, fold)``'s random draws at ``step`` (a 32-bit number): a pure function,
    the same for every configuration (common random numbers, as the minibatches), so that a member's draws
    never depend on its position in a stack or its neighbours, and ``fit`` draws the same."""
    value = 0
    for part in (seed, fold, step):
        value = _mix32((value ^ (int(part) & _MASK32)) * 0x9E3779B1 & _MASK32)
    return value


def _mix32(x: Any) -> Any:
    """A 32-bit integer hash (the "lowbias32" finalizer of C. Wellons' hash prospector); Python ints or
    int64 tensors holding values below 2**32 (every product stays below 2**63)."""
    x = x ^ (x >> 16)
    x = (x * 0x21F0AAAD) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x735A2D97) & _MASK32
    return x ^ (x >> 15)


class SeededDropout(torch.overrides.TorchFunctionMode):
    """Dropout (``F.dropout``, ``dropout1d/2d/3d``, so ``nn.Dropout`` and its kin) whose mask is a pure
    function of a stream (:func:`draw_stream`), the layer's call number in the forward and each element's
    position: a value is kept when ``u >= p`` for ``u = mix32(position + mix32(stream + call)) / 2**32``,
    then scaled by ``1 / (1 - p)`` (as torch's). ``stream`` is a number, or a 0-dim tensor that ``vmap``
    batches (one stream per member), so stacked members and a lone model draw exactly the same."""

    def __init__(self, stream: Any):
        super().__init__()
        self.stream, self.calls = stream, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        channels = _CHANNEL_DROPOUTS.get(func)
        if func is not nn.functional.dropout and channels is None:
            return func(*args, **kwargs)
        x, p, training = _dropout_args(*args, **kwargs)
        if channels is not None and x.dim() != channels + 2:   # unbatched: torch's own rules and draws
            return func(*args, **kwargs)
        if not training or p == 0:
            return x
        shape = x.shape if channels is None else (*x.shape[:2], *([1] * channels))
        self.calls += 1
        start = _mix32((self.stream + self.calls * 0x632BE5AB) & _MASK32)
        position = torch.arange(math.prod(shape), dtype=torch.int64, device=x.device).view(shape)
        u = _mix32((position + start) & _MASK32).to(torch.float64) * 2.0**-32
        keep = (u >= p).to(x.dtype)
        return x * keep * (1.0 / (1.0 - p)) if p < 1 else x * 0


def dropout_draws(model: nn.Module, stream: Any) -> contextlib.AbstractContextManager:
    """:class:`SeededDropout` of ``stream`` around a forward of ``model`` when it draws dropout (``nn.Dropout``,
    ``Dropout1d/2d/3d``, or a stacked ``nn.RNN``/``GRU``/``LSTM`` with dropout between its layers, which
    the sweep's recurrent cells draw through ``F.dropout``); nothing otherwise, so a model without them pays
    nothing."""
    if any(isinstance(m, _DROPOUT_LAYERS) or _drops_between_layers(m) for m in model.modules()):
        return SeededDropout(stream)
    return contextlib.nullcontext()


def _drops_between_layers(module: nn.Module) -> bool:
    return isinstance(module, nn.RNNBase) and module.dropout > 0 and module.num_layers > 1


_DROPOUT_LAYERS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
_CHANNEL_DROPOUTS = {nn.functional.dropout1d: 1, nn.functional.dropout2d: 2, nn.functional.dropout3d: 3}


def _dropout_args(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False):
    return input, float(p), bool(training)
