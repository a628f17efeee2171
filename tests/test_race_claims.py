"""The claims of the momentum theory, measured with the race engine (issue 4, item 3).

Expected values are computed here from the formulas written out plainly (Polyak 1964;
Goh, Distill 2017), not only from inertia.surfaces' own theory functions.
"""
from __future__ import annotations

import math

import pytest
import torch

import inertia
from inertia import surfaces

KAPPA = 100.0
L1, LN = 1.0, KAPPA  # the κ = 100 quadratic has eigenvalues 1 and 100


def measured_rate(result, i, a=100, b=300):
    """Per-step contraction of the distance to the minimum (the origin) between steps a and b."""
    d = torch.linalg.vector_norm(result.positions[i], dim=-1)
    return float((d[b] / d[a]) ** (1.0 / (b - a)))


@pytest.mark.parametrize("rotate", [False, True])
def test_heavy_ball_and_gd_rates_on_kappa_100(rotate):
    q = surfaces.quadratic(condition=KAPPA, rotate=rotate, seed=3)
    assert q.eigenvalues.tolist() == pytest.approx([L1, LN])
    # the formulas, plainly
    lr_hb = (2 / (math.sqrt(L1) + math.sqrt(LN))) ** 2            # 4/121
    mu_hb = ((math.sqrt(KAPPA) - 1) / (math.sqrt(KAPPA) + 1)) ** 2  # (9/11)^2
    lr_gd = 2 / (L1 + LN)                                           # 2/101
    rate_hb = (math.sqrt(KAPPA) - 1) / (math.sqrt(KAPPA) + 1)       # 0.818
    rate_gd = (KAPPA - 1) / (KAPPA + 1)                             # 0.980
    assert q.optimal("momentum") == pytest.approx((lr_hb, mu_hb))
    assert q.optimal("gd") == pytest.approx((lr_gd, 0.0))
    assert rate_hb == pytest.approx(0.818, abs=5e-4) and rate_gd == pytest.approx(0.980, abs=5e-4)

    result = inertia.race(q, [dict(rule="momentum", lr=lr_hb, momentum=mu_hb), dict(rule="sgd", lr=lr_gd)], steps=300)
    hb, gd = measured_rate(result, 0), measured_rate(result, 1)
    print(f"rotate={rotate}: heavy ball measured {hb:.4f} (theory {rate_hb:.4f}); GD measured {gd:.4f} (theory {rate_gd:.4f})")
    assert hb == pytest.approx(rate_hb, rel=0.02)
    assert gd == pytest.approx(rate_gd, rel=0.02)
    # and the code's own theory agrees with the formulas
    assert q.rate(lr_hb, mu_hb) == pytest.approx(rate_hb, rel=1e-6)
    assert q.rate(lr_gd, 0.0) == pytest.approx(rate_gd, rel=1e-9)


def test_momentum_reaches_1e_minus_6_about_sqrt_kappa_times_faster():
    """Steps to a loss of 1e-6 (from f0 = 13): GD at its best step against heavy ball at its optimum.

    Asymptotically each decade costs log(10)/(2·log(1/ρ)) steps, so the ratio tends to
    log(1/0.818)/log(1/0.980) = 10.03 ≈ √κ. At 1e-6 itself the ratio is lower (≈ 6.3),
    because heavy ball at the optimum has a double root (error ∝ t·ρ^t) and pays a transient;
    the steps from 1e-6 on to 1e-12 show the full √κ.
    """
    q = surfaces.quadratic(condition=KAPPA)
    lr_hb = (2 / (math.sqrt(L1) + math.sqrt(LN))) ** 2
    mu_hb = ((math.sqrt(KAPPA) - 1) / (math.sqrt(KAPPA) + 1)) ** 2
    result = inertia.race(q, [dict(rule="momentum", lr=lr_hb, momentum=mu_hb), dict(rule="sgd", lr=2 / (L1 + LN))],
                          steps=1500)
    n_hb, n_gd = result.steps_to(1e-6)
    m_hb, m_gd = result.steps_to(1e-12)
    ratio, incremental = n_gd / n_hb, (m_gd - n_gd) / (m_hb - n_hb)
    predicted = math.log((math.sqrt(KAPPA) + 1) / (math.sqrt(KAPPA) - 1)) / math.log((KAPPA + 1) / (KAPPA - 1))
    print(f"steps to loss 1e-6: heavy ball {n_hb}, GD {n_gd}, ratio {ratio:.2f}; from 1e-6 to 1e-12: "
          f"{m_hb - n_hb} vs {m_gd - n_gd}, ratio {incremental:.2f} (asymptotic prediction {predicted:.2f}, "
          f"sqrt(kappa) = {math.sqrt(KAPPA):g})")
    assert predicted == pytest.approx(math.sqrt(KAPPA), rel=0.01)
    assert 0.5 * math.sqrt(KAPPA) <= ratio <= 1.3 * math.sqrt(KAPPA)
    assert incremental == pytest.approx(predicted, rel=0.15)


