"""The contract every rule honours, run over one table of cases (DESIGN.md, "Tests that mean something").

Each case names a registered rule, several hyperparameter settings, and an
INDEPENDENT reference: ``torch.optim`` where it exists, else the paper's update
written plainly below. For every case and setting:

- reference equivalence over >= 100 steps on random shapes, with the learning rate
  changed mid-run, float64, relative error <= 1e-6;
- N configurations stacked along a leading axis with [N]-tensor hyperparameters
  equal N separate runs;
- a state_dict saved mid-run and loaded into a fresh optimizer resumes exactly;
- dtype is kept (float32 stays float32, state included);
- bad hyperparameters are rejected with a ValueError naming the argument and value.

To add a rule: append a ``Case`` to ``CASES`` (and, without a torch counterpart,
write its equations plainly as a reference step function).
"""
from __future__ import annotations

import copy
import io
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest
import torch

import inertia
from inertia.optim import make_optimizer
from inertia.stacked import mark

STEPS = 120
LR_CHANGE_AT = 60
SHAPES = [(7,), (3, 5), (2, 3, 4)]


# ---------------------------------------------------------------- plain references

class EquationReference:
    """A minimal optimizer that applies ``step_fn(p, g, state, hyper)`` written in the test."""

    def __init__(self, params, hyper: dict[str, Any], step_fn: Callable):
        self.params = list(params)
        self.param_groups = [dict(hyper)]
        self.state: dict[int, dict] = {i: {} for i in range(len(self.params))}
        self.step_fn = step_fn

    @torch.no_grad()
    def step(self):
        h = self.param_groups[0]
        for i, p in enumerate(self.params):
            self.step_fn(p, p.grad.clone(), self.state[i], h)

    def zero_grad(self):
        for p in self.params:
            p.grad = None


def _decayed_grad(p, g, h):
    """g after maximize and coupled L2 decay; decoupled decay shrinks p instead."""
    if h.get("maximize"):
        g = -g
    if h.get("weight_decay", 0):
        if h.get("decoupled_weight_decay"):
            p.mul_(1 - h["lr"] * h["weight_decay"])
        else:
            g = g + h["weight_decay"] * p
    return g


def sutskever_step(p, g, s, h):
    """Sutskever et al. 2013 / Keras 3: v = mu v - lr g; p = p + v (Nesterov: p = p + mu v - lr g)."""
    g = _decayed_grad(p, g, h)
    v = s.get("v", torch.zeros_like(p))
    v = h["momentum"] * v - h["lr"] * g
    s["v"] = v
    if h.get("nesterov"):
        p += h["momentum"] * v - h["lr"] * g
    else:
        p += v


def ema_step(p, g, s, h):
    """Averaged momentum: b = mu b + (1 - mu) g; p = p - lr b (Nesterov: p - lr (mu b + (1 - mu) g))."""
    g = _decayed_grad(p, g, h)
    b = h["momentum"] * s.get("b", torch.zeros_like(p)) + (1 - h["momentum"]) * g
    s["b"] = b
    d = h["momentum"] * b + (1 - h["momentum"]) * g if h.get("nesterov") else b
    p -= h["lr"] * d


def coupled_or_decoupled(p, h):
    """(γλ of decoupled decay, λ of coupled L2 decay) of parameter ``p`` under hyperparameters ``h``."""
    wd = h.get("weight_decay", 0.0)
    return (h["lr"] * wd, 0.0) if h.get("decoupled_weight_decay") else (0.0, wd)


def decoupled_only(p, h):
    return h["lr"] * h["weight_decay"], 0.0


class CautiousReference:
    """The cautious mask (Liang et al. 2024) written plainly around a reference optimizer.

    The rule's step d is taken by ``inner`` from θ = 0 with the gradient g (after maximize and coupled
    decay; the inner's decay and maximize off), so no cancellation hides it; the update u = −d is masked
    where u ⊙ g ≤ 0 and the rest rescaled: θ ← θ(1 − γλ) + d ⊙ φ / max(mean φ, 1e-3), with the decoupled
    decay γλ. The inner state sees only gradients, as the rule's own does.
    """

    def __init__(self, inner, hyper: dict[str, Any], decay: Callable):
        self.inner, self.hyper, self.decay = inner, hyper, decay
        self.param_groups = inner.param_groups

    def zero_grad(self):
        self.inner.zero_grad()

    @torch.no_grad()
    def step(self):
        group = self.param_groups[0]
        h = {**self.hyper, **group}
        params = getattr(self.inner, "params", None) or [p for g in self.param_groups for p in g["params"]]
        before = []
        for p in params:
            shrink, coupled = self.decay(p, h)
            g = (-p.grad if h.get("maximize") else p.grad) + coupled * p
            before.append((p.detach() * (1 - shrink), g))
            p.grad = g
            p.zero_()
        off = {k: group[k] for k in group if k.endswith("weight_decay") or k == "maximize"}
        group.update({k: False if k == "maximize" else 0.0 for k in off})
        self.inner.step()
        group.update(off)
        for p, (decayed, g) in zip(params, before):
            d = p.detach().clone()
            mask = (-d * g > 0).to(d.dtype)
            p.copy_(decayed + d * mask / max(float(mask.mean()), 1e-3))


