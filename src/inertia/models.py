"""Small reference models that vectorize (their layers are plain ``nn.Linear`` / ``nn.Conv1d``).

``build_model("mlp", 40, 10)`` is the MNIST-1D reference MLP (Greydanus 2020):
40-100-100-10 with ReLU, ~68 % test accuracy in the paper. The layers are plain
modules without buffers, so N copies stack with ``torch.func.stack_module_state``
and run with ``torch.func.functional_call`` under ``torch.vmap``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

MODELS: dict[str, str] = {
    "mlp": "multilayer perceptron, two hidden layers of 100 with ReLU (40-100-100-10 on MNIST-1D)",
    "linear": "logistic regression: one linear layer (MNIST-1D reference ~32 %)",
    "cnn": "small 1-D convolutional net (3 conv layers of 25 channels, MNIST-1D reference ~94 %)",
}


class MLP(nn.Module):
    """Fully connected network: ``features -> hidden[0] -> ... -> classes`` with ReLU between layers.

    ``layers`` is an ``nn.Sequential`` of ``nn.Linear`` and ``nn.ReLU`` only.
    ``hidden=()`` gives logistic regression (one linear layer).
    """

    def __init__(self, features: int, classes: int, hidden: Sequence[int] = (100, 100)):
        super().__init__()
        _check_sizes(features, classes)
        widths = [int(features), *(int(h) for h in hidden), int(classes)]
        for h in widths[1:-1]:
            if h <= 0:
                raise ValueError(f"hidden sizes must be positive, got hidden={tuple(hidden)!r}")
        modules: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            modules.append(nn.Linear(a, b))
            if i < len(widths) - 2:
                modules.append(nn.ReLU())
        self.layers = nn.Sequential(*modules)
        self.features, self.classes, self.hidden = int(features), int(classes), tuple(widths[1:-1])

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x.flatten(1) if x.dim() > 2 else x)


class CNN1D(nn.Module):
    """A small 1-D convolutional net for sequences such as MNIST-1D.

    Input ``[batch, features]`` is read as one channel of length ``features``.
    Three ``Conv1d`` layers (``channels`` filters, kernel 5, stride 2, padding 1)
    with ReLU, then a linear layer to ``classes`` -- the shape of the MNIST-1D
    paper's CNN.
    """

    def __init__(self, features: int, classes: int, channels: int = 25):
        super().__init__()
        _check_sizes(features, classes)
        self.conv1 = nn.Conv1d(1, channels, 5, stride=2, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        with torch.no_grad():
            length = self._convs(torch.zeros(1, 1, int(features))).shape[-1]
        self.linear = nn.Linear(channels * length, int(classes))
        self.features, self.classes = int(features), int(classes)

    def _convs(self, x: Tensor) -> Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return torch.relu(self.conv3(x))

    def forward(self, x: Tensor) -> Tensor:
        h = self._convs(x.reshape(x.shape[0], 1, -1))
        return self.linear(h.flatten(1))


def _check_sizes(features: int, classes: int) -> None:
    if int(features) <= 0:
        raise ValueError(f"features must be positive, got features={features!r}")
    if int(classes) < 2:
        raise ValueError(f"classes must be at least 2, got classes={classes!r}")


def build_model(name: str, features: int, classes: int) -> nn.Module:
    """Build a model preset by name (see :data:`MODELS`); unknown names are a ``ValueError``."""
    key = str(name).lower()
    if key == "mlp":
        return MLP(features, classes, hidden=(100, 100))
    if key == "linear":
        return MLP(features, classes, hidden=())
    if key == "cnn":
        return CNN1D(features, classes)
    raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")


__all__ = ["MLP", "CNN1D", "MODELS", "build_model"]
