"""From the command line, examples/sequences.py's GRU, LSTM and token Transformer (an Embedding over integer
inputs) each sweep, and each printed reproduce command gives the sweep's numbers."""
from __future__ import annotations

import json
import shlex

import numpy as np
import pytest

from examples.sequences import write_data
from inertia.cli import main

EXAMPLES = 400
"""Examples kept of each data file (of each part): the sweep evaluates every configuration at every step."""

CASES = [("mnist1d_sequences.npz", "GRUClassifier"), ("mnist1d_sequences.npz", "LSTMClassifier"),
         ("digits_tokens.npz", "TokenTransformer")]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sequences")
    for path in write_data(str(folder)):
        arrays = dict(np.load(path))
        np.savez(path, **{name: values[:EXAMPLES] for name, values in arrays.items()})
    return folder


@pytest.mark.parametrize("data,model", CASES)
def test_a_sequence_model_sweeps_and_its_printed_command_reproduces_it(files, data, model, tmp_path, capsys, recwarn):
    """Also: nothing is said of torch's missing batching rules (attention's CPU kernels), which a user cannot change."""
    out = tmp_path / "sweep"
    assert main(["sweep", "--data", str(files / data), "--model", f"examples.sequences:{model}",
                 "--lr", "0.03,0.3", "--momentum", "0,0.9", "--steps", "6", "--batch-size", "32", "--seeds", "1",
                 "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "vmap cannot batch" not in printed and "vmap backend" in printed
    assert not [str(w.message) for w in recwarn if "batching rule" in str(w.message)]
    command = shlex.split(printed.split("reproduce it with:")[1].strip().splitlines()[0])
    best = json.loads((out / "results.json").read_text())["best"]
    assert main([*command[1:], "--json", str(tmp_path / "train.json"), "--quiet"]) == 0
    ours = json.loads((tmp_path / "train.json").read_text())
    for key in ("val_loss_mean", "test_loss_mean"):
        assert ours[key] == best[key], key
