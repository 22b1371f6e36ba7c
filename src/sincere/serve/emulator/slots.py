"""The emulated engine's request slots and its clock.

:class:`Slots`: a preallocated :class:`~sincere.core.request.RequestArrays` of
``capacity`` slots (and their :class:`~sincere.core.records.RecordArrays`). A request
takes a free slot, has its fields written there and becomes a :class:`LiveRequest`, what
its HTTP handler waits on; the slot is free again once the request finishes or is
aborted (:meth:`Slots.release`), so the capacity bounds requests *in flight*, not in
total. The bookkeeping is built as slots are first used (a free list and a map of the
slots in use), so only the engine's arrays grow with the capacity.

:class:`EngineClock`: engine time is ``loop.time() - started_at - paused_s`` seconds,
frozen while the engine is stalled (failure injection): everything after a stall moves
later by its length, as when a real engine stops.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from sincere.core.records import RecordArrays
from sincere.core.request import RequestArrays, Tier
from sincere.serve.emulator.frontend import Output

if TYPE_CHECKING:
    from sincere.serve.emulator.kv_arrivals import KvLinkState


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
    kv_transfer: tuple[KvLinkState, int] | None = None  # its KV on a link: (link, transfer key)
    parent: Parent | None = None  # one of n choices of a prompt (None: n is 1)


class CapacityError(Exception):
    """Every slot is in use."""


class EngineClock:
    """Engine time on the event loop's clock, frozen while the engine is stalled."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.started_at = loop.time()
        self.paused_s = 0.0  # time spent stalled, all stalls together
        self.stalled_since: float | None = None  # loop time the current stall began

    def now(self) -> float:
        """Engine time: wall seconds since start, minus time spent stalled."""
        wall = self.loop.time() if self.stalled_since is None else self.stalled_since
        return wall - self.started_at - self.paused_s

    def wall(self, at: float) -> float:
        """Loop time of engine time ``at``."""
        return self.started_at + self.paused_s + at

    def freeze(self, at: float) -> float:
        """Stop the engine clock at engine time ``at``; the loop time it stopped at."""
        self.stalled_since = self.wall(at)
        return self.stalled_since

    def thaw(self) -> bool:
        """Run the clock again from now; False when it was not stopped."""
        since = self.stalled_since
        if since is None:
            return False
        self.paused_s += self.loop.time() - since
        self.stalled_since = None
        return True


class Slots:
    """The requests in flight by slot, and the free slots (see the module docstring)."""

    def __init__(
        self,
        capacity: int,
        model_name: str,
        instance: str,
        tiers: tuple[Tier, ...],
        block_tokens: int,
        loop: asyncio.AbstractEventLoop,
        output: Output,
    ) -> None:
        self.requests = _placeholder_requests(capacity, model_name, tiers, block_tokens)
        self.records = RecordArrays.empty(capacity, [instance])
        self.capacity = capacity
        self.held: dict[int, LiveRequest] = {}  # position -> the request holding it
        # positions used before and free again; every position handed out is in held or
        # _free, so 0 .. len(held) + len(_free) - 1 have been used
        self._free: list[int] = []
        self._block_ids: list[npt.NDArray[np.int64]] = []  # per slot used: its prompt's ids
        self._loop = loop
        self.output = output  # tells the clients, late by the front end's output delay

    def __len__(self) -> int:
        return len(self.held)

    def has_room(self, num_requests: int) -> bool:
        """Whether ``num_requests`` more requests find free slots now."""
        return len(self.held) + num_requests <= self.capacity

    def take(
        self,
        now: float,
        prompt_tokens: int,
        max_tokens: int,
        output_tokens: int,
        stream: bool,
        priority: int,
        tier: int,
    ) -> LiveRequest:
        """A free slot holding a new request's fields, arrived at engine time ``now``;
        raise :class:`CapacityError` when every slot is taken."""
        if not self._free and len(self.held) >= self.capacity:
            raise CapacityError(f"{len(self.held)} requests in flight")
        i = self._free.pop() if self._free else len(self.held)  # reuse, else the next new
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
        self.held[i] = slot
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

    def set_block_ids(self, i: int, block_ids: tuple[int, ...]) -> None:
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

    def hand_token(self, slot: LiveRequest) -> None:
        """Tell ``slot``'s stream of one more token (through the front end's output)."""
        if slot.queue is not None:
            self.output.call(partial(slot.queue.put_nowait, 1))

    def release(self, slot: LiveRequest, outcome: Finish) -> None:
        """Free ``slot`` now and tell its waiter how the request ended (through the front
        end's output, after its last token)."""
        del self.held[slot.ix]
        self._free.append(slot.ix)
        slot.freed = True
        self.output.call(partial(_tell_end, slot, outcome))


def _tell_end(slot: LiveRequest, outcome: Finish) -> None:
    """The end marker on ``slot``'s stream, and its outcome on its future."""
    if slot.queue is not None:
        slot.queue.put_nowait(0)
    if not slot.done.done():
        slot.done.set_result(outcome)


_NO_BLOCKS: npt.NDArray[np.int64] = np.zeros(0, dtype=np.int64)


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
