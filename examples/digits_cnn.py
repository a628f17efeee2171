"""A CNN with BatchNorm for scikit-learn's digits as 1 x 8 x 8 images, as your own model in a sweep.

From the repository root::

    python examples/digits_cnn.py                  # writes digits_images.npz, sweeps a 4 x 2 grid
    inertia sweep --data digits_images.npz --model examples.digits_cnn:DigitsCNN \\
        --model-arg width=16 --lr 1e-3:1:8 --momentum 0,0.5,0.9,0.99 --steps 300 --out runs/digits-cnn

``in_channels`` and ``classes`` are filled from the data; ``width`` comes from ``--model-arg``.
"""
from __future__ import annotations

import numpy as np
from torch import Tensor, nn


class DigitsCNN(nn.Module):
    """Two blocks of 3x3 Conv2d + BatchNorm2d + ReLU (``width`` filters), 2x2 max pooling, a linear layer.

    Input: ``[batch, in_channels, 8, 8]``, or the 64 pixels ``[batch, 64]`` of ``--data digits``.
    """

    def __init__(self, in_channels: int = 1, classes: int = 10, width: int = 16):
        super().__init__()
        self.in_channels = in_channels
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten())
        self.classifier = nn.Linear(width * 4 * 4, classes)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 2:
            x = x.unflatten(1, (self.in_channels, 8, 8))
        return self.classifier(self.features(x))


def digits_images(seed: int = 0):
    """scikit-learn's digits (pixels in [0, 1], the 80/20 split of ``seed``) as ``[n, 1, 8, 8]`` images."""
    from inertia.data import as_dataset, load_dataset

    flat = load_dataset("digits", seed=seed)
    return as_dataset((flat.x_train.reshape(-1, 1, 8, 8), flat.y_train, flat.x_test.reshape(-1, 1, 8, 8),
                       flat.y_test), name="digits-images")


def make_data(path: str = "digits_images.npz", seed: int = 0) -> str:
    """Write :func:`digits_images` as a ``.npz`` file (``x_train, y_train, x_test, y_test``) for ``--data``."""
    data = digits_images(seed)
    np.savez(path, **{k: getattr(data, k).numpy() for k in ("x_train", "y_train", "x_test", "y_test")})
    return path


if __name__ == "__main__":
    import inertia

    print("wrote", make_data())
    results = inertia.sweep(digits_images(), DigitsCNN, lr=[0.01, 0.03, 0.1, 0.3], momentum=[0.0, 0.9],
                            steps=300, batch_size=64)
    best = results.best
    print(f"best: lr {best['lr']:.3g}, momentum {best['momentum']:g} at step {best['best_step']}: "
          f"test accuracy {best['test_accuracy_mean']:.1%}")
