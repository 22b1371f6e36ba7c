"""The simulator's one event loop: arrivals, engine wake-ups and extensions' events.

This module holds the simulator's event queue and is the only one that pops it: one heap
of ``(time, priority, sequence, kind, index)`` entries, the sequence numbering pushes so
that among events due at one time a smaller priority comes first, then the one pushed
first (SimPy's core, without processes). The heap is the loop's own list, pushed and
popped with :mod:`heapq` inside the compiled loop, not behind a queue object whose every
push and pop would be a call into interpreted code. Two kinds are its own: ``ARRIVAL``
(priority 0) and ``ENGINE`` (an engine's wake-up, the end of its work in progress;
priority 1), so a request arriving at the very moment an iteration ends joins the next
iteration. Arrivals are fed lazily (only the next one is queued). Each engine has at
most one live wake-up; an older one left in the queue is recognised as stale and skipped.
A feature with timing of its own is an :class:`~sincere.sim.extension.Extension`
(prefill/decode disaggregation is one): it declares further kinds with their priorities
and handlers, may take arrivals over, and sees what each engine wake-up finished; the loop
dispatches its events and keeps the books for everyone.

The books, kept once (:class:`_Loop`): the number of requests in the system and its
integral over time (for Little's law checks), the events handled, progress reports, the
drain (when the arrivals are exhausted and the queue empties, engines that hold requests
back -- request-level batching -- serve them), and the requests left unfinished at the
end. The two specialised paths below are inlined for speed, and write into the same books.

Speed: with a single engine the heap is not needed. The loop compares the next
arrival with the engine's next event directly (an arrival first on a tie, as the
priorities say), which handles exactly the events the heap would, in the same
order, without pushing and popping stale wake-ups.

Engines apart. When the cluster's routing cannot depend on how the engines serve
(``Cluster.shortcuts.apart``, planned once by :mod:`sincere.sim.plan`: an oblivious router
such as round-robin or random, no admission, no decision log, no extension, no outcome
anyone learns from, no engine holding requests back), the
loop routes the whole trace first and then runs each engine alone over its own
arrivals, as the single-engine loop does: an engine's events are then exactly those it
has under the heap, in the same order (nothing else ever touched it), and one engine's
state stays in the CPU's caches for its whole run instead of 64 engines' taking turns.
The time integral is the heap's too, bit for bit: every event time (arrivals, engine
events, iteration ends inside pieces) is collected with its change of the number in
the system, sorted, and summed in time order (:func:`_integral`).

Closed loop (``Cluster.closed``). A closed workload's arrivals depend on completions,
so it always takes the heap loop (whatever the number of engines): the ``concurrency``
first requests arrive at 0 (or after their time in the front end, ``ClosedLoop.first_s``);
each request that ends (finished, or rejected at the front door or by an engine) frees its
client, whose next request arrives after the next think time. Every such arrival is pushed
onto the queue at once (at most ``concurrency`` are pending, and none is earlier than the
event that made it), and the request taking it is the next by number, so requests are
numbered in arrival order and the arrival times written into the request table stay
sorted. With the front end's API processes (``intake_servers``) a client's request is
first a *send* on the queue (index ``SEND``); taken in time order, each goes through the
first process free (``ClosedClients.through``) and arrives when its intake is done, never
before the one sent before it, so the numbering stays that of the sends and of the arrivals.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from heapq import heappop, heappush
from typing import Any, Final

import numpy as np

from sincere.core.records import RecordArrays
from sincere.core.types import Seconds
from sincere.engine.base import Engine
from sincere.perf.execution import FrontEnd, IntakeQueue
from sincere.sim.cluster import ClosedLoop, Cluster
from sincere.sim.extension import Handler

# Final: compiled, the loop reads them as constants rather than from the module's globals
ARRIVAL: Final = 0  # event kind: the next request arrives (index: the send's number)
SEND: Final = -1  # an arrival's index when it is a client's send, before the API processes
ENGINE: Final = 1  # event kind: an engine's wake-up (index: the engine)
ARRIVAL_PRIORITY: Final = 0  # an arrival at an iteration's end joins the next iteration
ENGINE_PRIORITY: Final = 1
Progress = Callable[[int, int], None]  # (arrivals handled, total)


@dataclass(frozen=True, slots=True)
class RunLog:
    """What the loop measured besides the per-request records."""

    end_at: Seconds  # time of the last event
    num_in_system_area: float  # integral of requests in the system over [0, end_at]
    num_events: int  # events handled (stale wake-ups excluded)
    num_unfinished: int  # requests marked unfinished at the end (0 in a sound run)


class ClosedClients:
    """A closed loop's clients: when each sends its next request."""

    def __init__(self, closed: ClosedLoop, num_requests: int) -> None:
        self.concurrency = closed.concurrency
        self.think_s = closed.think_s
        self.num_requests = num_requests
        self.num_ended = 0  # requests that have ended (each frees its client)
        self.num_sent = 0  # sends put on the queue
        self.first_s = closed.first_s  # each client's first send (empty: all at 0)
        # through the front end's API processes: each request's intake and the processes'
        # line; the sends are written down (``ClosedLoop.sent``) and the loop takes them in
        # time order as sends (``SEND``), each then through a process
        self.intake_s = closed.intake_s
        self.queued = bool(closed.intake_s)
        self.line = IntakeQueue(FrontEnd(intake_servers=closed.intake_servers))
        self.sent = closed.sent
        self.num_through = 0  # sends taken through the processes so far
        if self.queued:
            self.sent[:] = [math.nan] * num_requests

    def first_sends(self) -> list[Seconds]:
        """When each client sends its first request (one each), or, without API processes,
        when it reaches the engine: at 0, or after its time in the front end."""
        first = min(self.concurrency, self.num_requests)
        self.num_sent = first
        starts = self.first_s
        return [starts[k] if starts else 0.0 for k in range(first)]

    def next_send_at(self, ended_at: Seconds) -> Seconds | None:
        """A request ended at ``ended_at``: when its client sends the next, or, without API
        processes, when that one reaches the engine (``None``: every request has been sent)."""
        j = self.num_ended
        self.num_ended += 1
        if self.num_sent >= self.num_requests:
            return None
        self.num_sent += 1
        return ended_at + self.think_s[j]

    def through(self, sent: Seconds) -> tuple[int, Seconds]:
        """The next request in send order, sent at ``sent``, through the first API process
        free: (its number, when it reaches the engine; never before the one sent before
        it)."""
        k = self.num_through
        self.num_through += 1
        self.sent[k] = sent
        return k, self.line.take(sent, self.intake_s[k])


