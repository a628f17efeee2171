"""Contract, continued: the sweep and race engines give every rule's own numbers.

One table of cases, one per registered rule (the SGD family in all three
conventions, with and without Nesterov). Each case gives N configurations that
differ in EVERY numeric hyperparameter of the rule (tuples such as ``betas``
component by component), schedules on the learning rate and on momentum or
betas, and an independent reference optimizer: ``torch.optim`` where it exists,
the equations written plainly in tests/test_contract.py for the conventions and
rules torch lacks, else ``inertia.make_optimizer``. The test writes ``schedule(t)``
into the reference's ``param_groups`` before step t (and the next step's values
after the last step, as ``HyperScheduler`` leaves them).

- sweep: N configurations x K folds trained at once equal N x K separate runs on
  the same minibatches (final parameters at the rule's evaluation point, validation
  and test loss), on the batched MLP backend and, for some rules, the vmap backend;
- race: N configurations on a surface equal the reference driven by the surface's
  gradient, positions recorded at the evaluation point after every step.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import inertia
from inertia import rules, surfaces
from inertia.optim import make_optimizer
from inertia.races import race
from inertia.schedules import from_spec
from inertia.pipeline import batch_at, make_folds
from inertia.sweeps.engine import Job, Members, run_members
from test_contract import (EquationReference, aggmo_step, ademamix_step, cautious_or, decoupled_only, ema_step,
                           lion_step, muon_decay, qhm_step, sutskever_step, torch_muon)

FEATURES, CLASSES, EXAMPLES = 6, 3, 96
STEPS, BATCH, SEED = 16, 16, 5
RACE_STEPS = 30


# ---------------------------------------------------------------- references

def equations(step_fn: Callable) -> Callable:
    return lambda params, h: EquationReference(params, h, step_fn)


def torch_sgd(params, h):
    return torch.optim.SGD(params, lr=h["lr"], momentum=h["momentum"], dampening=h["dampening"],
                           nesterov=h["nesterov"], weight_decay=h["weight_decay"])


def torch_adam(params, h):
    cls = torch.optim.AdamW if h["decoupled_weight_decay"] else torch.optim.Adam
    return cls(params, lr=h["lr"], betas=h["betas"], eps=h["eps"], weight_decay=h["weight_decay"],
               amsgrad=h["amsgrad"], foreach=False)


def torch_nadam(params, h):
    return torch.optim.NAdam(params, lr=h["lr"], betas=h["betas"], eps=h["eps"], weight_decay=h["weight_decay"],
                             momentum_decay=h["momentum_decay"], foreach=False)


def torch_rmsprop(params, h):
    return torch.optim.RMSprop(params, lr=h["lr"], alpha=h["alpha"], eps=h["eps"], weight_decay=h["weight_decay"],
                               momentum=h["momentum"], centered=h["centered"], foreach=False)


def schedulefree(params, h):
    return make_optimizer("schedulefree", params, **h)


def lookahead_around(inner: Callable) -> Callable:
    return lambda params, h: inertia.Lookahead(inner(params, h), k=h["lookahead_k"], alpha=h["lookahead_alpha"])


# ---------------------------------------------------------------- the table

@dataclass
class Case:
    id: str
    preset: str
    structural: dict[str, Any]           # the same for every configuration (convention, nesterov, ...)
    configs: list[dict[str, Any]]        # one value of every numeric hyperparameter per configuration
    schedules: dict[str, Any]            # name -> spec, built from each configuration's own value
    reference: Callable                  # (params, full hyperparameters) -> an optimizer
    same: dict[str, str] = field(default_factory=dict)  # numeric ones that cannot vary here: why

    @property
    def rule(self) -> rules.Rule:
        return rules.get(self.preset).rule

    def full(self, config: dict[str, Any]) -> dict[str, Any]:
        return rules.get(self.preset).hyper(**self.structural, **config)


def _sgd_configs(dampening: bool) -> list[dict[str, Any]]:
    out = [dict(lr=0.3, momentum=0.9, weight_decay=0.01), dict(lr=0.2, momentum=0.7, weight_decay=0.03),
           dict(lr=0.1, momentum=0.5, weight_decay=0.05)]
    if dampening:
        for c, d in zip(out, (0.1, 0.3, 0.5)):
            c["dampening"] = d
    return out


ZERO_DAMPENING = {"dampening": "must be 0 with Nesterov and outside the torch convention"}
SGD_SCHEDULES = dict(lr="cosine", momentum="sutskever_ramp(every=5)")
ADAM_CONFIGS = [dict(lr=0.05, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01),
                dict(lr=0.03, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05),
                dict(lr=0.02, betas=(0.7, 0.9), eps=1e-4, weight_decay=0.1)]
BETA1_CYCLE = dict(lr="cosine", betas=("one_cycle_momentum", None))

MUON_CONFIGS = [dict(lr=0.05, momentum=0.95, weight_decay=0.1, fallback_lr_ratio=1.0, fallback_betas=(0.9, 0.999),
                     fallback_eps=1e-8, fallback_weight_decay=0.01),
                dict(lr=0.03, momentum=0.8, weight_decay=0.05, fallback_lr_ratio=0.5, fallback_betas=(0.8, 0.99),
                     fallback_eps=1e-6, fallback_weight_decay=0.03),
                dict(lr=0.02, momentum=0.6, weight_decay=0.0, fallback_lr_ratio=2.0, fallback_betas=(0.7, 0.9),
                     fallback_eps=1e-4, fallback_weight_decay=0.1)]
"""Three Muon configurations that differ in every numeric hyperparameter, its AdamW fallback's included."""

