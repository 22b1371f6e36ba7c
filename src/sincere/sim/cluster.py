"""A serving cluster: engines, the front door in front of them, and who serves what.

A request may go to the instances that serve its model (*eligible* ones). The cluster
is a thin driver of the :class:`~sincere.policy.front_door.FrontDoor` -- the very object
the gateway drives: it hands it read-only
:class:`~sincere.policy.router_base.InstanceView` snapshots of the eligible instances
and applies its answer. A route's ``max_tokens`` (a budget or router cap) is written to
the run's ``max_tokens`` array, which the engines read; a rejection is recorded with the
front door's code (``no_instance``, ``budget_exceeded``, ``deadline_unreachable``,
``priority_shed``, ``rejected``). Simulated instances have no in-flight cap, so the front
door never holds a request here. The chosen instance's load, as its view shows it, goes
into the records (the ``arrival_*`` columns) when the cluster has more than one instance.
With ``decisions`` every front-door call and outcome is logged
(:mod:`sincere.policy.decision_log`).

Shortcuts. Which work the cluster may skip is decided once, at construction, from what
its plug-ins declare they read (:class:`~sincere.policy.reads.Reads`: the front door's,
the decision log's, the extension's and any probe's), by :func:`sincere.sim.plan.plan_shortcuts`;
the frozen result is :attr:`Cluster.shortcuts`, the engines are configured by it then, and
nothing changes it afterwards. With ``passthrough`` (admission off, no budget in the run,
no decision log, no extension routing arrivals), a request with exactly one eligible
instance goes there without building views -- which is what the front door would answer
(its only candidate, uncapped); the common single-model case costs nothing.

Views are cached per instance: an engine's load only changes when the event loop adds
a request to it, advances it or drains it, and the loop says so (:meth:`Cluster.touched`,
which marks the engine's view stale), so at an arrival only the stale views are rebuilt
and the router gets the same snapshot objects as before for the others (with many
instances most do not change between two arrivals). The list of views handed to the
front door is a copy of the cached list, and the chosen instance is found by its id in a
dict: with many instances an arrival costs a few list copies and comprehensions over the
views, not a Python call per instance. The one exception is a
closed-form decode run, whose sequences gain a token per iteration without an event:
when someone reads token counts (``exact_tokens``), a view is moved on by
the iterations ended by the arrival (:meth:`~sincere.engine.base.Engine.progress_at`), as
a live engine reporting its load every iteration would show it.

When nothing at a decision reads an engine's reported load (``load_blind``: a router
such as ``round-robin`` or ``least-outstanding`` that declares it reads no load, no
admission, no decision log), the views show the load unknown -- as an instance that
reported nothing -- and an engine event that finishes no request leaves its view as it
was; the chosen instance's load for the records is then read from its engine directly.
The decisions, and so the results, are the same.

When the front door chooses by one count per instance (``by_count``: a router such as
``least-outstanding`` or ``join-shortest-queue`` by requests that declares it, no
admission, nothing else read or recorded at a decision), an arrival is placed from a list
of those counts -- the outstanding counts the cluster keeps anyway, or each engine's
waiting + running, refreshed from ``queue_sizes()`` only for the engines touched since
the last arrival -- with no request object and no view; the router answers as it would
over the views. When its answer is the first of the fewest (the front door's
``places_first_least``: least-outstanding, join-shortest-queue, prefix-aware without
block ids), the cluster finds that position itself, in one compiled pass
(:func:`sincere.sim.counts.first_least`), and the router is not called. A router that
reads, besides the count, only the request's prompt (``prefix-aware`` by outstanding over
requests with block ids: :attr:`~sincere.policy.front_door.FrontDoor.counts_by_with_prompt`)
is asked with the counts, the candidates' ids and the request's chained block keys
(:meth:`~sincere.policy.front_door.FrontDoor.place_by_prompt`), still with no request
object and no view. Each placement by counts is told to :attr:`Cluster.on_placed` when
set (the tests check every one against the router over fresh views that way: the
cluster is compiled, :mod:`sincere.native`, so it is watched, not subclassed).

When, besides, every answer is oblivious (no admission; a router such as
``round-robin`` or ``random`` whose answers do not depend on the instances' state),
nothing observes outcomes and no engine holds requests back (``apart``), every request
can be routed before any is served: the event loop does so, then runs each engine alone
over its own arrivals (:mod:`sincere.sim.runner`).

Outcomes are built only when something uses them (``observes``): admission's latency
history, a router that learns from them (its declared ``outcomes``) or the decision log.
Otherwise the front door's history would only pace holds, which never happen here.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from sincere.core.records import RecordArrays
from sincere.core.request import Request, RequestArrays
from sincere.core.types import InstanceId, Seconds
from sincere.engine.base import Engine
from sincere.engine.instance import InstanceInfo
from sincere.policy.decision_log import DecisionLog
from sincere.policy.front_door import FrontDoor, Reject, Route
from sincere.policy.reads import Reads
from sincere.policy.router_base import CountKey, InstanceView, Outcome
from sincere.sim.counts import first_least
from sincere.sim.engine_views import EngineViews
from sincere.sim.plan import Facts, Shortcuts, plan_shortcuts

if TYPE_CHECKING:
    from sincere.sim.disagg import PDPlan
    from sincere.sim.extension import Extension


@dataclass(frozen=True, slots=True)
class ClosedLoop:
    """A closed-loop workload as the loop runs it: ``concurrency`` clients whose next
    request arrives when their last one ends plus a think time (``think_s[j]`` after the
    ``j``-th request to end). The requests' arrival times are written as they arrive."""

    concurrency: int
    think_s: list[float]
    num_warmup: int = 0  # the first requests to arrive, left out of the summary's requests
    first_s: tuple[float, ...] = ()  # each client's first arrival (empty: all at 0)
    # through the front end's API processes (``intake_servers``): each request's intake,
    # taken in turn by the loop (empty: none, or folded into ``first_s`` and ``think_s``)
    intake_s: list[float] = field(default_factory=list)
    intake_servers: int = 0
    sent: list[float] = field(default_factory=list)  # each request's send, as the loop runs


