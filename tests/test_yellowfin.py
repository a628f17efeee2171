"""YellowFin: the maths against heavy ball's optimum and a plain transcription of the paper, the optimizer
against torch.optim.SGD replaying its tuned values, convergence on quadratics, and bad input."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

import inertia
from inertia.yellowfin import YellowFin, cubic_root, tuned_momentum


@pytest.mark.parametrize("p", [1e-4, 0.1, 1.0, 7.0, 1e4])
def test_cubic_root_solves_the_one_step_problem(p):
    x = cubic_root(p)
    assert 0 <= x <= 1
    assert p * x == pytest.approx((1 - x) ** 3, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("kappa", [10, 100, 1000])
def test_exact_curvature_range_gives_heavy_balls_optimum(kappa):
    lam_min = 0.5
    lam_max = kappa * lam_min
    mu, lr = tuned_momentum(lam_min, lam_max, variance=1e-12, distance=1.0)
    assert mu == pytest.approx(((math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1)) ** 2, rel=1e-12)
    assert lr == pytest.approx((2 / (math.sqrt(lam_min) + math.sqrt(lam_max))) ** 2, rel=1e-9)


def test_noisy_gradients_take_the_momentum_that_minimizes_the_one_step_bound():
    h_min, variance, distance = 1.0, 50.0, 0.3
    mu, lr = tuned_momentum(h_min, 2 * h_min, variance, distance)
    xs = np.linspace(0, 1, 200_001)
    best = xs[np.argmin(xs ** 2 * distance ** 2 + (1 - xs) ** 4 * variance / h_min ** 2)]
    assert math.sqrt(mu) == pytest.approx(best, abs=1e-5)
    assert lr == pytest.approx((1 - math.sqrt(mu)) ** 2 / h_min)


def _paper(grads: list[np.ndarray], beta: float = 0.999, window: int = 20, smoothed: bool = True):
    """YellowFin's (lr, mu) at each step, written plainly from the paper and the reference code
    (no clipping); every average zero-debiased."""
    out, hs = [], []
    avg = {k: 0.0 for k in ("lmin", "lmax", "sq", "norm", "dist", "mu", "lr")}
    g_avg = np.zeros_like(grads[0])
    for t, g in enumerate(grads):
        d = 1 - beta ** (t + 1)

        def ema(k, v):
            avg[k] = beta * avg[k] + (1 - beta) * v
            return avg[k] / d
        sq = float(g @ g)
        hs = (hs + [sq])[-window:]
        h_min, h_max = math.exp(ema("lmin", math.log(min(hs)))), math.exp(ema("lmax", math.log(max(hs))))
        g_avg = beta * g_avg + (1 - beta) * g
        sq_avg, norm_avg = ema("sq", sq), ema("norm", math.sqrt(sq))
        c = max(sq_avg - float((g_avg / d) @ (g_avg / d)), 1e-6)
        dist = ema("dist", norm_avg / sq_avg)
        p = dist ** 2 * h_min ** 2 / (2 * c)
        roots = np.roots([1, -3, 3 + p, -1])     # (1 - x)^3 = p x  <=>  x^3 - 3x^2 + (3 + p)x - 1 = 0
        x = float(roots[np.argmin(abs(roots.imag))].real)
        mu = max(x * x, ((math.sqrt(h_max / h_min) - 1) / (math.sqrt(h_max / h_min) + 1)) ** 2)
        lr = (1 - math.sqrt(mu)) ** 2 / h_min
        mu_s, lr_s = ema("mu", mu), ema("lr", lr)
        if smoothed:
            mu, lr = mu_s, lr_s
        out.append((min(lr, lr * (t + 1) / (10 * window)), mu))
    return out


@pytest.mark.parametrize("apply", ["smoothed", "raw"])
def test_tuned_values_follow_the_paper_and_drive_plain_momentum_sgd(apply):
    """YellowFin's groups hold the paper's (lr, mu); its iterates are torch.optim.SGD's with those values."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
    replay = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
    replay.load_state_dict(model.state_dict())
    opt = YellowFin(model.parameters(), apply=apply, clip=False)
    ref = torch.optim.SGD(replay.parameters(), lr=0.1, momentum=0.5)
    seen, grads = [], []
    for t in range(60):
        x, y = torch.randn(16, 6, dtype=torch.float64), torch.randint(0, 3, (16,))
        for net, o in ((model, opt), (replay, ref)):
            o.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).numpy().copy())
        opt.step()
        seen.append((opt.param_groups[0]["lr"], opt.param_groups[0]["momentum"]))
        ref.param_groups[0]["lr"], ref.param_groups[0]["momentum"] = seen[-1]
        ref.step()
    np.testing.assert_allclose(seen, _paper(grads, smoothed=apply == "smoothed"), rtol=1e-7)
    for a, b in zip(model.parameters(), replay.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kappa, steps, factor", [(10, 2000, 1e-12), (100, 4000, 1e-2), (1000, 4000, 0.5)])
def test_yellowfin_converges_on_quadratics_with_its_own_estimates(kappa, steps, factor):
    lam = torch.logspace(0, math.log10(kappa), 10, dtype=torch.float64)
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(10, dtype=torch.float64))
    opt = YellowFin([w])
    first = None
    for _ in range(steps):
        opt.zero_grad()
        loss = 0.5 * (lam * w * w).sum()
        loss.backward()
        first = float(loss.detach()) if first is None else first
        opt.step()
    assert 0.5 * float((lam * w * w).sum().detach()) < factor * first


def test_state_dict_resumes_exactly():
    torch.manual_seed(1)
    w = torch.nn.Parameter(torch.randn(5, dtype=torch.float64))
    opt = YellowFin([w])

    def run(o, n):
        for _ in range(n):
            o.zero_grad()
            (w * w * torch.arange(1.0, 6.0, dtype=torch.float64)).sum().backward()
            o.step()

    run(opt, 30)
    saved, start = copy.deepcopy(opt.state_dict()), w.detach().clone()   # torch's holds live tensors
    run(opt, 20)
    end = w.detach().clone()
    with torch.no_grad():
        w.copy_(start)
    again = YellowFin([w])
    again.load_state_dict(saved)
    run(again, 20)
    torch.testing.assert_close(w.detach(), end, rtol=0, atol=0)


def test_bad_input_is_one_line_naming_it():
    w = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match="yellowfin: rule 'adam' has no momentum to tune"):
        YellowFin(w, rule="adam")
    with pytest.raises(ValueError, match="apply must be one of 'smoothed', 'raw'"):
        YellowFin(w, apply="both")
    with pytest.raises(ValueError, match="window must be a positive integer"):
        YellowFin(w, window=0)
    assert isinstance(inertia.YellowFin(w, rule="nesterov"), torch.optim.Optimizer)