CASES = [
    Case("sgd-torch", "sgd", {}, _sgd_configs(True), SGD_SCHEDULES, torch_sgd),
    Case("nesterov-torch", "nesterov", {}, _sgd_configs(False),
         dict(lr="linear(start=0.0)", momentum="one_cycle_momentum"), torch_sgd, ZERO_DAMPENING),
    Case("sgd-sutskever", "momentum", dict(convention="sutskever"), _sgd_configs(False), SGD_SCHEDULES,
         equations(sutskever_step), ZERO_DAMPENING),
    Case("nesterov-sutskever", "nesterov", dict(convention="sutskever"), _sgd_configs(False),
         dict(lr="cosine", momentum="one_cycle_momentum"), equations(sutskever_step), ZERO_DAMPENING),
    Case("sgd-ema", "momentum", dict(convention="ema"), _sgd_configs(False), SGD_SCHEDULES,
         equations(ema_step), ZERO_DAMPENING),
    Case("nesterov-ema", "nesterov", dict(convention="ema"), _sgd_configs(False),
         dict(lr="linear(start=0.0)", momentum="sutskever_ramp(every=5)"), equations(ema_step), ZERO_DAMPENING),
    Case("adam", "adam", {}, ADAM_CONFIGS, BETA1_CYCLE, torch_adam),
    Case("adamw", "adamw", dict(amsgrad=True), ADAM_CONFIGS,
         dict(lr="linear(start=0.0)", betas=("one_cycle_momentum", None)), torch_adam),
    Case("nadam", "nadam", {}, [{**c, "momentum_decay": d} for c, d in zip(ADAM_CONFIGS, (4e-3, 1e-2, 5e-2))],
         BETA1_CYCLE, torch_nadam),
    Case("rmsprop", "rmsprop", {},
         [dict(lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.01, momentum=0.9),
          dict(lr=0.005, alpha=0.9, eps=1e-6, weight_decay=0.03, momentum=0.7),
          dict(lr=0.003, alpha=0.8, eps=1e-4, weight_decay=0.05, momentum=0.5)],
         SGD_SCHEDULES, torch_rmsprop),
    Case("rmsprop-centered", "rmsprop", dict(centered=True),
         [dict(lr=0.005, alpha=0.95, eps=1e-8, weight_decay=0.02, momentum=0.8),
          dict(lr=0.003, alpha=0.9, eps=1e-6, weight_decay=0.0, momentum=0.6),
          dict(lr=0.002, alpha=0.8, eps=1e-4, weight_decay=0.05, momentum=0.3)],
         dict(lr="cosine", momentum="one_cycle_momentum"), torch_rmsprop),
    Case("qhm", "qhm", {},
         [dict(lr=0.5, momentum=0.9, nu=0.7, weight_decay=0.01), dict(lr=0.3, momentum=0.8, nu=0.5, weight_decay=0.03),
          dict(lr=0.2, momentum=0.95, nu=1.0, weight_decay=0.05)],
         SGD_SCHEDULES, equations(qhm_step)),
    Case("aggmo", "aggmo", {},
         [dict(lr=0.1, betas=(0.0, 0.9, 0.99), weight_decay=0.01), dict(lr=0.05, betas=(0.3, 0.8, 0.95), weight_decay=0.03),
          dict(lr=0.08, betas=(0.5, 0.7, 0.9), weight_decay=0.05)],
         dict(lr="cosine", betas=(None, "sutskever_ramp(every=5)", "one_cycle_momentum")), equations(aggmo_step)),
    Case("schedulefree", "schedulefree", dict(warmup_steps=3, r=1.0, weight_lr_power=1.0),
         [dict(lr=0.5, momentum=0.9, weight_decay=0.01), dict(lr=0.3, momentum=0.8, weight_decay=0.03),
          dict(lr=0.2, momentum=0.7, weight_decay=0.05)],
         dict(lr="cosine", momentum="one_cycle_momentum"), schedulefree),
    Case("lookahead", "lookahead", dict(lookahead_k=3),
         [{**c, "lookahead_alpha": a} for c, a in zip(_sgd_configs(True), (0.5, 0.8, 0.3))],
         SGD_SCHEDULES, lookahead_around(torch_sgd)),
    Case("lookahead_adam", "lookahead_adam", dict(lookahead_k=4),
         [{**c, "lookahead_alpha": a} for c, a in zip(ADAM_CONFIGS, (0.5, 0.8, 0.3))],
         BETA1_CYCLE, lookahead_around(torch_adam)),
    Case("muon", "muon", {},
         MUON_CONFIGS,
         dict(lr="cosine", momentum="sutskever_ramp(every=5)"), torch_muon),
    Case("muon-classical-cautious", "muon", dict(convention="torch", adjust_lr_fn="match_rms_adamw", cautious=True),
         [dict(MUON_CONFIGS[0], momentum=0.9), *MUON_CONFIGS[1:]],
         dict(lr="linear(start=0.0)", momentum="one_cycle_momentum"), cautious_or(torch_muon, muon_decay)),
    Case("lion", "lion", {},
         [dict(lr=0.02, betas=(0.9, 0.99), weight_decay=0.1), dict(lr=0.01, betas=(0.8, 0.95), weight_decay=0.3),
          dict(lr=0.005, betas=(0.95, 0.9), weight_decay=0.0)],
         BETA1_CYCLE, equations(lion_step)),
    Case("ademamix", "ademamix", {},
         [dict(lr=0.05, betas=(0.9, 0.999, 0.999), alpha=5.0, eps=1e-8, weight_decay=0.01),
          dict(lr=0.03, betas=(0.8, 0.99, 0.995), alpha=2.0, eps=1e-6, weight_decay=0.05),
          dict(lr=0.02, betas=(0.85, 0.9, 0.99), alpha=8.0, eps=1e-4, weight_decay=0.1)],
         dict(lr="cosine", alpha="linear(steps=8)", betas=(None, None, "half_life_warmup(steps=8)")),
         equations(ademamix_step)),
    Case("adam-cautious", "adam", dict(cautious=True), ADAM_CONFIGS, BETA1_CYCLE, cautious_or(torch_adam)),
    Case("sgd-cautious", "momentum", dict(cautious=True, nesterov=True), _sgd_configs(False), SGD_SCHEDULES,
         cautious_or(torch_sgd), ZERO_DAMPENING),
    Case("lion-cautious", "lion", dict(cautious=True),
         [dict(lr=0.02, betas=(0.9, 0.99), weight_decay=0.1), dict(lr=0.01, betas=(0.8, 0.95), weight_decay=0.3),
          dict(lr=0.005, betas=(0.95, 0.9), weight_decay=0.0)],
         BETA1_CYCLE, cautious_or(equations(lion_step), decoupled_only)),
]
CASE = {case.id: case for case in CASES}
MOMENTUM_FROM_ZERO = dataclasses.replace(CASE["sgd-torch"], id="sgd-torch-momentum-from-0",
                                         schedules=dict(lr="cosine", momentum="linear(start=0.0)"))
