"""On a GPU, the engines give the CPU's numbers (to float tolerance). Skipped without CUDA.

Run them where a GPU is lent with ``bash benchmarks/gpu.sh`` (or ``pytest -m cuda``).
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

import inertia
from inertia import rules
from inertia.pipeline import make_folds
from inertia.sweeps.engine import Job, Members, run_members

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _data(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 6, 6, generator=g)
    return x, (x.mean((1, 2, 3)) * 3).round().clamp(-1, 1).long() + 1


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.head = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Linear(144, 3)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x))).flatten(1))


def _mlp():
    return nn.Sequential(nn.Linear(36, 16), nn.ReLU(), nn.Linear(16, 3))


@pytest.mark.parametrize("factory,flat", [(TinyCNN, False), (_mlp, True)])
def test_a_sweep_on_cuda_gives_the_cpus_numbers(factory, flat):
    x, y = _data()
    x_test, y_test = _data(40, seed=1)
    if flat:
        x, x_test = x.flatten(1), x_test.flatten(1)
    configs = [dict(lr=0.05, momentum=0.9), dict(lr=0.2, momentum=0.0)]
    records = {}
    for device in ("cpu", "cuda"):
        job = Job(factory, x, y, make_folds(len(y), 2, 0), rules.get("momentum"), {}, 12, 16, seed=1,
                  x_test=x_test, y_test=y_test, device=device, dtype=torch.float64, eval_every=4)
        records[device] = run_members(Members(job, configs, [0, 1])).results()
    for a, b in zip(records["cpu"], records["cuda"]):
        for key in ("val_loss_mean", "val_accuracy_mean", "test_loss_mean"):
            assert b[key] == pytest.approx(a[key], rel=1e-6), key


def test_the_optimizer_on_cuda_equals_torch_and_never_syncs_with_the_host():
    p = torch.randn(1000, device="cuda", requires_grad=True)
    q = p.detach().clone().requires_grad_(True)
    ours, theirs = inertia.SGD([p], lr=0.1, momentum=0.9), torch.optim.SGD([q], lr=0.1, momentum=0.9)
    for _ in range(3):   # warm-up: allocations and first-step state outside the check
        for param, opt in ((p, ours), (q, theirs)):
            param.grad = torch.sin(param.detach())
            opt.step()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(5):
            p.grad = torch.sin(p.detach())
            ours.step()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    for _ in range(5):
        q.grad = torch.sin(q.detach())
        theirs.step()
    torch.testing.assert_close(p.detach(), q.detach())


def test_fit_on_cuda_gives_the_cpus_numbers():
    common = dict(data="digits", model="mlp", hyper=dict(lr=0.1, momentum=0.9), steps=30, batch_size=32,
                  dtype=torch.float64)
    cpu = inertia.fit(device="cpu", **common).record()
    gpu = inertia.fit(device="cuda", **common).record()
    assert gpu["val_loss_mean"] == pytest.approx(cpu["val_loss_mean"], rel=1e-6)
