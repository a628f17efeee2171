"""Models for training and sweeps: registered presets, or any factory that builds an ``nn.Module``.

:func:`model_factory` turns a model spec into a zero-argument factory (what the sweep engine
calls once per member) and :func:`build_model` builds one model. A spec is

- a registered name (:data:`MODELS`): ``mlp``, ``linear``, ``cnn`` (1-D), ``cnn2d`` (images);
- a callable returning an ``nn.Module``: a class such as ``DigitsCNN``, or a function;
- the text ``"package.module:factory"`` (what ``--model`` takes on the command line), imported
  with the current directory on ``sys.path``, as ``python -m`` does.

The factory's parameters named ``input_shape``, ``features``, ``classes``, ``outputs`` and
``in_channels`` (the C of ``[C, H, W]`` inputs) are filled from the data unless ``model_args``
gives them; ``model_args`` (``--model-arg NAME=VALUE``) gives the others. ``features`` is the number
of input values per example: for inputs that are not flat (sequences ``[n, 20, 4]``) the product of
the shape, 80, which a model reading 4 values per step must be told (``--model-arg features=4``).
The model is checked on two real examples of the data (integer inputs as integers when it takes
them, :func:`inertia.pipeline.input_dtype`). Every mistake is a one-line ``ValueError`` naming the
model and what is wrong.

``build_model("mlp", 40, 10)`` is the MNIST-1D reference MLP (Greydanus 2020): 40-100-100-10
with ReLU, ~68 % test accuracy in the paper. ``mlp``, ``linear`` and ``cnn`` have no buffers;
``cnn2d`` has BatchNorm running statistics.
"""
from __future__ import annotations

import functools
import importlib
import inspect
import math
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

MODELS: dict[str, str] = {
    "mlp": "multilayer perceptron, two hidden layers of 100 with ReLU (40-100-100-10 on MNIST-1D); "
           "flattens image-shaped inputs; model arg hidden=100,100",
    "linear": "logistic regression: one linear layer (MNIST-1D reference ~32 %)",
    "cnn": "small 1-D convolutional net (3 conv layers of 25 channels, MNIST-1D reference ~94 %); "
           "model arg channels=25",
    "cnn2d": "small 2-D convolutional net for [C, H, W] images: 2 conv + BatchNorm2d + ReLU blocks, "
             "average pooling, a linear layer; model arg channels=16",
}

FILLED = ("input_shape", "features", "classes", "outputs", "in_channels")


class MLP(nn.Module):
    """Fully connected network: ``features -> hidden[0] -> ... -> outputs`` with ReLU between layers.

    ``layers`` is an ``nn.Sequential`` of ``nn.Linear`` and ``nn.ReLU`` only; inputs of more
    than one dimension per example are flattened. ``hidden=()`` gives one linear layer.
    """

    def __init__(self, features: int, outputs: int, hidden: Sequence[int] = (100, 100)):
        super().__init__()
        _check_sizes(features, outputs)
        widths = [int(features), *(int(h) for h in hidden), int(outputs)]
        for h in widths[1:-1]:
            if h <= 0:
                raise ValueError(f"hidden sizes must be positive, got hidden={tuple(hidden)!r}")
        modules: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            modules.append(nn.Linear(a, b))
            if i < len(widths) - 2:
                modules.append(nn.ReLU())
        self.layers = nn.Sequential(*modules)
        self.features, self.outputs, self.hidden = int(features), int(outputs), tuple(widths[1:-1])

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x.flatten(1) if x.dim() > 2 else x)


