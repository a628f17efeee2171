"""A small MLP for a regression target, and a tiny regression data set to sweep it on.

From the repository root::

    python examples/regression.py                   # writes regression.npz
    inertia sweep --data regression.npz --model examples.regression:RegressionMLP --model-arg hidden=32 \\
        --loss mse --lr 1e-3:0.3:6 --momentum 0,0.9 --steps 500 --out runs/regression

``features`` and ``outputs`` are filled from the data (float targets make it a regression data set).
"""
from __future__ import annotations

import numpy as np
from torch import Tensor, nn


class RegressionMLP(nn.Module):
    """``features -> hidden -> hidden -> outputs`` with Tanh."""

    def __init__(self, features: int, outputs: int = 1, hidden: int = 32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                 nn.Linear(hidden, outputs))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1))


def make_data(path: str = "regression.npz", n: int = 1000, features: int = 5, noise: float = 0.1,
              seed: int = 0) -> str:
    """Write ``x`` ``[n, features]`` and ``y = sin(x @ w) + x_0^2 / 2 + noise`` ``[n]`` as a ``.npz`` file."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, features)).astype(np.float32)
    w = rng.standard_normal(features) / np.sqrt(features)
    y = np.sin(x @ w) + 0.5 * x[:, 0] ** 2 + noise * rng.standard_normal(n)
    np.savez(path, x=x, y=y.astype(np.float32))
    return path


if __name__ == "__main__":
    print("wrote", make_data())
