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

__all__ = ["RunWriter", "write_run", "write_sweep", "effective_lr", "safe_run_name", "run_name", "flat_hparams",
           "used_hyperparameters"]


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


def _new_run_dir(logdir: Path, name: str) -> Path:
    """``logdir/name``, or ``name_2``, ``name_3``, ... : a directory no other run holds, made
    atomically, so two runs started at the same moment never write into one."""
    logdir.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 10_000):
        path = logdir / (name if attempt == 1 else f"{name}_{attempt}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"{logdir / name}: 10000 runs of that name already exist")


class RunWriter:
    """Step-by-step writer for one run: ``logdir/run_name`` (with ``unique=True`` a new directory,
    suffixed ``_2``, ``_3``, ... when that name is taken).

    >>> with RunWriter("runs", "lr=0.05,mu=0.9", {"lr": 0.05, "momentum": 0.9}) as w:  # doctest: +SKIP
    ...     w.log(step, loss=0.7, lr=0.05)
    ...     w.finish({"test_accuracy": 0.68})
    """

    def __init__(self, logdir: str | Path, run_name: str, hparams: Mapping[str, Any] | None = None,
                 unique: bool = False):
        from torch.utils.tensorboard import SummaryWriter

        name = safe_run_name(run_name)
        self.path = _new_run_dir(Path(logdir), name) if unique else Path(logdir) / name
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


def flat_hparams(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as flat, typed hparams that the HParams dashboard can sort and filter.

    ``{"hyperparameters": {"lr": 0.1, "betas": (0.9, 0.999)}, "seed": 0}`` becomes
    ``{"lr": 0.1, "betas.0": 0.9, "betas.1": 0.999, "seed": 0}``: the entries of a nested
    mapping keep their own names (a name already taken gets its parent's as a prefix),
    tuples of numbers become one number per component, numbers stay numbers.
    """
    out: dict[str, Any] = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            for inner, v in flat_hparams(value).items():
                out[inner if inner not in out and inner not in settings else f"{name}.{inner}"] = v
        elif isinstance(value, (tuple, list)) and value and all(_is_number(v) for v in value):
            out.update({f"{name}.{i}": _number(v) for i, v in enumerate(value)})
        else:
            out[name] = _number(value) if _is_number(value) else _plain(value)
    return out


def _is_number(value: Any) -> bool:
    if hasattr(value, "numel") and value.numel() == 1:
        value = value.item()
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def run_name(parts: Mapping[str, Any]) -> str:
    """``name=value`` for each part, once, joined by ``_`` (numbers to 4 significant digits)."""
    shown = [f"{k}={v:.4g}" if _is_number(v) else (f"{k}={v}" if k else str(v)) for k, v in parts.items()
             if v is not None]
    return safe_run_name("_".join(shown))


def write_sweep(results: Any, logdir: str | Path) -> int:
    """One run per configuration of ``results`` (a :class:`~inertia.sweeps.SweepResults`); returns how
    many runs it wrote.

    Each run holds, at the number of updates taken (1 ... steps, as ``inertia train`` logs): the
    training loss; the validation and test metrics at every evaluation point; the lr and momentum
    actually used, schedules included, and the effective lr; the hyperparameters (every swept and
    set one, flat and typed) and final metrics for the HParams tab. A configuration whose run is
    already in ``logdir`` is not written again, so a rerun into the same directory adds only new runs.
    """
    count = 0
    for r in results.records():
        path = Path(logdir) / run_name({"trial": f"{r.get('trial', count):04d}",
                                        **{n: r[n] for n in results.swept}})
        if path.is_dir() and any(path.glob("events.out.tfevents.*")):
            continue
        write_run(str(logdir), path.name, _sweep_hparams(results, r), _sweep_scalars(results, r),
                  _final_metrics(r))
        count += 1
    return count


def _sweep_hparams(results: Any, record: Mapping[str, Any]) -> dict[str, Any]:
    meta = results.meta
    settings = {"optimizer": meta.get("optimizer"), **(meta.get("fixed") or {}),
                **{n: record[n] for n in results.swept},
                **{f"schedule.{n}": str(s) for n, s in (meta.get("schedules") or {}).items()},
                "steps": record.get("steps"), "batch_size": meta.get("batch_size"),
                "seeds": meta.get("seeds"), "folds": meta.get("folds")}
    return flat_hparams({k: v for k, v in settings.items() if v is not None})


def _sweep_scalars(results: Any, record: Mapping[str, Any]) -> dict[str, list[tuple[int, Any]]]:
    from .sweeps.results import train_curve_steps

    at = train_curve_steps(record)
    scalars = {"loss": [(s, v) for s, v in zip(at, record.get("train_loss_curve") or []) if v is not None]}
    for key in ("val_loss", "val_accuracy", "val_rmse", "test_loss", "test_accuracy", "test_rmse"):
        curve = record.get(f"{key}_mean_curve") or []
        scalars[key] = [(s, v) for s, v in zip(record.get("eval_steps") or [], curve) if v is not None]
    hyper = used_hyperparameters(results, record)
    for tag, values in hyper.items():
        scalars[tag] = [(s, value) for s, value in ((s, values(s - 1)) for s in at) if value is not None]
    if "lr" in hyper and "momentum" in hyper:
        convention = str((results.meta.get("fixed") or {}).get("convention", "torch"))
        scalars["effective_lr"] = [(s, float(effective_lr(lr, mu, convention)))
                                   for (s, lr), (_, mu) in zip(scalars["lr"], scalars["momentum"])]
    return {tag: series for tag, series in scalars.items() if series}


def used_hyperparameters(results: Any, record: Mapping[str, Any]) -> dict[str, Any]:
    """``{"lr": f, "momentum": f}``: the value a configuration used at each update (``f(t)``, t from 0),
    its schedule applied from its own value as the sweep applied it. A tuned rule's (``yellowfin``) are
    the values its tuner set, mean over the configuration's seeds and folds, at the steps of its
    training-loss curve (``record["lr_curve"]``; None at another step or where a member diverged)."""
    from . import rules
    from .core import with_schedules
    from .sweeps.results import train_curve_steps

    meta = results.meta
    preset = rules.get(meta.get("optimizer") or "momentum")
    if preset.tuner is not None:
        at = [step - 1 for step in train_curve_steps(record)]
        return {name: (lambda t, used=dict(zip(at, record.get(f"{name}_curve") or [])): used.get(t))
                for name in ("lr", "momentum")}
    values = {**preset.defaults, **(meta.get("fixed") or {}), **{n: record[n] for n in results.swept}}
    steps = int(record.get("steps") or meta.get("steps") or 1)
    hyper = with_schedules(preset.rule, values, dict(meta.get("schedules") or {}), steps, results.swept)
    out = {}
    for name in ("lr", "momentum"):
        if isinstance(hyper.get(name), (int, float)) or callable(hyper.get(name)):
            value = hyper[name]
            out[name] = (lambda t, v=value: float(v(t))) if callable(value) else (lambda t, v=value: float(v))
    return out


def _final_metrics(record: Mapping[str, Any]) -> dict[str, float]:
    keys = ("val_loss_mean", "val_accuracy_mean", "val_rmse_mean", "test_loss_mean", "test_accuracy_mean",
            "test_rmse_mean", "test_r2_mean")
    final = {k: record[k] for k in keys if record.get(k) is not None}
    final["diverged"] = 1.0 if record["status"] == "diverged" else 0.0
    return final
