"""Heavy ball's stability edge measured on a sweep's own job: the loss's sharpness λ_max (the top Hessian
eigenvalue, :func:`inertia.sharpness.sharpness`) of its models, and what :func:`inertia.sharpness.stable_lr`
needs of its rule. The sweep (``edge=True``) and the range test (:mod:`inertia.finder`) both measure here;
a sweep keeps what it measured with its study (:func:`study_edge`).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
from torch import Tensor

SHARPNESS_EXAMPLES = 512
"""Training examples the Hessian is measured on (each seed's first fold)."""

EDGE_ATTR = "stability_edge"
"""The study's user attribute that keeps the edge measured for it (:func:`stability_edge`'s dict)."""


def heavy_ball_edge(job: Any) -> dict[str, Any] | None:
    """The convention, nesterov and dampening of heavy ball's stability edge, or None for another rule."""
    if job.preset.rule.name != "sgd":
        return None
    hyper = job.preset.hyper(**job.fixed)
    return {"convention": hyper["convention"], "nesterov": bool(hyper["nesterov"]), "dampening": float(hyper["dampening"])}


def edge_rule(job: Any) -> dict[str, Any]:
    """:func:`heavy_ball_edge` of ``job``'s rule; a rule without that edge is a ValueError naming ``edge``."""
    rule = heavy_ball_edge(job)
    if rule is None:
        raise ValueError(f"edge: the stability edge lr·λ_max < 2 + 2μ is heavy ball's; optimizer "
                         f"{job.preset.name} has none (use momentum, nesterov or sgd)")
    return rule


def stability_edge(job: Any) -> dict[str, Any]:
    """What heavy ball's stability edge needs, measured on ``job``'s own models and data: λ_max of each
    seed's initial model (``sharpness_per_seed``; :class:`SharpnessProbe`), their median (``sharpness``),
    and the rule's convention, nesterov and dampening (:func:`inertia.sharpness.stable_lr`). A rule
    without that edge is a ValueError naming ``edge``."""
    rule = edge_rule(job)
    per_seed = SharpnessProbe(job).init()
    return {"sharpness": float(np.median(per_seed)), "sharpness_per_seed": per_seed, **rule}


def study_edge(study: Any, job: Any, measure: bool, log: Callable[[str], None]) -> dict[str, Any] | None:
    """The stability edge of the sweep in ``study`` (:class:`inertia.sweeps.study.Study`): the one kept
    with the study (its user attribute :data:`EDGE_ATTR`), measured by an earlier run of it; else, with
    ``measure``, measured now (:func:`stability_edge`) and kept with it; else None. A study's signature
    fixes its models, data, seeds and rule, so what was measured for it holds for every run of it: with
    ``measure`` it is not measured again (``log`` says so in one line)."""
    kept = study.user_attr(EDGE_ATTR)
    if kept is not None:
        if measure:
            log(f"edge: λ_max = {kept['sharpness']:.4g} at initialization, measured for this study before "
                "and kept with it: not measured again")
        return kept
    if not measure:
        return None
    edge = stability_edge(job)
    study.set_user_attr(EDGE_ATTR, edge)
    return edge


class SharpnessProbe:
    """λ_max of the seeds' initial models, or of one live member of a stack, on the first
    :data:`SHARPNESS_EXAMPLES` training examples of its seed's first fold."""

    def __init__(self, job: Any):
        self.job = job
        objective = job.objective
        self.loss = lambda out, y: objective.loss(objective.fit(out, y), y)

    def _batches(self, split: Any) -> list[tuple[Tensor, Tensor]]:
        idx = split.train[:SHARPNESS_EXAMPLES]
        return [(split.x.index_select(0, idx), self.job.y.index_select(0, idx))]

    def init(self) -> list[float]:
        from ..sharpness import sharpness

        job = self.job
        return [sharpness(job.templates[split.seed - job.seed], self.loss, self._batches(split), iters=30, tol=1e-3)
                for split in job.splits if split.fold == 0]

    def rows(self, members: Any, rows: list[int]) -> list[float]:
        """λ_max of live stack rows ``rows`` of ``members`` (members of the first seed), at their current weights."""
        from ..sharpness import sharpness

        job = self.job
        params = members.stack.eval_params()
        found = []
        for row in rows:
            state = {**dict(zip(job.names, (p[row] for p in params))),
                     **dict(zip(job.buffer_names, (b[row] for b in members.buffers)))}
            found.append(sharpness(job.templates[0], self.loss, self._batches(job.splits[0]), params=state,
                                   iters=30, tol=1e-3))
        return found
