"""Cost-optimal routing: a weighted balance of quality, price, latency and load, under an SLO.

From the published successor of the reference router. Each healthy instance the
request's budget can pay for gets

    score = w_q * quality + w_c * (1 - cost / max_cost)
          + w_l * (1 - latency / max_latency) + w_b * (1 - util / max_util)

where ``quality`` is ``InstanceView.quality``, ``cost`` the request's expected price
there (as in price-optimal), ``latency`` its predicted E2E (or TTFT with
``latency_metric="ttft"``, as in latency-optimal), ``util`` the instance's busy share
(the larger of KV usage and ``num_outstanding / max_num_seqs``; the latter alone where
KV usage is unknown), and each ``max_*`` is
taken over the candidates (a zero maximum makes that term 1 for all). The highest
score wins; ties go to the earlier instance.

Before scoring, instances whose probability of meeting the request's tier is below
``min_slo_prob`` (0.7) are dropped. That probability comes from the predicted
distribution where the latency predictor gives one (the trained LSTM:
:func:`~sincere.predict.slo.distribution_slo_probability`), else it puts a lognormal
error around the point prediction (:mod:`sincere.predict.slo`; relative spread
``rel_std``, then learned from outcomes); latencies are predicted as latency-optimal
predicts them (step model and engine load, else learned, named in the reason), the
learned predictor by default ``linear`` (ridge: the best routing outcomes among the
online predictors in ``benchmarks/predictors.py``). An instance without a prediction yet
counts as latency 0 and probability 1 (explored). If every instance is dropped, the one
most likely to meet the SLO is chosen. In the train phase (``explore``) a share of requests goes to
a random affordable instance instead.

Presets set the weights ``(w_q, w_c, w_l, w_b)``: ``balance`` (0.3, 0.2, 0.3, 0.2,
the published default), ``quality`` (0.6, 0.1, 0.2, 0.1), ``latency`` (0.1, 0.1, 0.7,
0.1) and ``cost`` (0.1, 0.6, 0.2, 0.1) -- ours, each giving its objective a clear
majority; ``w_quality`` / ``w_cost`` / ``w_latency`` / ``w_util`` override one weight.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NamedTuple

import numpy as np
from pydantic import Field, model_validator

from sincere.core.params import Spec, Uses, params_from
from sincere.core.registry import Needs
from sincere.core.request import Request
from sincere.core.types import Seconds
from sincere.policy.router_base import ROUTERS, InstanceView, RouteDecision, utilisation
from sincere.policy.routers._common import capped_tokens
from sincere.policy.routers._estimates import (
    LATENCY,
    LENGTH,
    PredictiveRouter,
    PredictorParams,
    context_of,
)
from sincere.policy.routers.price_optimal import affordable, over_budget
from sincere.predict.latency import (
    LATENCY_PREDICTORS,
    LatencyEstimate,
    LatencyPredictor,
    RouteContext,
)
from sincere.predict.length import OutputLengthPredictor
from sincere.predict.slo import (
    LatencyDistribution,
    LognormalError,
    LognormalErrorParams,
    distribution_slo_probability,
    slo_probability,
)


@dataclass(frozen=True, slots=True)
class Weights:
    """Weights of the cost-optimal score's four terms."""

    quality: float
    cost: float
    latency: float
    util: float


PRESETS: dict[str, Weights] = {
    "balance": Weights(0.3, 0.2, 0.3, 0.2),
    "quality": Weights(0.6, 0.1, 0.2, 0.1),
    "latency": Weights(0.1, 0.1, 0.7, 0.1),
    "cost": Weights(0.1, 0.6, 0.2, 0.1),
}
"""Named weight sets (the ``preset`` parameter); ``balance`` is the published default."""


def _headroom(values: Sequence[float]) -> list[float]:
    """``1 - value / max(values)``; all ones when the maximum is not positive."""
    top = max(values)
    if top <= 0.0:
        return [1.0] * len(values)
    return [1.0 - v / top for v in values]


def weighted_scores(
    weights: Weights,
    quality: Sequence[float],
    cost: Sequence[float],
    latency: Sequence[float],
    util: Sequence[float],
) -> list[float]:
    """The published score of each candidate (see the module docstring).

    Plain floats: for a few candidates they are several times cheaper than arrays.
    """
    terms = zip(quality, _headroom(cost), _headroom(latency), _headroom(util), strict=True)
    w = weights
    return [w.quality * q + w.cost * c + w.latency * lat + w.util * u for q, c, lat, u in terms]


def resolve_weights(preset: str, overrides: dict[str, float | None]) -> Weights:
    """The preset's weights with any non-None override applied."""
    base = PRESETS[preset]
    values = {
        "quality": base.quality,
        "cost": base.cost,
        "latency": base.latency,
        "util": base.util,
    }
    values.update({key: value for key, value in overrides.items() if value is not None})
    return Weights(**values)


_WEIGHT = "weight of the {} term; null: the preset's"