def cautious_or(reference: Callable, decay: Callable = coupled_or_decoupled) -> Callable:
    """``reference``, wrapped in :class:`CautiousReference` for settings with ``cautious=True``."""
    def build(params, hyper):
        inner = reference(params, hyper)
        return CautiousReference(inner, hyper, decay) if hyper.get("cautious") else inner
    return build


def torch_sgd(params, hyper):
    kw = {k: v for k, v in hyper.items() if k in ("lr", "momentum", "dampening", "nesterov", "weight_decay", "maximize")}
    return torch.optim.SGD(params, **kw)


# ---------------------------------------------------------------- the table

@dataclass
class Case:
    id: str
    preset: str                       # registered rule name
    settings: list[dict[str, Any]]    # hyperparameters given to inertia (and to the reference)
    reference: Callable               # (params, full hyper) -> object with step(), param_groups
    lr_scale: float = 0.3             # the learning rate becomes lr * lr_scale at LR_CHANGE_AT
    bad: list[tuple[dict[str, Any], str]] = field(default_factory=list)  # (kwargs, argument named)


def equations(step_fn):
    return lambda params, hyper: EquationReference(params, hyper, step_fn)


SGD_BAD = [
    (dict(lr=-0.1), "lr"),
    (dict(lr=float("nan")), "lr"),
    (dict(momentum=1.0), "momentum"),
    (dict(momentum=-0.1), "momentum"),
    (dict(dampening=1.5), "dampening"),
    (dict(weight_decay=-1.0), "weight_decay"),
    (dict(convention="keras2"), "convention"),
    (dict(momentum=0.0, nesterov=True), "nesterov"),
    (dict(momentum=0.9, dampening=0.1, nesterov=True), "nesterov"),
    (dict(momentum=torch.tensor([0.5, 1.2])), "momentum"),
]

CASES = [
    Case(
        "sgd-torch",
        "sgd",
        [
            dict(lr=0.05),
            dict(lr=0.05, momentum=0.9),
            dict(lr=0.05, momentum=0.9, nesterov=True),
            dict(lr=0.05, momentum=0.8, dampening=0.3),
            dict(lr=0.05, momentum=0.9, weight_decay=0.05),
            dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.05, maximize=True),
            dict(lr=0.05, momentum=0.7, dampening=0.5, weight_decay=0.01, maximize=True),
            dict(lr=0.05, weight_decay=0.1, maximize=True),
            dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.05, maximize=True, cautious=True),
            dict(lr=0.05, momentum=0.8, dampening=0.3, cautious=True),
        ],
        cautious_or(torch_sgd),
        bad=SGD_BAD,
    ),
    Case(
        "sgd-sutskever",
        "sgd",
        [
            dict(lr=0.05, momentum=0.9, convention="sutskever"),
            dict(lr=0.05, momentum=0.9, nesterov=True, convention="sutskever"),
            dict(lr=0.05, momentum=0.8, weight_decay=0.05, convention="sutskever"),
            dict(lr=0.05, momentum=0.8, weight_decay=0.05, decoupled_weight_decay=True, convention="sutskever"),
            dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.05, convention="sutskever", cautious=True),
            dict(lr=0.05, momentum=0.8, weight_decay=0.05, decoupled_weight_decay=True, convention="sutskever",
                 cautious=True),
        ],
        cautious_or(equations(sutskever_step)),
        bad=[(dict(momentum=0.9, dampening=0.2, convention="sutskever"), "dampening")],
    ),
    Case(
        "sgd-ema",
        "sgd",
        [
            dict(lr=0.2, momentum=0.9, convention="ema"),
            dict(lr=0.2, momentum=0.9, nesterov=True, convention="ema"),
            dict(lr=0.2, momentum=0.5, weight_decay=0.05, maximize=True, convention="ema"),
            dict(lr=0.2, momentum=0.9, nesterov=True, weight_decay=0.05, convention="ema", cautious=True),
        ],
        cautious_or(equations(ema_step)),
    ),
    Case("momentum", "momentum", [dict(lr=0.05), dict(lr=0.05, momentum=0.5)], torch_sgd),
    Case("nesterov", "nesterov", [dict(lr=0.05), dict(lr=0.02, momentum=0.95)], torch_sgd),
]


