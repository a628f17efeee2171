"""Sequence models we did not write for the sweep: a GRU, an LSTM, and a Transformer over tokens.

From the repository root::

    python examples/sequences.py        # writes mnist1d_sequences.npz and digits_tokens.npz
    inertia sweep --data mnist1d_sequences.npz --model examples.sequences:GRUClassifier \\
        --lr 1e-2:1:4 --momentum 0,0.5,0.9,0.99 --steps 300 --out runs/gru
    inertia sweep --data digits_tokens.npz --model examples.sequences:TokenTransformer \\
        --lr 1e-3:1e-1:4 --momentum 0,0.9 --steps 200 --out runs/tokens

``classes`` and ``input_shape`` are filled from the data (``features`` would be every value of an
example, 40 for ``[n, 40, 1]``: a recurrent layer wants the values per step, ``input_shape[-1]``).
MNIST-1D's 40 features are read as a sequence of 40 steps of one value (``[n, 40, 1]``);
scikit-learn's digits as 64 integer tokens, the pixel intensities 0..16, which stay integers
(``int64``) on their way to the Embedding.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn


class GRUClassifier(nn.Module):
    """A GRU over the sequence ``[batch, steps, values]`` (``[batch, steps]``: one value per step); a linear
    layer reads its last state."""

    def __init__(self, classes: int = 10, input_shape: tuple[int, ...] = (40, 1), hidden: int = 32, layers: int = 1):
        super().__init__()
        self.rnn = nn.GRU(_per_step(input_shape), hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.rnn(x if x.dim() == 3 else x.unsqueeze(-1))
        return self.head(out[:, -1])


class LSTMClassifier(GRUClassifier):
    """:class:`GRUClassifier` with an LSTM."""

    def __init__(self, classes: int = 10, input_shape: tuple[int, ...] = (40, 1), hidden: int = 32, layers: int = 1):
        super().__init__(classes, input_shape, hidden, layers)
        self.rnn = nn.LSTM(_per_step(input_shape), hidden, num_layers=layers, batch_first=True)


def _per_step(input_shape: tuple[int, ...]) -> int:
    return input_shape[-1] if len(input_shape) > 1 else 1


class TokenTransformer(nn.Module):
    """Tokens ``[batch, length]`` (integers below ``vocabulary``) -> an Embedding plus a learned position,
    one Transformer encoder layer, mean over positions, a linear layer."""

    def __init__(self, classes: int = 10, input_shape: tuple[int, ...] = (64,), vocabulary: int = 17, width: int = 32):
        super().__init__()
        self.embed = nn.Embedding(vocabulary, width)
        self.position = nn.Parameter(torch.zeros(input_shape[0], width))
        self.encoder = nn.TransformerEncoderLayer(width, nhead=4, dim_feedforward=2 * width, dropout=0.0,
                                                  batch_first=True)
        self.head = nn.Linear(width, classes)

    def forward(self, tokens: Tensor) -> Tensor:
        h = self.embed(tokens) + self.position[: tokens.shape[1]]
        return self.head(self.encoder(h).mean(1))


def write_data(folder: str = ".") -> list[str]:
    """``mnist1d_sequences.npz`` (float ``[n, 40, 1]``) and ``digits_tokens.npz`` (integer ``[n, 64]``)."""
    from inertia.data import load_dataset

    mnist = load_dataset("mnist1d")
    np.savez(f"{folder}/mnist1d_sequences.npz", x_train=mnist.x_train.unsqueeze(-1).numpy(),
             y_train=mnist.y_train.numpy(), x_test=mnist.x_test.unsqueeze(-1).numpy(), y_test=mnist.y_test.numpy())
    from sklearn.datasets import load_digits

    digits = load_digits()
    np.savez(f"{folder}/digits_tokens.npz", x=digits.data.astype(np.int64), y=digits.target)
    return [f"{folder}/mnist1d_sequences.npz", f"{folder}/digits_tokens.npz"]


if __name__ == "__main__":
    for path in write_data():
        print("wrote", path)
