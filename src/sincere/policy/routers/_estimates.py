"""Per-instance latency estimates for the predictive routers, and learning from outcomes.

An :class:`Estimator` bundles the collaborators a predictive router needs: an
output-length predictor, a learned per-instance latency predictor and an SLO error
model. The router is handed the predictors (:data:`LENGTH`, :data:`LATENCY`); its
parameters may name the ones to build when none is passed (:class:`PredictorParams`).
For each instance it predicts from the instance's step-time model when the view
carries one and the instance's engine load is known
(:func:`~sincere.predict.latency.step_model_latency`), and from the learned predictor
otherwise (``None`` until that instance has outcomes). It keeps
the context and prediction of every routed request until its outcome arrives, so
``observe`` can train all three collaborators; the oldest pending entries are
dropped past ``max_pending`` (requests whose outcome never comes back).

Predictions for all candidates are made in one call (:meth:`Estimator.estimates`): a
predictor that gives distributions for a batch (:class:`DistributionPredictor`, the
trained LSTM) answers every instance in one matrix product, and its distribution then
gives the SLO probability in place of the lognormal error model. A router that predicts
every candidate at every arrival asks :meth:`Estimator.fleet`: the load terms of each view
are kept while the view object is unchanged, and the request's part is added for the whole
fleet in one pass (:mod:`sincere.predict.fleet_latency`, exact).

The train phase (:class:`ExploreParams`, :class:`Explorer`): the reference router first
routes at random to collect outcomes on every instance, then serves on predictions. A
router with ``explore: {fraction, until_requests, until_s}`` sends each request, with
probability ``fraction``, to a uniformly drawn candidate, until either bound is reached.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import compress
from operator import is_not
from typing import Annotated, NamedTuple, Protocol, cast, runtime_checkable

import numpy as np
from pydantic import Field

from sincere.core.params import Params, Spec, Uses
from sincere.core.registry import Needs, build_spec
from sincere.core.request import Request
from sincere.core.types import InstanceId, RequestId, Seconds
from sincere.policy.router_base import InstanceView, Outcome, Router
from sincere.predict.fleet_latency import FleetLatency, LoadTerms, fleet_latencies
from sincere.predict.latency import (
    LATENCY_PREDICTORS,
    LatencyEstimate,
    LatencyPredictor,
    RouteContext,
    step_model_latency,
)
from sincere.predict.length import LENGTH_PREDICTORS, OutputLengthPredictor
from sincere.predict.slo import LatencyDistribution, LognormalError


class LengthPredictorParams(Params):
    """The output-length predictor a router's config names."""

    length_predictor: Annotated[Spec, Uses(LENGTH_PREDICTORS)] = Field(
        Spec(name="history-mean"),
        description="the output-length predictor built when none is handed in",
    )


class ExploreParams(Params):
    """The train phase: random routing for a share of requests, until a bound.

    The phase starts at the first request the router decides. A request in the phase
    goes, with probability ``fraction``, to a candidate drawn uniformly (from the
    router's seeded generator; the rest are routed on predictions); the phase ends once
    the router has decided ``until_requests`` requests or ``until_s`` seconds of the
    driver's clock have passed since that first request, whichever comes first. Neither
    bound set: the phase never ends (a constant exploration share).
    """

    fraction: float = Field(
        0.0, ge=0, le=1, description="share of requests routed at random during the phase"
    )
    until_requests: int | None = Field(
        None, ge=0, description="the phase ends after this many decided requests (null: no bound)"
    )
    until_s: float | None = Field(
        None, ge=0, description="the phase ends this long after the first request, s (null: none)"
    )


class PredictorParams(LengthPredictorParams):
    """The output-length and latency predictors a router's config names, and its train phase."""

    explore: ExploreParams = Field(
        ExploreParams(), description="train phase: random routing while collecting outcomes"
    )
    use_step_model: bool = Field(
        True,
        description="predict analytically where a view has a step model and its engine "
        "load; false: the latency predictor everywhere",
    )

    latency_predictor: Annotated[Spec, Uses(LATENCY_PREDICTORS)] = Field(
        Spec(name="recent-window"),
        description="the latency predictor built when none is handed in (it serves "
        "instances without a step model)",
    )