class CNN1D(nn.Module):
    """A small 1-D convolutional net for sequences such as MNIST-1D.

    Input ``[batch, ...]`` is read as one channel of length ``features``. Three ``Conv1d``
    layers (``channels`` filters, kernel 5 then 3, stride 2, padding 1) with ReLU, then a
    linear layer to ``outputs``: the shape of the MNIST-1D paper's CNN.
    """

    def __init__(self, features: int, outputs: int, channels: int = 25):
        super().__init__()
        _check_sizes(features, outputs)
        self.conv1 = nn.Conv1d(1, channels, 5, stride=2, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        with torch.no_grad():
            length = self._convs(torch.zeros(1, 1, int(features))).shape[-1]
        self.linear = nn.Linear(channels * length, int(outputs))
        self.features, self.outputs = int(features), int(outputs)

    def _convs(self, x: Tensor) -> Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return torch.relu(self.conv3(x))

    def forward(self, x: Tensor) -> Tensor:
        h = self._convs(x.reshape(x.shape[0], 1, -1))
        return self.linear(h.flatten(1))


class CNN2D(nn.Module):
    """A small 2-D convolutional net for images ``[batch, C, H, W]`` (or ``[batch, H, W]``: one channel).

    Two blocks of 3x3 ``Conv2d`` (``channels``, then ``2 * channels`` filters with stride 2),
    ``BatchNorm2d`` and ReLU, global average pooling, then a linear layer to ``outputs``.
    """

    def __init__(self, in_channels: int, outputs: int, channels: int = 16):
        super().__init__()
        _check_sizes(in_channels, outputs, "in_channels")
        c = int(channels)
        if c <= 0:
            raise ValueError(f"channels must be positive, got channels={channels!r}")
        self.body = nn.Sequential(
            nn.Conv2d(int(in_channels), c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
            nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * c), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(2 * c, int(outputs))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x.unsqueeze(1) if x.dim() == 3 else x))


def _check_sizes(features: int, outputs: int, what: str = "features") -> None:
    if int(features) <= 0:
        raise ValueError(f"{what} must be positive, got {what}={features!r}")
    if int(outputs) < 1:
        raise ValueError(f"outputs must be at least 1, got outputs={outputs!r}")


def _widths(hidden: Any) -> tuple[int, ...]:
    """``hidden`` as layer widths: a number, ``"100,100"`` (as typed after ``--model-arg``) or a sequence."""
    if isinstance(hidden, str):
        return tuple(int(h) for h in hidden.split(",") if h.strip())
    return (int(hidden),) if isinstance(hidden, (int, float)) else tuple(int(h) for h in hidden)


def mlp(input_shape: Sequence[int], outputs: int, hidden: Any = (100, 100)) -> MLP:
    """The ``mlp`` preset: :class:`MLP` over the flattened input."""
    return MLP(math.prod(input_shape), outputs, hidden=_widths(hidden))


def linear(input_shape: Sequence[int], outputs: int) -> MLP:
    """The ``linear`` preset: one ``nn.Linear`` over the flattened input."""
    return MLP(math.prod(input_shape), outputs, hidden=())


def cnn(input_shape: Sequence[int], outputs: int, channels: int = 25) -> CNN1D:
    """The ``cnn`` preset: :class:`CNN1D` over the flattened input."""
    return CNN1D(math.prod(input_shape), outputs, channels=channels)


def cnn2d(input_shape: Sequence[int], outputs: int, channels: int = 16) -> CNN2D:
    """The ``cnn2d`` preset: :class:`CNN2D`; inputs must be images ``[C, H, W]`` or ``[H, W]``."""
    if len(input_shape) not in (2, 3):
        raise ValueError(f"cnn2d needs image inputs [C, H, W] or [H, W], got input_shape {tuple(input_shape)}; "
                         "reshape x (e.g. x.reshape(n, 1, 8, 8)) or use mlp")
    return CNN2D(input_shape[0] if len(input_shape) == 3 else 1, outputs, channels=channels)


REGISTRY: dict[str, Callable[..., nn.Module]] = {"mlp": mlp, "linear": linear, "cnn": cnn, "cnn2d": cnn2d}


