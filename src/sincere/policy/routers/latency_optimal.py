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
from sincere.predict.latency import LatencyEstimate, LatencyPredictor
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
        ctxs = [context_of(request, view, expected, now) for view in candidates]
        k = self.explorer.pick(candidates, now)
        if k is not None:
            picked = candidates[k]
            est = self.estimator.estimate(picked, ctxs[k])
            self.estimator.remember(request, picked, ctxs[k], est)
            return RouteDecision(picked.id, reason="explore phase: random instance")
        ests = self.estimator.point_estimates(candidates, ctxs)
        values = [self._value(est) for est in ests]
        unknown = [k for k, est in enumerate(ests) if est is None]
        if unknown:
            best = min(unknown, key=lambda k: candidates[k].num_outstanding)
            reason = "exploring: no latency data yet"
        else:  # (the first smallest key, as min over the candidates gives it)
            keys = [(x, v.num_outstanding) for x, v in zip(values, candidates, strict=True)]
            best = min(range(len(keys)), key=keys.__getitem__)
            reason = f"predicted {self.objective}={values[best]:.4g}s"
        view = candidates[best]
        self.estimator.remember(request, view, ctxs[best], ests[best])
        estimates = tuple(
            (v.id, x) for v, est, x in zip(candidates, ests, values, strict=True) if est is not None
        )
        note = self.estimator.unused_step_models(candidates)
        return RouteDecision(view.id, reason=reason + note, estimates=estimates)

    def _value(self, est: LatencyEstimate | None) -> float:
        """The objective of a prediction (infinite when there is none)."""
        if est is None:
            return math.inf
        return est.e2e_s if self.objective == "e2e" else est.ttft_s