LENGTH = Needs(
    "length_predictor",
    OutputLengthPredictor,
    "an output-length predictor",
    default=lambda p: build_spec(LENGTH_PREDICTORS, p.length_predictor),
)
"""Collaborator: the output-length predictor (default: the one the parameters name)."""

LATENCY = Needs(
    "latency_predictor",
    LatencyPredictor,
    "a per-instance latency predictor",
    default=lambda p: build_spec(LATENCY_PREDICTORS, p.latency_predictor),
)
"""Collaborator: the learned latency predictor (default: the one the parameters name)."""


class Explorer:
    """Decides which requests of the train phase go to a random candidate (ExploreParams)."""

    def __init__(self, params: ExploreParams, rng: np.random.Generator) -> None:
        self.fraction = params.fraction
        self.until_requests = params.until_requests
        self.until_s = params.until_s
        self.rng = rng
        self.num_decided = 0
        self.started_at: Seconds | None = None

    def active(self, now: Seconds) -> bool:
        """Whether the phase still runs for a request decided at ``now``."""
        if self.fraction <= 0.0:
            return False
        if self.until_requests is not None and self.num_decided >= self.until_requests:
            return False
        start = now if self.started_at is None else self.started_at
        return self.until_s is None or now - start < self.until_s

    def pick(self, candidates: Sequence[object], now: Seconds) -> int | None:
        """Index of the random candidate this request goes to, or ``None`` (route on
        predictions).

        Draws from the generator only while the phase runs, so a router without a
        phase (or past it) makes the same draws as before.
        """
        if not self.active(now) or not candidates:
            return None
        if self.started_at is None:
            self.started_at = now
        self.num_decided += 1
        if self.rng.random() >= self.fraction:
            return None
        return int(self.rng.integers(len(candidates)))


@runtime_checkable
class DistributionPredictor(Protocol):
    """A latency predictor that gives lognormal distributions, for a batch of instances."""

    def distributions(
        self, instances: Sequence[InstanceId], ctxs: Sequence[RouteContext]
    ) -> list[LatencyDistribution | None]:
        """The distribution on each instance (``None`` where it has too little data)."""
        ...


class Prediction(NamedTuple):
    """One candidate's prediction: a point estimate and, where the predictor gives one,
    its distribution."""

    estimate: LatencyEstimate | None
    distribution: LatencyDistribution | None


class FleetEstimates(NamedTuple):
    """Every candidate's prediction for one request (:meth:`Estimator.fleet`)."""

    ttft: list[float]  # per candidate, in order; inf where there is no prediction
    e2e: list[float]
    others: dict[int, LatencyEstimate | None]  # by position: the candidates not in the pass
    output_tokens: float  # what the pass's predictions assume
    note: str  # :meth:`Estimator.unused_step_models` of the candidates
    ids: list[InstanceId]  # the candidates' ids, in order
    # with E2E skipped (``e2e`` empty): the pass's load terms by position, and the request
    skipped: tuple[list[LoadTerms | None], int, float] | None = None

    def estimate(self, k: int) -> LatencyEstimate | None:
        """Candidate ``k``'s prediction, as :meth:`Estimator.point_estimates` gives it."""
        if k in self.others:
            return self.others[k]
        if self.skipped is None:
            return LatencyEstimate(self.ttft[k], self.e2e[k], self.output_tokens)
        terms, prompt_tokens, expected = self.skipped
        one = terms[k]
        assert one is not None  # not among the others: in the pass
        e2e = fleet_latencies([one], prompt_tokens, expected)[1][0]
        return LatencyEstimate(self.ttft[k], e2e, self.output_tokens)


