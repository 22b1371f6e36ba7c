"""Session affinity: every request of a conversation to the instance that served it before.

A multi-turn conversation or an agent loop resends its whole history each turn, so the
instance that served the previous turn holds most of the next prompt in its prefix
cache. Sticky sessions (the vLLM production stack's session router, SGLang's and most
gateways' ``session`` / ``user`` affinity) exploit that without looking at the prompt:
the first request of ``request.session`` goes to the least loaded candidate (by
``metric``; the earlier one on ties) and the session is bound there; later requests
follow the binding unless the bound instance is not a candidate (unhealthy, full,
excluded) or saturated -- its utilisation (the larger of KV usage and batch-slot
occupancy) at least ``saturation``, or its load more than ``max_load_gap`` above the
least loaded -- in which case the request falls back to the least loaded *other* candidate
and the session moves there. Requests without a session go to the least loaded candidate.
Bindings are kept for the ``max_sessions`` most recently seen sessions.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import Field

from sincere.core.params import Params, params_from
from sincere.core.request import Request
from sincere.core.types import InstanceId, Seconds
from sincere.policy.reads import Reads
from sincere.policy.router_base import ROUTERS, InstanceView, RouteDecision, utilisation
from sincere.policy.routers._common import LoadMetric, LoadMetricRouter


class SessionAffinityParams(Params):
    """Parameters of ``session-affinity``."""

    metric: LoadMetric = Field("outstanding", description="load measure of the fallback")
    saturation: float = Field(
        0.95,
        gt=0.0,
        description="utilisation (max of KV usage and slot occupancy) at which the bound "
        "instance is saturated and the session moves",
    )
    max_load_gap: float | None = Field(
        None,
        ge=0.0,
        description="the session also moves when its instance is loaded more than this "
        "above the least loaded (metric's unit); null: load alone never moves it",
    )
    max_sessions: int = Field(100_000, ge=1, description="session bindings kept (LRU)")


@ROUTERS.register("session-affinity", params=SessionAffinityParams)
class SessionAffinityRouter(LoadMetricRouter):
    """Sticky by ``request.session``; least loaded when new, unbound or saturated."""

    def __init__(
        self,
        rng: np.random.Generator,
        params: SessionAffinityParams | None = None,
        **values: Any,
    ) -> None:
        p = params_from(SessionAffinityParams, params, values, "router 'session-affinity'")
        super().__init__(rng, p.metric)
        self.saturation = p.saturation
        self.max_load_gap = p.max_load_gap
        self.max_sessions = p.max_sessions
        self._bound: OrderedDict[str, InstanceId] = OrderedDict()

    @property
    def reads(self) -> Reads:
        """Engine load whatever the metric (a bound instance's KV usage decides whether it
        is saturated); token counts when the metric is ``tokens``."""
        return Reads(tokens=self.metric == "tokens", outcomes=self.learns_from_outcomes)

    def choose(
        self, request: Request, candidates: Sequence[InstanceView], now: Seconds
    ) -> RouteDecision:
        """The session's instance if it is a candidate and not saturated, else the least loaded."""
        used, load, note = self.load_measure(candidates)
        least = min(candidates, key=load)
        session = request.session
        if session is None:
            return RouteDecision(least.id, reason=f"no session; {used}={load(least):g}{note}")
        bound = self._bound.get(session)
        view = next((v for v in candidates if v.id == bound), None)
        why = self._moves(view, load(least), load) if bound is not None else "new session"
        if not why and view is not None:
            choice = view
        else:
            others = [v for v in candidates if v is not view] or list(candidates)
            choice = min(others, key=load)
        self._bind(session, choice.id)
        if not why:
            return RouteDecision(choice.id, reason=f"session {session!r} sticks{note}")
        return RouteDecision(
            choice.id, reason=f"session {session!r}: {why}; {used}={load(choice):g}{note}"
        )

    def _moves(self, view: InstanceView | None, least: float, load: Any) -> str:
        """Why the session leaves its instance (empty: it stays)."""
        if view is None:
            return "its instance is not a candidate, moved"
        if utilisation(view) >= self.saturation:
            return f"{view.id} saturated ({utilisation(view):.2f}), moved"
        if self.max_load_gap is not None and load(view) > least + self.max_load_gap:
            return f"{view.id} over the load gap, moved"
        return ""

    def _bind(self, session: str, instance: InstanceId) -> None:
        bound = self._bound
        bound[session] = instance
        bound.move_to_end(session)
        if len(bound) > self.max_sessions:
            bound.popitem(last=False)