"""Per-configuration momentum warmed up from 0: torch starts each buffer at its first momentum != 0."""


def _components(config: dict[str, Any], name: str) -> list[tuple[str, Any]]:
    value = config[name]
    if isinstance(value, tuple):
        return [(f"{name}[{i}]", v) for i, v in enumerate(value)]
    return [(name, value)]


def test_the_table_covers_every_registered_rule_and_varies_every_numeric_hyperparameter():
    assert {case.preset for case in CASES} == set(rules.PRESETS)
    conventions = {(case.full(case.configs[0])["convention"], case.full(case.configs[0])["nesterov"])
                   for case in CASES if case.rule is rules.SGD_RULE}
    assert conventions == {(c, n) for c in rules.CONVENTIONS for n in (False, True)}
    for case in CASES:
        assert len(case.configs) >= 3, case.id
        for config in case.configs:
            assert set(config) == set(case.rule.numeric) - set(case.same), case.id
        for name in case.configs[0]:
            for i, (label, _) in enumerate(_components(case.configs[0], name)):
                values = [_components(c, name)[i][1] for c in case.configs]
                assert len(set(values)) == len(values), f"{case.id}: {label} takes {values}"
        assert "lr" in case.schedules and set(case.schedules) - {"lr"}, case.id


# ---------------------------------------------------------------- driving a reference

