"""TensorBoard output: one run directory per configuration, from plain data.

Training code returns numbers; this module only writes them. ``write_run`` takes
whole series at once, and ``write_sweep`` one run per configuration of a sweep's results;
:class:`RunWriter` logs step by step (what ``inertia train`` does). Each writes,
into ``logdir/run_name``:

- scalars under the tags given (e.g. ``loss``, ``accuracy``, ``lr``,
  ``momentum``, ``effective_lr``);
- the hyperparameters and final metrics for TensorBoard's HParams tab (written
  in the run's own directory, unlike ``SummaryWriter.add_hparams`` which opens a
  sub-run), the final metrics also as scalars at the last step.

View with ``tensorboard --logdir DIR``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .rules.sgd import effective_lr  # re-exported: callers log it beside lr and momentum

__all__ = ["RunWriter", "write_run", "write_sweep", "effective_lr", "safe_run_name"]


def safe_run_name(name: str) -> str:
    """A run name usable as one directory name (path separators and odd characters replaced)."""
    cleaned = re.sub(r"[^A-Za-z0-9._=,+-]+", "_", str(name)).strip("._")
    return cleaned or "run"


def _plain(value: Any) -> Any:
    """A value TensorBoard's HParams plugin accepts: a number or a string.

    Bools become "True"/"False" (torch's ``hparams`` would store them as 0/1 numbers).
    """
    if hasattr(value, "item") and getattr(value, "numel", lambda: 1)() == 1:
        value = value.item()
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float, str)):
        return value
    if value is None:
        return "None"
    return str(value)


def _number(value: Any) -> float:
    if hasattr(value, "item"):
        value = value.item()
    return float(value)


class RunWriter:
    """Step-by-step writer for one run: ``logdir/run_name``.

    >>> with RunWriter("runs", "lr=0.05,mu=0.9", {"lr": 0.05, "momentum": 0.9}) as w:  # doctest: +SKIP
    ...     w.log(step, loss=0.7, lr=0.05)
    ...     w.finish({"test_accuracy": 0.68})
    """

    def __init__(self, logdir: str | Path, run_name: str, hparams: Mapping[str, Any] | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.path = Path(logdir) / safe_run_name(run_name)
        self.hparams = dict(hparams or {})
        self.last_step = 0
        self._writer = SummaryWriter(log_dir=str(self.path))
        self._finished = False

    def scalar(self, tag: str, value: Any, step: int) -> None:
        value = _number(value)
        self._writer.add_scalar(tag, value, int(step))
        self.last_step = max(self.last_step, int(step))

    def log(self, step: int, **values: Any) -> None:
        """Write several scalars at one step: ``log(10, loss=0.5, lr=0.1)``."""
        for tag, value in values.items():
            self.scalar(tag, value, step)

    def finish(self, final_metrics: Mapping[str, Any] | None = None) -> None:
        """Write the hyperparameters and final metrics (HParams tab), then close."""
        if self._finished:
            return
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        metrics = {k: _number(v) for k, v in (final_metrics or {}).items()}
        if self.hparams or metrics:
            experiment, start, end = hparams_summary({k: _plain(v) for k, v in self.hparams.items()}, metrics)
            writer = self._writer._get_file_writer()
            for summary in (experiment, start, end):
                writer.add_summary(summary)
            for tag, value in metrics.items():
                self._writer.add_scalar(tag, value, self.last_step)
        self.close()
        self._finished = True

    def close(self) -> None:
        self._writer.flush()
        self._writer.close()

    def __enter__(self) -> "RunWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None:
            self.finish()
        else:
            self.close()


def write_run(
    logdir: str | Path,
    run_name: str,
    hparams: Mapping[str, Any],
    scalars: Mapping[str, Iterable[tuple[int, Any]] | Sequence[Any]],
    final_metrics: Mapping[str, Any] | None = None,
) -> Path:
    """Write one configuration's run and return its directory ``logdir/run_name``.

    ``scalars`` maps a tag to a series: pairs ``(step, value)``, or plain values
    taken as steps 0, 1, 2, ... (a 1-D tensor or array works). ``hparams``
    values may be numbers, strings, bools (stored as "True"/"False") or
    anything ``str()`` describes (tuples, None).
    """
    writer = RunWriter(logdir, run_name, hparams)
    try:
        for tag, series in scalars.items():
            if hasattr(series, "tolist"):
                series = series.tolist()
            for index, item in enumerate(series):
                if isinstance(item, (tuple, list)) and len(item) == 2:
                    step, value = item
                else:
                    step, value = index, item
                writer.scalar(tag, value, step)
        writer.finish(final_metrics or {})
    except BaseException:
        writer.close()
        raise
    return writer.path


def write_sweep(results: Any, logdir: str | Path) -> int:
    """One run per configuration of ``results`` (a :class:`~inertia.sweeps.SweepResults`): its loss
    curve, lr, momentum and effective lr, and its final metrics; returns how many runs."""
    count = 0
    convention = str((results.meta.get("fixed") or {}).get("convention", "torch"))
    for r in results.records():
        hparams = {name: r[name] for name in results.swept}
        name = "_".join(f"{k}={v:.4g}" for k, v in hparams.items())
        curve = list(r.get("train_loss_curve") or [])
        steps = r.get("steps") or len(curve)
        at = [round(i * (steps - 1) / max(1, len(curve) - 1)) + 1 for i in range(len(curve))]
        scalars = {"loss": [(s, v) for s, v in zip(at, curve) if v is not None]}
        for tag in ("lr", "momentum"):
            if tag in hparams:
                scalars[tag] = [(s, hparams[tag]) for s in (1, steps)]
        if "lr" in hparams and "momentum" in hparams:
            eff = float(effective_lr(hparams["lr"], hparams["momentum"], convention))
            scalars["effective_lr"] = [(s, eff) for s in (1, steps)]
        final = {k: r[k] for k in ("val_loss_mean", "val_accuracy_mean", "test_accuracy_mean") if r.get(k) is not None}
        final["diverged"] = 1.0 if r["status"] == "diverged" else 0.0
        write_run(str(logdir), f"trial{r.get('trial', count):04d}_{name}", hparams, scalars, final)
        count += 1
    return count