@dataclass(frozen=True)
class Shapes:
    """What a model must fit: one example's ``input_shape``, ``outputs`` per example, ``classes`` (or None)."""

    name: str
    input_shape: tuple[int, ...]
    outputs: int
    classes: int | None
    examples: Tensor | None = None   # two real inputs of the data, when it has them

    @classmethod
    def of(cls, data: Any, outputs: int | None = None) -> "Shapes":
        """From a :class:`inertia.data.Dataset`, or from a feature count / input shape and ``outputs``."""
        if hasattr(data, "input_shape") and hasattr(data, "outputs"):
            classes = data.classes if data.task == "classification" else None
            return cls(f"dataset {data.name!r}", tuple(data.input_shape), int(data.outputs), classes,
                       data.x_train[:2])
        if outputs is None:
            raise TypeError("build_model(spec, features_or_input_shape, outputs): outputs is missing")
        shape = (int(data),) if isinstance(data, int) else tuple(int(d) for d in data)
        return cls("the data", shape, int(outputs), int(outputs))

    def value(self, name: str) -> tuple[Any, str]:
        """The value of the filled parameter ``name``, or None and why there is none."""
        if name == "classes" and self.classes is None:
            return None, f"{self.name} is a regression dataset: it has outputs, not classes"
        if name == "in_channels" and len(self.input_shape) != 3:
            return None, f"its inputs are not images [C, H, W] (input_shape {self.input_shape})"
        if name == "in_channels":
            return self.input_shape[0], ""
        if name == "features":
            return math.prod(self.input_shape), ""
        return getattr(self, name), ""


def model_factory(spec: Any, dataset: Any, model_args: Mapping[str, Any] | None = None) -> Callable[[], nn.Module]:
    """A zero-argument factory of the model ``spec`` for ``dataset`` (see the module docstring).

    One model is built and run on a batch of two inputs here (without touching the global
    random state), so a bad spec, argument or output shape fails before any training.
    """
    shapes = Shapes.of(dataset)
    build, label = _resolve(spec)
    factory = functools.partial(build, **_arguments(build, label, shapes, dict(model_args or {})))
    with torch.random.fork_rng(devices=[]):
        _check_forward(_built(factory, label), label, shapes, filled="features" in factory.keywords and "features" not in (model_args or {}))
    return factory


def build_model(spec: Any, data: Any, outputs: int | None = None, /, **model_args: Any) -> nn.Module:
    """One model ``spec`` for ``data``: a :class:`inertia.data.Dataset`, or a feature count or input
    shape followed by ``outputs`` (``build_model("mlp", 40, 10)``, ``build_model("cnn2d", (1, 8, 8), 10)``)."""
    shapes = Shapes.of(data, outputs)
    build, label = _resolve(spec)
    return _built(functools.partial(build, **_arguments(build, label, shapes, model_args)), label)


def _resolve(spec: Any) -> tuple[Callable[..., Any], str]:
    """The callable that ``spec`` names, and how errors name it."""
    if isinstance(spec, str):
        key = spec.strip()
        if key.lower() in REGISTRY:
            return REGISTRY[key.lower()], repr(key.lower())
        if ":" in key:
            return _import(key), repr(key)
        raise ValueError(f"unknown model {spec!r}; known: {', '.join(sorted(MODELS))}, "
                         "or package.module:factory (importable from the current directory)")
    if isinstance(spec, nn.Module):
        raise TypeError(f"model must be a factory that builds the model (its class, or a function), "
                        f"not a built {type(spec).__name__}: every member needs its own initialization")
    if callable(spec):
        return spec, getattr(spec, "__qualname__", repr(spec))
    raise TypeError(f"model must be a registered name, 'package.module:factory' or a callable returning "
                    f"an nn.Module, got {spec!r}")


