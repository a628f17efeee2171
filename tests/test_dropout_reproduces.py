"""Dropout reproduces exactly: a configuration's draws depend on its seed and fold, never on its place in a
stack or its neighbours, and ``fit`` (behind ``inertia train``, the printed reproduce command) draws the same."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import inertia
from inertia.pipeline import SeededDropout, draw_stream

SETTINGS = dict(steps=30, batch_size=16, folds=2, seed=4)


def _data(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    return x, (x[:, 0] + x[:, 1] * x[:, 2] > 0).long() + (x[:, 3] > 1).long()


class DropoutMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.drop, self.b = nn.Linear(6, 32), nn.Dropout(0.3), nn.Linear(32, 3)

    def forward(self, x):
        return self.b(self.drop(torch.relu(self.a(x))))


class BatchNormDropout(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.bn, self.drop, self.b = nn.Linear(6, 32), nn.BatchNorm1d(32), nn.Dropout(0.5), nn.Linear(32, 3)

    def forward(self, x):
        return self.b(self.drop(torch.relu(self.bn(self.a(x)))))


class StackedLSTM(nn.Module):
    """Two LSTM layers with dropout between them (drawn inside torch's fused kernel, or the sweep's cells)."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(2, 8, num_layers=2, dropout=0.5, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.rnn(x.view(len(x), 3, 2))[0][:, -1])


def _without_dropout(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
        elif isinstance(m, nn.RNNBase):
            m.dropout = 0.0
    return model


@pytest.mark.parametrize("model", [DropoutMLP, BatchNormDropout, StackedLSTM])
def test_a_configuration_alone_in_a_grid_and_via_fit_has_one_validation_loss(model):
    data = (*_data(200, 0), *_data(60, 1))
    kwargs = dict(seeds=1, select="final", **SETTINGS)
    alone = inertia.sweep(data, model, lr=[0.05], momentum=[0.9], **kwargs).records()[0]
    grid = inertia.sweep(data, model, lr=[0.01, 0.05, 0.2], momentum=[0.0, 0.9], **kwargs).records()
    beside = next(r for r in grid if r["lr"] == 0.05 and r["momentum"] == 0.9)
    fitted = inertia.fit(data, model, optimizer="momentum", hyper={"lr": 0.05, "momentum": 0.9}, device="cpu",
                         **SETTINGS).record()
    for key in ("val_loss_mean", "test_loss_mean"):
        assert beside[key] == pytest.approx(alone[key], rel=1e-6)
        assert fitted[key] == alone[key]
    drop = _without_dropout(model())
    without = inertia.fit(data, lambda: drop, hyper={"lr": 0.05, "momentum": 0.9}, device="cpu", **SETTINGS).record()
    assert without["val_loss_mean"] != pytest.approx(alone["val_loss_mean"], rel=1e-3)   # the draws matter


def test_seeded_dropout_keeps_a_share_one_minus_p_scaled_as_torchs():
    x = torch.rand(200, 500) + 1.0
    for p in (0.1, 0.5, 0.9):
        with SeededDropout(draw_stream(0, 0, 3)):
            out = nn.functional.dropout(x, p)
        kept = out != 0
        assert abs(kept.double().mean().item() - (1 - p)) < 0.01
        torch.testing.assert_close(out[kept], x[kept] * (1.0 / (1.0 - p)), rtol=0, atol=0)
    with SeededDropout(draw_stream(0, 0, 3)):
        again = nn.functional.dropout(x, 0.9)
        second_call = nn.functional.dropout(x, 0.9)
    with SeededDropout(draw_stream(0, 1, 3)):
        other = nn.functional.dropout(x, 0.9)
    assert torch.equal(again, out) and not torch.equal(second_call, out) and not torch.equal(other, out)
    with SeededDropout(7):
        assert torch.equal(nn.functional.dropout(x, 0.5, training=False), x)
        channels = nn.Dropout2d(0.5)(torch.ones(8, 16, 3, 3))
    per_channel = channels.flatten(2)
    assert torch.equal(per_channel.amin(2), per_channel.amax(2)) and 0 < int((per_channel[:, :, 0] == 0).sum()) < 128