def context_of(
    request: Request, view: InstanceView, expected_output: float, now: Seconds
) -> RouteContext:
    """The prediction features of ``request`` on ``view`` at ``now``.

    A load field the view does not know enters as 0: learned predictors then see the
    same encoding when they learn and when they predict. The analytic prediction is
    only used where the engine load is known (:meth:`Estimator.analytic`).
    """
    return RouteContext(  # positional, in field order: this runs per candidate per request
        request.prompt_tokens,
        expected_output,
        _or_zero(view.num_running),
        _or_zero(view.num_waiting),
        view.num_outstanding,
        _or_zero(view.waiting_prefill_tokens),
        _or_zero(view.running_remaining_tokens),
        _or_zero(view.running_ctx_tokens),
        view.max_num_seqs,
        now,
    )


def _or_zero(value: int | None) -> int:
    return 0 if value is None else value


_Entry = tuple[InstanceView, LoadTerms | None, bool]
"""A view, its load terms (None: not in the pass) and whether its step model goes unused."""


class _Shown:
    """The candidates an estimator was last shown, by position, with their entries: an
    arrival finds the positions whose view object changed without a lookup per candidate."""

    def __init__(self, num: int) -> None:
        self.views: list[InstanceView | None] = [None] * num
        self.terms: list[LoadTerms | None] = [None] * num
        self.ids: list[InstanceId] = [""] * num
        self.lost: list[bool] = [False] * num
        self.num_other = num  # positions without load terms
        self.num_lost = 0  # positions whose step model goes unused

    def put(self, k: int, entry: _Entry) -> None:
        """Position ``k`` now shows ``entry``'s view."""
        view, terms, lost = entry
        self.num_other -= self.terms[k] is None
        self.num_lost -= self.lost[k]
        self.views[k], self.terms[k], self.ids[k], self.lost[k] = view, terms, view.id, lost
        self.num_other += terms is None
        self.num_lost += lost


@dataclass(frozen=True, slots=True)
class _Pending:
    instance: InstanceId
    ctx: RouteContext
    estimate: LatencyEstimate | None


