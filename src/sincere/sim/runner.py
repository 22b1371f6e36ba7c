"""The simulator's event loop: arrivals and engine wake-ups on one event queue.

Arrivals are fed lazily (only the next one is queued) at priority 0; an engine's
wake-up (the end of its work in progress) at priority 1, so a request arriving at
the very moment an iteration ends joins the next iteration. Each engine has at most
one live wake-up; an older one left in the queue is recognised as stale and
skipped. While running, the loop integrates the number of requests in the system
over time (for Little's law checks) and, when the arrivals are exhausted and the
queue empties, lets engines that hold requests back (request-level batching)
drain them.

Speed: with a single engine the heap is not needed. The loop compares the next
arrival with the engine's next event directly (an arrival first on a tie, as the
priorities say), which handles exactly the events the heap would, in the same
order, without pushing and popping stale wake-ups.

Engines apart. When the cluster's routing cannot depend on how the engines serve
(``Cluster.apart``: an oblivious router such as round-robin or random, no admission, no
decision log, no outcome anyone learns from, no engine holding requests back), the
loop routes the whole trace first and then runs each engine alone over its own
arrivals, as the single-engine loop does: an engine's events are then exactly those it
has under the heap, in the same order (nothing else ever touched it), and one engine's
state stays in the CPU's caches for its whole run instead of 64 engines' taking turns.
The time integral is the heap's too, bit for bit: every event time (arrivals, engine
events, iteration ends inside pieces) is collected with its change of the number in
the system, sorted, and summed in time order (:func:`_integral`).

Closed loop (``Cluster.closed``). A closed workload's arrivals depend on completions,
so it always takes the heap loop (whatever the number of engines): the ``concurrency``
first requests arrive at 0; each request that ends (finished, or rejected at the front
door or by an engine) frees its client, whose next request arrives after the next think
time. Every such arrival is pushed onto the queue at once (at most ``concurrency`` are
pending, and none is earlier than the event that made it), and the request taking it is
the next by number, so requests are numbered in arrival order and the arrival times
written into the request table stay sorted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from heapq import heappop, heappush
from typing import Any

import numpy as np

from sincere.core.types import Seconds
from sincere.engine.base import Engine
from sincere.sim.cluster import Cluster
from sincere.sim.events import EventQueue

ARRIVAL = -1  # payload of an arrival event (engine events carry the engine index)
Progress = Callable[[int, int], None]  # (arrivals handled, total)


@dataclass(frozen=True, slots=True)
class RunLog:
    """What the loop measured besides the per-request records."""

    end_at: Seconds  # time of the last event
    num_in_system_area: float  # integral of requests in the system over [0, end_at]
    num_events: int  # events handled (stale wake-ups excluded)
    num_unfinished: int  # requests marked unfinished at the end (0 in a sound run)


class _Loop:
    """State of one run; ``run`` is the whole algorithm."""

    def __init__(self, cluster: Cluster, progress: Progress | None, every: int) -> None:
        self.cluster = cluster
        self.arrivals = cluster.requests.arrival_at.tolist()
        self.queue: EventQueue[int] = EventQueue()
        self.wake: list[float | None] = [None] * len(cluster.engines)
        self.in_system = 0
        self.area = 0.0
        self.last_at = 0.0
        self.num_events = 0
        self.progress = progress
        self.every = every
        self.closed = cluster.closed
        self.ended = 0  # closed loop: requests that have ended (each frees its client)
        self.issued = 0  # closed loop: arrivals put on the queue
        self.load_blind = cluster.load_blind  # only outstanding counts make views stale
        # every model is served by engine 0 alone and nothing screens requests: routing
        # cannot choose, cap or reject
        self.always_first = cluster.passthrough and all(
            choices == [0] for choices in cluster.eligible
        )

    def run(self) -> RunLog:
        if self.closed is not None:
            self._run_heap()  # completions feed arrivals (module docstring)
        elif len(self.cluster.engines) == 1:
            self._run_single()
        elif self.cluster.apart:
            self._run_apart()
        else:
            self._run_heap()
        unfinished = self._mark_unfinished()
        return RunLog(self.last_at, self.area, self.num_events, unfinished)

    def _run_single(self) -> None:
        """The loop for one engine: no event queue (see the module docstring)."""
        engine = self.cluster.engines[0]
        next_event_at, advance, add = engine.next_event_at, engine.advance, engine.add
        arrivals, n, k = self.arrivals, len(self.arrivals), 0
        area, last_at, num_events = self.area, self.last_at, self.num_events
        outstanding, direct = self.cluster.outstanding, self.always_first
        quiet = self.cluster.front_door is None  # nobody to tell about finished requests
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
        """The general loop: arrivals and every engine's wake-up on one event queue.

        An engine event is handled inline (the hot path with many instances): advance,
        tell the cluster, reschedule; an arrival through :meth:`_arrive`.

        When nothing reads the engines' loads between events (``load_blind``), engines
        run identical prefill iterations as one piece (``sum_by_iteration``) and report
        the iteration ends inside it; the loop adds those to its time integral in time
        order (:meth:`_pass_inner`), so the sums are those of one event per iteration.
        """
        n = len(self.arrivals)
        queue, wake, arrivals = self.queue, self.wake, self.arrivals
        cluster = self.cluster
        engines, outstanding = cluster.engines, cluster.outstanding
        touched, finished = cluster.touched, cluster.finished
        push, pop = queue.push, queue.pop
        track_load = not self.load_blind
        observes = cluster.observes  # whether finished requests are told to the cluster
        progress, every = self.progress, self.every
        inner: list[float] = []  # a heap of iteration ends inside engines' pieces of work
        started: list[float] = []  # such ends, as engines report them when a piece starts
        if self.load_blind and len(engines) > 1:  # (one engine: no one-event-per-iteration)
            for engine in engines:
                engine.sum_by_iteration(started)
        closed = self.closed is not None
        if closed:
            self._start_clients()
        elif n:
            push(arrivals[0], 0, ARRIVAL)
        next_arrival = 0
        while queue or self._drain():
            at, payload = pop()
            if inner and inner[0] <= at:
                self._pass_inner(inner, at)
            if payload == ARRIVAL:
                self.area += self.in_system * (at - self.last_at)
                self.last_at = at
                self.num_events += 1
                if closed:
                    self._arrive_closed(next_arrival, at)
                else:
                    self._arrive(next_arrival, at)
                next_arrival += 1
                if not closed and next_arrival < n:
                    push(arrivals[next_arrival], 0, ARRIVAL)
                if progress is not None and next_arrival % every == 0:
                    progress(next_arrival, n)
                continue
            e = payload
            if wake[e] != at:
                continue  # stale wake-up
            self.area += self.in_system * (at - self.last_at)
            self.last_at = at
            self.num_events += 1
            wake[e] = None
            engine = engines[e]
            done = engine.advance(at)
            if started:
                for end in started:
                    heappush(inner, end)
                started.clear()
            if done:
                self.in_system -= len(done)
                outstanding[e] -= len(done)
                touched(e)
                if observes:
                    for i in done:
                        finished(i)
                if closed:
                    self._clients_free(len(done), at)
            elif track_load:
                touched(e)
            due = engine.next_event_at()
            if due is not None:  # wake[e] is None: always a new wake-up
                wake[e] = due
                push(due, 1, e)

    def _run_apart(self) -> None:
        """Route every request, then run each engine alone (see the module docstring).

        The records get each request's engine load as the heap loop notes it: read from
        the engine when the request reaches it, with the requests outstanding there.
        """
        cluster = self.cluster
        arrivals, n = self.arrivals, len(self.arrivals)
        engines = cluster.engines
        mine: list[list[int]] = [[] for _ in engines]
        joined = [0] * n  # the change of the number in the system at each arrival
        for i, e in enumerate(cluster.assign_all()):
            if e >= 0:
                mine[e].append(i)
                joined[i] = 1
        inner: list[float] = []  # iteration ends inside pieces, every engine's
        event_at: list[float] = []  # engine events, every engine's
        left: list[int] = []  # requests each of them finished or rejected (negated)
        progress, every = self.progress, self.every
        handled = n - sum(len(ids) for ids in mine)  # the rejected, at once
        note = cluster.records.note_load
        for e, ids in enumerate(mine):
            engine = engines[e]
            engine.sum_by_iteration(inner)
            next_event_at, advance, add = engine.next_event_at, engine.advance, engine.add
            queue_sizes = engine.queue_sizes
            outstanding, k, m = 0, 0, len(ids)
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
                    event_at.append(due)
                    left.append(-len(done))
                    outstanding -= len(done)
                else:
                    break  # no event and no arrival left: nothing is held back
            cluster.outstanding[e] = outstanding
        # the events as arrays (8 bytes each, not a float object each): their times, and
        # each one's change of the number in the system (0 for an iteration end)
        times = np.concatenate((np.array(arrivals), np.array(event_at), np.array(inner)))
        event_at.clear()
        inner.clear()
        num_inner = len(times) - n - len(left)
        change = np.concatenate(
            (np.array(joined, np.int64), np.array(left, np.int64), np.zeros(num_inner, np.int64))
        )
        left.clear()
        self.area, self.last_at, self.in_system, self.num_events = _integral(times, change)

    def _pass_inner(self, inner: list[float], at: float) -> None:
        """Iteration ends up to ``at`` inside pieces of work: integrate up to each, in order."""
        while inner and inner[0] <= at:
            end = heappop(inner)
            self.area += self.in_system * (end - self.last_at)
            self.last_at = end
            self.num_events += 1

    def _arrive(self, i: int, at: float) -> bool:
        """Route request ``i``; whether it reached an engine (not rejected at the door)."""
        self.in_system += 1
        e = self.cluster.route(i, at)
        if e is None:
            self.in_system -= 1
            self.cluster.finished(i)
            return False
        self.cluster.outstanding[e] += 1
        self.cluster.engines[e].add(i, at)
        self.cluster.touched(e)
        self._reschedule(e)
        return True

    def _start_clients(self) -> None:
        """Closed loop: every client's first request arrives (at 0, or after its intake)."""
        assert self.closed is not None
        first = min(self.closed.concurrency, len(self.arrivals))
        starts = self.closed.first_s
        for k in range(first):
            self.queue.push(starts[k] if starts else 0.0, 0, ARRIVAL)
        self.issued = first

    def _arrive_closed(self, i: int, at: float) -> None:
        """Closed loop: request ``i`` takes this arrival; one rejected at once ends now."""
        self.arrivals[i] = at
        self.cluster.requests.arrival_at[i] = at
        if not self._arrive(i, at):
            self._clients_free(1, at)

    def _clients_free(self, num: int, at: float) -> None:
        """Closed loop: ``num`` requests ended at ``at``; their clients send their next."""
        assert self.closed is not None
        think, n = self.closed.think_s, len(self.arrivals)
        for _ in range(num):
            if self.issued < n:
                self.queue.push(at + think[self.ended], 0, ARRIVAL)
                self.issued += 1
            self.ended += 1

    def _reschedule(self, e: int) -> None:
        at = self.cluster.engines[e].next_event_at()
        if at is not None and at != self.wake[e]:
            self.wake[e] = at
            self.queue.push(at, 1, e)

    def _drain(self) -> bool:
        """No events left: let engines holding requests back serve them."""
        if self.in_system <= 0:
            return False
        for e, engine in enumerate(self.cluster.engines):
            engine.drain(self.last_at)
            self.cluster.touched(e)
            self._reschedule(e)
        return len(self.queue) > 0

    def _mark_unfinished(self) -> int:
        records = self.cluster.records
        left = records.unfinished()
        for i in left.tolist():
            records.reject(int(i), "unfinished")
        return len(left)


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
    if cluster.pd is not None:
        from sincere.sim.disagg import run_pd

        return run_pd(cluster, cluster.pd, progress)
    log = _Loop(cluster, progress, max(1, progress_every)).run()
    if progress is not None:
        progress(len(cluster.requests), len(cluster.requests))
    return log
