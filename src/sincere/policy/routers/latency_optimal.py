"""Latency-optimal routing: the instance with the smallest predicted latency.

The reference router's latency objective. For each healthy instance it predicts the
request's completion time (``objective="e2e"``, default) or its time to first token
(``objective="ttft"``):

* with the instance's step-time model (``InstanceView.step_model``) and its engine
  load (every load field known), analytically:
  the queued prompt tokens and ours prefilled beside the running decodes, then the
  expected output tokens decoded at the batch size the instance will run
  (:func:`sincere.predict.latency.step_model_latency`);
* otherwise (no step model, or a live backend that does not report its engine load),
  from a per-instance latency predictor learned from outcomes (``latency_predictor``,
  default a load-scaled EWMA of recent requests); the reason names the instances whose
  step model went unused.

Expected output tokens come from ``length_predictor`` (default: the model's history
mean, ``max_tokens`` until enough requests finished). Both predictors are handed to the
router; its parameters name the ones :data:`~sincere.policy.router_base.ROUTERS` builds
when none is passed. Instances without any
prediction yet are explored first, least outstanding first. The reference's train
phase proper is ``explore`` (:class:`~sincere.policy.routers._estimates.ExploreParams`):
a share of the first requests goes to random candidates. A trained model file serves
as either predictor (``latency_predictor: {name: lstm, params: {path: ...}}``,
``length_predictor: {name: quantile, params: {path: ...}}``); the LSTM predicts every
candidate in one batch. Ties go to the less loaded instance.

Every arrival predicts every candidate; for candidates on a dense single-stage roofline
that is one pass over the fleet (:meth:`~sincere.policy.routers._estimates.Estimator.fleet`,
:mod:`sincere.predict.fleet_latency`) from terms of each instance's load kept while its
view is unchanged, bit-identical to ``step_model_latency`` one candidate at a time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field

from sincere.core.params import params_from
from sincere.core.request import Request
from sincere.core.types import Seconds
from sincere.policy.router_base import ROUTERS, InstanceView, RouteDecision
from sincere.policy.routers._estimates import (
    LATENCY,
    LENGTH,
    PredictiveRouter,
    PredictorParams,
    context_of,
)
from sincere.predict.latency import LatencyPredictor
from sincere.predict.length import OutputLengthPredictor
from sincere.predict.slo import LognormalError


class LatencyOptimalParams(PredictorParams):
    """Parameters of ``latency-optimal``."""

    objective: Literal["e2e", "ttft"] = Field(
        "e2e", description="minimise predicted completion time (e2e) or time to first token"
    )


@ROUTERS.register("latency-optimal", params=LatencyOptimalParams, needs=(LENGTH, LATENCY))
class LatencyOptimalRouter(PredictiveRouter):
    """Smallest predicted E2E (or TTFT) over healthy instances."""

    def __init__(
        self,
        rng: np.random.Generator,
        params: LatencyOptimalParams | None = None,
        *,
        length_predictor: OutputLengthPredictor,
        latency_predictor: LatencyPredictor,
        **values: Any,
    ) -> None:
        p = params_from(LatencyOptimalParams, params, values, "router 'latency-optimal'")
        super().__init__(rng, p, length_predictor, latency_predictor, LognormalError())
        self.objective = p.objective

    def choose(
        self, request: Request, candidates: Sequence[InstanceView], now: Seconds
    ) -> RouteDecision:
        """The healthy instance predicted fastest; unexplored instances first.

        In the train phase a share of requests goes to a random candidate instead.
        """
        expected = self.estimator.length.predict(request)
        k = self.explorer.pick(candidates, now)
        if k is not None:
            picked = candidates[k]
            ctx = context_of(request, picked, expected, now)
            est = self.estimator.estimate(picked, ctx)
            self.estimator.remember(request, picked, ctx, est)
            return RouteDecision(picked.id, reason="explore phase: random instance")
        by_e2e = self.objective == "e2e"
        fleet = self.estimator.fleet(request, candidates, expected, now, e2e=by_e2e)
        values = fleet.e2e if by_e2e else fleet.ttft
        unknown = [k for k, est in fleet.others.items() if est is None]
        if unknown:
            best = min(unknown, key=lambda k: candidates[k].num_outstanding)
            reason = "exploring: no latency data yet"
            estimates = tuple(
                (v.id, values[k]) for k, v in enumerate(candidates) if k not in unknown
            )
        else:
            best = first_smallest(values, candidates)
            reason = f"predicted {self.objective}={values[best]:.4g}s"
            estimates = tuple(zip(fleet.ids, values, strict=True))
        view = candidates[best]
        ctx = context_of(request, view, expected, now)
        self.estimator.remember(request, view, ctx, fleet.estimate(best))
        return RouteDecision(view.id, reason=reason + fleet.note, estimates=estimates)


def first_smallest(values: list[float], views: Sequence[InstanceView]) -> int:
    """The position of the smallest ``(value, num_outstanding)``, the first of equals (as
    ``min`` over those pairs gives it), without building the pairs."""
    low = min(values)
    if math.isnan(sum(values)):  # pairs with NaN compare in their own way: as min does
        keys = [(x, v.num_outstanding) for x, v in zip(values, views, strict=True)]
        return min(range(len(keys)), key=keys.__getitem__)
    if values.count(low) == 1:
        return values.index(low)
    tied = [k for k, x in enumerate(values) if x == low]
    return min(tied, key=lambda k: views[k].num_outstanding)