class Estimator:
    """Length, latency and SLO-error collaborators of a predictive router."""

    def __init__(
        self,
        length: OutputLengthPredictor,
        latency: LatencyPredictor,
        error: LognormalError | None = None,
        max_pending: int = 100_000,
        use_step_model: bool = True,
    ) -> None:
        self.length = length
        self.latency = latency
        # checked once: a runtime protocol check costs microseconds per call
        self._batched = latency if isinstance(latency, DistributionPredictor) else None
        self.error = error or LognormalError()
        self.max_pending = max_pending
        self.use_step_model = use_step_model
        self._pending: dict[RequestId, _Pending] = {}
        self._fleet = FleetLatency()
        # per instance, for :meth:`fleet`: the view last shown, its load terms (None: not
        # in the pass) and whether its step model goes unused (load unknown)
        self._seen: dict[InstanceId, _Entry] = {}
        self._shown: dict[int, _Shown] = {}  # the candidates last shown, by their number

    def analytic(self, view: InstanceView) -> bool:
        """Whether ``view``'s latency is predicted from its step model (and known load)."""
        return self.use_step_model and view.step_model is not None and view.engine_load_known

    def unused_step_models(self, views: Sequence[InstanceView]) -> str:
        """A reason's note naming instances whose step model went unused (load unknown)."""
        if not self.use_step_model:
            return ""
        lost = [v.id for v in views if v.step_model is not None and not v.engine_load_known]
        if not lost:
            return ""
        return f"; engine load unknown on {', '.join(lost)}: learned estimate there"

    def estimates(
        self, views: Sequence[InstanceView], ctxs: Sequence[RouteContext]
    ) -> list[Prediction]:
        """:meth:`estimate` of every candidate; a distribution predictor in one batch."""
        latency = self._batched
        if latency is None:
            return [Prediction(self.estimate(v, c), None) for v, c in zip(views, ctxs, strict=True)]
        learned = [k for k, v in enumerate(views) if not self.analytic(v)]
        dists = latency.distributions([views[k].id for k in learned], [ctxs[k] for k in learned])
        out = [Prediction(self.estimate(v, c), None) if self.analytic(v) else Prediction(None, None)
               for v, c in zip(views, ctxs, strict=True)]  # fmt: skip
        for k, dist in zip(learned, dists, strict=True):
            if dist is not None:
                out[k] = Prediction(dist.estimate(ctxs[k].expected_output_tokens), dist)
        return out

    def point_estimates(
        self, views: Sequence[InstanceView], ctxs: Sequence[RouteContext]
    ) -> list[LatencyEstimate | None]:
        """:meth:`estimate` of every candidate, as :meth:`estimates` gives them, without the
        distributions (one expression per candidate: this runs for every instance at
        every arrival)."""
        if self._batched is not None:
            return [p.estimate for p in self.estimates(views, ctxs)]
        analytic, latency = self.use_step_model, self.latency
        return [
            step_model_latency(v.step_model, c)
            if analytic and v.step_model is not None and v.engine_load_known
            else latency.predict(v.id, c)
            for v, c in zip(views, ctxs, strict=True)
        ]

    def fleet(
        self,
        request: Request,
        views: Sequence[InstanceView],
        expected: float,
        now: Seconds,
        e2e: bool = True,
    ) -> FleetEstimates:
        """:meth:`point_estimates` of ``request`` on every candidate, with the contexts
        :func:`context_of` gives (``expected`` output tokens, at ``now``), as floats.
        ``e2e`` false: a caller that compares TTFT only may get an empty E2E list, the
        E2E of a candidate then computed when its :meth:`FleetEstimates.estimate` is asked.

        The router's pass over the fleet: a candidate whose step model is a plain roofline
        is predicted from its load's terms, kept while its view object is unchanged
        (:mod:`sincere.predict.fleet_latency`; bit-identical to ``step_model_latency``);
        the others as :meth:`estimate` predicts them, in candidate order.
        """
        if self._batched is not None:
            ctxs = [context_of(request, v, expected, now) for v in views]
            ests = [p.estimate for p in self.estimates(views, ctxs)]
            return _fleet_of(ests, self.unused_step_models(views), [v.id for v in views])
        num = len(views)
        shown = self._shown.get(num)
        if shown is None:
            shown = self._shown[num] = _Shown(num)
        seen = self._seen
        for k in compress(range(num), map(is_not, views, shown.views)):
            view = views[k]
            entry = seen.get(view.id)
            if entry is None or entry[0] is not view:
                entry = seen[view.id] = self._entry(view)
            shown.put(k, entry)
        others: dict[int, LatencyEstimate | None] = {}
        if shown.num_other == 0:
            every = cast("list[LoadTerms]", shown.terms)
            ttfts, e2es = fleet_latencies(every, request.prompt_tokens, expected, e2e)
            if not e2e:
                skipped = (list(shown.terms), request.prompt_tokens, expected)
                note = self.unused_step_models(views) if shown.num_lost else ""
                return FleetEstimates(
                    ttfts, e2es, others, max(expected, 1.0), note, shown.ids.copy(), skipped
                )
        else:
            for k, terms in enumerate(shown.terms):
                if terms is None:
                    view = views[k]
                    others[k] = self.estimate(view, context_of(request, view, expected, now))
            ttfts, e2es = fleet_latencies(
                [t for t in shown.terms if t is not None], request.prompt_tokens, expected
            )
            ttfts, e2es = _merged(num, others, ttfts, e2es)
        note = self.unused_step_models(views) if shown.num_lost else ""
        return FleetEstimates(ttfts, e2es, others, max(expected, 1.0), note, shown.ids.copy())

    def _entry(self, view: InstanceView) -> _Entry:
        """``view``'s entry of :attr:`_seen`."""
        model = view.step_model
        if model is None or not self.use_step_model:
            return view, None, False
        running, waiting = view.num_running, view.num_waiting
        queued, remaining = view.waiting_prefill_tokens, view.running_remaining_tokens
        ctx = view.running_ctx_tokens
        if running is None or waiting is None or queued is None or remaining is None or ctx is None:
            return view, None, True  # engine load unknown: the learned estimate
        limit = view.max_num_seqs
        terms = self._fleet.terms(model, running, waiting, queued, remaining, ctx, limit)
        return view, terms, False

    def estimate(self, view: InstanceView, ctx: RouteContext) -> LatencyEstimate | None:
        """Analytic estimate when the view has a step model and its engine load, else the
        learned one (``None`` until the instance has outcomes)."""
        if self.analytic(view):
            assert view.step_model is not None  # analytic() checked it
            return step_model_latency(view.step_model, ctx)
        return self.latency.predict(view.id, ctx)

    def remember(
        self, request: Request, view: InstanceView, ctx: RouteContext, est: LatencyEstimate | None
    ) -> None:
        """Keep what was predicted for ``request`` until its outcome arrives."""
        if len(self._pending) >= self.max_pending:
            del self._pending[next(iter(self._pending))]
        self._pending[request.id] = _Pending(view.id, ctx, est)

    def observe(self, outcome: Outcome) -> None:
        """Train the length, latency and error models on one finished request."""
        req = outcome.request
        self.length.observe(req, outcome.output_tokens)
        pending = self._pending.pop(req.id, None)
        if pending is None or pending.instance != outcome.instance:
            ctx = RouteContext(req.prompt_tokens, float(outcome.output_tokens))
            est = None
        else:
            ctx, est = pending.ctx, pending.estimate
        # an unmeasured first token (a whole answer) is learned as the end-to-end time
        ttft = outcome.e2e_s if outcome.ttft_s is None else outcome.ttft_s
        self.latency.observe(outcome.instance, ctx, ttft, outcome.e2e_s, outcome.output_tokens)
        if est is not None:
            if outcome.ttft_s is not None:
                self.error.observe(est.ttft_s, outcome.ttft_s)
            self.error.observe(est.e2e_s, outcome.e2e_s)

    @property
    def num_pending(self) -> int:
        """Routed requests whose outcome has not been observed yet."""
        return len(self._pending)


