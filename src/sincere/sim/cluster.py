"""A serving cluster: engines, the router in front of them, and who serves what.

A request may go to the instances that serve its model (*eligible* ones). With
exactly one, it goes there without asking the router (the common single-model
case costs nothing); with several, the router picks from read-only
:class:`~sincere.policy.router_base.InstanceView` snapshots; with none, or when the
router declines, the request is rejected with a reason. A router's new
``max_tokens`` (a budget cap) is written to the run's ``max_tokens`` array, which
the engines read. The chosen instance's load, as its view shows it, goes into the
records (the ``arrival_*`` columns) when the cluster has more than one instance.

Views are cached per instance: an engine's load only changes when the event loop adds
a request to it, advances it or drains it, and the loop says so (:meth:`Cluster.touched`),
so between two of those the router gets the same snapshot object again instead of a new
one (with many instances most do not change between two arrivals).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from sincere.core.records import RecordArrays
from sincere.core.request import RequestArrays
from sincere.core.types import Seconds
from sincere.engine.base import Engine
from sincere.engine.instance import InstanceInfo, instance_view
from sincere.policy.router_base import InstanceView, Outcome, RouteDecision, Router


class Cluster:
    """Engines plus routing; the simulator's event loop drives it."""

    def __init__(
        self,
        requests: RequestArrays,
        records: RecordArrays,
        engines: Sequence[Engine],
        infos: Sequence[InstanceInfo],
        router: Router | None,
        max_tokens: npt.NDArray[np.int64],
    ) -> None:
        self.requests = requests
        self.records = records
        self.engines = list(engines)
        self.infos = list(infos)
        self.router = router
        self.max_tokens = max_tokens
        self.outstanding = [0] * len(engines)
        self.eligible: list[list[int]] = [
            [e for e, info in enumerate(infos) if model in info.models] for model in requests.models
        ]
        self._routed: set[int] = set()  # requests the router chose for (it observes them)
        self._views: list[InstanceView | None] = [None] * len(self.engines)  # None: stale
        if router is not None and len(self.engines) > 1:
            for engine in self.engines:  # routers read loads between any two iterations
                engine.require_exact_loads()

    def route(self, i: int, now: Seconds) -> int | None:
        """Engine index for request ``i``; ``None`` after rejecting it."""
        choices = self.eligible[int(self.requests.model[i])]
        if len(choices) == 1:
            self._note_load(i, choices[0])
            return choices[0]
        if not choices:
            self.records.reject(i, "no_instance")
            return None
        if self.router is None:
            self.records.reject(i, "no_router")
            return None
        decision = self._ask_router(i, choices, now)
        e = self._apply(i, decision, choices)
        if e is not None:
            self._note_load(i, e)
        return e

    def _note_load(self, i: int, e: int) -> None:
        """Keep engine ``e``'s load as its view shows it (with one engine nobody looks)."""
        if len(self.engines) > 1:
            v = self._view(e)
            self.records.note_load(
                i, _seen(v.num_running), _seen(v.num_waiting),
                _seen(v.waiting_prefill_tokens), v.num_outstanding,
            )  # fmt: skip

    def _ask_router(self, i: int, choices: list[int], now: Seconds) -> RouteDecision:
        views = [self._view(e) for e in choices]
        assert self.router is not None
        return self.router.route(self.requests.request(i), views, now)

    def _apply(self, i: int, decision: RouteDecision, choices: list[int]) -> int | None:
        if decision.instance is None:
            self.records.reject(i, decision.reason or "router")
            return None
        by_id = {self.infos[e].id: e for e in choices}
        if decision.instance not in by_id:
            self.records.reject(i, f"router chose unknown instance {decision.instance!r}")
            return None
        if decision.max_tokens is not None:
            if decision.max_tokens < 1:
                self.records.reject(i, decision.reason or "budget")
                return None
            self.max_tokens[i] = decision.max_tokens
        self._routed.add(i)
        return by_id[decision.instance]

    def touched(self, e: int) -> None:
        """Engine ``e`` (or its outstanding count) may have changed: rebuild its view."""
        self._views[e] = None

    def _view(self, e: int) -> InstanceView:
        view = self._views[e]
        if view is None:
            view = self._views[e] = self._fresh_view(e)
        return view

    def _fresh_view(self, e: int) -> InstanceView:
        return instance_view(self.infos[e], self.engines[e].load(), self.outstanding[e])

    def finished(self, i: int) -> None:
        """Request ``i`` left the system: tell a learning router how it went."""
        if self.router is None or i not in self._routed:
            return
        self._routed.discard(i)
        rec, req = self.records, self.requests
        e = int(rec.instance[i])
        if rec.rejected[i] or e < 0:
            return
        arrival = float(req.arrival_at[i])
        self.router.observe(
            Outcome(
                request=req.request(i),
                instance=self.infos[e].id,
                ttft_s=float(rec.first_token_at[i]) - arrival,
                e2e_s=float(rec.finished_at[i]) - arrival,
                output_tokens=int(rec.output_tokens[i]),
                finished_at=float(rec.finished_at[i]),
            )
        )


def _seen(value: int | None) -> int:
    """A load field as the records keep it (-1: unknown; engines know all of them)."""
    return -1 if value is None else value