class CostOptimalParams(PredictorParams):
    """Parameters of ``cost-optimal``."""

    latency_predictor: Annotated[Spec, Uses(LATENCY_PREDICTORS)] = Field(
        Spec(name="linear"),
        description="the latency predictor built when none is handed in (it serves "
        "instances without a step model); linear: best goodput and SLO attainment of the "
        "online ones in benchmarks/predictors.py",
    )

    preset: Literal["balance", "quality", "latency", "cost"] = Field(
        "balance", description="named weights (w_quality, w_cost, w_latency, w_util)"
    )
    w_quality: float | None = Field(None, ge=0, description=_WEIGHT.format("quality"))
    w_cost: float | None = Field(None, ge=0, description=_WEIGHT.format("price"))
    w_latency: float | None = Field(None, ge=0, description=_WEIGHT.format("latency"))
    w_util: float | None = Field(None, ge=0, description=_WEIGHT.format("load"))
    min_slo_prob: float = Field(
        0.7, ge=0, le=1, description="drop instances less likely than this to meet the SLO"
    )
    latency_metric: Literal["e2e", "ttft"] = Field(
        "e2e", description="latency term: predicted completion time or time to first token"
    )
    rel_std: float = Field(
        0.3, gt=0, description="prior relative spread of the SLO error model (when built)"
    )

    def weights(self) -> Weights:
        """The preset's weights with the overrides applied."""
        overrides = {
            "quality": self.w_quality,
            "cost": self.w_cost,
            "latency": self.w_latency,
            "util": self.w_util,
        }
        return resolve_weights(self.preset, overrides)

    @model_validator(mode="after")
    def _weights_not_all_zero(self) -> CostOptimalParams:
        if sum(dataclasses.astuple(self.weights())) <= 0.0:
            raise ValueError("the weights sum to zero; give at least one a value > 0")
        return self


ERROR_MODEL = Needs(
    "error_model",
    LognormalError,
    "an SLO error model (LognormalError)",
    default=lambda p: LognormalError(LognormalErrorParams(rel_std=p.rel_std)),
)
"""Collaborator: the error model around latency predictions (default: from ``rel_std``)."""


class _Option(NamedTuple):
    """One candidate instance with everything the score needs."""

    view: InstanceView
    price: float
    cap: int | None
    ctx: RouteContext
    estimate: LatencyEstimate | None
    latency: float
    prob: float


@ROUTERS.register("cost-optimal", params=CostOptimalParams, needs=(LENGTH, LATENCY, ERROR_MODEL))
class CostOptimalRouter(PredictiveRouter):
    """Weighted quality / price / latency / load score over instances likely to meet the SLO."""

    def __init__(
        self,
        rng: np.random.Generator,
        params: CostOptimalParams | None = None,
        *,
        length_predictor: OutputLengthPredictor,
        latency_predictor: LatencyPredictor,
        error_model: LognormalError,
        **values: Any,
    ) -> None:
        p = params_from(CostOptimalParams, params, values, "router 'cost-optimal'")
        super().__init__(rng, p, length_predictor, latency_predictor, error_model)
        self.weights = p.weights()
        self.min_slo_prob = p.min_slo_prob
        self.latency_metric = p.latency_metric

    def choose(
        self, request: Request, candidates: Sequence[InstanceView], now: Seconds
    ) -> RouteDecision:
        """The best-scoring instance among those likely to meet the SLO."""
        options = self._options(request, candidates, now)
        if not options:
            return over_budget(request, len(candidates))
        k = self.explorer.pick(options, now)
        if k is not None:
            o = options[k]
            self.estimator.remember(request, o.view, o.ctx, o.estimate)
            return RouteDecision(
                o.view.id,
                max_tokens=capped_tokens(request, o.cap),
                reason="explore phase: random affordable instance",
            )
        likely = [o for o in options if o.prob >= self.min_slo_prob]
        if likely:
            scores = self._scores(likely)
            top = max(range(len(scores)), key=scores.__getitem__)  # the first best
            best = likely[top]
            reason = f"score={scores[top]:.4g} p_slo={best.prob:.3g}"
            estimates = tuple((o.view.id, float(s)) for o, s in zip(likely, scores, strict=True))
        else:
            best = max(options, key=lambda o: o.prob)
            reason = f"no instance with p_slo>={self.min_slo_prob:g}; best p_slo={best.prob:.3g}"
            estimates = tuple((o.view.id, o.prob) for o in options)
        self.estimator.remember(request, best.view, best.ctx, best.estimate)
        return RouteDecision(
            best.view.id,
            max_tokens=capped_tokens(request, best.cap),
            reason=reason + self.estimator.unused_step_models(candidates),
            estimates=estimates,
        )

    def _options(
        self, request: Request, views: Sequence[InstanceView], now: Seconds
    ) -> list[_Option]:
        """Affordable instances with their price, latency prediction and SLO probability."""
        expected = self.estimator.length.predict(request)
        elapsed = max(0.0, now - request.arrival_at)
        found = affordable(request, views, expected)
        ctxs = [
            context_of(request, view, expected if cap is None else min(expected, float(cap)), now)
            for view, _, cap in found
        ]
        preds = self.estimator.estimates([f[0] for f in found], ctxs)
        out = []
        for (view, price, cap), ctx, (est, dist) in zip(found, ctxs, preds, strict=True):
            if est is None:
                latency, prob = 0.0, 1.0
            else:
                latency = est.e2e_s if self.latency_metric == "e2e" else est.ttft_s
                prob = self._slo_probability(request, est, dist, elapsed)
            out.append(_Option(view, price, cap, ctx, est, latency, prob))
        return out

    def _slo_probability(
        self,
        request: Request,
        est: LatencyEstimate,
        dist: LatencyDistribution | None,
        elapsed: Seconds,
    ) -> float:
        """From the predicted distribution when there is one, else the error model's."""
        if dist is None:
            return slo_probability(request.tier, est, self.estimator.error, elapsed)
        return distribution_slo_probability(request.tier, dist, est.output_tokens, elapsed)

    def _scores(self, options: Sequence[_Option]) -> list[float]:
        return weighted_scores(
            self.weights,
            [o.view.quality for o in options],
            [o.price for o in options],
            [o.latency for o in options],
            [utilisation(o.view) for o in options],
        )
