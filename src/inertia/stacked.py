"""``inertia.stack``: n copies of any ``nn.Module`` as one module with stacked ``[n, ...]`` tensors.

``stacked = inertia.stack(factory_or_module, n, seed=0)`` holds every parameter and
buffer of the template as one tensor with a leading member axis (as
``torch.func.stack_module_state`` builds them), registered under the template's own
names (``stacked.state_dict()`` has the template's keys, each ``[n, ...]``). Its
forward runs the template through ``torch.func.functional_call`` under
``torch.vmap(..., randomness="different")``: member i computes with its own
weights, updates its own buffers (BatchNorm running statistics in training mode)
and draws its own random numbers (dropout).

Each stacked parameter carries ``p._inertia_members = n``: an optimizer reads it
(:func:`members`) to know that the parameter's first axis is the member axis, so a
length-n hyperparameter (``lr=torch.tensor([...n])``) gives member i the i-th value,
its non-finite guard skips member i alone, and a length-n hyperparameter on a
parameter that is not stacked is refused. The mark survives ``copy.deepcopy`` and
pickling of the stacked module (and of an inertia optimizer holding the parameters).
Tensors stacked another way (``torch.func.stack_module_state``, or by hand) are
marked with :func:`mark`. Tied weights stay tied: a tensor the template holds under several
names (an embedding shared with the output layer) is one stacked tensor under all of them, in
the stacked module and in each :meth:`Stacked.member`.
"""
from __future__ import annotations

import copy
import itertools
from typing import Any, Callable, Iterable

import torch
from torch import Tensor, nn

MEMBERS_ATTRIBUTE = "_inertia_members"


def members(param: Tensor) -> int | None:
    """The number of members of a stacked parameter (its ``_inertia_members``), or None."""
    return getattr(param, MEMBERS_ATTRIBUTE, None)