@pytest.mark.parametrize("mu", [0.0, 0.5, 0.9])
def test_stability_edge_lr_times_lambda_max_equals_2_plus_2mu(mu):
    q = surfaces.quadratic(condition=KAPPA)
    edge = (2 + 2 * mu) / LN  # lr at which lr·λmax = 2 + 2μ
    below, above = 0.99 * edge, 1.01 * edge
    assert q.stable(below, mu) and not q.stable(above, mu)
    result = inertia.race(q, [dict(rule="sgd", lr=below, momentum=mu), dict(rule="sgd", lr=above, momentum=mu)],
                          steps=3000)
    d = torch.linalg.vector_norm(result.positions, dim=-1)
    start = float(d[0, 0])
    print(f"mu={mu}: below the edge final distance {float(d[0, -1]):.3g}; above: diverged at step "
          f"{int(result.diverged_step[1])}")
    assert int(result.diverged_step[0]) == -1 and float(d[0, -1]) < 1e-6 * start
    assert int(result.diverged_step[1]) > 0           # recorded as diverged, run stopped, no crash
    assert torch.isnan(result.losses[1, -1]) and torch.isfinite(result.losses[0]).all()


def test_marble_gd_stays_in_the_shallow_minimum_momentum_reaches_the_global_one():
    m = surfaces.marble()
    assert len(m.minima) == 2 and m.minima_values[0] < m.minima_values[1] - 1.0  # a clearly deeper global minimum
    result = inertia.race(m, [dict(rule="sgd", lr=0.02), dict(rule="momentum", lr=0.02, momentum=0.9)], steps=300)
    (k_gd, d_gd), (k_hb, d_hb) = (m.nearest_minimum(p) for p in result.final)
    print(f"marble: GD ends {d_gd:.2g} from minimum #{k_gd} (f = {float(result.losses[0, -1]):.4f}); "
          f"momentum ends {d_hb:.2g} from minimum #{k_hb} (f = {float(result.losses[1, -1]):.4f})")
    assert k_gd == 1 and d_gd < 1e-3          # the shallow, local minimum
    assert k_hb == 0 and d_hb < 1e-3          # the global minimum
    assert torch.allclose(m.local_minimum, m.minima[1])
    # GD really is stuck: more steps do not help
    longer = inertia.race(m, [dict(rule="sgd", lr=0.02)], steps=2000)
    assert m.nearest_minimum(longer.final[0])[0] == 1


def test_too_much_momentum_overshoots_and_takes_longer():
    """Along the flat valley (eigenvalue 1, the x axis) the start is x = −1; the minimum is x = 0."""
    q = surfaces.quadratic(condition=KAPPA)
    lr_hb = (2 / (math.sqrt(L1) + math.sqrt(LN))) ** 2
    mu_hb = ((math.sqrt(KAPPA) - 1) / (math.sqrt(KAPPA) + 1)) ** 2
    result = inertia.race(q, [dict(rule="momentum", lr=lr_hb, momentum=mu_hb),
                              dict(rule="momentum", lr=lr_hb, momentum=0.97)], steps=2000)
    x = result.positions[:, :, 0]
    assert float(x[0, 0]) == -1.0
    overshoot = x.amax(dim=1)  # how far past the minimum the path goes along the valley
    n_good, n_big = result.steps_to(1e-6)
    print(f"overshoot past the minimum along the valley: mu*={mu_hb:.3f}: {float(overshoot[0]):.3f}, "
          f"mu=0.97: {float(overshoot[1]):.3f}; steps to 1e-6: {n_good} vs {n_big}")
    assert float(overshoot[1]) > 0.5              # rolls far past the minimum
    assert float(overshoot[0]) < 0.2 * float(overshoot[1])
    # the slow mode's roots have modulus sqrt(mu) when underdamped: predicted slowdown log(0.818)/log(sqrt(0.97))
    assert n_big > 3 * n_good