# ---------------------------------------------------------------- issue 5: adaptive rules and momentum variants

def torch_adam(params, hyper):
    kw = dict(lr=hyper["lr"], betas=hyper["betas"], eps=hyper["eps"], weight_decay=hyper["weight_decay"],
              amsgrad=hyper["amsgrad"], maximize=hyper["maximize"], foreach=False)
    cls = torch.optim.AdamW if hyper["decoupled_weight_decay"] else torch.optim.Adam
    return cls(params, **kw)


def torch_nadam(params, hyper):
    kw = {k: hyper[k] for k in ("lr", "betas", "eps", "weight_decay", "momentum_decay", "decoupled_weight_decay",
                                "maximize")}
    return torch.optim.NAdam(params, foreach=False, **kw)


def torch_rmsprop(params, hyper):
    kw = {k: hyper[k] for k in ("lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize")}
    return torch.optim.RMSprop(params, foreach=False, **kw)


def qhm_step(p, g, s, h):
    """Ma & Yarats 2019: b = beta b + (1 - beta) g; p = p - lr ((1 - nu) g + nu b)."""
    g = _decayed_grad(p, g, h)
    b = h["momentum"] * s.get("b", torch.zeros_like(p)) + (1 - h["momentum"]) * g
    s["b"] = b
    p -= h["lr"] * ((1 - h["nu"]) * g + h["nu"] * b)


def aggmo_step(p, g, s, h):
    """Lucas et al. 2019: v_i = beta_i v_i - g; p = p + lr / K sum_i v_i."""
    g = _decayed_grad(p, g, h)
    vs = [beta * v - g for beta, v in zip(h["betas"], s.get("v", [torch.zeros_like(p)] * len(h["betas"])))]
    s["v"] = vs
    p += h["lr"] / len(vs) * sum(vs)


def schedulefree_step(p, g, s, h):
    """Defazio et al. 2024 in the paper's three sequences; p holds y = (1 - beta) z + beta x.

    z = z - lr_t g(y); x = (1 - c) x + c z with c = w_t / sum w, w_t = t^r max(lr)^2; warm-up lr_t = lr min(1, t/T).
    """
    t = s["t"] = s.get("t", 0) + 1
    if "z" not in s:
        s["z"], s["x"], s["W"], s["lr_max"] = p.clone(), p.clone(), 0.0, 0.0
    lr = h["lr"] * (min(1.0, t / h["warmup_steps"]) if h["warmup_steps"] else 1.0)
    if h["weight_decay"]:
        g = g + h["weight_decay"] * p
    s["lr_max"] = max(s["lr_max"], lr)
    w = t ** h["r"] * s["lr_max"] ** h["weight_lr_power"]
    s["W"] += w
    c = w / s["W"]
    s["z"] = s["z"] - lr * g
    s["x"] = (1 - c) * s["x"] + c * s["z"]
    p.copy_((1 - h["momentum"]) * s["z"] + h["momentum"] * s["x"])


def lookahead_momentum_step(p, g, s, h):
    """Zhang et al. 2019 around torch heavy ball: every k steps slow += alpha (fast - slow); fast = slow."""
    s["t"] = s.get("t", 0) + 1
    if "slow" not in s:
        s["slow"] = p.clone()
    b = g.clone() if "b" not in s else h["momentum"] * s["b"] + g
    s["b"] = b
    p -= h["lr"] * b
    if s["t"] % h["lookahead_k"] == 0:
        s["slow"] = s["slow"] + h["lookahead_alpha"] * (p - s["slow"])
        p.copy_(s["slow"])


def lookahead_adam(params, hyper):
    inner = torch_adam(params, hyper)
    return inertia.Lookahead(inner, k=hyper["lookahead_k"], alpha=hyper["lookahead_alpha"])


ADAM_BAD = [
    (dict(lr=-1e-3), "lr"),
    (dict(betas=(1.0, 0.999)), "betas"),
    (dict(betas=(0.9, -0.1)), "betas"),
    (dict(betas=(0.9,)), "betas"),
    (dict(eps=-1e-8), "eps"),
    (dict(weight_decay=-0.1), "weight_decay"),
    (dict(amsgrad=1), "amsgrad"),
]

