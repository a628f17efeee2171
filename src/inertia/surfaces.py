r"""Test surfaces for optimizer races, with the quadratic theory of momentum.

Every surface is a :class:`Surface`: ``value(x)`` for a point ``[dim]`` or a batch
``[N, dim]`` (returns ``[]`` or ``[N]``), ``gradient(x)`` (autograd unless the
surface knows it in closed form), ``minimum`` / ``global_minimum`` (the point of
the lowest known minimum), ``minima`` (every known minimum), ``minimum_value``,
a default ``start``, plotting ``bounds`` and a one-line ``description``.
All of them work in float32 and float64 (the input's dtype is kept).

Quadratic bowls :func:`quadratic` carry the theory (Polyak 1964; Goh, Distill
2017, "Why momentum really works"). For f(w) = ½ wᵀAw with eigenvalues
λ₁ ≤ … ≤ λₙ and κ = λₙ/λ₁, heavy ball

    w_{t+1} = w_t − γ∇f(w_t) + μ (w_t − w_{t−1})

acts on each eigen-direction as the 2×2 matrix [[1 + μ − γλ, −μ], [1, 0]], whose
eigenvalues are the roots of z² − (1 + μ − γλ) z + μ = 0. The linear rate is the
largest root modulus over all λ (:meth:`Quadratic.rate`); it is < 1 exactly when
0 < γλ < 2 + 2μ for every λ (:meth:`Quadratic.stable`). The best pair is
γ* = (2/(√λ₁ + √λₙ))², μ* = ((√κ − 1)/(√κ + 1))², with rate (√κ − 1)/(√κ + 1);
gradient descent's best step is 2/(λ₁ + λₙ), with rate (κ − 1)/(κ + 1).

``SURFACES`` maps a name to a factory (used by ``inertia race --surface NAME``).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from ._text import parse_literal

Bounds = tuple[tuple[float, float], ...]


def _as_batch(x: Any, dtype: torch.dtype | None = None) -> tuple[Tensor, bool]:
    x = torch.as_tensor(x)
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    if dtype is not None:
        x = x.to(dtype)
    single = x.dim() == 1
    return (x.unsqueeze(0) if single else x), single


class Surface:
    """A differentiable test function on R^dim.

    Args:
        fn: batched value function, ``[N, dim] -> [N]`` (written with torch ops).
        dim: number of coordinates.
        start: default starting point.
        bounds: ``((lo, hi), ...)`` per coordinate, for plots.
        minima: known local minima (points); the lowest is ``minimum``.
        name, description: for listings, plots and reports.
        grad: optional closed-form batched gradient ``[N, dim] -> [N, dim]``.
    """

    def __init__(
        self,
        fn: Callable[[Tensor], Tensor],
        dim: int,
        start: Sequence[float],
        bounds: Sequence[Sequence[float]],
        minima: Sequence[Sequence[float]] = (),
        name: str = "surface",
        description: str = "",
        grad: Callable[[Tensor], Tensor] | None = None,
        params: dict[str, Any] | None = None,
    ):
        self._fn = fn
        self._grad = grad
        self.dim = int(dim)
        self.name = name
        self.description = description
        self.params = dict(params or {})
        self.start = torch.as_tensor(start, dtype=torch.float64).reshape(self.dim)
        self.bounds: Bounds = tuple((float(lo), float(hi)) for lo, hi in bounds)
        if len(self.bounds) != self.dim:
            raise ValueError(f"bounds must give (lo, hi) for each of the {self.dim} coordinates")
        points = [torch.as_tensor(m, dtype=torch.float64).reshape(self.dim) for m in minima]
        values = [float(self.value(p)) for p in points]
        order = sorted(range(len(points)), key=lambda i: values[i])
        self.minima: list[Tensor] = [points[i] for i in order]
        self.minima_values: list[float] = [values[i] for i in order]

    # ------------------------------------------------------------ values
    def value(self, x: Any) -> Tensor:
        """f(x) for a point ``[dim]`` (0-dim result) or a batch ``[N, dim]`` (``[N]``)."""
        batch, single = _as_batch(x)
        if batch.shape[-1] != self.dim:
            raise ValueError(f"{self.name} is {self.dim}-D; got points of shape {tuple(batch.shape)}")
        out = self._fn(batch)
        return out[0] if single else out

    __call__ = value

    def gradient(self, x: Any) -> Tensor:
        """∇f(x), same shape as ``x`` (closed form if known, else autograd)."""
        batch, single = _as_batch(x)
        if self._grad is not None:
            g = self._grad(batch)
        else:
            with torch.enable_grad():
                point = batch.detach().requires_grad_(True)
                (g,) = torch.autograd.grad(self._fn(point).sum(), point)
        return g[0] if single else g

    # ------------------------------------------------------------ minima
    @property
    def minimum(self) -> Tensor | None:
        """The lowest known minimum (a point), or None when unknown."""
        return self.minima[0] if self.minima else None

    @property
    def global_minimum(self) -> Tensor | None:
        return self.minimum

    @property
    def minimum_value(self) -> float:
        """f at the lowest known minimum (0.0 when no minimum is known)."""
        return self.minima_values[0] if self.minima else 0.0

    def nearest_minimum(self, x: Any) -> tuple[int, float]:
        """Index into ``minima`` of the minimum nearest to ``x`` and the distance to it."""
        if not self.minima:
            raise ValueError(f"{self.name} has no known minima")
        point = torch.as_tensor(x, dtype=torch.float64).reshape(self.dim)
        d = torch.stack([torch.linalg.vector_norm(point - m) for m in self.minima])
        i = int(torch.argmin(d))
        return i, float(d[i])

    # ------------------------------------------------------------ misc
    @property
    def is_quadratic(self) -> bool:
        return False

    def grid(self, resolution: int = 200, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor, Tensor]:
        """``(X, Y, Z)`` on the plotting bounds (2-D surfaces only), for contour plots."""
        if self.dim != 2:
            raise ValueError(f"only 2-D surfaces can be drawn; {self.name} is {self.dim}-D")
        (x0, x1), (y0, y1) = self.bounds
        xs = torch.linspace(x0, x1, resolution, dtype=dtype)
        ys = torch.linspace(y0, y1, resolution, dtype=dtype)
        X, Y = torch.meshgrid(xs, ys, indexing="xy")
        Z = self.value(torch.stack([X.reshape(-1), Y.reshape(-1)], dim=1)).reshape(X.shape)
        return X, Y, Z

    def __repr__(self) -> str:
        extra = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"<surface {self.name}({extra}) dim={self.dim}>"


# ====================================================================== quadratic

class Quadratic(Surface):
    """f(w) = ½ wᵀAw with A = Q diag(λ) Qᵀ; minimum 0 at the origin; knows its theory."""

    def __init__(self, eigenvalues: Sequence[float], rotation: Tensor | None = None, start=None, name="quadratic",
                 description="", params=None):
        lam = torch.as_tensor(eigenvalues, dtype=torch.float64).reshape(-1)
        if bool((lam <= 0).any()):
            raise ValueError(f"eigenvalues must be > 0, got {lam.tolist()}")
        dim = lam.numel()
        Q = torch.eye(dim, dtype=torch.float64) if rotation is None else rotation.to(torch.float64)
        self.eigenvalues = torch.sort(lam).values
        self.rotation = Q
        self.A = Q @ torch.diag(lam) @ Q.T
        if start is None:
            base = torch.full((dim,), 0.5, dtype=torch.float64)
            base[int(torch.argmin(lam))] = -1.0
            start = Q @ base
        start = torch.as_tensor(start, dtype=torch.float64)
        reach = 1.25 * float(start.abs().max())
        A = self.A

        def fn(x: Tensor) -> Tensor:
            a = A.to(x.dtype)
            return 0.5 * ((x @ a) * x).sum(-1)

        def grad(x: Tensor) -> Tensor:
            return x @ A.to(x.dtype)

        super().__init__(fn, dim, start, [(-reach, reach)] * dim, minima=[[0.0] * dim], name=name,
                         description=description, grad=grad, params=params)

    @property
    def is_quadratic(self) -> bool:
        return True

    @property
    def condition(self) -> float:
        return float(self.eigenvalues[-1] / self.eigenvalues[0])

    def optimal(self, method: str = "momentum") -> tuple[float, float]:
        """Best ``(lr, momentum)``: ``"gd"`` -> (2/(λ₁+λₙ), 0); ``"momentum"`` -> (γ*, μ*)."""
        l1, ln = float(self.eigenvalues[0]), float(self.eigenvalues[-1])
        if method in ("gd", "sgd"):
            return 2.0 / (l1 + ln), 0.0
        if method in ("momentum", "heavy_ball", "heavy-ball"):
            kappa = ln / l1
            return (2.0 / (math.sqrt(l1) + math.sqrt(ln))) ** 2, ((math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1)) ** 2
        raise ValueError(f"optimal(method) takes 'gd' or 'momentum', got {method!r}")

    def rate(self, lr: float, momentum: float = 0.0, nesterov: bool = False) -> float:
        """Predicted linear rate (spectral radius of the iteration) for this (lr, momentum).

        Per eigenvalue λ the distance to the minimum is multiplied asymptotically by the
        largest |z| with z² − (1 + μ − γλ) z + μ = 0 (heavy ball) or
        z² − (1 + μ)(1 − γλ) z + μ(1 − γλ) = 0 (Nesterov); the rate is the max over λ.
        ≥ 1 means no convergence. The loss decays at rate² per step.
        """
        worst = 0.0
        for lam in self.eigenvalues.tolist():
            if nesterov:
                b, c = (1 + momentum) * (1 - lr * lam), momentum * (1 - lr * lam)
            else:
                b, c = 1 + momentum - lr * lam, momentum
            disc = complex(b * b - 4 * c)
            root = disc ** 0.5
            worst = max(worst, abs((b + root) / 2), abs((b - root) / 2))
        return worst

    def stable(self, lr: float, momentum: float = 0.0) -> bool:
        """Heavy ball converges iff 0 < γλᵢ < 2 + 2μ for every eigenvalue (and 0 ≤ μ < 1).

        (For Nesterov the edge is γλ < (2 + 2μ)/(1 + 2μ); use ``rate(lr, momentum, nesterov=True) < 1``.)
        """
        top, low = float(self.eigenvalues[-1]), float(self.eigenvalues[0])
        return 0 <= momentum < 1 and lr * low > 0 and lr * top < 2 + 2 * momentum


def _rotation(dim: int, rotate: Any, seed: int) -> Tensor | None:
    if rotate is False or rotate is None or (not isinstance(rotate, bool) and rotate == 0):
        return None
    if isinstance(rotate, bool):  # True: a random orthogonal matrix (fixed by seed)
        gen = torch.Generator().manual_seed(seed)
        q, r = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
        return q * torch.sign(torch.diagonal(r))
    angle = float(rotate)  # an angle in radians, rotating the first two coordinates
    if dim < 2:
        raise ValueError("rotate=ANGLE needs dim >= 2")
    q = torch.eye(dim, dtype=torch.float64)
    c, s = math.cos(angle), math.sin(angle)
    q[0, 0], q[0, 1], q[1, 0], q[1, 1] = c, -s, s, c
    return q


def quadratic(condition: float = 100.0, dim: int = 2, rotate: Any = False, seed: int = 0,
              eigenvalues: Sequence[float] | None = None, start: Sequence[float] | None = None) -> Quadratic:
    """A quadratic bowl ½ wᵀAw with eigenvalues from 1 to ``condition`` (geometrically spaced).

    ``rotate``: False (axis-aligned), an angle in radians (rotates the first two
    coordinates), or True (a random rotation drawn with ``seed``). ``eigenvalues``
    overrides ``condition``. The default start is −1 along the flattest direction
    and 0.5 along the others, so the race shows both the slow valley and the zig-zag.
    """
    condition = float(condition)
    dim = int(dim)
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    if eigenvalues is None:
        if not condition >= 1:
            raise ValueError(f"condition must be >= 1, got {condition}")
        if dim == 1:
            eigenvalues = [condition]
        else:
            eigenvalues = torch.logspace(0, math.log10(condition), dim, dtype=torch.float64).tolist()
    lam = list(map(float, eigenvalues))
    kappa = max(lam) / min(lam)
    return Quadratic(lam, _rotation(len(lam), rotate, seed), start, name="quadratic",
                     description=f"quadratic bowl, condition number {kappa:g}, the theory's test case",
                     params=dict(condition=kappa, dim=len(lam), rotate=rotate))


# ====================================================================== classics

def rosenbrock(a: float = 1.0, b: float = 100.0) -> Surface:
    """(a − x)² + b (y − x²)²: a curved, flat-bottomed valley; minimum (a, a²)."""
    def fn(p: Tensor) -> Tensor:
        x, y = p[:, 0], p[:, 1]
        return (a - x) ** 2 + b * (y - x * x) ** 2

    return Surface(fn, 2, (-1.5, 2.0), ((-2.0, 2.0), (-1.0, 3.0)), minima=[(a, a * a)], name="rosenbrock",
                   description="Rosenbrock's banana: a narrow curved valley, slow along its floor",
                   params=dict(a=a, b=b))


def rastrigin(dim: int = 2, A: float = 10.0) -> Surface:
    """A·n + Σ(xᵢ² − A cos 2πxᵢ): a bowl covered in regularly spaced local minima; minimum 0 at 0."""
    def fn(p: Tensor) -> Tensor:
        return A * p.shape[-1] + (p * p - A * torch.cos(2 * math.pi * p)).sum(-1)

    start = [3.2, -2.7] + [2.2] * (dim - 2)
    return Surface(fn, dim, start[:dim], [(-5.12, 5.12)] * dim, minima=[[0.0] * dim], name="rastrigin",
                   description="Rastrigin: an egg-crate of local minima on a bowl", params=dict(dim=dim, A=A))


HIMMELBLAU_MINIMA = [(3.0, 2.0), (-2.805118, 3.131312), (-3.779310, -3.283186), (3.584428, -1.848126)]


def himmelblau() -> Surface:
    """(x² + y − 11)² + (x + y² − 7)²: four equal minima (value 0)."""
    def fn(p: Tensor) -> Tensor:
        x, y = p[:, 0], p[:, 1]
        return (x * x + y - 11) ** 2 + (x + y * y - 7) ** 2

    return Surface(fn, 2, (-0.5, -0.5), ((-5.0, 5.0), (-5.0, 5.0)), minima=_polish(fn, HIMMELBLAU_MINIMA),
                   name="himmelblau",
                   description="Himmelblau: four equally deep minima; where you land depends on the path")


def beale() -> Surface:
    """(1.5 − x + xy)² + (2.25 − x + xy²)² + (2.625 − x + xy³)²: minimum 0 at (3, 0.5)."""
    def fn(p: Tensor) -> Tensor:
        x, y = p[:, 0], p[:, 1]
        return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y * y) ** 2 + (2.625 - x + x * y ** 3) ** 2

    return Surface(fn, 2, (1.0, 1.4), ((-4.5, 4.5), (-4.5, 4.5)), minima=[(3.0, 0.5)], name="beale",
                   description="Beale: flat plateaus and steep walls meeting at sharp corners")


def ackley(dim: int = 2) -> Surface:
    """−20 exp(−0.2 √(mean xᵢ²)) − exp(mean cos 2πxᵢ) + 20 + e: many small dimples around one deep hole at 0."""
    def fn(p: Tensor) -> Tensor:
        r = torch.sqrt((p * p).mean(-1) + 1e-30)
        return -20 * torch.exp(-0.2 * r) - torch.exp(torch.cos(2 * math.pi * p).mean(-1)) + 20 + math.e

    start = [-3.3, 2.6] + [1.7] * (dim - 2)
    return Surface(fn, dim, start[:dim], [(-4.0, 4.0)] * dim, minima=[[0.0] * dim], name="ackley",
                   description="Ackley: a nearly flat field of small dimples around one deep central hole",
                   params=dict(dim=dim))


# ====================================================================== marble

# The marble surface: a gentle bowl with two Gaussian wells. From the start (upper
# left) the path first meets a shallow well; beyond a low ridge lies a much deeper one.
# Tuned with races over lr and momentum from MARBLE_START: GD at lr 0.01-0.03 and momentum <= 0.8 (lr 0.02)
# end in the shallow well; momentum 0.85-0.95 and Nesterov 0.9 (lr 0.02) end in the deep one.
MARBLE = dict(
    bowl=0.3,                          # the bowl: bowl * (x² + y²)
    shallow=((-1.5, 0.8), 1.0, 0.55),  # (centre, depth, width) of a Gaussian well
    deep=((1.8, -1.3), 5.0, 1.1),
)


def marble() -> Surface:
    """A rolling-marble surface: a shallow local minimum on the way to a deeper global one.

    f(x, y) = b (x² + y²) − Σ dₖ exp(−|p − cₖ|² / (2 sₖ²)) with two wells. From the
    default start, plain gradient descent at lr = 0.02 settles in the shallow well,
    while heavy-ball momentum 0.9 at the same lr carries enough speed over the ridge
    into the deep (global) well. Minima are located numerically.
    """
    b = MARBLE["bowl"]
    wells = [MARBLE["shallow"], MARBLE["deep"]]

    def fn(p: Tensor) -> Tensor:
        out = b * (p * p).sum(-1)
        for (cx, cy), depth, width in wells:
            d2 = (p[:, 0] - cx) ** 2 + (p[:, 1] - cy) ** 2
            out = out - depth * torch.exp(-d2 / (2 * width * width))
        return out

    minima = _polish(fn, [c for c, _, _ in wells])
    surface = Surface(fn, 2, MARBLE_START, ((-4.5, 4.5), (-4.0, 4.0)), minima=minima, name="marble",
                      description="a shallow local minimum beside a deep global one: momentum rolls through, GD gets stuck")
    surface.local_minimum = surface.minima[1]
    return surface


MARBLE_START = (-3.8, -0.5)


def _polish(fn: Callable[[Tensor], Tensor], guesses: Sequence[Sequence[float]], steps: int = 200) -> list[list[float]]:
    """Refine guessed minima with Newton steps (float64, autograd Hessian)."""
    out = []
    for guess in guesses:
        p = torch.tensor(guess, dtype=torch.float64)
        for _ in range(steps):
            f = lambda q: fn(q.unsqueeze(0))[0]  # noqa: E731
            g = torch.autograd.functional.jacobian(f, p)
            H = torch.autograd.functional.hessian(f, p)
            step = torch.linalg.solve(H, g)
            p = p - step
            if float(step.norm()) < 1e-13:
                break
        out.append(p.tolist())
    return out


# ====================================================================== user functions

def from_function(fn: Callable[[Tensor], Tensor], start: Sequence[float], bounds: Sequence[Sequence[float]] | None = None,
                  minima: Sequence[Sequence[float]] = (), name: str = "custom", description: str = "",
                  batched: bool | None = None) -> Surface:
    """A surface from your own function (gradient by autograd).

    ``fn`` takes ``[N, dim]`` and returns ``[N]`` (``batched=True``), or takes one point
    ``[dim]`` and returns a scalar (``batched=False``; it is then vectorized with
    :func:`torch.func.vmap`, so write it with torch operations). ``batched=None`` tells
    the two apart by calling ``fn`` on a batch holding the start.
    """
    start_t = torch.as_tensor(start, dtype=torch.float64).reshape(-1)
    dim = start_t.numel()
    if batched is None:
        try:
            probe = torch.as_tensor(fn(start_t.unsqueeze(0)))
            batched = tuple(probe.shape) == (1,)
        except Exception:  # noqa: BLE001 - a per-point function may fail on a batch
            batched = False
    if bounds is None:
        reach = 2.0 * max(1.0, float(start_t.abs().max()))
        bounds = [(-reach, reach)] * dim
    func = fn if batched else torch.func.vmap(fn)
    return Surface(func, dim, start_t, bounds, minima=minima, name=name,
                   description=description or "a user-supplied function")


def as_surface(obj: Any, **kwargs: Any) -> Surface:
    """A :class:`Surface` from a surface, a registered name or a callable (see :func:`from_function`)."""
    if isinstance(obj, Surface):
        return obj
    if isinstance(obj, str):
        return get(obj, **kwargs)
    if callable(obj):
        if "start" not in kwargs:
            raise ValueError("a function surface needs start=(x, y, ...)")
        return from_function(obj, **kwargs)
    raise TypeError(f"expected a Surface, a surface name or a function, got {type(obj).__name__}")


SURFACES: dict[str, Callable[..., Surface]] = {
    "quadratic": quadratic,
    "marble": marble,
    "rosenbrock": rosenbrock,
    "rastrigin": rastrigin,
    "himmelblau": himmelblau,
    "beale": beale,
    "ackley": ackley,
}

DESCRIPTIONS = {
    "quadratic": "quadratic bowl ½wᵀAw with a chosen condition number (default 100); knows its optimal lr/momentum and rate",
    "marble": "a shallow local minimum beside a deep global one: momentum 0.9 rolls through, GD at lr=0.02 gets stuck",
    "rosenbrock": "Rosenbrock's banana: a narrow curved valley, slow along its floor; minimum (1, 1)",
    "rastrigin": "Rastrigin: an egg-crate of local minima on a bowl; global minimum 0 at the origin",
    "himmelblau": "Himmelblau: four equally deep minima; which one you reach depends on the path",
    "beale": "Beale: flat plateaus and steep walls meeting at sharp corners; minimum (3, 0.5)",
    "ackley": "Ackley: a nearly flat field of small dimples around one deep central hole",
}


def get(name: str, **kwargs: Any) -> Surface:
    """Build a registered surface by name; the error lists the known names."""
    key = name.lower().replace("-", "_")
    if key not in SURFACES:
        raise ValueError(f"unknown surface {name!r}; known: {', '.join(SURFACES)}")
    try:
        return SURFACES[key](**kwargs)
    except TypeError as error:
        raise ValueError(f"surface {key!r}: {error}") from None


def parse(spec: str) -> Surface:
    """``"quadratic:condition=50,rotate=0.5"`` -> a surface (values parsed as Python literals)."""
    name, _, rest = spec.partition(":")
    kwargs: dict[str, Any] = {}
    if rest.strip():
        for item in rest.split(","):
            key, eq, raw = item.partition("=")
            if not eq or not key.strip():
                raise ValueError(f"malformed surface option {item!r} in {spec!r}; expected NAME:key=value,...")
            kwargs[key.strip()] = parse_literal(raw)
    return get(name.strip(), **kwargs)



__all__ = ["Surface", "Quadratic", "quadratic", "rosenbrock", "rastrigin", "himmelblau", "beale", "ackley",
           "marble", "from_function", "as_surface", "SURFACES", "DESCRIPTIONS", "get", "parse"]