def _fleet_of(
    ests: list[LatencyEstimate | None], note: str, ids: list[InstanceId]
) -> FleetEstimates:
    """The :class:`FleetEstimates` of these estimates (none from the pass)."""
    others = dict(enumerate(ests))
    ttft = [math.inf if est is None else est.ttft_s for est in ests]
    e2e = [math.inf if est is None else est.e2e_s for est in ests]
    return FleetEstimates(ttft, e2e, others, 1.0, note, ids)


def _merged(
    num: int, others: dict[int, LatencyEstimate | None], ttft: list[float], e2e: list[float]
) -> tuple[list[float], list[float]]:
    """Every candidate's TTFT and E2E, in order: the pass's (``ttft``, ``e2e``, in order)
    where ``others`` has no entry."""
    out_ttft: list[float] = []
    out_e2e: list[float] = []
    i = 0
    for k in range(num):
        if k in others:
            est = others[k]
            out_ttft.append(math.inf if est is None else est.ttft_s)
            out_e2e.append(math.inf if est is None else est.e2e_s)
        else:
            out_ttft.append(ttft[i])
            out_e2e.append(e2e[i])
            i += 1
    return out_ttft, out_e2e


class PredictiveRouter(Router):
    """A router that decides on latency predictions: its :class:`Estimator` (built from the
    collaborators it is handed) and its train phase's :class:`Explorer`, both trained by
    :meth:`observe`."""

    def __init__(
        self,
        rng: np.random.Generator,
        params: PredictorParams,
        length_predictor: OutputLengthPredictor,
        latency_predictor: LatencyPredictor,
        error_model: LognormalError,
    ) -> None:
        super().__init__(rng)
        self.estimator = Estimator(
            length_predictor, latency_predictor, error_model, use_step_model=params.use_step_model
        )
        self.explorer = Explorer(params.explore, rng)

    def observe(self, outcome: Outcome) -> None:
        """Train the length and latency predictors and the SLO error model."""
        self.estimator.observe(outcome)