CASES += [
    Case(
        "adam",
        "adam",
        [
            dict(lr=0.05),
            dict(lr=0.05, betas=(0.8, 0.99), amsgrad=True),
            dict(lr=0.05, weight_decay=0.1, maximize=True),
            dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True, amsgrad=True),
            dict(lr=0.05, weight_decay=0.1, maximize=True, cautious=True),
            dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True, cautious=True),
        ],
        cautious_or(torch_adam),
        bad=ADAM_BAD,
    ),
    Case("adamw", "adamw", [dict(lr=0.05), dict(lr=0.05, weight_decay=0.3, amsgrad=True)], torch_adam),
    Case(
        "nadam",
        "nadam",
        [
            dict(lr=0.05),
            dict(lr=0.05, betas=(0.85, 0.99), momentum_decay=0.01, weight_decay=0.05),
            dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True, maximize=True),
            dict(lr=0.05, weight_decay=0.05, cautious=True),
        ],
        cautious_or(torch_nadam),
        bad=[(dict(momentum_decay=-0.004), "momentum_decay"), (dict(betas=(0.9, 1.5)), "betas")],
    ),
    Case(
        "rmsprop",
        "rmsprop",
        [
            dict(lr=0.01),
            dict(lr=0.01, momentum=0.9),
            dict(lr=0.01, centered=True),
            dict(lr=0.005, momentum=0.8, centered=True, weight_decay=0.05, alpha=0.9),
            dict(lr=0.01, maximize=True, weight_decay=0.1),
            dict(lr=0.01, momentum=0.9, centered=True, cautious=True),
            dict(lr=0.01, cautious=True),
        ],
        cautious_or(torch_rmsprop),
        bad=[(dict(alpha=1.5), "alpha"), (dict(momentum=1.0), "momentum"), (dict(eps=-1.0), "eps"),
             (dict(centered="yes"), "centered")],
    ),
    Case(
        "qhm",
        "qhm",
        [
            dict(lr=0.1),
            dict(lr=0.1, momentum=0.9, nu=0.5, weight_decay=0.05),
            dict(lr=0.1, momentum=0.8, nu=1.0, weight_decay=0.05, decoupled_weight_decay=True, maximize=True),
            dict(lr=0.1, momentum=0.9, nu=0.7, weight_decay=0.05, cautious=True),
        ],
        cautious_or(equations(qhm_step)),
        bad=[(dict(nu=1.5), "nu"), (dict(momentum=1.0), "momentum"), (dict(lr=-0.1), "lr")],
    ),
    Case(
        "aggmo",
        "aggmo",
        [
            dict(lr=0.01),
            dict(lr=0.02, betas=(0.5, 0.9)),
            dict(lr=0.01, betas=(0.0, 0.9, 0.95, 0.99), weight_decay=0.05, maximize=True),
            dict(lr=0.01, betas=(0.5, 0.9, 0.99), weight_decay=0.05, cautious=True),
        ],
        cautious_or(equations(aggmo_step)),
        bad=[(dict(betas=(0.5, 1.0)), "betas"), (dict(betas=()), "betas"), (dict(weight_decay=-1.0), "weight_decay")],
    ),
    Case(
        "schedulefree",
        "schedulefree",
        [
            dict(lr=0.1),
            dict(lr=0.1, momentum=0.8, weight_decay=0.05),
            dict(lr=0.1, warmup_steps=20),
            dict(lr=0.1, warmup_steps=10, r=1.0, weight_lr_power=1.0),
        ],
        equations(schedulefree_step),
        bad=[(dict(momentum=1.0), "momentum"), (dict(momentum=0.0), "momentum"), (dict(warmup_steps=-1), "warmup_steps"),
             (dict(lr=float("inf")), "lr")],
    ),
    Case(
        "lookahead",
        "lookahead",
        [dict(lr=0.05), dict(lr=0.05, lookahead_k=3, lookahead_alpha=0.8, momentum=0.5)],
        equations(lookahead_momentum_step),
        bad=[(dict(lookahead_k=0), "lookahead_k"), (dict(lookahead_alpha=1.5), "lookahead_alpha")],
    ),
    Case("lookahead_adam", "lookahead_adam", [dict(lr=0.05), dict(lr=0.05, lookahead_k=4, amsgrad=True)],
         lookahead_adam),
]


# ---------------------------------------------------------------- issue 21: Muon, Lion, AdEMAMix

def lion_step(p, g, s, h):
    """Chen et al. 2023 / optax.lion: c = b1 m + (1 - b1) g; p = p - lr (sign(c) + wd p); m = b2 m + (1 - b2) g."""
    b1, b2 = h["betas"]
    g = -g if h["maximize"] else g
    m = s.get("m", torch.zeros_like(p))
    p -= h["lr"] * (torch.sign(b1 * m + (1 - b1) * g) + h["weight_decay"] * p)
    s["m"] = b2 * m + (1 - b2) * g


