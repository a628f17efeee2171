"""What a sweep minimizes and measures: the loss, the task it implies, and the task's metrics.

- classification (integer class labels): ``cross_entropy`` (the default for integer
  targets), or ``bce_with_logits`` for 0/1 targets (one logit per output); metrics loss
  and accuracy (the arg-max class, or logit > 0 for ``bce_with_logits``);
- regression (float targets ``[n]`` or ``[n, k]``): ``mse`` (the default for float
  targets), ``l1``, ``huber``; metrics loss, RMSE ``√(Σ(ŷ − y)²/N)`` and
  R² ``1 − Σ(ŷ − y)²/Σ(y − ȳ)²`` (ȳ the mean of the evaluated targets);
- any callable ``loss(output, target) -> scalar`` (the mean over the batch), whose task
  follows the targets' dtype.

A member's loss is computed by the same function on its own outputs, so members never mix.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

LOSSES: dict[str, tuple[Callable[[Tensor, Tensor], Tensor], str]] = {
    "cross_entropy": (F.cross_entropy, "classification"),
    "bce_with_logits": (F.binary_cross_entropy_with_logits, "classification"),
    "mse": (F.mse_loss, "regression"),
    "l1": (F.l1_loss, "regression"),
    "huber": (F.huber_loss, "regression"),
}

METRICS = {"classification": ("loss", "accuracy"), "regression": ("loss", "rmse", "r2")}


@dataclass(frozen=True)
class Objective:
    """A loss and the task it belongs to; ``metrics`` are what evaluation reports."""

    name: str
    loss: Callable[[Tensor, Tensor], Tensor]
    task: str

    @property
    def metrics(self) -> tuple[str, ...]:
        return METRICS[self.task]

    def target(self, y: Tensor, dtype: torch.dtype) -> Tensor:
        """Targets as the loss takes them: class labels as they are, anything else in the model's ``dtype``."""
        if self.name == "cross_entropy" or (self.name != "bce_with_logits" and self.task == "classification"):
            return y
        return y.to(dtype)

    def fit(self, out: Tensor, target: Tensor) -> Tensor:
        """The output shaped like the target where the model adds a trailing axis of 1 (``[B, 1]`` for
        ``[B]``), for the named losses; a callable loss gets the model's output as it is."""
        squeeze = out.dim() == target.dim() + 1 and out.shape[-1] == 1
        if squeeze and self.name in LOSSES and self.name != "cross_entropy":
            return out.squeeze(-1)
        return out

    def member_losses(self, out: Tensor, target: Tensor) -> Tensor:
        """Each member's mean loss ``[M]`` from outputs ``[M, B, ...]`` and targets ``[M, B, ...]``."""
        if self.name == "cross_entropy":
            m, b = out.shape[:2]
            return F.cross_entropy(out.reshape(m * b, -1), target.reshape(m * b), reduction="none").view(m, b).mean(1)
        return torch.vmap(lambda o, t: self.loss(self.fit(o, t), t))(out, target)

    def sums(self, out: Tensor, target: Tensor) -> Tensor:
        """Per member ``[M, len(metrics)]``: the chunk's loss × its size, and the counts the metrics need
        (correct predictions; the squared error) — added up over chunks, then :meth:`finish`."""
        b = target.shape[0]
        tgt = target.unsqueeze(0).expand(out.shape[0], *target.shape)
        loss = self.member_losses(out, tgt).double() * b
        if self.task == "classification":
            hit = (out.argmax(-1) == target) if self.name == "cross_entropy" else ((out > 0) == (target > 0.5))
            correct = hit.reshape(out.shape[0], -1).double().mean(1) * b
            return torch.stack([loss, correct], 1)
        error = (self.fit(out, tgt) - tgt).double().square().reshape(out.shape[0], -1).sum(1)
        return torch.stack([loss, error, error], 1)

    def finish(self, sums: Tensor, y: Tensor) -> Tensor:
        """The metrics ``[M, len(metrics)]`` of summed chunks over all targets ``y``."""
        n = y.shape[0]
        if self.task == "classification":
            return sums / n
        spread = (y.double() - y.double().mean(0)).square().sum()
        rmse = (sums[:, 1] / y.numel()).sqrt()
        r2 = 1 - sums[:, 2] / spread if spread > 0 else torch.full_like(rmse, float("nan"))
        return torch.stack([sums[:, 0] / n, rmse, r2], 1)


