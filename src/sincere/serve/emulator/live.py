"""sincere's engine model driven by the wall clock: the heart of the emulator.

A :class:`LiveEngine` owns a :class:`~sincere.engine.continuous.ContinuousEngine`, built
from its deployment spec as the simulator builds its engines, over the request slots of
:class:`~sincere.serve.emulator.slots.Slots` (``capacity`` of them: a full emulator answers
503, it never grows). A request takes a free slot and is ``add``-ed at the current engine
time; a request prefilled elsewhere first waits for its KV
(:class:`~sincere.serve.emulator.kv_arrivals.KvArrivals`).

Time (:class:`~sincere.serve.emulator.slots.EngineClock`). One ``loop.call_at`` timer
fires at ``engine.next_event_at()``; the tick advances the engine through every iteration
that has ended by the *actual* time, one at a time, and the engine schedules each next
iteration from the previous one's planned end, so timer lateness (~1 ms in asyncio)
delays a token's delivery but never accumulates. An arrival or an abort first brings the
engine up to the current time (iterations the late timer has not run yet are run), so a
request never joins an iteration that began before it arrived; then it re-arms the timer.
The engine's ``on_tokens`` hook (one call per iteration) hands each token to its request's
queue; a finished request gets its :class:`Finish` on a future. Both reach the client
``output_s`` later when the engine's front end has an output delay
(:class:`~sincere.serve.emulator.frontend.Output`).

Stalls (failure injection) freeze the engine clock for ``stall_s`` from the end of the
iteration that drew one: everything after it moves later by that much, as when a real
engine stops.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from sincere.core.records import RecordArrays
from sincere.core.request import Tier
from sincere.engine.base import StreamingEngine
from sincere.engine.build import build_streaming_engine
from sincere.engine.spec import DeploymentSpec
from sincere.serve.emulator.frontend import Output
from sincere.serve.emulator.kv_arrivals import KvArrivals
from sincere.serve.emulator.metrics import EmulatorMetrics, FinishedRequest
from sincere.serve.emulator.slots import (
    CapacityError,
    EngineClock,
    Finish,
    LiveRequest,
    Parent,
    Slots,
)

__all__ = ["CapacityError", "Finish", "LiveEngine", "LiveRequest", "Parent"]


class LiveEngine:
    """A continuous-batching engine on the wall clock; see the module docstring."""

    def __init__(
        self,
        name: str,
        model_name: str,
        spec: DeploymentSpec,
        *,
        capacity: int,
        tiers: tuple[Tier, ...],
        block_tokens: int = 16,
        metrics: EmulatorMetrics,
        rng: np.random.Generator,
        stall_probability: float = 0.0,
        stall_s: float = 0.0,
        output_s: float = 0.0,
    ) -> None:
        self._loop = loop = asyncio.get_running_loop()
        output = Output(output_s, loop)  # the front end's delay of what clients are told
        self.slots = Slots(capacity, model_name, name, tiers, block_tokens, loop, output)
        self.requests, self.records = self.slots.requests, self.slots.records
        self.engine: StreamingEngine = build_streaming_engine(
            spec, name, self.requests, self.records, f"emulator {name}"
        )
        self.engine.on_tokens = self._on_tokens
        self.metrics = metrics
        self.clock = EngineClock(self._loop)
        self.kv = KvArrivals(self.clock, self._kv_landed)  # prefilled KV on its way here
        self._rng = rng
        self._stall_probability = stall_probability
        self._stall_s = stall_s
        self._stall_due = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._closed = False

    # ------------------------------------------------------------------ clock

    def now(self) -> float:
        """Engine time: wall seconds since start, minus time spent stalled."""
        return self.clock.now()

    @property
    def num_in_flight(self) -> int:
        """Requests holding a slot."""
        return len(self.slots)

    # -------------------------------------------------------------- requests

    def submit(
        self,
        prompt_tokens: int,
        max_tokens: int,
        output_tokens: int,
        *,
        stream: bool,
        priority: int = 0,
        tier: int = 0,
        block_ids: tuple[int, ...] = (),
        stopped: bool = False,
        parent: Parent | None = None,
    ) -> LiveRequest:
        """Add a request; raise :class:`CapacityError` when every slot is taken.

        ``block_ids``: its prompt's content in blocks of the emulator's block size
        (:mod:`sincere.core.prefix`), which the engine's prefix cache reads.
        ``stopped``: its ``output_tokens``-th token completes a stop string.
        ``parent``: the prompt it is one choice of, when ``n`` > 1.
        """
        slot = self._take(prompt_tokens, max_tokens, output_tokens, stream, priority, tier)
        slot.stopped = stopped
        slot.parent = parent
        self.slots.set_block_ids(slot.ix, block_ids)
        self.engine.take_tier_loaded_tokens(slot.ix)  # drop a load its last holder left
        self.engine.add(slot.ix, self.now())
        self._arm()
        return slot

    def submit_prefilled(
        self,
        prompt_tokens: int,
        max_tokens: int,
        output_tokens: int,
        *,
        stream: bool,
        engine_id: str,
        kv_bytes: float,
        bandwidth_gbps: float,
        latency_s: float,
        priority: int = 0,
        tier: int = 0,
        stopped: bool = False,
    ) -> LiveRequest:
        """Add a request whose prompt was prefilled by engine ``engine_id``: its
        ``kv_bytes`` cross the shared link from there (``bandwidth_gbps``, ``latency_s``),
        then join the decode batch once blocks are free (its first token is handed out
        then); raise :class:`CapacityError` when every slot is taken."""
        if self.engine.kv_intake is None:
            raise CapacityError("this engine cannot take prefilled KV")
        slot = self._take(prompt_tokens, max_tokens, output_tokens, stream, priority, tier)
        slot.stopped = stopped
        self.slots.set_block_ids(slot.ix, ())  # its prompt is not computed here
        self.kv.start(slot, engine_id, kv_bytes, bandwidth_gbps, latency_s)
        return slot

    def can_take(self, num_requests: int) -> bool:
        """Whether ``num_requests`` more requests find free slots now (the choices of one
        answer are taken all or none)."""
        if self._closed:
            return False
        self._catch_up()  # may free slots of requests that have finished by now
        return self.slots.has_room(num_requests)

    def _kv_landed(self, slot: LiveRequest) -> None:
        """The KV of ``slot`` arrived: hand it to the engine (admitted when blocks allow)."""
        self._catch_up()
        slot.kv_ready_at = self._loop.time()
        intake = self.engine.kv_intake
        assert intake is not None  # checked by submit_prefilled
        intake.add_prefilled(slot.ix, self.now(), slot.prompt_tokens)
        self._arm(force=True)

    def _take(
        self,
        prompt_tokens: int,
        max_tokens: int,
        output_tokens: int,
        stream: bool,
        priority: int,
        tier: int,
    ) -> LiveRequest:
        """A free slot holding a new request's fields (not yet given to the engine)."""
        if self._closed:
            raise CapacityError(f"{len(self.slots)} requests in flight")
        self._catch_up()  # may free slots of requests that have finished by now
        args = (prompt_tokens, max_tokens, output_tokens, stream, priority, tier)
        return self.slots.take(self.now(), *args)

    def abort(self, slot: LiveRequest) -> None:
        """The client left: cancel the request and free its memory (no-op once done)."""
        if slot.freed:
            return
        if slot.kv_transfer is not None or slot.kv_timer is not None:
            # its KV has not landed: the engine has not seen it
            self.kv.drop(slot)
            self.metrics.aborted.inc()
            self.slots.release(slot, Finish(0, None, "aborted"))
            return
        self._catch_up()
        if slot.freed:
            return  # it finished in an iteration that had already ended
        if self.engine.abort(slot.ix, self.now()):
            self.metrics.aborted.inc()
        self._arm(force=True)

    def close(self) -> None:
        """Stop the timer and end every request in flight as aborted."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        self.kv.close()
        for slot in list(self.slots.held.values()):
            self.kv.drop(slot)
            self.slots.release(slot, Finish(slot.num_tokens, None, "aborted"))
        self.slots.output.close()  # every client told now

    # ---------------------------------------------------------------- driving

    def _arm(self, force: bool = False) -> None:
        """Set the timer to the engine's next event (unless stalled or closed)."""
        if self._closed or self.clock.stalled_since is not None:
            return
        at = self.engine.next_event_at()
        if at is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer, self._timer_at = None, math.inf
            return
        wall = self.clock.wall(at)
        if self._timer is not None and wall == self._timer_at and not force:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = wall
        self._timer = self._loop.call_at(wall, self._tick)

    def _tick(self) -> None:
        """The timer: run every iteration that has ended by now, then re-arm."""
        self._timer, self._timer_at = None, math.inf
        if self._closed:
            return
        self._catch_up()
        self._arm()

    def _catch_up(self) -> None:
        """Run every piece of engine work due by now, one iteration at a time.

        Called by the timer and before an arrival or an abort touches the engine: the
        timer can fire late (a busy event loop), and an arrival must not find the engine
        still at an earlier instant, or it would join an iteration that began before it
        arrived. A stall drawn on the way stops here.
        """
        engine, intake = self.engine, self.engine.kv_intake
        now = self.now()
        at = engine.next_event_at()
        while at is not None and at <= now and self.clock.stalled_since is None:
            done = engine.advance(at)
            if intake is not None and intake.kv_admitted:
                self._kv_admitted(intake.kv_admitted)
            for i in done:
                self._finish(i)
            if self._stall_due:
                self._stall_due = False
                self._stall(at)
                return
            after = engine.next_event_at()
            if after is not None and after <= at:
                break  # nothing advanced; let the timer come back at once
            at = after

    def _kv_admitted(self, admitted: list[tuple[int, float]]) -> None:
        """Prefilled KV joined the batch: hand out its first token (the prefill's)."""
        wall = self._loop.time()
        for i, _ in admitted:
            slot = self.slots.held.get(i)
            if slot is not None:
                slot.kv_admitted_at = wall
        self._hand_out([i for i, _ in admitted])
        admitted.clear()

    def _on_tokens(self, end_at: float, positions: list[int]) -> None:
        """One iteration's tokens: hand each to its request."""
        computed = self._hand_out(positions)
        self.metrics.iteration_tokens.observe(len(positions) + computed)
        p = self._stall_probability
        if p > 0 and self._rng.random() < p:
            self._stall_due = True

    def _hand_out(self, positions: list[int]) -> int:
        """One token to each request at ``positions`` (counted, timed, queued); returns
        the prompt tokens computed for the requests whose first token this is."""
        wall = self._loop.time()
        slots = self.slots.held
        metrics = self.metrics
        computed = num_tokens = 0
        for i in positions:
            slot = slots.get(i)
            if slot is None:
                continue
            num_tokens += 1
            slot.num_tokens += 1
            if slot.last_at is None:
                slot.first_at = wall
                metrics.ttft.observe(wall - slot.arrival_at)
                computed += _prompt_done(metrics, self.engine, slot, self.records)
            else:
                metrics.itl.observe(wall - slot.last_at)
            slot.last_at = wall
            self.slots.hand_token(slot)
        metrics.generation_tokens.inc(num_tokens)
        return computed

    def _finish(self, i: int) -> None:
        slot = self.slots.held.get(i)
        if slot is None:
            return
        rec = self.records
        if rec.rejected[i]:
            why = rec.reject_reason[i]
            outcome = Finish(
                slot.num_tokens,
                None,
                why,
                reject_detail=None if why is None else self.engine.rejection_detail(i, why),
            )
        else:
            at_cap = slot.num_tokens >= slot.max_tokens and not slot.stopped
            reason = "length" if at_cap else "stop"
            outcome = Finish(slot.num_tokens, reason, None, int(rec.cached_tokens[i]))
            figures = _figures(slot, rec, reason, self.clock.wall, self._loop.time())
            self.metrics.request_finished(replace(figures, n_param=_n_param(slot.parent)))
        self.slots.release(slot, outcome)

    # ----------------------------------------------------------------- stalls

    def _stall(self, at: float) -> None:
        """Freeze the engine clock at engine time ``at`` for ``stall_s``."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, math.inf
        since = self.clock.freeze(at)  # wall time the engine reached ``at``
        self._loop.call_at(since + self._stall_s, self._end_stall)

    def _end_stall(self) -> None:
        if self.clock.thaw():
            self._arm(force=True)


def _n_param(parent: Parent | None) -> int | None:
    """``n`` when the finishing request is the last open choice of its prompt, else None."""
    if parent is None:
        return 1
    parent.num_open -= 1
    return parent.n if parent.num_open == 0 else None


def _prompt_done(
    metrics: EmulatorMetrics, engine: StreamingEngine, slot: LiveRequest, records: RecordArrays
) -> int:
    """Count ``slot``'s prompt by source as its first token comes out (computed, cached
    on the GPU, loaded from a KV tier, pulled from a prefill); return the tokens computed."""
    cached = _cached_of(slot, records)
    loaded = engine.take_tier_loaded_tokens(slot.ix)
    metrics.prompt_done(slot.prompt_tokens, cached, slot.kv_ready_at is not None, loaded)
    return slot.prompt_tokens - cached


def _cached_of(slot: LiveRequest, records: RecordArrays) -> int:
    """Prompt tokens ``slot`` did not compute here: cached, or pulled from a prefill."""
    if slot.kv_ready_at is not None:
        return slot.prompt_tokens
    return min(int(records.cached_tokens[slot.ix]), slot.prompt_tokens)


def _figures(
    slot: LiveRequest,
    records: RecordArrays,
    reason: str,
    wall: Callable[[float], float],
    now: float,
) -> FinishedRequest:
    """What the metrics record of a finished ``slot``, in loop seconds (``wall`` turns an
    engine time into one; ``now``: the loop time)."""
    last = slot.last_at if slot.last_at is not None else now
    first = slot.first_at if slot.first_at is not None else last
    scheduled = slot.kv_admitted_at  # a decode's KV joined the batch
    if scheduled is None:
        at = float(records.first_scheduled_at[slot.ix])
        scheduled = wall(at) if math.isfinite(at) else first
    scheduled = min(max(scheduled, slot.arrival_at), first)
    return FinishedRequest(
        finish_reason=reason, arrival_at=slot.arrival_at, scheduled_at=scheduled,
        first_token_at=first, last_token_at=last, prompt_tokens=slot.prompt_tokens,
        cached_tokens=_cached_of(slot, records), generation_tokens=slot.num_tokens,
        max_tokens=slot.max_tokens, num_preemptions=int(records.num_preemptions[slot.ix]),
    )  # fmt: skip
