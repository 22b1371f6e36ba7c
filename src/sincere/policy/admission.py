"""Admission control: which requests to refuse before routing them.

Two clock-free helpers a cluster (simulated or live) consults before its router:

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

Predictions come from :mod:`sincere.predict.latency` (e.g.
:func:`~sincere.predict.latency.step_model_latency` per instance).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from sincere.core.errors import ConfigError
from sincere.core.request import Request
from sincere.core.types import Seconds
from sincere.policy.router_base import InstanceView, healthy, utilisation
from sincere.predict.latency import LatencyEstimate


@dataclass(frozen=True, slots=True)
class AdmissionDecision:
    """Whether to admit a request, and why not."""

    admit: bool  # False: reject the request
    reason: str = ""  # why it was rejected (kept in the records)


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
                return AdmissionDecision(False, f"predicted TTFT {best:.3g}s misses {tier.name}")
        if tier.ttlt_s is not None:
            best = min(e.e2e_s for e in estimates)
            if best > self.factor * (tier.ttlt_s - elapsed):
                return AdmissionDecision(False, f"predicted E2E {best:.3g}s misses {tier.name}")
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
            False, f"priority {request.priority} > {limit} at utilisation {util:.2f}"
        )
