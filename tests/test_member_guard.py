"""The non-finite guard on stacked parameters acts per member: a member whose gradient or update is
NaN or inf is skipped alone (``"skip"``) or named (``"raise"``); the others step exactly as they
would alone. A length-n hyperparameter on a parameter that is not stacked is an error. ``inertia train``
reports a non-finite gradient of its last step."""
from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

import inertia
from inertia.cli import main
from inertia.stacked import mark
from test_fast_step import HostReads

LRS = [0.1, 0.05, 1e38, 0.2]      # member 2's steps overflow float32 from its second step on
MOMENTA = [0.9, 0.5, 0.9, 0.0]
SHAPES = [(3, 2), (5,)]
STEPS = 20


def start(n: int = len(LRS)) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(n, *shape, generator=gen) for shape in SHAPES]


def gradient(p: torch.Tensor) -> torch.Tensor:
    """A bounded gradient (finite for any finite p), elementwise: member i's depends on member i only."""
    return p / (1 + p * p) + 1


def stacked_sgd(rows, nonfinite="skip", poison=None):
    """inertia.SGD over members ``rows`` stacked, STEPS steps; ``poison(step, grads)`` may spoil gradients."""
    params = mark([t[rows].clone().requires_grad_() for t in start()], len(rows))
    opt = inertia.SGD(params, lr=torch.tensor([LRS[i] for i in rows]),
                      momentum=torch.tensor([MOMENTA[i] for i in rows]), nonfinite=nonfinite)
    for step in range(STEPS):
        grads = [gradient(p.detach()) for p in params]
        if poison is not None:
            poison(step, grads)
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
    return [p.detach() for p in params], opt


def torch_sgd(i, skip_steps=()):
    """Member i alone with torch.optim.SGD and plain numbers, not stepping at ``skip_steps``."""
    params = [t[i].clone().requires_grad_() for t in start()]
    opt = torch.optim.SGD(params, lr=LRS[i], momentum=MOMENTA[i], foreach=False)
    for step in range(STEPS):
        for p in params:
            p.grad = gradient(p.detach())
        if step not in skip_steps:
            opt.step()
    return [p.detach() for p in params]


def member(params, i):
    return [p[i] for p in params]


def assert_equal(a, b):
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_a_member_whose_update_overflows_is_skipped_alone_and_the_others_step_as_alone():
    params, opt = stacked_sgd([0, 1, 2, 3])
    healthy = [0, 1, 3]
    without, _ = stacked_sgd(healthy)
    for k, i in enumerate(healthy):
        assert_equal(member(params, i), member(without, k))     # bit-identical without the bad member
        assert_equal(member(params, i), torch_sgd(i))           # and to torch.optim.SGD alone
    assert all(torch.isfinite(p).all() for p in params)
    assert opt.skipped_steps.tolist() == [0, 0, STEPS - 1, 0]  # its first step stays finite
    assert all(torch.isfinite(s["momentum_buffer"]).all() for s in opt.state.values())


def test_a_nonfinite_gradient_skips_that_member_s_step_only():
    def poison(step, grads):
        if step == 5:
            grads[1][1, 0] = float("nan")

    params, opt = stacked_sgd([0, 1, 3], poison=poison)
    assert_equal(member(params, 0), torch_sgd(0))
    assert_equal(member(params, 1), torch_sgd(1, skip_steps={5}))  # parameters and state untouched at step 5
    assert_equal(member(params, 2), torch_sgd(3))
    assert opt.skipped_steps.tolist() == [0, 1, 0]


def test_other_rules_step_the_healthy_members_as_without_the_bad_one():
    def run(rows, bad_row=None):
        params = mark([t[rows].clone().requires_grad_() for t in start()], len(rows))
        opt = inertia.Adam(params, lr=torch.tensor([[0.1, 0.01, 0.03][i] for i in rows]), nonfinite="skip")
        for step in range(STEPS):
            for p in params:
                p.grad = gradient(p.detach())
            if bad_row is not None and step % 3 == 0:
                params[0].grad[bad_row] = float("inf")
            opt.step()
        return params, opt

    together, opt = run([0, 1, 2], bad_row=1)
    alone, _ = run([0, 2])
    assert_equal(member(together, 0), member(alone, 0))
    assert_equal(member(together, 2), member(alone, 1))
    assert opt.skipped_steps.tolist() == [0, 7, 0]


def test_a_step_that_skips_every_member_does_not_count_and_unstacked_nan_skips_all():
    stacked = mark([torch.ones(2, 3, requires_grad=True)], 2)[0]
    shared = torch.ones(3, requires_grad=True)
    opt = inertia.SGD([{"params": [stacked], "lr": torch.tensor([0.1, 0.2])}, {"params": [shared]}],
                      lr=0.1, momentum=0.9, nonfinite="skip")
    stacked.grad, shared.grad = torch.ones(2, 3), torch.ones(3)
    opt.step()
    before = stacked.detach().clone(), shared.detach().clone(), opt.state[stacked]["momentum_buffer"].clone()
    stacked.grad, shared.grad = torch.ones(2, 3), torch.tensor([1.0, float("nan"), 1.0])
    opt.step()  # a non-finite unstacked gradient skips the whole step, as for an unstacked model
    assert_equal(before, (stacked.detach(), shared.detach(), opt.state[stacked]["momentum_buffer"]))
    assert opt.state[stacked]["step"] == 1 and opt.skipped_steps.tolist() == [1, 1]


