"""sincere's engine model driven by the wall clock: the heart of the emulator.

A :class:`LiveEngine` owns a :class:`~sincere.engine.continuous.ContinuousEngine`, built
from its deployment spec as the simulator builds its engines, over a preallocated
:class:`~sincere.core.request.RequestArrays` of ``max_num_requests`` slots. A request
takes a free slot, has its fields written there and is ``add``-ed at the current engine
time; a slot is free again once the request finishes or is aborted, so the capacity
bounds requests *in flight*, not in total (a full emulator answers 503, it never grows).
The slot bookkeeping is built as slots are first used (a free list and a map of the
slots in use), so only the engine's arrays grow with the capacity.

Time. The engine clock is ``loop.time() - started_at - paused_s`` (seconds). One
``loop.call_at`` timer fires at ``engine.next_event_at()``; the tick advances the engine through
every iteration that has ended by the *actual* time, one at a time, and the engine
schedules each next iteration from the previous one's planned end, so timer lateness
(~1 ms in asyncio) delays a token's delivery but never accumulates. An arrival or an
abort first brings the engine up to the current time (iterations the late timer has not
run yet are run), so a request never joins an iteration that began before it arrived;
then it re-arms the timer. The engine's ``on_tokens`` hook (one call per iteration)
hands each token to its request's queue; a finished request gets its :class:`Finish` on a
future.

Stalls (failure injection) freeze the engine clock for ``stall_s`` from the end of the
iteration that drew one: everything after it moves later by that much, as when a real
engine stops.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from sincere.core.records import RecordArrays
from sincere.core.request import RequestArrays, Tier
from sincere.engine.base import StreamingEngine
from sincere.engine.build import build_streaming_engine
from sincere.engine.continuous import ContinuousEngine
from sincere.engine.spec import DeploymentSpec
from sincere.perf.kv_link import KvLink
from sincere.serve.emulator.metrics import EmulatorMetrics, FinishedRequest


@dataclass(frozen=True, slots=True)
class Finish:
    """How a request ended."""

    num_tokens: int  # tokens generated (and handed out)
    finish_reason: str | None  # "length" or "stop"; None when rejected or aborted
    reject_reason: str | None = None  # the engine's reason ("kv_capacity", "aborted", ...)
    cached_tokens: int = 0  # prompt tokens found in the prefix cache at first admission
    reject_detail: str | None = None  # the reason with the figures behind it, for the client


@dataclass(eq=False, slots=True)
class Parent:
    """The ``n`` choices of one prompt: each is its own engine request (vLLM's parallel
    sampling), and vLLM records ``n`` once, when the last of them finishes."""

    n: int  # choices of the prompt
    num_open: int  # choices not finished yet


@dataclass(eq=False, slots=True)
class LiveRequest:
    """One request in flight: what its HTTP handler waits on."""

    ix: int  # position in the engine's RequestArrays
    max_tokens: int  # the cap; reaching it means finish_reason "length"
    prompt_tokens: int
    arrival_at: float  # loop time of arrival (wall clock)
    queue: asyncio.Queue[int] | None  # streamed: 1 per token, then 0 at the end
    done: asyncio.Future[Finish]
    stopped: bool = False  # its last token completes a stop string: "stop" even at the cap
    num_tokens: int = 0
    first_at: float | None = None  # loop time of the first token
    last_at: float | None = None  # loop time of the latest token
    freed: bool = field(default=False)  # the slot went back to the free list
    # disaggregated decode (submit_prefilled): loop times the KV landed and was admitted
    kv_ready_at: float | None = None
    kv_admitted_at: float | None = None
    kv_timer: asyncio.TimerHandle | None = None  # the KV's arrival, once its last byte left
    kv_transfer: tuple[_Link, int] | None = None  # its KV on the link: (link, transfer key)
    parent: Parent | None = None  # one of n choices of a prompt (None: n is 1)


@dataclass(eq=False, slots=True)
class _Link:
    """The shared link from one prefill engine and the timer of its next transfer's end."""

    link: KvLink
    slots: dict[int, LiveRequest] = field(default_factory=dict)  # transfer key -> request
    timer: asyncio.TimerHandle | None = None


