"""Admission control: which requests to refuse before routing them.

The front door (:mod:`sincere.policy.front_door`) consults :class:`Admission` before its
router, on the simulator's path and the gateway's alike. It combines two clock-free
rules:

* :class:`PredictedMissShedder` -- predicted-miss shedding: refuse a request that
  would miss its tier even on the best instance, i.e. whose smallest predicted TTFT
  exceeds ``factor`` times the TTFT budget left (tier ``ttft_s`` minus time since
  arrival), or whose smallest predicted E2E exceeds ``factor`` times the TTLT budget
  left. Serving a doomed request only delays the others (Niyama sheds, or relegates,
  such requests for the same reason). ``factor > 1`` sheds only clear misses.
* :class:`PriorityBands` -- priority bands: as the cluster fills, admit only the more
  important requests. ``bands`` is a list of ``(min_utilisation, max_priority)``: once
  the mean utilisation of the healthy instances reaches ``min_utilisation``, only
  requests with ``priority <= max_priority`` are admitted (smaller priority is more
  important, as in :class:`~sincere.core.request.Request`).

Predictions (:meth:`Admission.estimates`): per healthy instance, from its step-time
model and engine load when the view has both
(:func:`~sincere.predict.latency.step_model_latency`, for the request's ``max_tokens``),
else from :class:`LatencyHistory` -- EWMAs of the TTFT and time per output token that
were *measured* there (a whole non-streamed answer measures no TTFT and teaches
nothing), the TTFT as a line in the prompt's length so that a request is judged on its
own prompt (other tenants' long prompts do not close a tier to short ones). They
expire ``max_age_s`` after the last measurement so that a tier shed entirely is
admitted again and measured anew. Where the instance has no room or
requests already wait, the expected queue wait is added: the requests ahead over the
model's slots, times a request's predicted E2E (the caller counts only the queued
requests at least as important: those ahead of it).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from sincere.core.errors import ConfigError
from sincere.core.request import Request
from sincere.core.types import InstanceId, Seconds
from sincere.policy.reads import Reads
from sincere.policy.router_base import InstanceView, Outcome, healthy, utilisation
from sincere.policy.routers._estimates import context_of
from sincere.predict.latency import LatencyEstimate, step_model_latency, time_per_output_token


@dataclass(frozen=True, slots=True)
class AdmissionDecision:
    """Whether to admit a request, and why not."""

    admit: bool  # False: reject the request
    reason: str = ""  # why it was rejected (kept in the records)
    code: str = ""  # which rule rejected it: deadline_unreachable or priority_shed


ADMIT = AdmissionDecision(True)


class PredictedMissShedder:
    """Refuse requests predicted to miss their tier on every instance."""

    def __init__(self, factor: float = 1.0) -> None:
        if not factor > 0.0:
            raise ConfigError("admission: factor must be > 0", value=factor, allowed="a float > 0")
        self.factor = factor

    def admit(
        self, request: Request, estimates: Sequence[LatencyEstimate], now: Seconds
    ) -> AdmissionDecision:
        """Admit unless the best TTFT (or E2E) prediction misses its deadline by ``factor``."""
        if not estimates:
            return ADMIT
        elapsed = max(0.0, now - request.arrival_at)
        tier = request.tier
        if tier.ttft_s is not None:
            best = min(e.ttft_s for e in estimates)
            if best > self.factor * (tier.ttft_s - elapsed):
                why = f"predicted TTFT {best:.3g}s misses {tier.name}"
                return AdmissionDecision(False, why, "deadline_unreachable")
        if tier.ttlt_s is not None:
            best = min(e.e2e_s for e in estimates)
            if best > self.factor * (tier.ttlt_s - elapsed):
                why = f"predicted E2E {best:.3g}s misses {tier.name}"
                return AdmissionDecision(False, why, "deadline_unreachable")
        return ADMIT


def cluster_utilisation(instances: Sequence[InstanceView]) -> float:
    """Mean utilisation of the healthy instances (1.0 when none is healthy)."""
    ok = healthy(instances)
    if not ok:
        return 1.0
    return sum(utilisation(v) for v in ok) / len(ok)


class PriorityBands:
    """Admit only important-enough requests as utilisation rises."""

    def __init__(self, bands: Sequence[tuple[float, int]] = ((0.9, 0),)) -> None:
        ordered = sorted((float(u), int(p)) for u, p in bands)
        if any(u < 0.0 for u, _ in ordered):
            raise ConfigError("admission: band utilisation must be >= 0", value=list(bands))
        if any(b[1] > a[1] for a, b in itertools.pairwise(ordered)):
            raise ConfigError(
                "admission: max_priority must not grow with utilisation",
                value=ordered,
                allowed="bands whose max_priority is non-increasing in min_utilisation",
            )
        self.bands = ordered

    def max_priority(self, util: float) -> int | None:
        """The largest priority admitted at ``util``; ``None`` when all are admitted."""
        allowed = None
        for min_util, max_priority in self.bands:
            if util >= min_util:
                allowed = max_priority
        return allowed

    def admit(self, request: Request, util: float) -> AdmissionDecision:
        """Admit ``request`` unless its priority is above the band's limit at ``util``."""
        limit = self.max_priority(util)
        if limit is None or request.priority <= limit:
            return ADMIT
        return AdmissionDecision(
            False,
            f"priority {request.priority} > {limit} at utilisation {util:.2f}",
            "priority_shed",
        )


