"""The README's conventions table, checked against the libraries it names (where they are installed).

Each library's SGD with momentum runs a persistent gradient through a tenfold learning-rate drop
(the moment the conventions part), and its iterates must equal inertia's under the convention
of the table row that names the library.
"""
from __future__ import annotations

import os
import re
import sys
import warnings
from pathlib import Path

import pytest
import torch

import inertia

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
LRS = [0.1] * 5 + [0.01] * 5


def table_rows() -> dict[str, str]:
    """convention -> its row's "used by" cell."""
    rows = re.findall(r'^\| `"(\w+)"`[^|]*\|[^|]*\| (.*?) \|$', README, re.M)
    assert {name for name, _ in rows} == {"torch", "sutskever", "ema"}, rows
    return dict(rows)


def convention_of(library: str) -> str:
    hits = [name for name, used_by in table_rows().items() if library in used_by]
    assert len(hits) == 1, f"the README's conventions table should name {library!r} in exactly one row: {hits}"
    return hits[0]


def inertia_walk(convention: str) -> torch.Tensor:
    w = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = inertia.SGD([w], lr=LRS[0], momentum=0.9, convention=convention)
    for lr in LRS:
        opt.param_groups[0]["lr"] = lr
        w.grad = torch.ones_like(w)
        opt.step()
    return w.detach()


def torch_walk(make) -> torch.Tensor:
    w = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = make([w])
    for lr in LRS:
        opt.param_groups[0]["lr"] = lr
        w.grad = torch.ones_like(w)
        opt.step()
    return w.detach()


def test_pytorch_sgd():
    ours = inertia_walk(convention_of("PyTorch SGD"))
    torch.testing.assert_close(ours, torch_walk(lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)))


def test_heavyball_sgd():
    heavyball = pytest.importorskip("heavyball")
    with warnings.catch_warnings():   # HeavyBall warns that a learning-rate change is experimental
        warnings.simplefilter("ignore", UserWarning)
        theirs = torch_walk(lambda p: heavyball.SGD(p, lr=0.1, beta=0.9))
    torch.testing.assert_close(inertia_walk(convention_of("HeavyBall SGD")), theirs, rtol=1e-6, atol=1e-7)


def test_keras_sgd():
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = "torch"
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip(f"Keras was imported on its {keras.backend.backend()} backend; this test uses torch's")
    import numpy as np

    variable = keras.Variable(np.zeros(3, dtype="float64"), dtype="float64")
    opt = keras.optimizers.SGD(learning_rate=LRS[0], momentum=0.9)
    for lr in LRS:
        opt.learning_rate = lr
        opt.apply_gradients([(keras.ops.ones(3, dtype="float64"), variable)])
    theirs = torch.as_tensor(np.asarray(keras.ops.convert_to_numpy(variable)), dtype=torch.float64)
    torch.testing.assert_close(inertia_walk(convention_of("Keras 3 SGD")), theirs, rtol=1e-6, atol=1e-7)


def test_the_conventions_part_under_a_learning_rate_drop():
    """The check means something: the three conventions give three different answers here."""
    ends = {c: inertia_walk(c) for c in ("torch", "sutskever", "ema")}
    assert len({round(float(v[0]), 6) for v in ends.values()}) == 3