def _import(spec: str) -> Callable[..., Any]:
    """The callable ``package.module:attribute`` names, imported with the current directory on ``sys.path``."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"model {spec!r}: expected package.module:factory")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and (module_name + ".").startswith(error.name + "."):
            raise ValueError(f"model {spec!r}: no module named {error.name!r} "
                             f"(looked in the current directory {cwd} and on sys.path)") from None
        raise ValueError(f"model {spec!r}: importing {module_name} failed: no module named {error.name!r}") from None
    except Exception as error:
        raise ValueError(f"model {spec!r}: importing {module_name} failed: {_one_line(error)}") from None
    found: Any = module
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise ValueError(f"model {spec!r}: module {module_name} ({module.__file__}) has no attribute {attribute!r}")
        found = getattr(found, part)
    if not callable(found):
        raise ValueError(f"model {spec!r}: {attribute} is a {type(found).__name__}, not callable")
    return found


def _arguments(build: Callable[..., Any], label: str, shapes: Shapes, given: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments for ``build``: ``given``, and its parameters in :data:`FILLED` from ``shapes``."""
    try:
        params = inspect.signature(build).parameters
    except (TypeError, ValueError):  # no signature to read (some builtins): pass what was given
        return given
    named = {n: p for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = [n for n in given if n not in named]
        if unknown:
            takes = ", ".join(n for n in named if n not in FILLED) or "none"
            filled = ", ".join(n for n in named if n in FILLED)
            raise ValueError(f"model {label}: unknown model argument(s) {', '.join(unknown)}; it takes {takes}"
                             + (f" ({filled} from the data)" if filled else ""))
    arguments, missing = dict(given), []
    for name, param in named.items():
        if name in arguments:
            continue
        if name in FILLED:
            value, why = shapes.value(name)
            if value is not None:
                arguments[name] = value
                continue
            if param.default is param.empty:
                raise ValueError(f"model {label} takes {name}, but {why}; give it with --model-arg {name}=VALUE")
        elif param.default is param.empty:
            missing.append(name)
    if missing:
        raise ValueError(f"model {label} needs {', '.join(missing)}: give each with --model-arg NAME=VALUE "
                         "(model_args={...} in Python)")
    return arguments


def _built(factory: functools.partial, label: str) -> nn.Module:
    """``factory()``, or a one-line ValueError when it fails or returns something that is not an ``nn.Module``."""
    try:
        model = factory()
    except Exception as error:
        shown = ", ".join(f"{k}={v!r}" for k, v in factory.keywords.items())
        raise ValueError(f"model {label}({shown}) failed: {_one_line(error)}") from None
    if not isinstance(model, nn.Module):
        raise ValueError(f"model {label} returned a {type(model).__name__}, not an nn.Module")
    return model


def _check_forward(model: nn.Module, label: str, shapes: Shapes, filled: bool = False) -> None:
    """Run ``model`` on two real examples (random ones without data); a failure or an output that is not
    ``[2, outputs]`` is a one-line ValueError naming the inputs' shape and dtype (and, when ``features``
    was ``filled`` from a non-flat input, how to give it)."""
    from .pipeline import input_dtype

    dtype = next(model.parameters(), torch.empty(0)).dtype
    x = shapes.examples if shapes.examples is not None else torch.randn(2, *shapes.input_shape)
    x = x.to(input_dtype(model, x, dtype))
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as error:
        hint = ""
        if filled and len(shapes.input_shape) > 1:
            hint = (f" (features was filled as {math.prod(shapes.input_shape)}, all values of an example of "
                    f"shape {shapes.input_shape}; give --model-arg features=N for N values per step)")
        raise ValueError(f"model {label} fails on inputs of shape {list(x.shape)}, dtype {_dtype_name(x)}: "
                         f"{_one_line(error)}{hint}") from None
    if not isinstance(out, Tensor) or out.shape[:1] != (2,) or out[0].numel() != shapes.outputs:
        got = list(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"model {label} gives {got} for inputs {list(x.shape)}; "
                         f"{shapes.name} needs {shapes.outputs} output(s) per example")


def _dtype_name(x: Tensor) -> str:
    return str(x.dtype).removeprefix("torch.")


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


__all__ = ["MLP", "CNN1D", "CNN2D", "MODELS", "REGISTRY", "FILLED", "Shapes", "build_model", "model_factory"]