def _schedules(case: Case, full: dict[str, Any], steps: int) -> dict[str, Any]:
    """The case's schedules built from this configuration's own values (None: component left alone)."""
    out = {}
    for name, spec in case.schedules.items():
        if isinstance(spec, tuple):
            out[name] = tuple(None if s is None else from_spec(s, base=v, steps=steps) for s, v in zip(spec, full[name]))
        else:
            out[name] = from_spec(spec, base=full[name], steps=steps)
    return out


def _write(opt, schedules: dict[str, Any], t: int) -> None:
    for group in opt.param_groups:
        for name, schedule in schedules.items():
            if isinstance(schedule, tuple):
                group[name] = tuple(v if s is None else s(t) for s, v in zip(schedule, group[name]))
            else:
                group[name] = schedule(t)


class Reference:
    """One separately run configuration: the reference optimizer with the case's schedules."""

    def __init__(self, case: Case, config: dict[str, Any], params: list[torch.Tensor], steps: int):
        full = case.full(config)
        self.opt = case.reference(params, full)
        self.schedules = _schedules(case, full, steps)
        self.t = 0

    def step(self, set_grads: Callable[[], None]) -> None:
        _write(self.opt, self.schedules, self.t)
        self.opt.zero_grad()
        set_grads()
        self.opt.step()
        self.t += 1
        _write(self.opt, self.schedules, self.t)  # the next step's values, where HyperScheduler leaves them

    def eval(self) -> None:
        if hasattr(self.opt, "eval"):
            self.opt.eval()

    def train(self) -> None:
        if hasattr(self.opt, "train"):
            self.opt.train()


# ---------------------------------------------------------------- sweep

def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(EXAMPLES + 40, FEATURES, generator=g)
    y = (x @ torch.randn(FEATURES, CLASSES, generator=g) + 0.5 * torch.randn(EXAMPLES + 40, CLASSES, generator=g)).argmax(1)
    return x[:EXAMPLES], y[:EXAMPLES], x[EXAMPLES:], y[EXAMPLES:]


def mlp():
    return nn.Sequential(nn.Linear(FEATURES, 8), nn.ReLU(), nn.Linear(8, CLASSES))


class TanhNet(nn.Module):
    """Not an MLP the batched path runs: it goes through functional_call under vmap."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(FEATURES, 8)
        self.b = nn.Linear(8, CLASSES)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


MODELS = {"batched": (mlp, 2), "vmap": (TanhNet, 1)}   # backend: (model, folds)
TUPLES = {case.id for case in CASES if any(isinstance(v, tuple) for v in case.configs[0].values())}

def _variants(case: Case, engine: str, backend: str = "") -> list:
    """``(vary_tuples, marks, id)``: every numeric hyperparameter varied; for rules with tuples also a
    variant whose tuples are shared by the configurations (the rest still varied)."""
    name = "-".join(part for part in (case.id, backend) if part)
    if case.id not in TUPLES:
        return [(True, (), name)]
    return [(True, (), name), (False, (), f"{name}-tuples-shared")]


def _sweep_params():
    out = []
    for case in CASES:
        backends = ["batched", "vmap"] if case.id in ("sgd-torch", "adam", "schedulefree", "lookahead") else ["batched"]
        for backend in backends:
            for vary, marks, name in _variants(case, "sweep", backend):
                out.append(pytest.param(case, backend, vary, id=name, marks=marks))
    return out + [pytest.param(MOMENTUM_FROM_ZERO, "batched", True, id=MOMENTUM_FROM_ZERO.id)]


def _split_tuples(case: Case, vary_tuples: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The configurations and the job's fixed values; without ``vary_tuples`` every configuration
    takes the first configuration's tuples (a shared value, in ``fixed``)."""
    if vary_tuples:
        return case.configs, dict(case.structural)
    tuples = {k: v for k, v in case.configs[0].items() if isinstance(v, tuple)}
    configs = [{k: v for k, v in c.items() if k not in tuples} for c in case.configs]
    return configs, {**case.structural, **tuples}


