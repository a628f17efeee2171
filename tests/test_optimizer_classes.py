"""Every optimizer class has a real signature made from its rule's defaults, and every registered name
builds an instance of its own class (``make_optimizer(name)``)."""
from __future__ import annotations

import inspect
import pickle
import pydoc

import pytest
import torch

import inertia
from inertia import rules
from inertia.optim import make_optimizer, optimizer_class

PUBLIC = {"SGD": "sgd", "Momentum": "momentum", "Adam": "adam", "AdamW": "adamw", "NAdam": "nadam",
          "RMSprop": "rmsprop", "QHM": "qhm", "AggMo": "aggmo", "ScheduleFreeSGD": "schedulefree"}
TORCH_NAMED = ("SGD", "Adam", "AdamW", "NAdam", "RMSprop")


def params():
    return [torch.randn(3, 2, requires_grad=True)]


@pytest.mark.parametrize("name", sorted(rules.PRESETS))
def test_every_registered_name_has_a_class_whose_signature_lists_its_hyperparameters(name):
    cls = optimizer_class(name)
    signature = inspect.signature(cls)
    preset = rules.get(name)
    assert list(signature.parameters)[:2] == ["params", "lr"]
    for key, default in preset.defaults.items():
        if key != "lr":
            assert signature.parameters[key].default == default, key
            assert signature.parameters[key].kind is inspect.Parameter.KEYWORD_ONLY
    assert signature.parameters["nonfinite"].default == "raise"
    assert signature.parameters["execution"].default == "auto"


@pytest.mark.parametrize("public", sorted(PUBLIC))
def test_the_public_classes_are_the_registry_s_and_help_shows_their_hyperparameters(public):
    cls = getattr(inertia, public)
    assert optimizer_class(PUBLIC[public]) is cls
    text = pydoc.render_doc(cls, renderer=pydoc.plaintext)
    for key, default in rules.get(PUBLIC[public]).defaults.items():
        assert f"{key}={default!r}" in text or key == "lr", key


@pytest.mark.parametrize("public", TORCH_NAMED)
def test_torch_named_classes_take_every_argument_of_torchs_with_its_default(public):
    """Keyword-only beyond lr: the rule orders its hyperparameters its own way."""
    ours, theirs = inspect.signature(getattr(inertia, public)), inspect.signature(getattr(torch.optim, public))
    for key, parameter in theirs.parameters.items():
        assert ours.parameters[key].default == parameter.default, key


def test_an_unknown_keyword_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match="betaz"):
        inertia.Adam(params(), betaz=(0.9, 0.99))
    with pytest.raises(TypeError):
        inertia.Momentum(params(), 0.1, 0.9)  # only lr is positional


@pytest.mark.parametrize("name", sorted(rules.PRESETS))
def test_every_name_builds_its_class_with_the_registry_defaults(name):
    opt = make_optimizer(name, params())
    assert type(opt) is optimizer_class(name) and isinstance(opt, inertia.RuleOptimizer)
    group = opt.param_groups[0]
    assert {k: group[k] for k in rules.get(name).defaults} == rules.get(name).defaults
    assert opt.eval() is opt and opt.train() is opt   # every optimizer has the switch (a no-op for most)


def test_a_class_made_for_a_name_pickles_and_resumes():
    p = params()
    opt = make_optimizer("nesterov", p, lr=0.1)
    p[0].grad = torch.ones_like(p[0])
    opt.step()
    twin = pickle.loads(pickle.dumps({"opt": opt, "p": p}))
    assert type(twin["opt"]) is optimizer_class("nesterov")
    for o, q in ((opt, p), (twin["opt"], twin["p"])):
        q[0].grad = torch.ones_like(q[0])
        o.step()
    assert torch.equal(twin["p"][0], p[0])


def test_a_new_rule_gets_its_class_in_one_line():
    rule = rules.SGD_RULE
    rules.register("test_heavy_ball", rule, "a test preset", momentum=0.5)
    try:
        class HeavyBall(inertia.optim.PresetOptimizer, preset="test_heavy_ball"):
            """A test class."""
        assert inspect.signature(HeavyBall).parameters["momentum"].default == 0.5
        assert optimizer_class("test_heavy_ball") is HeavyBall
        assert type(make_optimizer("test_heavy_ball", params())) is HeavyBall
    finally:
        del rules.PRESETS["test_heavy_ball"]
        inertia.optim.classes._CLASSES.pop("test_heavy_ball", None)