class _Loop:
    """State of one run; ``run`` is the whole algorithm."""

    def __init__(
        self,
        cluster: Cluster,
        progress: Progress | None,
        every: int,
    ) -> None:
        self.cluster = cluster
        self.arrivals = cluster.requests.arrival_at.tolist()
        # the event queue: (time, priority, sequence, kind, index), and the sequence
        self.heap: list[tuple[float, int, int, int, int]] = []
        self.seq = 0
        self.wake: list[float | None] = [None] * len(cluster.engines)
        # the books: requests in the system, its integral over time, events handled
        self.in_system = 0
        self.area = 0.0
        self.last_at = 0.0
        self.num_events = 0
        self.progress = progress
        self.every = every
        self.clients = (
            None if cluster.closed is None else ClosedClients(cluster.closed, len(self.arrivals))
        )
        self.extension = cluster.extension
        self.priorities = [ARRIVAL_PRIORITY, ENGINE_PRIORITY]  # by event kind
        self.handlers: list[Handler] = []  # by event kind, past ENGINE
        self.load_blind = cluster.shortcuts.load_blind  # only outstanding counts make views stale
        self.watches = cluster.watches_engines  # the cluster hears of changed engines
        self.queue_counts = cluster.queued_by_loop  # or the loop keeps each engine's count
        # every model is served by engine 0 alone and nothing screens requests: routing
        # cannot choose, cap or reject
        self.always_first = cluster.shortcuts.passthrough and all(
            choices == [0] for choices in cluster.eligible
        )

    def run(self) -> RunLog:
        if self.extension is not None:
            self.extension.attach(self)
            self._run_heap()
        elif self.clients is not None:
            self._run_heap()  # completions feed arrivals (module docstring)
        elif len(self.cluster.engines) == 1:
            self._run_single()
        elif self.cluster.shortcuts.apart:
            self._run_apart()
        else:
            self._run_heap()
        unfinished = _mark_unfinished(self.cluster.records)
        return RunLog(self.last_at, self.area, self.num_events, unfinished)

    # ------------------------------------------------- what an extension may call (Sim)

    def add_kind(self, priority: int, handler: Handler) -> int:
        """A new event kind handled by ``handler``, at ``priority`` among events at one time."""
        self.priorities.append(priority)
        self.handlers.append(handler)
        return len(self.priorities) - 1

    def schedule(self, at: Seconds, kind: int, index: int) -> None:
        """Put an event of ``kind`` about ``index`` on the queue."""
        self._push(at, self.priorities[kind], kind, index)

    def _push(self, at: float, priority: int, kind: int, index: int) -> None:
        """Put an event on the queue (numbered after every event pushed before it)."""
        self.seq += 1
        heappush(self.heap, (at, priority, self.seq, kind, index))

    def place(self, e: int, i: int, at: Seconds) -> None:
        """Give request ``i`` to engine ``e`` and wake it when it needs to."""
        cluster = self.cluster
        cluster.outstanding[e] += 1
        engine = cluster.engines[e]
        engine.add(i, at)
        if self.watches:
            cluster.touched(e)
        _keep_count(self.queue_counts, e, engine)
        due = engine.next_event_at()  # (``reschedule``, inline: once per arrival)
        if due is not None and due != self.wake[e]:
            self.wake[e] = due
            self._push(due, ENGINE_PRIORITY, ENGINE, e)

    def turn_away(self, i: int, at: Seconds) -> None:
        """Request ``i`` left at its arrival, rejected (recorded): out of the books."""
        self.in_system -= 1
        self.cluster.finished(i)
        if self.clients is not None:
            self._clients_free(1, at)

    def reschedule(self, e: int) -> None:
        """Engine ``e`` may need a new wake-up (an older one, if any, goes stale)."""
        at = self.cluster.engines[e].next_event_at()
        if at is not None and at != self.wake[e]:
            self.wake[e] = at
            self._push(at, ENGINE_PRIORITY, ENGINE, e)

    # ------------------------------------------------------------- the loops

    def _run_single(self) -> None:
        """The loop for one engine: no event queue (see the module docstring)."""
        engine = self.cluster.engines[0]
        next_event_at, advance, add = engine.next_event_at, engine.advance, engine.add
        arrivals, n, k = self.arrivals, len(self.arrivals), 0
        area, last_at, num_events = self.area, self.last_at, self.num_events
        outstanding, direct = self.cluster.outstanding, self.always_first
        quiet = not self.cluster.shortcuts.observes  # nobody learns of finished requests
        progress, every = self.progress, self.every
        while True:
            due = next_event_at()
            if k < n and (due is None or arrivals[k] <= due):
                at = arrivals[k]
                area += self.in_system * (at - last_at)
                if direct:
                    self.in_system += 1
                    outstanding[0] += 1
                    add(k, at)
                else:
                    self._arrive_single(engine, k, at)
                k += 1
                if progress is not None and k % every == 0:
                    progress(k, n)
            elif due is not None:
                at = due
                area += self.in_system * (at - last_at)
                done = advance(at)
                if done:
                    self.in_system -= len(done)
                    outstanding[0] -= len(done)
                    if not quiet:
                        self._tell_finished(done)
            else:
                self.area, self.last_at, self.num_events = area, last_at, num_events
                if not self._drain_single(engine):
                    return
                continue
            last_at = at
            num_events += 1

    def _arrive_single(self, engine: Engine, i: int, at: float) -> None:
        self.in_system += 1
        if not self.always_first and self.cluster.route(i, at) is None:
            self.in_system -= 1
            self.cluster.finished(i)
            return
        self.cluster.outstanding[0] += 1
        engine.add(i, at)

    def _tell_finished(self, done: list[int]) -> None:
        for i in done:
            self.cluster.finished(i)

    def _drain_single(self, engine: Engine) -> bool:
        """Arrivals and events exhausted: let an engine holding requests back serve them."""
        if self.in_system <= 0:
            return False
        engine.drain(self.last_at)
        return engine.next_event_at() is not None

    def _run_heap(self) -> None:
        """The general loop: arrivals, every engine's wake-up and the extension's events on
        one event queue, popped here and nowhere else.

        An engine event is handled inline (the hot path with many instances): advance,
        tell the extension and the cluster, reschedule; an arrival through :meth:`_arrive`;
        an extension's event by the handler of its kind.

        When nothing reads the engines' loads between events (``summed`` pacing, planned
        with ``load_blind``), engines run identical prefill iterations as one piece
        (``Engine.configure(inner_ends=...)``) and report the iteration ends inside it;
        the loop adds those to its time integral in time order (:meth:`_pass_inner`), so
        the sums are those of one event per iteration.
        """
        n = len(self.arrivals)
        heap, wake, arrivals = self.heap, self.wake, self.arrivals
        cluster, extension, handlers = self.cluster, self.extension, self.handlers
        engines, outstanding = cluster.engines, cluster.outstanding
        touched, finished = cluster.touched, cluster.finished
        watches = self.watches
        track_load = watches and not self.load_blind
        counts = self.queue_counts  # by_count by requests: each engine's count, kept here
        observes = cluster.shortcuts.observes  # finished requests are told to the cluster
        progress, every = self.progress, self.every
        inner: list[float] = []  # a heap of iteration ends inside engines' pieces of work
        started = cluster.inner_ends  # such ends, as engines report them (``summed`` pacing)
        closed = self.clients is not None
        if self.clients is not None:
            queued = self.clients.queued  # sends first, then through the API processes
            for k, send_at in enumerate(self.clients.first_sends()):
                self._push(send_at, ARRIVAL_PRIORITY, ARRIVAL, SEND if queued else k)
        elif n:
            self._push(arrivals[0], ARRIVAL_PRIORITY, ARRIVAL, 0)
        next_arrival = 0
        while heap or self._drain():
            at, _, _, kind, e = heappop(heap)
            if kind == ARRIVAL and e == SEND:  # a client's send: through an API process
                assert self.clients is not None
                k, reach = self.clients.through(at)
                self._push(reach, ARRIVAL_PRIORITY, ARRIVAL, k)
                continue
            if inner and inner[0] <= at:
                self._pass_inner(inner, at)
            if kind == ENGINE and wake[e] != at:
                continue  # stale wake-up
            self.area += self.in_system * (at - self.last_at)
            self.last_at = at
            self.num_events += 1
            if kind == ARRIVAL:
                if closed:
                    self._arrive_closed(next_arrival, at)
                else:
                    self._arrive(next_arrival, at)
                next_arrival += 1
                if not closed and next_arrival < n:
                    self._push(arrivals[next_arrival], ARRIVAL_PRIORITY, ARRIVAL, next_arrival)
                if progress is not None and next_arrival % every == 0:
                    progress(next_arrival, n)
                continue
            if kind != ENGINE:
                handlers[kind - 2](e, at)
                continue
            wake[e] = None
            engine = engines[e]
            done = engine.advance(at)
            if started:
                for end in started:
                    heappush(inner, end)
                started.clear()
            if extension is not None:
                done = extension.advanced(e, at, done)
            if done:
                self.in_system -= len(done)
                outstanding[e] -= len(done)
                if watches:
                    touched(e)
                if observes:
                    for i in done:
                        finished(i)
                if closed:
                    self._clients_free(len(done), at)
            elif track_load:
                touched(e)
            if counts is not None:
                _keep_count(counts, e, engine)
            due = engine.next_event_at()
            if due is not None:  # wake[e] is None: always a new wake-up
                wake[e] = due
                self._push(due, ENGINE_PRIORITY, ENGINE, e)

    def _run_apart(self) -> None:
        """Route every request, then run each engine alone (see the module docstring);
        :func:`_engines_apart` does it and hands back the books."""
        books = _engines_apart(self.cluster, self.arrivals, self.progress, self.every)
        self.area, self.last_at, self.in_system, self.num_events = books

    def _pass_inner(self, inner: list[float], at: float) -> None:
        """Iteration ends up to ``at`` inside pieces of work: integrate up to each, in order."""
        while inner and inner[0] <= at:
            end = heappop(inner)
            self.area += self.in_system * (end - self.last_at)
            self.last_at = end
            self.num_events += 1

    def _arrive(self, i: int, at: float) -> None:
        """Request ``i`` arrives: the extension's, if it takes it, else routed."""
        self.in_system += 1
        if self.extension is not None and self.extension.arrive(i, at):
            return
        e = self.cluster.route(i, at)
        if e is None:
            self.turn_away(i, at)
        else:
            self.place(e, i, at)

    def _arrive_closed(self, i: int, at: float) -> None:
        """Closed loop: request ``i`` takes this arrival (its time written down)."""
        self.arrivals[i] = at
        self.cluster.requests.arrival_at[i] = at
        self._arrive(i, at)

    def _clients_free(self, num: int, at: float) -> None:
        """Closed loop: ``num`` requests ended at ``at``; their clients send their next."""
        assert self.clients is not None
        for _ in range(num):
            send_at = self.clients.next_send_at(at)
            if send_at is not None:
                k = SEND if self.clients.queued else self.clients.num_sent - 1
                self._push(send_at, ARRIVAL_PRIORITY, ARRIVAL, k)

    def _drain(self) -> bool:
        """No events left: let engines holding requests back serve them."""
        if self.in_system <= 0:
            return False
        for e, engine in enumerate(self.cluster.engines):
            engine.drain(self.last_at)
            self.cluster.touched(e)
            _keep_count(self.queue_counts, e, engine)
            self.reschedule(e)
        return len(self.heap) > 0