def eligible_instances(models: Sequence[str], infos: Sequence[InstanceInfo]) -> list[list[int]]:
    """Per model, the positions of the instances that serve it."""
    return [[e for e, info in enumerate(infos) if model in info.models] for model in models]


class PromptPlacement:
    """Arrivals by count over requests with block ids, for a front door whose router reads
    their keys as well (``counts_by_with_prompt``): its answer from the candidates' counts
    and ids and the request's chained block keys, no request object built."""

    def __init__(self, door: FrontDoor, requests: RequestArrays, infos: list[InstanceInfo]) -> None:
        self.door = door
        self.requests = requests
        self.ids = [info.id for info in infos]
        self.prompt_tokens: list[int] = requests.prompt_tokens.tolist()

    def place(self, i: int, choices: list[int] | None, counts: list[int]) -> int:
        """Request ``i``'s position among ``choices`` (two or more; ``None``: every
        instance), whose counts are ``counts``."""
        ids = self.ids if choices is None else [self.ids[k] for k in choices]
        reqs = self.requests
        keys = reqs.block_keys(i)  # (the engine asks for the same list next: kept)
        return self.door.place_by_prompt(
            counts, ids, keys, self.prompt_tokens[i], reqs.block_tokens
        )


class Cluster:
    """Engines plus the front door; the simulator's event loop drives it."""

    def __init__(
        self,
        requests: RequestArrays,
        records: RecordArrays,
        engines: Sequence[Engine],
        infos: Sequence[InstanceInfo],
        front_door: FrontDoor | None,
        max_tokens: npt.NDArray[np.int64],
        decisions: DecisionLog | None = None,
        closed: ClosedLoop | None = None,
        *,
        eligible: list[list[int]] | None = None,
        extension: Extension | None = None,
        pd: PDPlan | None = None,
        probes: Sequence[Reads] = (),
    ) -> None:
        self.requests = requests
        self.closed = closed
        self.records = records
        self.engines = list(engines)
        self.infos = list(infos)
        self.front_door = front_door
        self.max_tokens = max_tokens
        self.decisions = decisions
        self.outstanding = [0] * len(engines)
        # the instances each model may go to (by default those that serve it)
        self.eligible = eligible_instances(requests.models, infos) if eligible is None else eligible
        self._eligible_all: list[list[int]] | None = None  # before any set_routable
        self.extension = extension  # a timed feature on the loop (None: none)
        # prefill/decode roles and links when some instance has one (sim.disagg)
        self.pd = pd
        self.shortcuts = _plan(self, probes)
        shortcuts = self.shortcuts  # (copied into plain fields: read at every arrival)
        self._passthrough = shortcuts.passthrough
        self._exact_tokens = shortcuts.exact_tokens
        self._load_blind = shortcuts.load_blind
        self._observes = shortcuts.observes
        self._all_open = shortcuts.all_open
        self._counts_by = shortcuts.by_count
        # by count over requests with block ids, a router that reads their keys as well
        self._by_prompt: PromptPlacement | None = None
        door = front_door
        if self._counts_by and requests.block_ids and door is not None and not door.counts_by:
            self._by_prompt = PromptPlacement(door, requests, self.infos)
        # by count, the front door's answer is the first smallest count: found here
        self._first_least = (
            front_door is not None and front_door.places_first_least and not self._by_prompt
        )
        # iteration ends inside engines' pieces of work, as engines report them
        # (``summed`` pacing; the loop empties it)
        self.inner_ends: list[float] = []
        exact = shortcuts.engine_pacing == "exact"
        summed = shortcuts.engine_pacing == "summed"
        for engine in self.engines:
            engine.configure(exact_loads=exact, inner_ends=self.inner_ends if summed else None)
        # requests the front door routed (it observes them), with the request it saw
        self._routed: dict[int, Request] = {}
        num = len(self.engines)
        self.views = EngineViews(
            self.engines,
            self.infos,
            self.outstanding,
            load_blind=self._load_blind,
            exact_tokens=self._exact_tokens,
        )
        self._stale = self.views.stale  # (the same set: touched at every engine event)
        self._all_engines = self.views.all_engines
        # per model, whether every engine may take its requests (kept by set_routable)
        self._every = [choices == self._all_engines for choices in self.eligible]
        # told of each arrival placed by counts, ``(request, engine)``: a check or a
        # trace beside the run (the tests ask the router over fresh views); None: nobody
        self.on_placed: Callable[[int, int], None] | None = None
        self._engine_of: dict[InstanceId, int] = {info.id: e for e, info in enumerate(infos)}
        # by_count "requests": each engine's waiting + running as its load reports it,
        # refreshed for the engines touched since
        self._queued = [0] * num
        by_queues = shortcuts.by_count == "requests"
        self._queued_stale: set[int] = set(range(num)) if by_queues else set()
        # each request's model, as plain ints (read at every arrival)
        self._model_of: list[int] = requests.model.tolist()

    @property
    def watches_engines(self) -> bool:
        """Whether the loop must say which engines changed (:meth:`touched`): not when
        arrivals are placed by counts, which the loop keeps itself (outstanding counts, or
        :attr:`queued_by_loop`), for then no view is ever read."""
        return self._counts_by is None

    @property
    def queued_by_loop(self) -> list[int] | None:
        """``by_count`` by ``requests``: each engine's waiting + running, the list the
        loop writes after each of its calls that can change an engine (add, advance,
        drain), as the engine's ``queue_sizes()`` says; ``None`` otherwise. Others that
        change an engine (an extension) still say so by :meth:`touched`."""
        return self._queued if self._counts_by == "requests" else None

    def route(self, i: int, now: Seconds) -> int | None:
        """Engine index for request ``i``; ``None`` after rejecting it."""
        if self._counts_by is not None:
            return self._route_by_count(i)
        e = self.assign(i, now)
        if e is not None:
            self._note_load(i, e)
        return e

    def _route_by_count(self, i: int) -> int | None:
        """:meth:`route` with ``by_count``: :meth:`assign` and :meth:`_note_load` in one,
        with no call that cannot change the answer (the same checks, in the same order;
        the front door places the request from the candidates' counts alone)."""
        m = self._model_of[i]
        choices = self.eligible[m]
        if len(choices) == 1:  # (by_count implies passthrough)
            e = choices[0]
        elif not choices:
            self.records.reject(i, "no_instance")
            return None
        else:
            assert self.front_door is not None
            counts = self.outstanding if self._counts_by == "outstanding" else self.queued_counts()
            every = self._every[m]
            if not every:
                counts = [counts[k] for k in choices]
            if self._first_least:
                e = choices[first_least(counts)]
            elif self._by_prompt is not None:
                e = choices[self._by_prompt.place(i, None if every else choices, counts)]
            else:
                picked = self.front_door.place_by_count(counts)
                assert picked is not None  # two candidates or more: the router chooses one
                e = choices[picked]
        if len(self.engines) > 1:  # no view: the load as the engine reports it
            running, waiting, tokens = self.engines[e].queue_sizes()
            self.records.note_load(i, running, waiting, tokens, self.outstanding[e])
        if self.on_placed is not None:
            self.on_placed(i, e)
        return e

    def queued_counts(self) -> list[int]:
        """Each engine's waiting + running as its load reports it (``by_count`` by
        ``requests``), brought up to date for the engines touched since the last call."""
        if self._queued_stale:
            self._refresh_queued()
        return self._queued

    def assign_all(self) -> list[int]:
        """Every request's engine index in arrival order (-1: rejected), routed before
        any is served (``apart``). A run of consecutive requests for one model is placed
        in one call when the front door can (:meth:`FrontDoor.place_many`), else
        request by request as at arrivals."""
        n = len(self.requests)
        engine_of = [-1] * n
        arrival = self.requests.arrival_at
        model = self.requests.model
        starts = [0, *(np.flatnonzero(np.diff(model)) + 1).tolist()] if n else []
        for start, end in zip(starts, [*starts[1:], n], strict=True):
            choices = self.eligible[int(model[start])]
            picks: list[int] | None = None
            if self._passthrough and len(choices) == 1:
                picks = [0] * (end - start)
            elif self._passthrough and self.front_door is not None and len(choices) > 1:
                views = self.views_at(choices, float(arrival[start]))
                picks = self.front_door.place_many(end - start, views)
            if picks is not None:
                engine_of[start:end] = [choices[k] for k in picks]
                continue
            for i in range(start, end):
                e = self.assign(i, float(arrival[i]))
                engine_of[i] = -1 if e is None else e
        return engine_of

    def assign(self, i: int, now: Seconds) -> int | None:
        """Engine index for request ``i`` (``None`` after rejecting it), without noting
        the engine's load in the records: with ``apart`` the loop routes the whole trace
        first and notes each load when the request reaches its engine."""
        choices = self.eligible[int(self.requests.model[i])]
        if len(choices) == 1 and self._passthrough:
            return choices[0]
        if not choices:
            self.records.reject(i, "no_instance")
            return None
        if self.front_door is None:
            self.records.reject(i, "no_router")
            return None
        return self._decide(i, choices, now)  # (by counts: _route_by_count, not here)

    def _refresh_queued(self) -> None:
        """Waiting + running of the engines touched since the last arrival, as their
        views would show them: ``queue_sizes()``, the fields of ``load()`` without the
        rest of the report (the one difference, decodes whose KV came from a prefill
        instance, needs P/D, whose extension routes arrivals itself: no ``by_count``)."""
        queued, engines = self._queued, self.engines
        for e in self._queued_stale:
            running, waiting, _ = engines[e].queue_sizes()
            queued[e] = waiting + running
        self._queued_stale.clear()

    def _decide(self, i: int, choices: list[int], now: Seconds) -> int | None:
        """Ask the front door about request ``i`` and apply its answer."""
        assert self.front_door is not None
        views = self.views_at(choices, now)
        request = self.requests.request(i)
        decision = self.front_door.decide(request, views, now, all_open=self._all_open)
        if self.decisions is not None:
            self.decisions.call("decide", request, views, now, decision)
        if isinstance(decision, Reject):
            self.records.reject(i, decision.code)
            return None
        assert isinstance(decision, Route), "simulated instances have no in-flight cap"
        if decision.max_tokens is not None:
            self.max_tokens[i] = decision.max_tokens
        if self._observes:
            self._routed[i] = request
        return self._engine_of[decision.instance]

    def _note_load(self, i: int, e: int) -> None:
        """Keep engine ``e``'s load as its view shows it (with one engine nobody looks)."""
        if len(self.engines) > 1:
            if self._load_blind or self._counts_by is not None:  # no view: ask the engine
                running, waiting, tokens = self.engines[e].queue_sizes()
                self.records.note_load(i, running, waiting, tokens, self.outstanding[e])
                return
            v = self.views.view(e)
            self.records.note_load(
                i, _seen(v.num_running), _seen(v.num_waiting),
                _seen(v.waiting_prefill_tokens), v.num_outstanding,
            )  # fmt: skip

    def touched(self, e: int) -> None:
        """Engine ``e`` (or its outstanding count) may have changed: rebuild its view.
        With ``load_blind`` only a change of outstanding count needs telling."""
        self._stale.add(e)
        if self._counts_by == "requests":
            self._queued_stale.add(e)

    def set_routable(self, e: int, routable: bool) -> None:
        """Whether the front door may choose engine ``e`` (an instance that joins or leaves
        the router's view, as an autoscaler starts or stops it): ``e`` is put back into
        (kept in order) or taken out of the eligible instances of every model it serves.
        Requests already at ``e`` stay there."""
        if self._eligible_all is None:
            self._eligible_all = [list(choices) for choices in self.eligible]
        for m, every in enumerate(self._eligible_all):
            if e not in every:
                continue
            choices = self.eligible[m]
            if routable and e not in choices:
                insort(choices, e)
            elif not routable and e in choices:
                choices.remove(e)
            self._every[m] = choices == self._all_engines

    def serves(self, m: int) -> list[int]:
        """The instances that serve model ``m``, routable now or not."""
        return (self.eligible if self._eligible_all is None else self._eligible_all)[m]

    def engine_index(self, instance: InstanceId) -> int:
        """The engine of instance ``instance`` (its position in ``engines``)."""
        return self._engine_of[instance]

    def views_at(self, choices: list[int], now: Seconds) -> list[InstanceView]:
        """The views of ``choices`` at ``now`` (:meth:`EngineViews.at`): a fresh list the
        front door may keep."""
        return self.views.at(choices, now)

    def finished(self, i: int) -> None:
        """Request ``i`` left the system: tell the front door how it went."""
        request = self._routed.pop(i, None)
        if request is None:
            return
        door, rec = self.front_door, self.records
        e = int(rec.instance[i])
        if door is None or rec.rejected[i] or e < 0:
            return
        if self.decisions is None and not door.wants_outcome(i):
            return
        outcome = self._outcome(i, e, request)
        door.observe(outcome)
        if self.decisions is not None:
            self.decisions.outcome(outcome)

    def _outcome(self, i: int, e: int, request: Request) -> Outcome:
        arrival = float(self.requests.arrival_at[i])
        return Outcome.of_record(self.records, i, request, self.infos[e].id, arrival)


