"""The vectorized trainer: N configurations x K folds trained at once.

Every parameter is stacked along a leading *member* axis ``[M, ...]`` (member =
one configuration on one fold, ordered fold-major). The update is the rule's own
``update`` called on the stacked tensors with ``[M]``-tensor hyperparameters
(:func:`inertia.core.member_hyper`), exactly as :class:`inertia.RuleOptimizer`
does for one model; the maths is never written here.

Forward/backward for all members at once: :mod:`.backends` (a hand-written
batched MLP, a convolutional chain with the members' channels side by side
(:mod:`.conv`), or ``functional_call`` + ``vmap`` for any ``nn.Module``, buffers
included). What is minimized and measured: :mod:`.objective` (any loss; accuracy
for classification, RMSE and R² for regression).

The loss is the sum over members of each member's mean loss, so one backward
gives every member its own gradient. Members never mix: a member that diverges
(NaN/inf, or loss above a threshold) is removed from the stack at that step and
the others go on unchanged.

The data (folds, minibatches, splits, initialization, evaluation) is
:mod:`inertia.pipeline`'s, the one that :func:`inertia.fit` stands on too; how
many configurations a stack holds is :mod:`.memory`'s.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from ..core import MemberHyper, Stack, member_hyper
from ..pipeline import batch_at, draw_stream, input_dtype, make_splits, measure, seeded_models
from .backends import AutogradStep, BatchedMLP, LoopForward, VmapForward, mlp_layout, step_failure
from .conv import ConvChainForward, conv_layout
from .gemm import backend_for as gemm_backend_for
from .objective import Objective, check_model, make_objective


@dataclass
class Job:
    """Everything the engine needs that is the same for every member."""

    model_factory: Callable[[], nn.Module]
    x: Tensor                      # training pool [n, ...] (folds are drawn from it); integers stay integer
                                   # for a model that takes them (inertia.pipeline.input_dtype)
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
    backend: str = "auto"          # auto | batched | conv | vmap (| loop: chosen when vmap cannot batch the model)
    diverge_factor: float = 10.0   # loss > factor x (first-step loss) counts as diverged
    diverge_above: float | None = None  # absolute threshold instead of the factor
    curve_points: int = 200
    schedules: dict[str, Any] = field(default_factory=dict)  # name -> schedule spec (inertia.core.with_schedules)
    eval_every: int = 0            # validation and test metrics every this many steps (0: at the end only)
    seeds: int = 1                 # seed s = seed + s: its own initialization, batch order and folds
    loss: Any = "auto"             # a name of .objective.LOSSES, "auto" (by the targets' dtype) or a callable
    standardize: bool = False      # inputs standardized with each split's training part (never its validation)

    def __post_init__(self) -> None:
        self.templates = seeded_models(self.model_factory, self.seed, self.seeds, self.device, self.dtype)
        self.template = self.templates[0]
        self.names = [n for n, _ in self.template.named_parameters()]
        # the indices of parameters the user froze (requires_grad False): never updated, as torch.optim skips them
        self.frozen = frozenset(i for i, p in enumerate(self.template.parameters()) if not p.requires_grad)
        self.buffer_names = [n for n, _ in self.template.named_buffers()]
        self.objective = make_objective(self.loss, self.y)
        x_dtype = input_dtype(self.template, self.x.to(self.device), self.dtype, self.x_test)
        self.x = self.x.to(self.device, x_dtype)
        self.y = self.objective.target(self.y, self.dtype).to(self.device)
        if self.x_test is not None:
            self.x_test = self.x_test.to(self.device, x_dtype)
            self.y_test = self.objective.target(self.y_test, self.dtype).to(self.device)
        self._check_output()
        self._backend = stack_backend(self.backend, self.template, self.objective, self.x, self.y, self.batch_size)
        self.backend, self.fallback = self._backend.name, self._backend.fallback
        self.folds = [(t.to(self.device), v.to(self.device)) for t, v in self.folds]
        self.splits = make_splits(self.x, self.x_test, self.folds, self.seed, self.seeds, self.standardize)

    def _check_output(self) -> None:
        """One forward of two examples: the model's output must fit the targets and the loss (one line if not)."""
        classes = int(self.y.max()) + 1 if self.objective.name == "cross_entropy" and len(self.y) else None
        if classes is not None and self.y_test is not None and len(self.y_test):
            classes = max(classes, int(self.y_test.max()) + 1)
        check_model(self.objective, self.template, self.x, self.y, classes)

    @property
    def metric_names(self) -> list[str]:
        """What every evaluation point records: ``val_loss``, ``val_accuracy`` (or ``val_rmse``, ``val_r2``), test too."""
        return [f"{part}_{name}" for part in ("val", "test") for name in self.objective.metrics]

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
        return self._backend.make_step()