@pytest.mark.parametrize("case, backend, vary_tuples", _sweep_params())
def test_sweep_equals_separate_runs_of_the_reference(case: Case, backend: str, vary_tuples: bool):
    factory, n_folds = MODELS[backend]
    x, y, x_test, y_test = _data()
    configs, fixed = _split_tuples(case, vary_tuples)
    job = Job(factory, x, y, make_folds(EXAMPLES, n_folds, SEED), rules.get(case.preset), fixed, STEPS, BATCH,
              seed=SEED, x_test=x_test, y_test=y_test, dtype=torch.float64, backend=backend,
              schedules=case.schedules)
    assert job.backend == backend
    members = run_members(Members(job, configs, list(range(len(configs)))))
    records = members.results()
    stacked = members.stack.eval_params()
    n = len(configs)
    for c, config in enumerate(configs):
        val, test = [], []
        for k, (train_idx, val_idx) in enumerate(job.folds):
            model = copy.deepcopy(job.template)
            shared = {name: v for name, v in fixed.items() if name in case.rule.numeric}
            ref = Reference(case, {**config, **shared}, list(model.parameters()), STEPS)

            def grads():
                idx = batch_at(train_idx, ref.t, BATCH, SEED, k)
                F.cross_entropy(model(job.x[idx]), job.y[idx]).backward()

            for _ in range(STEPS):
                ref.step(grads)
            ref.eval()
            with torch.no_grad():
                val.append(float(F.cross_entropy(model(job.x[val_idx]), job.y[val_idx])))
                test.append(float(F.cross_entropy(model(job.x_test), job.y_test)))
            with torch.no_grad():
                moved = max(float((p - q).abs().max()) for p, q in zip(model.parameters(), job.template.parameters()))
            assert moved > 1e-2, "the parameters barely moved: the test would not see a wrong rule"
            for p, s in zip(model.parameters(), stacked):
                torch.testing.assert_close(s[k * n + c], p.detach(), rtol=1e-9, atol=1e-12)
        assert records[c]["status"] == "ok"
        assert records[c]["val_loss_mean"] == pytest.approx(sum(val) / len(val), rel=1e-9)
        assert records[c]["test_loss_mean"] == pytest.approx(sum(test) / len(test), rel=1e-9)


# ---------------------------------------------------------------- race

def _bowl(p: torch.Tensor) -> torch.Tensor:
    """A non-quadratic bowl with curvature of order 1 (so one set of learning rates suits it and the MLP)."""
    x, y = p[..., 0], p[..., 1]
    return 0.5 * x**2 + 1.5 * y**2 + 0.3 * torch.sin(3 * x) * torch.cos(2 * y)


SURFACE = surfaces.from_function(_bowl, start=(1.5, -1.0), batched=True)


RACE_PARAMS = [pytest.param(case, vary, id=name, marks=marks)
               for case in CASES for vary, marks, name in _variants(case, "race")]
RACE_PARAMS.append(pytest.param(MOMENTUM_FROM_ZERO, True, id=MOMENTUM_FROM_ZERO.id))


@pytest.mark.parametrize("case, vary_tuples", RACE_PARAMS)
def test_race_equals_the_reference_driven_by_the_surface_gradient(case: Case, vary_tuples: bool):
    given, fixed = _split_tuples(case, vary_tuples)
    configs = [{**fixed, **c} for c in given]
    result = race(SURFACE, [dict(rule=case.preset, **c) for c in configs], steps=RACE_STEPS, schedules=case.schedules)
    assert not bool(result.diverged.any())
    for i, config in enumerate(configs):
        p = SURFACE.start.clone().requires_grad_(True)
        ref = Reference(case, {k: v for k, v in config.items() if k in case.rule.numeric}, [p], RACE_STEPS)
        path = [p.detach().clone()]

        def grads():
            p.grad = SURFACE.gradient(p.detach())

        for _ in range(RACE_STEPS):
            ref.step(grads)
            ref.eval()
            path.append(p.detach().clone())
            ref.train()
        path = torch.stack(path)
        assert float((path[-1] - path[0]).abs().max()) > 1e-2
        torch.testing.assert_close(result.positions[i], path, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(result.losses[i], SURFACE.value(path), rtol=1e-9, atol=1e-12)