def data_task(loss: Any) -> str | None:
    """The task a loss makes of the data: ``"regression"`` for a named regression loss (``mse``, ``l1``,
    ``huber``: the targets are read as floats, even whole numbers such as 25..346), else None (the
    task follows the targets)."""
    if callable(loss) or not isinstance(loss, str):
        return None
    name = loss.strip().lower().replace("-", "_")
    return "regression" if name in LOSSES and LOSSES[name][1] == "regression" else None


def make_objective(loss: Any, y: Tensor) -> Objective:
    """The objective of ``loss`` (a name in :data:`LOSSES`, ``"auto"``, or a callable) for targets ``y``;
    a ``ValueError`` naming ``loss`` when they do not fit."""
    integer = not y.is_floating_point()
    if callable(loss) and not isinstance(loss, str):
        return Objective(getattr(loss, "__name__", "custom"), loss, "classification" if integer else "regression")
    name = str(loss).strip().lower().replace("-", "_")
    if name == "auto":
        name = "cross_entropy" if integer else "mse"
    if name not in LOSSES:
        raise ValueError(f"loss: unknown loss {loss!r}; known: {', '.join(LOSSES)}, or a callable loss(output, target)")
    fn, task = LOSSES[name]
    if name == "cross_entropy" and not integer:
        raise ValueError("loss cross_entropy needs integer class labels, but the targets are floats "
                         "(a regression task? use loss mse, l1 or huber)")
    if name == "bce_with_logits" and not bool(((y == 0) | (y == 1)).all()):
        raise ValueError("loss bce_with_logits needs 0/1 targets")
    return Objective(name, fn, task)


def check_output(objective: Objective, out: Tensor, target: Tensor, classes: int | None) -> None:
    """One forward's output against the targets: a ``ValueError`` that says what does not fit."""
    shape = tuple(out.shape)
    if objective.name == "cross_entropy":
        if out.dim() != 2 or (classes is not None and out.shape[1] != classes):
            raise ValueError(f"model: its output has shape {shape} for a batch of {target.shape[0]}, but "
                             f"cross_entropy needs [batch, classes] = [{target.shape[0]}, {classes}]")
    elif objective.name in LOSSES and tuple(objective.fit(out, target).shape) != tuple(target.shape):
        raise ValueError(f"model: its output has shape {shape}, but the targets have shape "
                         f"{tuple(target.shape)} (loss {objective.name})")
    try:
        value = objective.loss(objective.fit(out, target), target)
    except Exception as error:
        raise ValueError(f"loss {objective.name}: fails on the model's output of shape {shape} and targets of "
                         f"shape {tuple(target.shape)}: {type(error).__name__}: {error}") from None
    if not isinstance(value, Tensor) or value.dim() != 0:
        got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"loss {objective.name}: must return one number (the batch's mean loss), got {got}")


def check_model(objective: Objective, model: Any, x: Tensor, y: Tensor, classes: int | None) -> None:
    """One forward of ``model`` on two examples in eval mode, its output checked against ``y``
    (:func:`check_output`); a ``ValueError`` in one line if the forward fails or does not fit."""
    model.eval()
    try:
        with torch.no_grad():
            out = model(x[:2])
    except Exception as error:
        first = (str(error).strip().splitlines() or [""])[0]
        raise ValueError(f"model {type(model).__name__}: its forward fails on two examples of the data (inputs of "
                         f"shape {tuple(x[:2].shape)}, dtype {str(x.dtype).removeprefix('torch.')}): "
                         f"{type(error).__name__}: {first}") from None
    finally:
        model.train()
    check_output(objective, out, y[:2], classes)
