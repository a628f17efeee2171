"""The Hessian's top eigenvalue against exact Hessians, and the stability edge against the optimizer's own iterates."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import inertia
from inertia.sharpness import sharpness, stable_lr


class Quadratic(nn.Module):
    """f(w) = ½ wᵀAw, whatever the input."""

    def __init__(self, eigenvalues: list[float], seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), generator=g, dtype=torch.float64))
        self.register_buffer("a", q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ q.T)
        self.w = nn.Parameter(torch.randn(len(eigenvalues), generator=g, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w


def quadratic_loss(model: Quadratic):
    return lambda w, y: 0.5 * w @ model.a @ w


@pytest.mark.parametrize("eigenvalues", [[0.1, 1.0, 3.0, 7.5], [-5.0, 0.5, 2.0], [100.0, 1.0, 0.01, 99.0]])
def test_top_eigenvalue_of_a_quadratic(eigenvalues):
    model = Quadratic(eigenvalues)
    found = sharpness(model, quadratic_loss(model), [(torch.zeros(1), None)], iters=500, tol=1e-10)
    assert found == pytest.approx(max(eigenvalues), rel=1e-4)


def test_top_eigenvalue_of_a_small_network_against_its_exact_hessian():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    x, y = torch.randn(32, 4, dtype=torch.float64), torch.randint(0, 3, (32,))
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss_of(theta):
        params, i = {}, 0
        for name, shape in zip(names, shapes):
            params[name] = theta[i:i + shape.numel()].reshape(shape)
            i += shape.numel()
        return nn.functional.cross_entropy(torch.func.functional_call(model, params, (x,)), y)

    exact = torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss_of, flat)).max()
    before = [p.detach().clone() for p in model.parameters()]
    found = sharpness(model, nn.functional.cross_entropy, [(x[:16], y[:16]), (x[16:], y[16:])], iters=1000, tol=1e-12)
    assert found == pytest.approx(float(exact), rel=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters())) and model.training


class OnceDifferentiable(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.exp()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * x.exp()


class OnceDifferentiableModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 1)

    def forward(self, x):
        return OnceDifferentiable.apply(self.linear(x))


@pytest.mark.parametrize("loss", [lambda out, y: out.mean(), lambda out, y: (out ** 2).mean()],
                         ids=["gradient-without-graph", "second-backward-refused"])
def test_a_loss_without_second_derivative_is_one_line(loss):
    with pytest.raises(ValueError, match=r"^sharpness: the loss of OnceDifferentiableModel has no second derivative") \
            as error:
        sharpness(OnceDifferentiableModel(), loss, [(torch.randn(4, 3), None)])
    assert "\n" not in str(error.value)


EDGE_CASES = [(convention, nesterov, dampening, momentum)
              for convention, nesterov, dampening in [("torch", False, 0.0), ("sutskever", False, 0.0), ("ema", False, 0.0),
                                                      ("torch", True, 0.0), ("ema", True, 0.0), ("torch", False, 0.5)]
              for momentum in (0.0, 0.5, 0.9) if not (nesterov and momentum == 0)]


@pytest.mark.parametrize("convention, nesterov, dampening, momentum", EDGE_CASES)
def test_the_stable_edge_is_where_the_optimizer_stops_converging(convention, nesterov, dampening, momentum):
    """inertia.SGD on f = ½λw² converges just below the predicted edge and diverges just above it."""
    lam = 3.0
    edge = stable_lr(lam, momentum, convention=convention, nesterov=nesterov, dampening=dampening)

    def final(lr):
        w = torch.ones(1, dtype=torch.float64, requires_grad=True)
        opt = inertia.SGD([w], lr=lr, momentum=momentum, convention=convention, nesterov=nesterov,
                          dampening=dampening)
        for _ in range(3000):
            opt.zero_grad()
            (0.5 * lam * w * w).sum().backward()
            opt.step()
            if abs(float(w.detach())) > 1e6:
                break
        return abs(float(w.detach()))

    assert final(0.97 * edge) < 1e-3
    assert final(1.03 * edge) > 1e3


def test_stable_lr_rejects_bad_input():
    with pytest.raises(ValueError, match="sharpness"):
        stable_lr(0.0, 0.9)
    with pytest.raises(ValueError, match="momentum"):
        stable_lr(1.0, 1.0)
    with pytest.raises(ValueError, match="convention"):
        stable_lr(1.0, 0.9, convention="keras")