def ademamix_step(p, g, s, h):
    """Pagliardini et al. 2024, Algorithm 1 / optax.contrib.ademamix (the slow EMA not bias-corrected)."""
    b1, b2, b3 = h["betas"]
    g = -g if h["maximize"] else g
    t = s["t"] = s.get("t", 0) + 1
    s["m1"] = b1 * s.get("m1", torch.zeros_like(p)) + (1 - b1) * g
    s["m2"] = b3 * s.get("m2", torch.zeros_like(p)) + (1 - b3) * g
    s["v"] = b2 * s.get("v", torch.zeros_like(p)) + (1 - b2) * g * g
    m1_hat, v_hat = s["m1"] / (1 - b1**t), s["v"] / (1 - b2**t)
    p -= h["lr"] * ((m1_hat + h["alpha"] * s["m2"]) / (v_hat.sqrt() + h["eps"]) + h["weight_decay"] * p)


def newton_schulz5(u, h):
    """Jordan et al. 2024 (torch.optim.Muon's code): X = u/||u|| in bfloat16, wide; X = aX + (bXX^T + c(XX^T)^2)X."""
    a, b, c = h["ns_coefficients"]
    x = u.bfloat16()
    x = x.T if u.shape[0] > u.shape[1] else x
    x = x / x.norm().clamp(min=h["eps"])
    for _ in range(h["ns_steps"]):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return (x.T if u.shape[0] > u.shape[1] else x).to(u.dtype)


def adamw_step(p, g, s, h):
    """AdamW (Loshchilov & Hutter 2019) as the torch.optim.AdamW box."""
    b1, b2 = h["betas"]
    t = s["t"] = s.get("t", 0) + 1
    p *= 1 - h["lr"] * h["weight_decay"]
    s["m"] = b1 * s.get("m", torch.zeros_like(p)) + (1 - b1) * g
    s["v"] = b2 * s.get("v", torch.zeros_like(p)) + (1 - b2) * g * g
    p -= h["lr"] / (1 - b1**t) * s["m"] / ((s["v"] / (1 - b2**t)).sqrt() + h["eps"])


def fallback_hyper(h):
    """The fallback AdamW's hyperparameters inside Muon's: lr * fallback_lr_ratio and the fallback_* values."""
    return dict(lr=h["lr"] * h["fallback_lr_ratio"], betas=h["fallback_betas"], eps=h["fallback_eps"],
                weight_decay=h["fallback_weight_decay"])


def muon_classical_step(p, g, s, h):
    """Muon with classical momentum b = mu b + g (Nesterov: g + mu b), a >2-D weight as [rows, rest];
    parameters with fewer than 2 axes by AdamW."""
    if p.dim() < 2:
        return adamw_step(p, g, s, fallback_hyper(h))
    s["b"] = h["momentum"] * s.get("b", torch.zeros_like(p)) + g
    u = g + h["momentum"] * s["b"] if h["nesterov"] else s["b"]
    rows, cols = p.shape[0], p[0].numel()
    scale = 0.2 * max(rows, cols) ** 0.5 if h["adjust_lr_fn"] == "match_rms_adamw" else max(1, rows / cols) ** 0.5
    p *= 1 - h["lr"] * h["weight_decay"]
    p -= h["lr"] * scale * newton_schulz5(u.reshape(rows, cols), h).view_as(p)


class TorchMuon:
    """torch.optim.Muon on the matrices (a >2-D weight through a 2-D view of it), torch.optim.AdamW on the
    rest with lr * fallback_lr_ratio; ``param_groups[0]`` holds Muon's hyperparameters, passed on at each step."""

    def __init__(self, params, hyper):
        self.params = list(params)
        self.param_groups = [dict(hyper)]
        self.views = [p.detach().view(p.shape[0], -1) if p.dim() > 2 else p for p in self.params]
        matrices = [v for v in self.views if v.dim() == 2]
        others = [v for v in self.views if v.dim() < 2]
        self.muon = torch.optim.Muon(matrices, **self._muon(hyper)) if matrices else None
        self.adamw = torch.optim.AdamW(others, foreach=False, **fallback_hyper(hyper)) if others else None

    @staticmethod
    def _muon(h):
        return {k: h[k] for k in ("lr", "weight_decay", "momentum", "nesterov", "ns_coefficients", "eps", "ns_steps",
                                  "adjust_lr_fn")}

    @torch.no_grad()
    def step(self):
        h = self.param_groups[0]
        for p, view in zip(self.params, self.views):
            view.grad = p.grad.view_as(view)
        for opt, values in ((self.muon, self._muon(h)), (self.adamw, fallback_hyper(h))):
            if opt is not None:
                opt.param_groups[0].update(values)
                opt.step()

    def zero_grad(self):
        for p in self.params:
            p.grad = None


