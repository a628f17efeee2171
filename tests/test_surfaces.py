"""Test surfaces: values, gradients, minima, dtypes, and the quadratic theory against plain formulas."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from inertia import surfaces

ALL = sorted(surfaces.SURFACES)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_minima_are_stationary_and_lowest_nearby(name, dtype):
    s = surfaces.get(name)
    assert s.description and surfaces.DESCRIPTIONS[name]
    assert s.minimum is not None and s.global_minimum is s.minimum or torch.equal(s.global_minimum, s.minimum)
    assert len(s.bounds) == s.dim and s.start.shape == (s.dim,)
    for point, value in zip(s.minima, s.minima_values):
        p = point.to(dtype)
        g = s.gradient(p)
        assert g.dtype == dtype and g.shape == p.shape
        tol = 1e-3 if dtype == torch.float32 else 1e-5
        assert float(g.abs().max()) < tol, (name, point, g)
        # a small ring of points around the minimum is higher
        ring = p + 1e-2 * torch.randn(16, s.dim, dtype=dtype, generator=torch.Generator().manual_seed(0))
        assert bool((s.value(ring) >= s.value(p) - 1e-6).all())
    assert s.minimum_value == min(s.minima_values)


@pytest.mark.parametrize("name", ALL)
def test_gradient_matches_finite_differences_and_batches(name):
    s = surfaces.get(name)
    gen = torch.Generator().manual_seed(1)
    lo = torch.tensor([b[0] for b in s.bounds], dtype=torch.float64)
    hi = torch.tensor([b[1] for b in s.bounds], dtype=torch.float64)
    pts = lo + (hi - lo) * torch.rand(5, s.dim, dtype=torch.float64, generator=gen) * 0.8 + 0.1 * (hi - lo)
    values = s.value(pts)
    assert values.shape == (5,)
    assert float(s.value(pts[0])) == pytest.approx(float(values[0]))
    g = s.gradient(pts)
    h = 1e-6
    for j in range(s.dim):
        e = torch.zeros(s.dim, dtype=torch.float64)
        e[j] = h
        fd = (s.value(pts + e) - s.value(pts - e)) / (2 * h)
        torch.testing.assert_close(g[:, j], fd, rtol=1e-5, atol=1e-5)


def test_known_minima_of_the_classics():
    assert surfaces.rosenbrock().minimum.tolist() == [1.0, 1.0]
    assert surfaces.beale().minimum.tolist() == [3.0, 0.5]
    assert len(surfaces.himmelblau().minima) == 4 and max(surfaces.himmelblau().minima_values) < 1e-9
    assert surfaces.rastrigin(dim=3).dim == 3 and float(surfaces.ackley().value(torch.zeros(2, dtype=torch.float64))) == pytest.approx(0, abs=1e-9)


def test_marble_shape():
    m = surfaces.marble()
    assert m.dim == 2 and len(m.minima) == 2
    glob, local = m.minima
    assert m.minima_values[0] < m.minima_values[1]
    assert float(torch.linalg.vector_norm(glob - local)) > 2
    assert torch.equal(m.local_minimum, local)
    (x0, x1), (y0, y1) = m.bounds
    for p in (m.start, glob, local):
        assert x0 < float(p[0]) < x1 and y0 < float(p[1]) < y1


def _spectral_radius(lr, mu, lam):
    """Largest |eigenvalue| of the heavy-ball iteration matrix [[1 + μ − γλ, −μ], [1, 0]], by numpy."""
    return max(abs(np.linalg.eigvals(np.array([[1 + mu - lr * lam, -mu], [1.0, 0.0]]))))


def test_quadratic_eigenvalues_rotation_and_dimension():
    q = surfaces.quadratic(condition=100)
    assert q.eigenvalues.tolist() == pytest.approx([1.0, 100.0]) and q.condition == pytest.approx(100)
    r = surfaces.quadratic(condition=100, rotate=0.5)
    torch.testing.assert_close(torch.linalg.eigvalsh(r.A), torch.tensor([1.0, 100.0], dtype=torch.float64))
    assert abs(float(r.A[0, 1])) > 1  # really rotated
    big = surfaces.quadratic(condition=1000, dim=6, rotate=True, seed=4)
    torch.testing.assert_close(torch.linalg.eigvalsh(big.A), big.eigenvalues)
    assert big.eigenvalues[0] == pytest.approx(1) and big.eigenvalues[-1] == pytest.approx(1000)
    x = torch.randn(3, 6, dtype=torch.float64)
    torch.testing.assert_close(big.value(x), 0.5 * torch.einsum("ni,ij,nj->n", x, big.A, x))
    assert big.value(x.float()).dtype == torch.float32


def test_quadratic_rate_is_the_spectral_radius_and_stability_region():
    q = surfaces.quadratic(condition=100)
    for lr in (0.001, 0.01, 0.0198, 0.03, 0.0379, 0.0381, 0.05):
        for mu in (0.0, 0.3, 0.669, 0.9, 0.99):
            expected = max(_spectral_radius(lr, mu, lam) for lam in (1.0, 100.0))
            assert q.rate(lr, mu) == pytest.approx(expected, rel=1e-9, abs=1e-12)
            stable = 0 < lr * 100 < 2 + 2 * mu
            assert q.stable(lr, mu) == stable
            assert (q.rate(lr, mu) < 1) == stable
    kappa = 100.0
    lr, mu = q.optimal("momentum")
    assert lr == pytest.approx((2 / (1 + math.sqrt(kappa))) ** 2) and mu == pytest.approx(((math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1)) ** 2)
    assert q.rate(lr, mu) == pytest.approx(9 / 11)
    assert q.optimal("gd") == (pytest.approx(2 / 101), 0.0)
    with pytest.raises(ValueError, match="optimal"):
        q.optimal("adam")


def test_registry_parse_and_errors():
    q = surfaces.parse("quadratic:condition=25,dim=3")
    assert q.dim == 3 and q.condition == pytest.approx(25)
    with pytest.raises(ValueError, match="unknown surface 'nope'.*marble"):
        surfaces.get("nope")
    with pytest.raises(ValueError, match="malformed"):
        surfaces.parse("quadratic:condition")
    with pytest.raises(ValueError, match="quadratic"):
        surfaces.parse("quadratic:colour=3")
    with pytest.raises(ValueError, match="2-D"):
        surfaces.quadratic(dim=3).grid()


@pytest.mark.parametrize("lr, mu", [(0.01, 0.5), (0.012, 0.8), (0.015, 0.3), (0.03, 0.3)])
def test_nesterov_rate_matches_a_measured_race(lr, mu):
    """Nesterov on ½wᵀAw: per eigenvalue, z² − (1 + μ)(1 − γλ) z + μ(1 − γλ) = 0; compare with a run."""
    import inertia

    q = surfaces.quadratic(condition=100)
    result = inertia.race(q, [dict(rule="nesterov", lr=lr, momentum=mu)], steps=400)
    d = torch.linalg.vector_norm(result.positions[0], dim=-1)
    measured = float((d[400] / d[200]) ** (1 / 200))
    expected = max(max(abs(np.roots([1, -(1 + mu) * (1 - lr * lam), mu * (1 - lr * lam)]))) for lam in (1.0, 100.0))
    assert q.rate(lr, mu, nesterov=True) == pytest.approx(expected, rel=1e-9)
    if expected >= 1:  # Nesterov's stability edge is γλ < (2 + 2μ)/(1 + 2μ), tighter than heavy ball's
        assert lr * 100 > (2 + 2 * mu) / (1 + 2 * mu) and bool(result.diverged[0])
    else:
        assert measured == pytest.approx(expected, rel=0.02)