_EWMA = 0.2  # weight of the newest observation in the history's averages
_SPREAD = 0.1  # prompts whose spread is below this share of their mean: one size


class _Measured:
    """One instance's averages: measured TTFT (with the prompts it was measured on),
    TPOT, and slot hold time."""

    __slots__ = ("hold_s", "measured_at", "prompt", "prompt_sq", "prompt_ttft", "tpot_s", "ttft_s")

    def __init__(self) -> None:
        self.ttft_s: float | None = None  # EWMA of measured TTFT
        self.prompt = 0.0  # EWMA of the prompt tokens of those measurements
        self.prompt_sq = 0.0  # EWMA of their square
        self.prompt_ttft = 0.0  # EWMA of prompt tokens times TTFT
        self.tpot_s: float | None = None  # EWMA of measured time per output token
        self.measured_at = -math.inf  # when the last TTFT was measured
        self.hold_s: float | None = None  # EWMA of the time a request holds a slot

    def fold_ttft(self, prompt_tokens: float, ttft_s: float) -> None:
        """Fold one measured TTFT and its prompt length into the averages."""
        if self.ttft_s is None:
            self.prompt, self.prompt_sq = prompt_tokens, prompt_tokens * prompt_tokens
            self.prompt_ttft = prompt_tokens * ttft_s
        else:
            self.prompt = _mix(self.prompt, prompt_tokens)
            self.prompt_sq = _mix(self.prompt_sq, prompt_tokens * prompt_tokens)
            self.prompt_ttft = _mix(self.prompt_ttft, prompt_tokens * ttft_s)
        self.ttft_s = _mix(self.ttft_s, ttft_s)

    def ttft_for(self, prompt_tokens: float) -> float:
        """The TTFT predicted for a prompt of ``prompt_tokens``, from what was measured.

        A least-squares line ``a + b * prompt`` over the (exponentially weighted)
        measurements when their prompts differ enough, with ``a, b >= 0``; when they do
        not, the average TTFT, scaled down in proportion for a shorter prompt (one
        tenant's long prompts say nothing of another's short one's wait beyond that).
        """
        mean_ttft = self.ttft_s or 0.0
        mean_x = self.prompt
        var_x = self.prompt_sq - mean_x * mean_x
        if var_x > (_SPREAD * max(mean_x, 1.0)) ** 2:
            slope = max(0.0, (self.prompt_ttft - mean_x * mean_ttft) / var_x)
            base = max(0.0, mean_ttft - slope * mean_x)
            return base + slope * prompt_tokens
        if mean_x > 0 and prompt_tokens < mean_x:
            return mean_ttft * max(prompt_tokens, 1.0) / mean_x
        return mean_ttft


def _mix(old: float | None, new: float) -> float:
    return new if old is None else (1.0 - _EWMA) * old + _EWMA * new


