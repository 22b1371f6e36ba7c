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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

from pydantic import Field

from sincere.core.params import Params, Spec, Uses
from sincere.core.registry import Needs, build_spec
from sincere.core.request import Request
from sincere.core.types import InstanceId, RequestId, Seconds
from sincere.policy.router_base import InstanceView, Outcome
from sincere.predict.latency import (
    LATENCY_PREDICTORS,
    LatencyEstimate,
    LatencyPredictor,
    RouteContext,
    step_model_latency,
)
from sincere.predict.length import LENGTH_PREDICTORS, OutputLengthPredictor
from sincere.predict.slo import LognormalError


class LengthPredictorParams(Params):
    """The output-length predictor a router's config names."""

    length_predictor: Annotated[Spec, Uses(LENGTH_PREDICTORS)] = Field(
        Spec(name="history-mean"),
        description="the output-length predictor built when none is handed in",
    )


class PredictorParams(LengthPredictorParams):
    """The output-length and latency predictors a router's config names."""

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


def context_of(
    request: Request, view: InstanceView, expected_output: float, now: Seconds
) -> RouteContext:
    """The prediction features of ``request`` on ``view`` at ``now``.

    A load field the view does not know enters as 0: learned predictors then see the
    same encoding when they learn and when they predict. The analytic prediction is
    only used where the engine load is known (:meth:`Estimator.analytic`).
    """
    return RouteContext(
        prompt_tokens=request.prompt_tokens,
        expected_output_tokens=expected_output,
        num_running=_or_zero(view.num_running),
        num_waiting=_or_zero(view.num_waiting),
        num_outstanding=view.num_outstanding,
        waiting_prefill_tokens=_or_zero(view.waiting_prefill_tokens),
        running_remaining_tokens=_or_zero(view.running_remaining_tokens),
        running_ctx_tokens=_or_zero(view.running_ctx_tokens),
        max_num_seqs=view.max_num_seqs,
        routed_at=now,
    )


def _or_zero(value: int | None) -> int:
    return 0 if value is None else value


def unused_step_models(views: Sequence[InstanceView]) -> str:
    """A reason's note naming instances whose step model went unused (load unknown)."""
    lost = [v.id for v in views if v.step_model is not None and not v.engine_load_known]
    if not lost:
        return ""
    return f"; engine load unknown on {', '.join(lost)}: learned estimate there"


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
    ) -> None:
        self.length = length
        self.latency = latency
        self.error = error or LognormalError()
        self.max_pending = max_pending
        self._pending: dict[RequestId, _Pending] = {}

    @staticmethod
    def analytic(view: InstanceView) -> bool:
        """Whether ``view``'s latency is predicted from its step model (and known load)."""
        return view.step_model is not None and view.engine_load_known

    def estimate(self, view: InstanceView, ctx: RouteContext) -> LatencyEstimate | None:
        """Analytic estimate when the view has a step model and its engine load, else the
        learned one (``None`` until the instance has outcomes)."""
        if view.step_model is not None and view.engine_load_known:
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