def _plan(cluster: Cluster, probes: Sequence[Reads]) -> Shortcuts:
    """``cluster``'s shortcuts, from its plug-ins' declarations (:mod:`sincere.sim.plan`)."""
    door, ext, decisions = cluster.front_door, cluster.extension, cluster.decisions
    facts = Facts(
        num_engines=len(cluster.engines),
        has_front_door=door is not None,
        screens=door is not None and door.screens,
        no_budgets=bool(np.isnan(cluster.requests.budget_usd).all()),
        all_open=all(info.max_in_flight is None for info in cluster.infos),
        holds_back=any(engine.holds_back for engine in cluster.engines),
        closed=cluster.closed is not None,
        door_counts_by=_counts_by(door, bool(cluster.requests.block_ids)),
    )
    return plan_shortcuts(
        facts,
        None if door is None else door.reads,
        None if decisions is None else decisions.reads,
        None if ext is None else ext.needs,
        probes,
    )


def _counts_by(door: FrontDoor | None, content: bool) -> CountKey | None:
    """The count ``door`` can place the run's requests by (``content``: some carry block
    ids, which a prefix router reads with the count; without, it compares loads alone)."""
    if door is None:
        return None
    if content:
        return door.counts_by or door.counts_by_with_prompt
    return door.counts_by_without_content


def _seen(value: int | None) -> int:
    """A load field as the records keep it (-1: unknown; engines know all of them)."""
    return -1 if value is None else value