def _keep_count(counts: list[int] | None, e: int, engine: Engine) -> None:
    """``by_count`` by requests (``counts``, else None): engine ``e``'s waiting + running
    as it reports them, written after a call that may have changed it."""
    if counts is not None:
        running, waiting, _ = engine.queue_sizes()
        counts[e] = waiting + running


def _mark_unfinished(records: RecordArrays) -> int:
    """Requests neither finished nor rejected when the loop ends, rejected ``unfinished``."""
    left = records.unfinished()
    for i in left.tolist():
        records.reject(int(i), "unfinished")
    return len(left)


def _engines_apart(
    cluster: Cluster, arrivals: list[float], progress: Progress | None, every: int
) -> tuple[float, float, int, int]:
    """Route every request of ``cluster`` arriving at ``arrivals``, then run each engine
    alone over its own; the books as :func:`_integral` returns them.

    The records get each request's engine load as the heap loop notes it: read from
    the engine when the request reaches it, with the requests outstanding there.
    """
    n = len(arrivals)
    mine: list[list[int]] = [[] for _ in cluster.engines]
    for i, e in enumerate(cluster.assign_all()):
        if e >= 0:
            mine[e].append(i)
    handled = n - sum(len(ids) for ids in mine)  # the rejected, at once
    # every engine's events as arrays, made as soon as the engine is done (8 bytes an
    # event, not a float object in a list kept for the whole run): their times, their
    # change of the number in the system, and the iteration ends inside pieces
    event_at: list[Any] = []
    left: list[Any] = []
    inner_at: list[Any] = []
    inner = cluster.inner_ends  # (the engine being run reports them here)
    for e, ids in enumerate(mine):
        ends, ended, handled = _engine_alone(cluster, e, ids, arrivals, handled, progress, every)
        event_at.append(ends)
        left.append(ended)
        inner_at.append(np.array(inner, np.float64))
        inner.clear()
    # laid out as ever (arrivals, every engine's events, every iteration end), so that
    # the stable sort orders events at one time as it always did
    joined = np.zeros(n, np.int64)  # the change at each arrival: 1 if it reached an engine
    for ids in mine:
        joined[ids] = 1
    times = np.concatenate((np.array(arrivals, np.float64), *event_at, *inner_at))
    num_inner = sum(len(ends) for ends in inner_at)
    event_at.clear()
    inner_at.clear()
    change = np.concatenate((joined, *left, np.zeros(num_inner, np.int64)))
    left.clear()
    return _integral(times, change)


