"""``inertia.Lookahead``: Lookahead around any ``torch.optim.Optimizer``."""
from __future__ import annotations

import collections
from typing import Any, Callable

import torch


class Lookahead(torch.optim.Optimizer):
    r"""Lookahead (Zhang, Lucas, Hinton & Ba, NeurIPS 2019) around ANY ``torch.optim.Optimizer``.

    ``inertia.Lookahead(optimizer, k=5, alpha=0.5)``: the inner optimizer updates the
    fast weights θ; every k steps the slow weights φ (starting at θ₀) move toward
    them and the fast weights restart there::

        φ ← φ + α(θ − φ),  θ ← φ

    ``param_groups`` are the inner optimizer's (so lr schedulers drive the inner
    learning rate); ``state_dict()`` holds the inner state, the slow weights and the
    step count. For sweeps and races use the rule combinator
    :func:`inertia.rules.lookahead` (registered as ``lookahead`` and ``lookahead_adam``).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, k: int = 5, alpha: float = 0.5):
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        if not (isinstance(alpha, (int, float)) and 0.0 <= alpha <= 1.0):
            raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
        self.optimizer = optimizer
        self.k, self.alpha = k, float(alpha)
        self.lookahead_steps = 0
        torch._C._log_api_usage_once("python.optimizer")
        self.defaults = {**optimizer.defaults, "k": k, "alpha": self.alpha}
        for name in ("_optimizer_step_pre_hooks", "_optimizer_step_post_hooks",
                     "_optimizer_state_dict_pre_hooks", "_optimizer_state_dict_post_hooks",
                     "_optimizer_load_state_dict_pre_hooks", "_optimizer_load_state_dict_post_hooks"):
            setattr(self, name, collections.OrderedDict())
        self._patch_step_function()
        self.state = collections.defaultdict(dict)  # the slow weights: state[p]["slow"]

    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        self.optimizer.param_groups = value

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"Lookahead(k={self.k}, alpha={self.alpha}, optimizer={self.optimizer!r})"

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self.optimizer.add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One inner step; every k-th, the slow weights take their step and the fast weights restart there."""
        params = [p for group in self.param_groups for p in group["params"]]
        for p in params:
            if "slow" not in self.state[p]:
                self.state[p]["slow"] = p.detach().clone()
        loss = self.optimizer.step(closure)
        self.lookahead_steps += 1
        if self.lookahead_steps % self.k == 0:
            slows = [self.state[p]["slow"] for p in params]
            torch._foreach_lerp_(slows, [p.detach() for p in params], self.alpha)
            torch._foreach_copy_([p.detach() for p in params], slows)
        return loss

    def state_dict(self) -> dict[str, Any]:
        params = [p for group in self.param_groups for p in group["params"]]
        return {
            "inner": self.optimizer.state_dict(),
            "slow": {i: self.state[p]["slow"].clone() for i, p in enumerate(params) if "slow" in self.state[p]},
            "lookahead_steps": self.lookahead_steps,
            "k": self.k,
            "alpha": self.alpha,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state_dict["inner"])
        params = [p for group in self.param_groups for p in group["params"]]
        self.state = collections.defaultdict(dict)
        for i, slow in state_dict["slow"].items():
            p = params[int(i)]
            self.state[p]["slow"] = slow.to(dtype=p.dtype, device=p.device).clone()
        self.lookahead_steps = int(state_dict["lookahead_steps"])
        self.k, self.alpha = int(state_dict["k"]), float(state_dict["alpha"])