class CapacityError(Exception):
    """Every slot is in use."""


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
    ) -> None:
        self.requests = _placeholder_requests(capacity, model_name, tiers, block_tokens)
        self._block_ids: list[npt.NDArray[np.int64]] = []  # per slot used: its prompt's ids
        self.records = RecordArrays.empty(capacity, [name])
        self.engine: StreamingEngine = build_streaming_engine(
            spec, name, self.requests, self.records, f"emulator {name}"
        )
        self.engine.on_tokens = self._on_tokens
        self.metrics = metrics
        self._slots: dict[int, LiveRequest] = {}  # position -> the request holding it
        # positions used before and free again; every position handed out is in _slots or
        # _free, so 0 .. len(_slots) + len(_free) - 1 have been used
        self._free: list[int] = []
        self._capacity = capacity
        self._rng = rng
        self._stall_probability = stall_probability
        self._stall_s = stall_s
        self._stall_due = False
        self._stalled_since: float | None = None  # loop time the stall began
        self._loop = asyncio.get_running_loop()
        self._started_at = self._loop.time()
        self._paused_s = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._closed = False
        self._links: dict[str, _Link] = {}  # per prefill engine: the shared link from it
        self._num_transfers = 0  # keys of transfers on the links (slots are reused)

    # ------------------------------------------------------------------ clock

    def now(self) -> float:
        """Engine time: wall seconds since start, minus time spent stalled."""
        wall = self._loop.time() if self._stalled_since is None else self._stalled_since
        return wall - self._started_at - self._paused_s

    @property
    def num_in_flight(self) -> int:
        """Requests holding a slot."""
        return len(self._slots)

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
        self._set_block_ids(slot.ix, block_ids)
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
        engine = self.engine
        if not isinstance(engine, ContinuousEngine):  # the builder makes only these
            raise CapacityError("this engine cannot take prefilled KV")
        slot = self._take(prompt_tokens, max_tokens, output_tokens, stream, priority, tier)
        slot.stopped = stopped
        self._set_block_ids(slot.ix, ())  # its prompt is not computed here
        state = self._links.get(engine_id)
        if state is None:
            state = self._links[engine_id] = _Link(KvLink(bandwidth_gbps, latency_s))
        key = self._num_transfers
        self._num_transfers += 1
        state.slots[key] = slot
        slot.kv_transfer = (state, key)
        state.link.start(key, self.now(), kv_bytes)
        self._arm_link(state)
        return slot

    def can_take(self, num_requests: int) -> bool:
        """Whether ``num_requests`` more requests find free slots now (the choices of one
        answer are taken all or none)."""
        if self._closed:
            return False
        self._catch_up()  # may free slots of requests that have finished by now
        return len(self._slots) + num_requests <= self._capacity

    def _wall(self, at: float) -> float:
        """Loop time of engine time ``at``."""
        return self._started_at + self._paused_s + at

    def _arm_link(self, state: _Link) -> None:
        """Set ``state``'s timer to its link's next transfer end (none when idle)."""
        if state.timer is not None:
            state.timer.cancel()
            state.timer = None
        at = state.link.next_at
        if at is not None and not self._closed:
            state.timer = self._loop.call_at(self._wall(at), self._link_tick, state)

    def _link_tick(self, state: _Link) -> None:
        """The link's next transfer sent its last byte: its KV lands ``latency_s`` later."""
        state.timer = None
        link = state.link
        at = link.next_at
        if self._closed or at is None:
            return
        for key in link.finish(at):
            slot = state.slots.pop(key)
            slot.kv_transfer = None
            wall = self._wall(at + link.latency_s)
            slot.kv_timer = self._loop.call_at(wall, self._kv_landed, slot)
        self._arm_link(state)

    def _kv_landed(self, slot: LiveRequest) -> None:
        """The KV of ``slot`` arrived: hand it to the engine (admitted when blocks allow)."""
        slot.kv_timer = None
        if self._closed or slot.freed:
            return
        self._catch_up()
        slot.kv_ready_at = self._loop.time()
        engine = self.engine
        assert isinstance(engine, ContinuousEngine)  # checked by submit_prefilled
        engine.add_prefilled(slot.ix, self.now(), slot.prompt_tokens)
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
        if not self._closed:
            self._catch_up()  # may free slots of requests that have finished by now
        if self._closed or (not self._free and len(self._slots) >= self._capacity):
            raise CapacityError(f"{len(self._slots)} requests in flight")
        i = self._free.pop() if self._free else len(self._slots)  # reuse, else the next new
        now = self.now()
        self._fill(i, now, prompt_tokens, min(output_tokens, max_tokens), max_tokens)
        self.requests.priority[i] = priority
        self.requests.tier[i] = tier
        loop = self._loop
        slot = LiveRequest(
            i,
            max_tokens,
            prompt_tokens,
            loop.time(),
            asyncio.Queue() if stream else None,
            loop.create_future(),
        )
        self._slots[i] = slot
        return slot

    def _fill(self, i: int, now: float, prompt: int, output: int, max_tokens: int) -> None:
        """Write request ``i``'s fields and clear its records (slots are reused)."""
        req, rec = self.requests, self.records
        req.arrival_at[i] = now
        req.prompt_tokens[i] = prompt
        req.output_tokens[i] = output
        req.max_tokens[i] = max_tokens
        rec.instance[i] = -1
        rec.first_scheduled_at[i] = rec.first_token_at[i] = rec.finished_at[i] = math.nan
        rec.output_tokens[i] = rec.num_preemptions[i] = rec.cached_tokens[i] = 0
        rec.rejected[i] = False
        rec.reject_reason[i] = None

    def _set_block_ids(self, i: int, block_ids: tuple[int, ...]) -> None:
        """Give slot ``i`` its prompt's block ids where the engine reads them.

        The engine reads ``requests.block_ids[i]`` when a request is added. The arrays'
        tuple is frozen, so it is swapped for one holding the slots used so far (only when
        a slot's ids change; the tuple never grows past the slots in use).
        """
        ids = np.asarray(block_ids, dtype=np.int64)
        current = self.requests.block_ids
        if not len(ids) and (not current or (i < len(current) and not len(current[i]))):
            return  # the engine reads no ids here, or the empty ones already there
        slots = self._block_ids
        while len(slots) <= i:
            slots.append(_NO_BLOCKS)
        slots[i] = ids
        object.__setattr__(self.requests, "block_ids", tuple(slots))

    def abort(self, slot: LiveRequest) -> None:
        """The client left: cancel the request and free its memory (no-op once done)."""
        if slot.freed:
            return
        if slot.kv_transfer is not None or slot.kv_timer is not None:
            # its KV has not landed: the engine has not seen it
            self._drop_kv(slot)
            self.metrics.aborted.inc()
            self._release(slot, Finish(0, None, "aborted"))
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
        for state in self._links.values():
            if state.timer is not None:
                state.timer.cancel()
        for slot in list(self._slots.values()):
            self._drop_kv(slot)
            self._release(slot, Finish(slot.num_tokens, None, "aborted"))

    def _drop_kv(self, slot: LiveRequest) -> None:
        """Take ``slot``'s KV off its link (the others speed up) or cancel its landing."""
        if slot.kv_transfer is not None:
            state, key = slot.kv_transfer
            slot.kv_transfer = None
            del state.slots[key]
            state.link.cancel(key, self.now())
            self._arm_link(state)
        if slot.kv_timer is not None:
            slot.kv_timer.cancel()
            slot.kv_timer = None

    # ---------------------------------------------------------------- driving

    def _arm(self, force: bool = False) -> None:
        """Set the timer to the engine's next event (unless stalled or closed)."""
        if self._closed or self._stalled_since is not None:
            return
        at = self.engine.next_event_at()
        if at is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer, self._timer_at = None, math.inf
            return
        wall = self._wall(at)
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
        engine = self.engine
        now = self.now()
        at = engine.next_event_at()
        while at is not None and at <= now and self._stalled_since is None:
            done = engine.advance(at)
            if isinstance(engine, ContinuousEngine) and engine.kv_admitted:
                self._kv_admitted(engine.kv_admitted)
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
            slot = self._slots.get(i)
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
        slots = self._slots
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
                cached = _cached_of(slot, self.records)
                metrics.prompt_done(slot.prompt_tokens, cached, slot.kv_ready_at is not None)
                computed += slot.prompt_tokens - cached
            else:
                metrics.itl.observe(wall - slot.last_at)
            slot.last_at = wall
            if slot.queue is not None:
                slot.queue.put_nowait(1)
        metrics.generation_tokens.inc(num_tokens)
        return computed

    def _finish(self, i: int) -> None:
        slot = self._slots.get(i)
        if slot is None:
            return
        rec = self.records
        if rec.rejected[i]:
            why = rec.reject_reason[i]
            outcome = Finish(slot.num_tokens, None, why, reject_detail=self._rejected_why(i, why))
        else:
            at_cap = slot.num_tokens >= slot.max_tokens and not slot.stopped
            reason = "length" if at_cap else "stop"
            outcome = Finish(slot.num_tokens, reason, None, int(rec.cached_tokens[i]))
            figures = _figures(slot, rec, reason, self._wall, self._loop.time())
            self.metrics.request_finished(replace(figures, n_param=_n_param(slot.parent)))
        self._release(slot, outcome)

    def _rejected_why(self, i: int, reason: str | None) -> str | None:
        """A ``kv_capacity`` rejection with its token counts: what request ``i`` needs at
        most (its prompt, then a recompute of all but its last output token) and the most
        KV one request may hold here (the blocks less the watermark)."""
        engine = self.engine
        if reason != "kv_capacity" or not isinstance(engine, ContinuousEngine):
            return None
        lim = engine.limits
        prompt, output = int(self.requests.prompt_tokens[i]), int(self.requests.output_tokens[i])
        most = lim.num_kv_blocks - lim.watermark_blocks
        return (
            f"kv_capacity: {prompt} prompt tokens and {output} output "
            f"{'token needs' if output == 1 else 'tokens need'} up to "
            f"{prompt + output - 1} tokens of KV; this engine holds at most "
            f"{most * lim.block_size} tokens for one request ({most} blocks of "
            f"{lim.block_size} tokens, its watermark kept free)"
        )

    def _release(self, slot: LiveRequest, outcome: Finish) -> None:
        del self._slots[slot.ix]
        self._free.append(slot.ix)
        slot.freed = True
        if slot.queue is not None:
            slot.queue.put_nowait(0)
        if not slot.done.done():
            slot.done.set_result(outcome)

    # ----------------------------------------------------------------- stalls

    def _stall(self, at: float) -> None:
        """Freeze the engine clock at engine time ``at`` for ``stall_s``."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, math.inf
        since = self._wall(at)  # wall time the engine reached ``at``
        self._stalled_since = since
        self._loop.call_at(since + self._stall_s, self._end_stall)

    def _end_stall(self) -> None:
        since = self._stalled_since
        if since is None:
            return
        self._paused_s += self._loop.time() - since
        self._stalled_since = None
        self._arm(force=True)


_NO_BLOCKS: npt.NDArray[np.int64] = np.zeros(0, dtype=np.int64)


def _n_param(parent: Parent | None) -> int | None:
    """``n`` when the finishing request is the last open choice of its prompt, else None."""
    if parent is None:
        return 1
    parent.num_open -= 1
    return parent.n if parent.num_open == 0 else None


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


def _placeholder_requests(
    capacity: int, model: str, tiers: tuple[Tier, ...], block_tokens: int = 16
) -> RequestArrays:
    """``capacity`` slots of placeholder requests, filled in place on arrival."""
    ones = np.ones(capacity, dtype=np.int64)
    return RequestArrays.build(
        np.zeros(capacity),
        ones,
        ones.copy(),
        models=(model,),
        tiers=tiers,
        max_tokens=ones.copy(),
        block_tokens=block_tokens,
    )