def mark(tensors: Iterable[Tensor], n: int) -> list[Tensor]:
    """Mark tensors stacked ``[n, ...]`` by other means (member i is ``t[i]``); returns them as a list.

    ``params = inertia.stacked.mark(torch.func.stack_module_state(models)[0].values(), n)``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive number of members, got n={n!r}")
    tensors = list(tensors)
    for t in tensors:
        if t.dim() == 0 or t.shape[0] != n:
            raise ValueError(f"a tensor stacked with {n} members needs a first dimension of {n}, "
                             f"got shape {tuple(t.shape)}")
        setattr(t, MEMBERS_ATTRIBUTE, n)
    return tensors


def _set(module: nn.Module, name: str, value: Tensor) -> None:
    """Put ``value`` in place of the parameter or buffer called ``name`` (dotted), keeping its kind."""
    owner_name, _, leaf = name.rpartition(".")
    owner = module.get_submodule(owner_name)
    if leaf in owner._parameters:
        owner._parameters[leaf] = value if isinstance(value, nn.Parameter) else nn.Parameter(value)
    else:
        owner._buffers[leaf] = value  # keeps the buffer's persistence flag


def _ties(module: nn.Module) -> dict[str, str]:
    """Tied weights: each further name of a parameter or buffer the module holds under several names,
    mapped to the name ``named_parameters()``/``named_buffers()`` give it."""
    first: dict[int, str] = {}
    ties = {}
    for name, t in itertools.chain(module.named_parameters(remove_duplicate=False),
                                   module.named_buffers(remove_duplicate=False)):
        ties.update({name: first[id(t)]} if id(t) in first else {})
        first.setdefault(id(t), name)
    return ties


def _tie(module: nn.Module, ties: dict[str, str]) -> None:
    """Give each tied name the tensor its first name holds now."""
    for alias, name in ties.items():
        owner_name, _, leaf = name.rpartition(".")
        owner = module.get_submodule(owner_name)
        _set(module, alias, owner._parameters[leaf] if leaf in owner._parameters else owner._buffers[leaf])


def _build(model_or_factory: nn.Module | Callable[[], nn.Module], n: int, seed: int | None) -> list[nn.Module]:
    if isinstance(model_or_factory, nn.Module):
        if seed is not None:
            raise ValueError("seed needs a factory (a callable that builds the model); "
                             "a module gives every member its own weights")
        return [model_or_factory] * n
    if not callable(model_or_factory):
        raise TypeError(f"model_or_factory must be an nn.Module or a callable returning one, got {model_or_factory!r}")
    if seed is None:
        built = [model_or_factory()] * n
    else:
        built = []
        with torch.random.fork_rng(devices=[]):
            for i in range(n):
                torch.manual_seed(int(seed) + i)
                built.append(model_or_factory())
    if not isinstance(built[0], nn.Module):
        raise TypeError(f"the factory must return an nn.Module, got {type(built[0]).__name__}")
    _check_alike(built)
    return built


def _tensors(module: nn.Module) -> dict[str, Tensor]:
    return dict(itertools.chain(module.named_parameters(), module.named_buffers()))


def _check_alike(modules: list[nn.Module]) -> None:
    """Every member holds the first member's parameters and buffers, by name, shape and dtype,
    or a ValueError names the first member, tensor and shapes (or dtypes) that differ."""
    first = _tensors(modules[0])
    for i, module in enumerate(modules[1:], start=1):
        theirs = _tensors(module)
        if theirs.keys() != first.keys():
            name = sorted(theirs.keys() ^ first.keys())[0]
            holder = 0 if name in first else i
            raise ValueError(f"member {i} of the stack differs from member 0: only member {holder} has "
                             f"{name!r}; every member needs the same parameters and buffers")
        for name, t in theirs.items():
            if t.shape != first[name].shape or t.dtype != first[name].dtype:
                raise ValueError(f"member {i}'s {name!r} is {tuple(t.shape)} {t.dtype} but member 0's is "
                                 f"{tuple(first[name].shape)} {first[name].dtype}; every member needs the "
                                 "same shapes and dtypes")


def stack(model_or_factory: nn.Module | Callable[[], nn.Module], n: int, *, seed: int | None = None) -> "Stacked":
    """n stacked copies of a model, as one ``nn.Module`` (see :class:`Stacked`).

    - a factory and ``seed``: member i is ``factory()`` built right after
      ``torch.manual_seed(seed + i)`` (the global generator is restored afterwards),
      so ``torch.manual_seed(seed + i); factory()`` is member i's initial model;
    - a module, or a factory with ``seed=None``: every member starts from the same
      weights (the module's, or those of one ``factory()`` call).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive number of members, got n={n!r}")
    return Stacked(_build(model_or_factory, n, seed))


class Stacked(nn.Module):
    """Members of one architecture as one module; build it with :func:`stack`.

    ``forward(*inputs, per_member=False, **kwargs)``: inputs ``[B, ...]`` are shared
    by all members, with ``per_member=True`` they are ``[n, B, ...]`` (member i reads
    ``inputs[i]``); keyword arguments are shared. Returns ``[n, B, ...]``.
    :meth:`member` gives member i as an ordinary module.
    """

    def __init__(self, modules: list[nn.Module]):
        super().__init__()
        params, buffers = torch.func.stack_module_state(modules)
        holder = copy.deepcopy(modules[0])
        for name, child in holder.named_children():
            self.add_module(name, child)
        for name, value in holder._parameters.items():
            self.register_parameter(name, value)
        for name, value in holder._buffers.items():
            self.register_buffer(name, value, persistent=name not in holder._non_persistent_buffers_set)
        for name, value in params.items():
            _set(self, name, nn.Parameter(value, requires_grad=value.requires_grad))
        for name, value in buffers.items():
            _set(self, name, value)
        self._ties = _ties(modules[0])
        _tie(self, self._ties)
        self.n = len(modules)
        # in a list, so not a submodule; on "meta": functional_call replaces all its tensors
        self._template = [copy.deepcopy(modules[0]).to("meta")]
        _tie(self._template[0], self._ties)
        self._mark()

    def _mark(self) -> None:
        mark(self.parameters(), self.n)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._mark()  # copy.deepcopy makes new Parameters without their attributes

    def _synced_template(self) -> nn.Module:
        """The template with each submodule's training flag set as on this module."""
        template = self._template[0]
        for ours, theirs in zip(self.modules(), template.modules()):
            theirs.training = ours.training
        return template

    def forward(self, *inputs: Any, per_member: bool = False, **kwargs: Any) -> Any:
        template = self._synced_template()
        params = dict(self.named_parameters())
        buffers = dict(self.named_buffers())

        def one(p: dict, b: dict, *xs: Any) -> Any:
            return torch.func.functional_call(template, (p, b), xs, kwargs)

        in_dims = (0, 0, *([0 if per_member else None] * len(inputs)))
        return torch.vmap(one, in_dims=in_dims, randomness="different")(params, buffers, *inputs)

    def member(self, i: int) -> nn.Module:
        """Member i as an ordinary module: a copy of the template with member i's weights and buffers."""
        if isinstance(i, bool) or not isinstance(i, int) or not -self.n <= i < self.n:
            raise ValueError(f"i must be a member index in [0, {self.n}), got i={i!r}")
        model = copy.deepcopy(self._template[0])
        for name, p in self.named_parameters():
            _set(model, name, nn.Parameter(p.detach()[i].clone(), requires_grad=p.requires_grad))
        for name, b in self.named_buffers():
            _set(model, name, b[i].clone())
        _tie(model, self._ties)
        return model.train(self.training)

    def extra_repr(self) -> str:
        return f"members={self.n}"


__all__ = ["stack", "Stacked", "members", "mark", "MEMBERS_ATTRIBUTE"]