def test_raise_names_the_member_and_the_parameter_after_a_step_that_read_nothing(monkeypatch):
    models = inertia.stack(lambda: nn.Linear(3, 2), 3, seed=0)
    opt = inertia.SGD(models.named_parameters(), lr=torch.tensor([0.1, 0.1, 5e37]), momentum=0.9)
    x = torch.ones(4, 3)
    models(x).sum().backward()
    opt.step()
    before = copy.deepcopy(models.state_dict())
    opt.zero_grad()
    models(x).sum().backward()
    reads = HostReads(monkeypatch)
    opt.step()  # member 2's weights would overflow (gradients 4: 2e38, then 2e38 + 3.8e38)
    assert reads.count == 0
    monkeypatch.undo()
    after = models.state_dict()
    assert all(torch.equal(after[k][2], before[k][2]) and not torch.equal(after[k][0], before[k][0]) for k in after)
    with pytest.raises(inertia.NonFiniteGradientError, match=r"non-finite update \(NaN or inf\) in member 2 of "
                                                             r"parameter 'weight'") as info:
        opt.check_nonfinite()
    assert "\n" not in str(info.value)
    opt.check_nonfinite()  # reported once


def test_raise_names_every_member_with_a_nonfinite_gradient():
    params = mark([torch.zeros(4, 2, requires_grad=True)], 4)
    opt = inertia.SGD(params, lr=0.1)
    params[0].grad = torch.tensor([[0.0, 0], [float("nan"), 0], [0, 0], [0, float("inf")]])
    opt.step()
    with pytest.raises(inertia.NonFiniteGradientError,
                       match=r"gradient .* in member 1 \(all members with one: 1, 3\) of parameter group 0, "
                             r"parameter 0 of shape \(4, 2\)"):
        opt.zero_grad()
    assert torch.equal(params[0][[0, 2]], torch.zeros(2, 2)) and torch.equal(params[0][[1, 3]], torch.zeros(2, 2))


def test_a_length_n_hyperparameter_on_an_unstacked_model_is_a_one_line_error():
    with pytest.raises(ValueError, match=r"lr holds 8 values .* is not stacked: build the model with "
                                         r"inertia\.stack\(factory, 8\)") as info:
        inertia.SGD(nn.Linear(40, 8).parameters(), lr=torch.full((8,), 0.1))
    assert "\n" not in str(info.value)
    opt = inertia.Adam(nn.Linear(4, 2).parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"betas holds 2 values"):
        opt.add_param_group({"params": [nn.Parameter(torch.zeros(2, 4))], "betas": (torch.tensor([0.9, 0.8]), 0.99)})
    assert len(opt.param_groups) == 1
    linear = nn.Linear(4, 2)
    opt = inertia.SGD(linear.parameters(), lr=0.1)
    opt.param_groups[0]["lr"] = torch.tensor([0.1, 0.2])  # set later: refused at the step
    linear.weight.grad, linear.bias.grad = torch.ones(2, 4), torch.ones(2)
    with pytest.raises(ValueError, match="lr holds 2 values .* not stacked"):
        opt.step()
    assert torch.equal(linear.bias.grad, torch.ones(2))


def test_stacks_of_two_sizes_in_one_optimizer_are_refused():
    with pytest.raises(ValueError, match="stacked with 3 members and others with 2: use one optimizer per stack"):
        inertia.SGD([*inertia.stack(lambda: nn.Linear(2, 1), 2).parameters(),
                     *inertia.stack(lambda: nn.Linear(2, 1), 3).parameters()], lr=0.1)


def test_tensors_stacked_by_torch_func_and_marked_train_per_member_and_survive_deepcopy():
    models = [nn.Linear(3, 2) for _ in range(2)]
    stacked_params, _ = torch.func.stack_module_state(models)
    params = mark(stacked_params.values(), 2)
    with pytest.raises(ValueError, match="first dimension of 3"):
        mark([torch.zeros(2, 4)], 3)
    opt = copy.deepcopy(inertia.SGD(params, lr=torch.tensor([0.1, 0.2]), nonfinite="skip"))
    copied = opt.param_groups[0]["params"]
    for p in copied:
        p.grad = torch.ones_like(p)
    copied[0].grad[0, 0, 0] = float("nan")
    opt.step()
    assert opt.skipped_steps.tolist() == [1, 0] and torch.equal(copied[1][0], params[1][0].detach())
    assert torch.equal(copied[1][1], params[1][1].detach() - 0.2)


def test_train_reports_a_nonfinite_gradient_on_its_last_step(tmp_path, monkeypatch, capsys):
    (tmp_path / "lastnan.py").write_text(
        "import torch\nfrom torch import nn\n\n"
        "class Net(nn.Module):\n"
        "    '''A linear model (behind an Identity: not a chain the batched backend runs in its place)\n"
        "    whose output is NaN at its training forward number `steps`.'''\n"
        "    def __init__(self, features, classes, steps):\n"
        "        super().__init__()\n"
        "        self.linear, self.steps, self.calls = nn.Linear(features, classes), steps, 0\n"
        "        self.identity = nn.Identity()\n\n"
        "    def forward(self, x):\n"
        "        out = self.linear(self.identity(x))\n"
        "        if self.training and torch.is_grad_enabled():\n"
        "            self.calls += 1\n"
        "            if self.calls == self.steps:\n"
        "                out = out * float('nan')\n"
        "        return out\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    common = ["train", "--data", "digits", "--model", "lastnan:Net", "--batch-size", "32", "--quiet"]
    # training forward 1 is the trial step that checks that vmap batches the model; steps 1..5 are forwards 2..6
    assert main([*common, "--steps", "5", "--model-arg", "steps=7", "--json", "ok.json"]) == 0
    assert json.loads((tmp_path / "ok.json").read_text())["config"]["steps"] == 5
    assert main([*common, "--steps", "5", "--model-arg", "steps=6"]) == 1
    assert "non-finite gradient (NaN or inf) in parameter" in capsys.readouterr().err