def _engine_alone(
    cluster: Cluster,
    e: int,
    ids: list[int],
    arrivals: list[float],
    handled: int,
    progress: Progress | None,
    every: int,
) -> tuple[Any, Any, int]:
    """Run engine ``e`` alone over its requests ``ids``; its events' times, each one's
    change of the number in the system (minus the requests it finished), and the
    arrivals handled so far in the whole run (``handled`` before, for progress)."""
    engine = cluster.engines[e]
    next_event_at, advance, add = engine.next_event_at, engine.advance, engine.add
    queue_sizes, note = engine.queue_sizes, cluster.records.note_load
    n = len(arrivals)
    outstanding, k, m = 0, 0, len(ids)
    ends: list[float] = []
    ended: list[int] = []
    while True:
        due = next_event_at()
        if k < m and (due is None or arrivals[ids[k]] <= due):
            i = ids[k]
            running, waiting, tokens = queue_sizes()
            note(i, running, waiting, tokens, outstanding)
            outstanding += 1
            add(i, arrivals[i])
            k += 1
            handled += 1
            if progress is not None and handled % every == 0:
                progress(handled, n)
        elif due is not None:
            done = advance(due)
            ends.append(due)
            ended.append(-len(done))
            outstanding -= len(done)
        else:
            break  # no event and no arrival left: nothing is held back
    cluster.outstanding[e] = outstanding
    return np.array(ends, np.float64), np.array(ended, np.int64), handled


