"""An MLP with dropout. Its draws follow each configuration's seed, fold and step, never its place in a
stack, so a configuration swept alone, inside a grid, and by its printed reproduce command gives one number.

From the repository root::

    inertia sweep --data mnist1d --model examples.dropout:DropoutMLP --model-arg p=0.2 \\
        --lr 1e-2:1:4 --momentum 0,0.9 --steps 300 --out runs/dropout

``features`` and ``outputs`` are filled from the data.
"""
from __future__ import annotations

from torch import Tensor, nn


class DropoutMLP(nn.Module):
    """``features -> hidden -> hidden -> outputs`` with ReLU, and dropout ``p`` after each hidden layer."""

    def __init__(self, features: int, outputs: int, hidden: int = 100, p: float = 0.2):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(features, hidden), nn.ReLU(), nn.Dropout(p),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(p), nn.Linear(hidden, outputs))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