@dataclass(frozen=True)
class StackBackend:
    """The backend that computes a stack of a model's members (:mod:`.backends`): ``batched``, ``conv``,
    ``vmap`` or ``loop``, and for ``loop`` why ``vmap`` cannot batch the model (``fallback``)."""

    name: str
    fallback: str | None
    forward: VmapForward | ConvChainForward | None   # the autograd backends' forward (None: batched)
    objective: Objective

    def make_step(self) -> BatchedMLP | AutogradStep:
        """A fresh forward/backward (it keeps buffers: one per stack)."""
        return BatchedMLP() if self.forward is None else AutogradStep(self.forward, self.objective)


def stack_backend(requested: str, template: nn.Module, objective: Objective, x: Tensor, y: Tensor,
                  batch_size: int) -> StackBackend:
    """The backend for stacks of ``template`` on inputs like ``x`` (``requested``: ``auto`` or a backend's
    name): the batched MLP or the conv chain where the model is one, else ``vmap``, else ``loop`` when a
    trial step on a real batch of ``(x, y)`` shows that ``vmap`` cannot batch it. A ValueError (one line)
    for a backend the model cannot take, or a model that cannot take a training step at all."""
    layout = mlp_layout(template) if x.dim() == 2 and objective.name == "cross_entropy" else None
    if requested not in ("auto", "batched", "conv", "vmap"):
        raise ValueError(f"backend must be auto, batched, conv or vmap, got {requested!r}")
    if requested == "batched" and layout is None:
        raise ValueError("the batched backend needs an MLP of nn.Linear and nn.ReLU layers whose forward is "
                         "that chain, 2-D inputs and the cross_entropy loss; backend vmap runs any model")
    chain = conv_layout(template, x.shape[1:]) if requested in ("auto", "conv") and not layout else None
    if requested == "conv" and chain is None:
        raise ValueError("the conv backend needs a chain of Conv2d, BatchNorm2d, ReLU, pooling, Flatten and "
                         "Linear layers whose forward is that chain; backend vmap runs any model")
    if requested != "vmap" and layout is not None:
        return StackBackend("batched", None, None, objective)
    if requested != "vmap" and chain is not None:
        return StackBackend("conv", None, ConvChainForward(chain), objective)
    names = [n for n, _ in template.named_parameters()]
    buffer_names = [n for n, _ in template.named_buffers()]
    rows = torch.arange(min(batch_size, len(y)), device=x.device)
    x, y = x.index_select(0, rows), y.index_select(0, rows)
    fallback = _vmap_failure(template, names, buffer_names, objective, x, y)
    forward = (LoopForward if fallback else VmapForward)(template, names, buffer_names)
    return StackBackend("loop" if fallback else "vmap", fallback, forward, objective)


