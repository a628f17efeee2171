"""Your own training loop over n models at once with ``inertia.stack``: DigitsCNN, one learning rate each.

    python examples/own_loop.py

Each member has its own weights and BatchNorm statistics; a length-n ``lr`` tensor gives
member i the i-th learning rate. Summing the members' mean losses gives each its own gradient.
"""
from __future__ import annotations

import torch
from torch import nn

import inertia

try:
    from examples.digits_cnn import DigitsCNN, digits_images
except ImportError:  # run as a script: examples/ itself is on sys.path
    from digits_cnn import DigitsCNN, digits_images


def train(steps: int = 300, batch_size: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, nn.Module]:
    """Train one DigitsCNN per learning rate at once; their test accuracies, the rates and the best member."""
    data = digits_images(seed)
    x_train, x_test = inertia.data.standardize(data.x_train, data.x_test)  # statistics of the training part
    lrs = torch.tensor([0.003, 0.01, 0.03, 0.1, 0.3])
    n = len(lrs)
    models = inertia.stack(lambda: DigitsCNN(in_channels=1, classes=data.classes), n, seed=seed)
    opt = inertia.SGD(models.parameters(), lr=lrs, momentum=0.9)
    order = torch.Generator().manual_seed(seed)
    for step in range(steps):
        idx = torch.randint(len(x_train), (batch_size,), generator=order)
        out = models(x_train[idx])                               # [n, batch, classes]
        loss = nn.functional.cross_entropy(out.flatten(0, 1), data.y_train[idx].repeat(n), reduction="none")
        opt.zero_grad()
        loss.view(n, -1).mean(1).sum().backward()
        opt.step()
    models.eval()                                                # BatchNorm: each member's running statistics
    with torch.no_grad():
        accuracy = (models(x_test).argmax(-1) == data.y_test).double().mean(1)
    return accuracy, lrs, models.member(int(accuracy.argmax()))


if __name__ == "__main__":
    accuracy, lrs, best = train()
    for lr, acc in zip(lrs.tolist(), accuracy.tolist()):
        print(f"lr {lr:<6g} test accuracy {100 * acc:.1f} %")
    print("best member, an ordinary module:", type(best).__name__)