def _integral(at: Any, change: Any) -> tuple[float, float, int, int]:
    """The integral over time of the number in the system, given every event's time and
    its change of that number (float64 and int64 arrays, reused in place), summed as the
    heap loop sums it: event by event in time order, each interval times the number
    before the event. Returns ``(area, time of the last event, number left in the system,
    number of events)``.

    Events at one time may come in any order: between them the interval is zero, which
    adds exactly nothing, and the number after them is the same.
    """
    num = len(at)
    if not num:
        return 0.0, 0.0, 0, 0
    order: Any = np.argsort(at, kind="stable")
    times = at[order]
    after = change[order]
    order = None  # (freed: the arrays are as long as the run has events)
    np.cumsum(after, out=after)
    steps = np.diff(times, prepend=0.0)  # each interval, ending at its event
    end = float(times[-1])
    times = None
    steps[0] = 0.0  # nobody in the system before the first event
    steps[1:] *= after[:-1]  # times the number before the event (int64 to float64, exact)
    np.cumsum(steps, out=steps)  # sequential: the heap loop's additions in its order
    return float(steps[-1]), end, int(after[-1]), num


def run_events(
    cluster: Cluster, progress: Progress | None = None, progress_every: int = 10_000
) -> RunLog:
    """Run every request of ``cluster`` to completion (or rejection)."""
    log = _Loop(cluster, progress, max(1, progress_every)).run()
    if progress is not None:
        progress(len(cluster.requests), len(cluster.requests))
    return log