def _vmap_failure(template: nn.Module, names: list[str], buffer_names: list[str], objective: Objective,
                  x: Tensor, y: Tensor) -> str | None:
    """One line saying why ``vmap`` cannot train the model (a trial step on the batch ``x``, ``y``), or None;
    a ValueError when the model cannot take a training step member after member either."""
    reason = step_failure(VmapForward, template, names, buffer_names, objective, x, y)
    if reason is None:
        return None
    name = type(template).__name__
    fails = step_failure(LoopForward, template, names, buffer_names, objective, x, y)
    if fails is not None:
        raise ValueError(f"model {name}: a training step fails on a batch of inputs of shape {tuple(x.shape)}, "
                         f"dtype {str(x.dtype).removeprefix('torch.')}: {fails}")
    return f"model {name}: torch.vmap cannot batch it ({reason}); its members train one after another (backend loop)"


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
        hyper = member_hyper(job.preset, [{**job.fixed, **self.configs[int(c)]} for c in self.config_of],
                             columns=self.swept, schedules=job.schedules, steps=job.steps)
        self.tuner = None   # a tuned rule's (YellowFin): it sets every member's lr and momentum at every step
        self.tuned_curves: Tensor | None = None   # [lr or momentum, member, step]: the values it set
        if job.preset.tuner is not None:
            from ..yellowfin import StackTuner

            self.tuner = StackTuner(hyper.values, n * k, job.device)
            hyper = MemberHyper(job.preset.rule, {**hyper.values, **self.tuner.columns})
            self.tuned_curves = torch.full((2, n * k, job.steps), float("nan"), dtype=torch.float64)
        self.stack = Stack(job.preset.rule, _stacked(job, n, "parameters"), hyper)
        self.buffers = _stacked(job, n, "buffers")    # the members' own (BatchNorm running statistics)
        self.curves = torch.full((n * k, job.steps), float("nan"), dtype=torch.float64)
        self.first_loss: Tensor | None = None
        self.alive = torch.ones(n * k, dtype=torch.bool)     # per original member
        self.diverged_step: dict[int, int] = {}               # config -> step (1-based)
        self.pruned: dict[int, int] = {}                      # config -> step
        # val loss, val accuracy, test loss, test accuracy of each original member at each of job.eval_steps
        self.history = torch.full((len(job.metric_names), n * k, len(job.eval_steps)), math.nan, dtype=torch.float64)
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
        index = keep.nonzero().squeeze(1)
        self.stack.keep(index)
        if self.tuner is not None:
            self.tuner.keep(index)
        self.buffers = [b.index_select(0, index.to(b.device)) for b in self.buffers]
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
        groups = [(job.splits[g].x.index_select(0, b), start, end) for b, (g, start, end) in zip(batches, rows)]
        parts = [job.y.index_select(0, b).unsqueeze(0).expand(end - start, len(b), *job.y.shape[1:])
                 for b, (_, start, end) in zip(batches, rows)]
        target = parts[0] if len(parts) == 1 else torch.cat(parts)
        streams = None if job.backend not in ("vmap", "loop") else torch.cat([
            torch.full((end - start,), draw_stream(job.splits[g].seed, job.splits[g].fold, t), dtype=torch.int64)
            for g, start, end in rows]).to(job.x.device)
        losses = self._step.loss(self.params, self.buffers, groups, target, seed=step_seed(job.seed, t),
                                 streams=streams)
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
        if self.tuner is None:
            def apply(i: int, grad: Tensor) -> None:
                if i not in job.frozen:
                    stack.update(i, grad if kept is None else grad.index_select(0, kept))

            self._step.backward(apply)
        else:
            self._tuned_update(t, kept)
        stack.end_step()
        self.step = t + 1

    def _tuned_update(self, t: int, kept: Tensor | None) -> None:
        """The tuner sees every gradient of the step, sets each member's lr and momentum, then the rule updates."""
        grads: list[Tensor] = [None] * len(self.params)   # type: ignore[list-item]

        def keep(i: int, grad: Tensor) -> None:
            grads[i] = grad if kept is None else grad.index_select(0, kept)

        self._step.backward(keep)
        trained = [i for i in range(len(grads)) if i not in self.job.frozen]
        if len(self.live):
            used = self.tuner.step([grads[i] for i in trained], self.live)
            self.tuned_curves[:, self.live, t] = torch.stack(used).cpu()
            self.stack.refresh()
            for i in trained:
                self.stack.update(i, grads[i])

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
    def evaluate(self, x: Tensor, y: Tensor, rows: tuple[int, int], chunk: int = 512) -> Tensor:
        """The metrics ``[m, len(objective.metrics)]`` of stack rows ``rows`` on ``(x, y)``, at the rule's
        evaluation point, in eval mode (BatchNorm with each member's own running statistics)."""
        start, end = rows
        params = [p[start:end] for p in self.stack.eval_params()]
        buffers = [b[start:end] for b in self.buffers]
        return measure(lambda part: self._eval_step.outputs(params, buffers, [(part, 0, end - start)]),
                       self.job.objective, x, y, end - start, chunk)

    def record(self) -> None:
        """Validation metrics of every live member on its split's validation part, and test metrics,
        at this step (one of ``job.eval_steps``)."""
        p, job = self._point[self.step], self.job
        per_part = len(job.objective.metrics)
        for g, start, end in self.split_rows():
            split, members = job.splits[g], self.live[start:end]
            self.history[:per_part, members, p] = self.evaluate(split.x[split.val], job.y[split.val], (start, end)).T
            if split.x_test is not None:
                self.history[per_part:, members, p] = self.evaluate(split.x_test, job.y_test, (start, end)).T

    def config_means(self) -> dict[int, dict[str, float]]:
        """Per live configuration: each validation metric (``val_loss``, ...), its mean over the
        configuration's members at this step's record."""
        p = self._point[self.step]
        names = [(i, name) for i, name in enumerate(self.job.metric_names) if name.startswith("val_")]
        out = {}
        for c in sorted(set(self.config_of[self.live].tolist())):
            members = self.live[self.config_of[self.live] == c]
            out[c] = {name: float(self.history[i, members, p].mean()) for i, name in names}
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
            if self.tuner is not None:   # the lr and μ used, mean over seeds and folds, at the loss curve's steps
                rec["lr_curve"], rec["momentum_curve"] = (_subsample(used[members].mean(0), self.job.curve_points)
                                                          for used in self.tuned_curves)
            rec["steps"] = self.job.steps
            out.append(rec)
        return out

    def _metrics(self, members: list[int], finished: bool) -> dict[str, Any]:
        """Mean and std over a configuration's members (seeds and folds) of each metric: at the end (``val_loss_mean``, ...;
        None unless ``finished``) and at every evaluation point (``val_loss_mean_curve``, ...)."""
        rows = self.history[:, members]                       # [metric, member, point]
        mean, std = rows.mean(1), rows.std(1, unbiased=False)
        out: dict[str, Any] = {"eval_steps": list(self.job.eval_steps)}
        for i, name in enumerate(self.job.metric_names):
            out[f"{name}_mean"] = _number(mean[i, -1]) if finished else None
            out[f"{name}_std"] = _number(std[i, -1]) if finished else None
            out[f"{name}_mean_curve"] = [_number(v) for v in mean[i]]
            out[f"{name}_std_curve"] = [_number(v) for v in std[i]]
        return out

    # -- checkpointing ---------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "keys": self.keys, "configs": self.configs, "step": self.step,
            "stack": self.stack.state_dict(), "buffers": [b.cpu() for b in self.buffers],
            "curves": self.curves, "alive": self.alive, "history": self.history,
            "first": getattr(self, "_first_by_member", None), "first_loss": self.first_loss,
            "diverged_step": self.diverged_step, "pruned": self.pruned,
            **({"tuner": self.tuner.state_dict(), "tuned_curves": self.tuned_curves} if self.tuner is not None else {}),
        }

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.step = int(sd["step"])
        self.stack.load_state_dict(sd["stack"])
        self.buffers = [b.to(self.job.device) for b in sd["buffers"]]
        self.curves, self.alive, self.history = sd["curves"], sd["alive"], sd["history"]
        if sd["first"] is not None:
            self._first_by_member = sd["first"]
        self.first_loss = sd["first_loss"]
        self.diverged_step, self.pruned = dict(sd["diverged_step"]), dict(sd["pruned"])
        if self.tuner is not None:
            self.tuner.load_state_dict(sd["tuner"])
            self.tuned_curves = sd["tuned_curves"]
        self._split_rows = None
        self._limit = None


def _stacked(job: Job, n: int, kind: str) -> list[Tensor]:
    """The templates' parameters or buffers stacked for n configurations of every split (split-major)."""
    per_split = [list(getattr(job.templates[split.seed - job.seed], kind)()) for split in job.splits]
    return [torch.cat([tensors[i].detach().unsqueeze(0).expand(n, *tensors[i].shape) for tensors in per_split])
            .contiguous() for i in range(len(per_split[0]))]


def step_seed(seed: int, step: int) -> int:
    """The seed of step ``step``'s random draws other than dropout's (:func:`inertia.pipeline.draw_stream`): a
    pure function, so a resumed run draws the same."""
    return (int(seed) * 1_000_003 + int(step) * 7_919 + 104_729) % (2**63 - 1)


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
