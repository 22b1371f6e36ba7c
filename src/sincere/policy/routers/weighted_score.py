"""Weighted scorers: llm-d's endpoint-picker model of routing, on sincere's views.

llm-d's inference scheduler filters the endpoints, runs a set of *scorers*, each rating
every candidate in ``[0, 1]`` (higher is better), and picks the candidate with the
largest weighted sum. This router composes four such scorers with configurable
weights (``w_*``; a zero weight turns a scorer off, and at least one must be positive):

* ``prefix`` -- the share of the request's keyed prompt tokens (full blocks) that the
  candidate's approximate prefix index matches (as the ``prefix-aware`` router keeps it:
  :class:`~sincere.policy.routers._prefix_index.PrefixIndex`; blocks in its lower-tier
  window count ``tier_hit_weight``); 0 without block ids;
* ``queue`` -- requests queued at the engine (``num_waiting``), min-max normalised over
  the candidates: ``(max - q) / (max - min)``, 1 for all when they are equal (llm-d's
  queue scorer);
* ``kv`` -- ``1 - kv_usage`` (llm-d's KV-cache-utilisation scorer);
* ``running`` -- running sequences (``num_running``), min-max normalised like ``queue``.

Where a backend does not report a field on some candidate, every candidate is scored by
the fallback (``queue`` and ``running`` by ``num_outstanding``; ``kv`` by the batch-slot
occupancy ``num_outstanding / max_num_seqs``) and the reason says so. The best total
wins; on ties the fewest outstanding requests, then the earlier candidate. The reason
lists every candidate's scorer values and total, and ``estimates`` the totals, so a
decision log shows why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from sincere.core.params import params_from
from sincere.core.request import Request
from sincere.core.types import Seconds
from sincere.policy.router_base import ROUTERS, InstanceView, RouteDecision, Router
from sincere.policy.routers._prefix_index import PrefixIndexParams, prompt_keys

SCORERS = ("prefix", "queue", "kv", "running")
"""The scorers, in the order the reason lists them."""


class WeightedScoreParams(PrefixIndexParams):
    """Parameters of ``weighted-score``."""

    w_prefix: float = Field(2.0, ge=0.0, description="weight of the prefix-match scorer")
    w_queue: float = Field(1.0, ge=0.0, description="weight of the queue-depth scorer")
    w_kv: float = Field(1.0, ge=0.0, description="weight of the KV-utilisation scorer")
    w_running: float = Field(0.0, ge=0.0, description="weight of the running-requests scorer")

    @model_validator(mode="after")
    def _some_weight(self) -> WeightedScoreParams:
        if not any(getattr(self, f"w_{name}") > 0 for name in SCORERS):
            raise ValueError(
                "every weight is zero; allowed: at least one of w_prefix, w_queue, w_kv, "
                "w_running > 0"
            )
        return self


def min_max(values: Sequence[float]) -> list[float]:
    """``(max - v) / (max - min)`` per value (smaller is better); all 1 when they are equal."""
    hi, lo = max(values), min(values)
    if hi == lo:
        return [1.0] * len(values)
    return [(hi - v) / (hi - lo) for v in values]


def _counts(
    candidates: Sequence[InstanceView], field: Callable[[InstanceView], int | None], name: str
) -> tuple[list[float], str]:
    """A count per candidate, or ``num_outstanding`` for all where one does not report it."""
    values = [field(v) for v in candidates]
    if all(x is not None for x in values):
        return [float(x) for x in values if x is not None], ""
    missing = ", ".join(v.id for v, x in zip(candidates, values, strict=True) if x is None)
    return [float(v.num_outstanding) for v in candidates], f"; {name} unknown on {missing}"


def kv_scores(candidates: Sequence[InstanceView]) -> tuple[list[float], str]:
    """``1 - kv_usage`` per candidate; slot occupancy for all where KV usage is unknown."""
    usage = [v.kv_usage for v in candidates]
    if all(u is not None for u in usage):
        return [1.0 - min(1.0, float(u)) for u in usage if u is not None], ""
    missing = ", ".join(v.id for v, u in zip(candidates, usage, strict=True) if u is None)
    slots = [min(1.0, v.num_outstanding / max(v.max_num_seqs, 1)) for v in candidates]
    return [1.0 - s for s in slots], f"; kv_usage unknown on {missing}"


@ROUTERS.register("weighted-score", params=WeightedScoreParams)
class WeightedScoreRouter(Router):
    """Largest weighted sum of prefix, queue, KV and running scorers; see the module."""

    reads_exact_tokens = False  # engine load as reported; no exact token counts

    def __init__(
        self, rng: np.random.Generator, params: WeightedScoreParams | None = None, **values: Any
    ) -> None:
        super().__init__(rng)
        p = params_from(WeightedScoreParams, params, values, "router 'weighted-score'")
        self.weights = {name: float(getattr(p, f"w_{name}")) for name in SCORERS}
        self.index = p.index("weighted-score")
        self.max_prefix_blocks = p.max_prefix_blocks

    def scores(
        self, request: Request, candidates: Sequence[InstanceView], keys: tuple[int, ...]
    ) -> tuple[dict[str, list[float]], str]:
        """Every scorer's value per candidate, and the fallback notes."""
        prefix = [
            self.index.score_blocks(v.id, keys) / len(keys) if keys else 0.0 for v in candidates
        ]
        queue, q_note = _counts(candidates, lambda v: v.num_waiting, "num_waiting")
        running, r_note = _counts(candidates, lambda v: v.num_running, "num_running")
        kv, kv_note = kv_scores(candidates)
        out = {"prefix": prefix, "queue": min_max(queue), "kv": kv, "running": min_max(running)}
        notes = [n for name, n in (("queue", q_note), ("running", r_note), ("kv", kv_note))
                 if n and self.weights[name] > 0]  # fmt: skip
        return out, "".join(notes)

    def choose(
        self, request: Request, candidates: Sequence[InstanceView], now: Seconds
    ) -> RouteDecision:
        """The candidate with the largest weighted score (the earlier one on ties)."""
        keys = prompt_keys(request, self.max_prefix_blocks)
        values, note = self.scores(request, candidates, keys)
        totals = [
            sum(self.weights[name] * values[name][k] for name in SCORERS)
            for k in range(len(candidates))
        ]
        best = max(
            range(len(candidates)), key=lambda k: (totals[k], -candidates[k].num_outstanding, -k)
        )
        choice = candidates[best]
        self.index.add(choice.id, keys, request.block_tokens)
        parts = []
        for k, v in enumerate(candidates):
            shown = " ".join(f"{name}={values[name][k]:.3g}" for name in SCORERS)
            parts.append(f"{v.id}[{shown} score={totals[k]:.4g}]")
        estimates = tuple((v.id, totals[k]) for k, v in enumerate(candidates))
        return RouteDecision(choice.id, reason="; ".join(parts) + note, estimates=estimates)