def torch_muon(params, hyper):
    if hyper["convention"] == "torch":
        return EquationReference(params, hyper, muon_classical_step)
    return TorchMuon(params, hyper)


def muon_decay(p, h):
    """Muon's decoupled decay with the unadjusted lr; the fallback's with its own lr and decay."""
    if p.dim() >= 2:
        return h["lr"] * h["weight_decay"], 0.0
    return h["lr"] * h["fallback_lr_ratio"] * h["fallback_weight_decay"], 0.0


CASES += [
    Case(
        "muon",
        "muon",
        [
            dict(lr=0.05),
            dict(lr=0.05, momentum=0.9, nesterov=False, weight_decay=0.05),
            dict(lr=0.02, adjust_lr_fn="match_rms_adamw", fallback_lr_ratio=0.5, fallback_betas=(0.8, 0.99),
                 fallback_eps=1e-6, fallback_weight_decay=0.1),
            dict(lr=0.05, momentum=0.8, convention="torch"),
            dict(lr=0.05, momentum=0.9, nesterov=False, convention="torch", adjust_lr_fn="match_rms_adamw"),
            dict(lr=0.05, cautious=True, fallback_weight_decay=0.1),
        ],
        cautious_or(torch_muon, muon_decay),
        bad=[(dict(momentum=1.0), "momentum"), (dict(ns_steps=0), "ns_steps"), (dict(adjust_lr_fn="rms"), "adjust_lr_fn"),
             (dict(convention="sutskever"), "convention"), (dict(fallback_betas=(1.0, 0.9)), "fallback_betas"),
             (dict(ns_coefficients=(1.0, 2.0)), "ns_coefficients"), (dict(fallback_lr_ratio=-1.0), "fallback_lr_ratio")],
    ),
    Case(
        "lion",
        "lion",
        [
            dict(lr=0.01),
            dict(lr=0.01, betas=(0.95, 0.98), weight_decay=0.5),
            dict(lr=0.01, betas=(0.8, 0.9), maximize=True, cautious=True, weight_decay=0.1),
        ],
        cautious_or(equations(lion_step), decoupled_only),
        bad=[(dict(betas=(1.0, 0.99)), "betas"), (dict(betas=(0.9, -0.1)), "betas"), (dict(betas=(0.9,)), "betas"),
             (dict(lr=-0.01), "lr"), (dict(weight_decay=-1.0), "weight_decay")],
    ),
    Case(
        "ademamix",
        "ademamix",
        [
            dict(lr=0.05),
            dict(lr=0.05, betas=(0.8, 0.99, 0.995), alpha=2.0, eps=1e-6, weight_decay=0.1),
            dict(lr=0.05, betas=(0.9, 0.999, 0.99), alpha=8.0, maximize=True, cautious=True, weight_decay=0.05),
        ],
        cautious_or(equations(ademamix_step), decoupled_only),
        bad=[(dict(betas=(0.9, 0.999)), "betas"), (dict(betas=(0.9, 0.999, 1.0)), "betas"), (dict(alpha=-1.0), "alpha"),
             (dict(eps=-1e-8), "eps")],
    ),
]


SETTINGS = [pytest.param(case, hyper, id=f"{case.id}-{i}") for case in CASES for i, hyper in enumerate(case.settings)]


# ---------------------------------------------------------------- the objective

def objective(p: torch.Tensor, index: int) -> torch.Tensor:
    """A non-quadratic objective for parameter ``index`` so that momentum state matters.

    Its coefficients have the parameter's own shape (SHAPES[index]) and broadcast along
    a leading configuration axis, so a stacked [N, ...] parameter gives each member the
    same objective and its own gradient.
    """
    gen = torch.Generator().manual_seed(index)
    a = torch.rand(SHAPES[index], generator=gen, dtype=torch.float64) + 0.5
    b = torch.randn(SHAPES[index], generator=gen, dtype=torch.float64)
    a, b = a.to(p.dtype), b.to(p.dtype)
    return (torch.cos(a * p) + 0.5 * a * (p - b) ** 2).sum()


