"""Relevance-optimal routing: the instance serving the best answers.

The reference router's relevance (quality) objective: each model's answers were
judged offline by an LLM judge, giving a quality score per model; here that score
is ``InstanceView.quality`` (see :func:`sincere.predict.quality.model_quality` to
derive it from relative accuracy per precision). The router picks the highest
quality; instances within ``tolerance`` of the best count as tied, and ties go to
the least loaded by ``metric`` (``outstanding`` by default, or ``requests`` /
``tokens`` as in join-shortest-queue), then to the earlier instance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import Field

from sincere.core.params import Params, params_from
from sincere.core.request import Request
from sincere.core.types import Seconds
from sincere.policy.router_base import ROUTERS, InstanceView, RouteDecision
from sincere.policy.routers._common import LoadMetric, LoadMetricRouter


class RelevanceOptimalParams(Params):
    """Parameters of ``relevance-optimal``."""

    tolerance: float = Field(
        0.0, ge=0, description="quality within this much of the best counts as tied"
    )
    metric: LoadMetric = Field("outstanding", description="load measure that breaks ties")


@ROUTERS.register("relevance-optimal", params=RelevanceOptimalParams)
class RelevanceOptimalRouter(LoadMetricRouter):
    """Highest quality; the least loaded among equals."""

    def __init__(
        self,
        rng: np.random.Generator,
        params: RelevanceOptimalParams | None = None,
        **values: Any,
    ) -> None:
        p = params_from(RelevanceOptimalParams, params, values, "router 'relevance-optimal'")
        super().__init__(rng, p.metric)
        self.tolerance = p.tolerance

    def choose(
        self, request: Request, candidates: Sequence[InstanceView], now: Seconds
    ) -> RouteDecision:
        """The least loaded of the healthy instances with (near-)best quality."""
        top = max(v.quality for v in candidates) - self.tolerance
        equals = [v for v in candidates if v.quality >= top]
        _, load, note = self.load_measure(equals)
        best = min(equals, key=load)
        return RouteDecision(best.id, reason=f"quality={best.quality:g}{note}")