class LatencyHistory:
    """What was measured on each instance: the basis of estimates without a step model."""

    def __init__(self, max_age_s: float = math.inf) -> None:
        self.max_age_s = max_age_s  # measurements older than this are forgotten
        self._by_instance: dict[InstanceId, _Measured] = {}

    def _of(self, instance: InstanceId) -> _Measured:
        m = self._by_instance.get(instance)
        if m is None:
            m = self._by_instance[instance] = _Measured()
        return m

    def observe(self, outcome: Outcome) -> None:
        """Fold a finished request in; an unmeasured TTFT (a whole answer) teaches nothing.

        Taking a whole answer's time for a TTFT once locked a tier out of admission.
        """
        if outcome.ttft_s is None:
            return
        m = self._of(outcome.instance)
        if outcome.finished_at - m.measured_at > self.max_age_s:  # expired: start afresh
            m.ttft_s = m.tpot_s = None
        m.fold_ttft(float(outcome.request.prompt_tokens), outcome.ttft_s)
        m.measured_at = outcome.finished_at
        if outcome.output_tokens > 1:
            tpot = time_per_output_token(outcome.ttft_s, outcome.e2e_s, outcome.output_tokens)
            tpot = max(0.0, tpot)
            m.tpot_s = _mix(m.tpot_s, tpot)

    def observe_hold(self, instance: InstanceId, held_s: Seconds) -> None:
        """Fold in how long one request held a slot of ``instance`` (sent to released)."""
        m = self._of(instance)
        m.hold_s = _mix(m.hold_s, held_s)

    def predict(
        self,
        instance: InstanceId,
        output_tokens: int,
        now: Seconds,
        prompt_tokens: int | None = None,
    ) -> LatencyEstimate | None:
        """EWMA-based TTFT and E2E for a request of ``prompt_tokens`` (None: the average
        measured TTFT); None without a measurement younger than ``max_age_s``."""
        m = self._by_instance.get(instance)
        if m is None or m.ttft_s is None or now - m.measured_at > self.max_age_s:
            return None
        ttft = m.ttft_s if prompt_tokens is None else m.ttft_for(float(prompt_tokens))
        e2e = ttft + (m.tpot_s or 0.0) * max(0, output_tokens - 1)
        return LatencyEstimate(ttft, e2e, float(output_tokens))

    def service_rate(self, view: InstanceView) -> float | None:
        """Requests per second ``view``'s instance frees while full (slots / mean hold).

        None without a hold measured yet, or without an in-flight cap (it never fills).
        """
        m = self._by_instance.get(view.id)
        if m is None or not m.hold_s or view.max_in_flight is None:
            return None
        return view.max_in_flight / m.hold_s


class Admission:
    """Predicted-miss shedding and priority bands, over the views of a request's instances."""

    def __init__(
        self,
        shedder: PredictedMissShedder,
        bands: PriorityBands | None,
        history: LatencyHistory,
        default_max_tokens: int,
    ) -> None:
        self.shedder = shedder
        self.bands = bands
        self.history = history
        self.default_max_tokens = default_max_tokens  # output assumed without max_tokens

    @property
    def reads(self) -> Reads:
        """Everything: its predictions read loads and token counts, its history outcomes."""
        return Reads()

    def check(
        self, request: Request, views: Sequence[InstanceView], now: Seconds, num_queued: int
    ) -> AdmissionDecision:
        """Admit, or say which rule refuses ``request`` and why."""
        tier = request.tier
        if self.bands is None and tier.ttft_s is None and tier.ttlt_s is None:
            return ADMIT  # nothing to check: no latency target, no bands
        ok = healthy(views)
        if tier.ttft_s is not None or tier.ttlt_s is not None:  # else no estimate is read
            estimates = self.estimates(request, ok, now, num_queued)
            decision = self.shedder.admit(request, estimates, now)
            if not decision.admit:
                return decision
        if self.bands is None:
            return ADMIT
        return self.bands.admit(request, cluster_utilisation(ok))

    def estimates(
        self, request: Request, views: Sequence[InstanceView], now: Seconds, num_queued: int
    ) -> list[LatencyEstimate]:
        """Predicted TTFT / E2E on each of ``views`` that has a basis, plus the queue wait."""
        out_tokens = request.max_tokens or self.default_max_tokens
        caps = [v.max_in_flight for v in views]
        slots = math.inf if None in caps else float(sum(c for c in caps if c is not None))
        out = []
        for view in views:
            est = self._base(request, view, out_tokens, now)
            if est is None:
                continue
            waits = not view.has_room or num_queued > 0
            wait = (num_queued + 1) / max(slots, 1.0) * est.e2e_s if waits else 0.0
            out.append(LatencyEstimate(est.ttft_s + wait, est.e2e_s + wait, est.output_tokens))
        return out

    def _base(
        self, request: Request, view: InstanceView, out_tokens: int, now: Seconds
    ) -> LatencyEstimate | None:
        """The step-model prediction when the view allows it, else the measured history."""
        if view.step_model is not None and view.engine_load_known:
            ctx = context_of(request, view, float(out_tokens), now)
            return step_model_latency(view.step_model, ctx)
        return self.history.predict(view.id, out_tokens, now, request.prompt_tokens)