def run(opt, params, steps, lr_scale, start=0):
    for t in range(start, start + steps):
        if t == LR_CHANGE_AT:
            for group in opt.param_groups:
                group["lr"] = group["lr"] * lr_scale
        opt.zero_grad()
        loss = sum(objective(p, i) for i, p in enumerate(params))
        loss.backward()
        opt.step()


def make_params(dtype=torch.float64, seed=0, lead=()):
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(*lead, *shape, generator=gen, dtype=dtype).requires_grad_() for shape in SHAPES]
    return mark(params, lead[0]) if lead else params  # stacked: member i is p[i]


def full_hyper(case: Case, hyper: dict) -> dict:
    return inertia.rules.get(case.preset).hyper(**hyper)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


# ---------------------------------------------------------------- the contract

@pytest.mark.parametrize("case, hyper", SETTINGS)
def test_matches_independent_reference(case: Case, hyper: dict):
    ours, theirs = make_params(), make_params()
    opt = make_optimizer(case.preset, ours, **hyper)
    ref = case.reference(theirs, full_hyper(case, hyper))
    run(opt, ours, STEPS, case.lr_scale)
    run(ref, theirs, STEPS, case.lr_scale)
    moved = max(float((p.detach() - q).abs().max()) for p, q in zip(ours, make_params()))
    assert moved > 1e-2, "the parameters barely moved: the test would not see a wrong rule"
    for p, q in zip(ours, theirs):
        assert rel_err(p.detach(), q.detach()) <= 1e-6


