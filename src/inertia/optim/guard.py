"""The non-finite guard: one device flag per step, a skip on the device, an error or a count on the host.

Every step computes, on the device, one flag (some gradient holds NaN or inf): torch's own
mixed-precision check over all gradients (the kernel ``GradScaler`` runs,
``_amp_foreach_non_finite_check_and_unscale_`` with unit scale: one read of each gradient, which it
leaves bit for bit as it was), one call per device. The execution paths skip the step on the device
when it is set. With ``"skip"`` the guard counts such steps on the device; with ``"raise"`` it keeps
the flags and raises :class:`NonFiniteGradientError` once a set flag has reached the host (on CPU: at
once; on CUDA the flag is copied asynchronously, and the check waits, without blocking, for a later
call if the copy has not landed). Stacked parameters are flagged per member (``[2, P, n]``: gradient
or update, parameter, member).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

NONFINITE_POLICIES = ("raise", "skip", "off")


class NonFiniteGradientError(FloatingPointError):
    """A gradient (or a stacked member's update) held NaN or inf; that step was skipped (parameters and
    state untouched; stacked parameters: those members' step only)."""


def real(t: Any) -> Any:
    """A complex tensor as its real view ``[..., 2]`` (what the rule updates); anything else as is."""
    return torch.view_as_real(t) if isinstance(t, Tensor) and t.is_complex() else t


def _amp_found(tensors: list[Tensor]) -> Tensor:
    """torch's non-finite check of dense real ``tensors`` on one device, as a 0-dim float32 flag."""
    found = torch.zeros(1, dtype=torch.float32, device=tensors[0].device)
    torch._amp_foreach_non_finite_check_and_unscale_(tensors, found, torch.ones_like(found))
    return found.view(())


def found_nonfinite(grads: list[Tensor]) -> Tensor:
    """A 0-dim float32 device flag: 1 if any element of ``grads`` is NaN or inf, else 0 (one pass over
    every gradient; one call per device, complex gradients as real views, sparse ones by their values)."""
    try:
        return _amp_found(grads)
    except (NotImplementedError, RuntimeError):  # complex, sparse, or on several devices
        pass
    by_device: dict[torch.device, list[Tensor]] = {}
    for g in grads:
        g = real(g.detach().coalesce()._values() if g.is_sparse else g.detach())
        by_device.setdefault(g.device, []).append(g)
    return torch.stack([_amp_found(tensors).to(grads[0].device) for tensors in by_device.values()]).amax()


class NonFiniteGuard:
    """What a policy in :data:`NONFINITE_POLICIES` does with a step's flags; ``describe(p)`` names a
    parameter in the error."""

    def __init__(self, policy: str, skipped: Tensor | None = None):
        if policy not in NONFINITE_POLICIES:
            raise ValueError(f"nonfinite must be one of {NONFINITE_POLICIES}, got {policy!r}")
        self.policy = policy
        self.skipped: Tensor | None = skipped    # device count of skipped steps ([n] per member)
        self._pending: list[tuple] = []          # (host flags, CUDA event or None, params) to check

    def __getstate__(self) -> dict[str, Any]:
        return {"policy": self.policy, "skipped": self.skipped}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["policy"], state["skipped"])

    @property
    def active(self) -> bool:
        return self.policy != "off"

    def gradient_flag(self, params: list[Tensor]) -> Tensor:
        """Whether any of ``params``' gradients is non-finite (0-dim float on the device), kept for ``"raise"``."""
        found = found_nonfinite([p.grad for p in params])
        self.record(found, params)
        return found

    def record(self, flags: Tensor, params: list[Tensor]) -> None:
        """Keep a step's flags (0-dim, or ``[2, P, n]`` per member) for the ``"raise"`` check."""
        if self.policy != "raise":
            return
        event = None
        if flags.is_cuda:
            host = torch.empty(flags.shape, dtype=flags.dtype, pin_memory=True)
            host.copy_(flags, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            flags = host
        self._pending.append((flags, event, params))

    def count(self, skipped: Tensor | None) -> None:
        """Add a step's skip flag (0-dim: the whole step; ``[n]``: per member) to the device count (``"skip"``)."""
        if self.policy == "skip" and skipped is not None:
            self.skipped = skipped.long() if self.skipped is None else self.skipped + skipped.long()

    def skipped_steps(self, members: int | None) -> int | Tensor:
        count = torch.zeros((), dtype=torch.long) if self.skipped is None else self.skipped.cpu()
        return int(count) if members is None else count.expand(members).clone()

    def check(self, describe: Callable[[Tensor], str], wait: bool = True) -> None:
        """Raise :class:`NonFiniteGradientError` for the first kept step whose flags are set; ``wait=False``
        looks only at flags that have reached the host."""
        while self._pending:
            flags, event, params = self._pending[0]
            if event is not None and not (wait or event.query()):
                return
            if event is not None:
                event.synchronize()
            self._pending.pop(0)
            host = flags.numpy()  # host memory: no device read
            if host.any():
                self._pending.clear()
                raise NonFiniteGradientError(_message(host, params, describe))


def _message(flags: Any, params: list[Tensor], describe: Callable[[Tensor], str]) -> str:
    """The error for a step's host flags: 0-dim (any gradient), or ``[2, P, n]`` (gradient, update) per member."""
    if flags.ndim == 0:
        return (f"non-finite gradient (NaN or inf) in {_first_nonfinite(params, describe)}; that step was "
                f"skipped. Lower the learning rate, clip gradients, or pass nonfinite='skip' to skip such steps.")
    bad = sorted(set(flags.nonzero()[2].tolist()))
    first = bad[0]
    position = flags[:, :, first].any(0).nonzero()[0][0]
    kind = "gradient" if flags[0, position, first] else "update"
    others = f" (all members with one: {', '.join(map(str, bad))})" if len(bad) > 1 else ""
    return (f"non-finite {kind} (NaN or inf) in member {first}{others} of parameter "
            f"{describe(params[position])}; those members' step was skipped, the others stepped. "
            f"Lower their learning rate, clip gradients, or pass nonfinite='skip' to skip such members' steps.")


def _first_nonfinite(params: list[Tensor], describe: Callable[[Tensor], str]) -> str:
    """Which of ``params`` had the non-finite gradient, read from their gradients now (the error is raised
    before the next ``zero_grad``/``step`` has replaced them), or "a parameter" if none has now."""
    for p in params:
        g = p.grad
        if g is not None and not bool(torch.isfinite(real(g.detach().to_dense())).all()):
            return f"parameter {describe(p)}"
    return "a parameter (its gradient has been replaced since)"