@pytest.mark.parametrize("case, hyper", SETTINGS)
def test_n_configurations_at_once_equal_n_separate_runs(case: Case, hyper: dict):
    n = 3
    factors = torch.tensor([1.0, 0.5, 0.25], dtype=torch.float64)
    numeric = inertia.rules.get(case.preset).rule.numeric
    # vary lr per configuration, and momentum-like hyperparameters where the setting uses them
    per_config = {"lr": hyper.get("lr", 0.01) * factors}
    for name in ("momentum", "weight_decay"):
        if name in numeric and hyper.get(name):
            per_config[name] = torch.tensor([hyper[name], hyper[name] * 0.9, hyper[name] * 0.5], dtype=torch.float64)
    stacked = make_params(lead=(n,), seed=1)
    singles = [[p[i].detach().clone().requires_grad_() for p in stacked] for i in range(n)]
    opt = make_optimizer(case.preset, stacked, **{**hyper, **per_config})
    run(opt, stacked, STEPS // 2, case.lr_scale)
    for i in range(n):
        single_hyper = {**hyper, **{k: float(v[i]) for k, v in per_config.items()}}
        run(make_optimizer(case.preset, singles[i], **single_hyper), singles[i], STEPS // 2, case.lr_scale)
        for p, q in zip(stacked, singles[i]):
            assert rel_err(p[i].detach(), q.detach()) <= 1e-12


@pytest.mark.parametrize("case, hyper", SETTINGS)
def test_state_dict_round_trip_resumes_exactly(case: Case, hyper: dict):
    straight = make_params(seed=2)
    opt = make_optimizer(case.preset, straight, **hyper)
    run(opt, straight, 2 * 40, case.lr_scale)

    first = make_params(seed=2)
    opt1 = make_optimizer(case.preset, first, **hyper)
    run(opt1, first, 40, case.lr_scale)
    buffer = io.BytesIO()
    torch.save({"params": [p.detach() for p in first], "opt": opt1.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)
    resumed = [p.clone().requires_grad_() for p in saved["params"]]
    opt2 = make_optimizer(case.preset, resumed, **hyper)
    opt2.load_state_dict(saved["opt"])
    run(opt2, resumed, 40, case.lr_scale, start=40)
    for p, q in zip(resumed, straight):
        assert torch.equal(p, q)


@pytest.mark.parametrize("case, hyper", SETTINGS)
def test_dtype_is_kept(case: Case, hyper: dict):
    params = make_params(dtype=torch.float32, seed=3)
    opt = make_optimizer(case.preset, params, **hyper)
    run(opt, params, 5, case.lr_scale)
    for p in params:
        assert p.dtype == torch.float32
        for name, value in opt.state[p].items():
            if name != "step" and torch.is_tensor(value) and value.is_floating_point():
                assert value.dtype == torch.float32, name


BAD = [pytest.param(case, kwargs, name, id=f"{case.id}-{name}-{i}") for case in CASES for i, (kwargs, name) in enumerate(case.bad)]


@pytest.mark.parametrize("case, kwargs, name", BAD)
def test_bad_hyperparameters_are_rejected_naming_the_argument(case: Case, kwargs: dict, name: str):
    with pytest.raises(ValueError) as error:
        make_optimizer(case.preset, make_params(), **kwargs)
    assert name in str(error.value)
    shown = kwargs[name]
    if not torch.is_tensor(shown) and not isinstance(shown, bool):
        assert repr(shown) in str(error.value) or str(shown) in str(error.value)


def test_unknown_hyperparameter_is_a_type_error():
    with pytest.raises(TypeError, match="betas"):
        inertia.SGD(make_params(), betas=(0.9, 0.99))


# ---------------------------------------------------------------- the conventions differ where they should

def test_torch_and_sutskever_agree_at_constant_lr_and_differ_after_a_change():
    def trajectory(convention, lr_scale):
        params = make_params(seed=4)
        opt = inertia.SGD(params, lr=0.05, momentum=0.9, convention=convention)
        run(opt, params, STEPS, lr_scale)
        return params

    same = zip(trajectory("torch", 1.0), trajectory("sutskever", 1.0))
    assert all(rel_err(p.detach(), q.detach()) <= 1e-10 for p, q in same)
    changed = list(zip(trajectory("torch", 0.1), trajectory("sutskever", 0.1)))
    assert all(rel_err(p.detach(), q.detach()) > 1e-4 for p, q in changed)


def test_ema_with_rescaled_lr_matches_torch_at_constant_momentum():
    """ema with lr/(1 - mu) is torch heavy ball, except that ema's buffer starts at 0 (torch's at g).

    Torch's first step is b = g; ema's is b = (1 - mu) g. Feed both the same constant gradient and
    compare the momentum buffer after it has forgotten the start: (mu^t) -> 0.
    """
    mu, lr = 0.9, 0.01
    a = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    oa = inertia.SGD([a], lr=lr, momentum=mu)
    ob = inertia.SGD([b], lr=lr / (1 - mu), momentum=mu, convention="ema")
    step_a, step_b = None, None
    for _ in range(400):
        for p, o in ((a, oa), (b, ob)):
            o.zero_grad()
            p.grad = torch.ones_like(p)
            before = p.detach().clone()
            o.step()
            if o is oa:
                step_a = p.detach() - before
            else:
                step_b = p.detach() - before
    assert torch.allclose(step_a, step_b, rtol=1e-12)
    assert math.isclose(float(step_a[0]), -lr / (1 - mu), rel_tol=1e-12)  # effective lr of a persistent gradient
    from inertia.rules.sgd import effective_lr

    assert math.isclose(effective_lr(lr, mu), -float(step_a[0]), rel_tol=1e-12)
    assert math.isclose(effective_lr(lr / (1 - mu), mu, "ema"), -float(step_b[0]), rel_tol=1e-12)


# ---------------------------------------------------------------- non-finite gradients

def test_nonfinite_gradient_raises_naming_the_parameter_and_leaves_params_untouched():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    opt = inertia.Momentum(model.named_parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    model[1].weight.grad[0, 1] = float("nan")
    opt.step()  # skipped on the device; reported by the next step() or zero_grad() (no sync in step)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    with pytest.raises(inertia.NonFiniteGradientError, match=r"'1\.weight'"):
        opt.zero_grad()


def test_nonfinite_skip_policy_skips_the_step_and_counts_it():
    p = torch.ones(3, requires_grad=True)
    opt = inertia.SGD([p], lr=0.1, momentum=0.9, nonfinite="skip")
    p.grad = torch.tensor([1.0, float("inf"), 0.0])
    opt.step()
    assert torch.equal(p.detach(), torch.ones(3)) and opt.skipped_steps == 1
    p.grad = torch.ones(3)
    opt.step()
    assert torch.allclose(p.detach(), torch.full((3,), 0.9))


def test_nonfinite_policy_is_validated():
    with pytest.raises(ValueError, match="nonfinite"):
        inertia.SGD(make_params(), nonfinite="ignore")


def test_per_configuration_hyperparameter_needs_parameters_stacked_with_as_many_members():
    with pytest.raises(ValueError, match="lr holds 2 values .* stacked with 4 members"):
        inertia.SGD(mark([torch.zeros(4, 3, requires_grad=True)], 4), lr=torch.tensor([0.1, 0.2]))


def test_param_group_values_are_validated():
    p, q = make_params()[:2]
    with pytest.raises(ValueError, match="momentum"):
        inertia.SGD([{"params": [p]}, {"params": [q], "momentum": 2.0}], lr=0.1)


def test_deepcopy_keeps_policy():
    opt = inertia.SGD(make_params(), lr=0.1, nonfinite="skip")
    assert copy.deepcopy(opt).nonfinite == "skip"
