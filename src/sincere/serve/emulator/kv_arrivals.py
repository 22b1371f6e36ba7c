"""Prefilled KV on its way to a decode engine: shared links, then the landing.

A request prefilled elsewhere (:meth:`~sincere.serve.emulator.live.LiveEngine.submit_prefilled`)
has its KV cross the link from its prefill engine: one :class:`~sincere.perf.kv_link.KvLink`
per prefill engine, shared by every transfer from it (they split its bandwidth). One
timer per link fires when its next transfer sends its last byte; that KV lands the
link's ``latency_s`` later, when ``on_landed`` hands it to the engine. A transfer dropped
midway (the client left) leaves the link to the others, which speed up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from sincere.perf.kv_link import KvLink
from sincere.serve.emulator.slots import EngineClock, LiveRequest


@dataclass(eq=False, slots=True)
class KvLinkState:
    """The shared link from one prefill engine and the timer of its next transfer's end."""

    link: KvLink
    slots: dict[int, LiveRequest] = field(default_factory=dict)  # transfer key -> request
    timer: asyncio.TimerHandle | None = None


class KvArrivals:
    """The KV transfers under way to one engine, per prefill engine's link."""

    def __init__(self, clock: EngineClock, on_landed: Callable[[LiveRequest], None]) -> None:
        self.clock = clock
        self.on_landed = on_landed  # called when a request's KV has landed
        self._links: dict[str, KvLinkState] = {}  # per prefill engine: the shared link
        self._num_transfers = 0  # keys of transfers on the links (slots are reused)
        self._closed = False

    def start(
        self,
        slot: LiveRequest,
        engine_id: str,
        kv_bytes: float,
        bandwidth_gbps: float,
        latency_s: float,
    ) -> None:
        """Send ``slot``'s ``kv_bytes`` over the link from engine ``engine_id`` (made with
        ``bandwidth_gbps`` and ``latency_s`` when it is the first transfer from there)."""
        state = self._links.get(engine_id)
        if state is None:
            state = self._links[engine_id] = KvLinkState(KvLink(bandwidth_gbps, latency_s))
        key = self._num_transfers
        self._num_transfers += 1
        state.slots[key] = slot
        slot.kv_transfer = (state, key)
        state.link.start(key, self.clock.now(), kv_bytes)
        self._arm(state)

    def drop(self, slot: LiveRequest) -> None:
        """Take ``slot``'s KV off its link (the others speed up) or cancel its landing."""
        if slot.kv_transfer is not None:
            state, key = slot.kv_transfer
            slot.kv_transfer = None
            del state.slots[key]
            state.link.cancel(key, self.clock.now())
            self._arm(state)
        if slot.kv_timer is not None:
            slot.kv_timer.cancel()
            slot.kv_timer = None

    def close(self) -> None:
        """Stop every link's timer; nothing lands after this."""
        self._closed = True
        for state in self._links.values():
            if state.timer is not None:
                state.timer.cancel()

    def _arm(self, state: KvLinkState) -> None:
        """Set ``state``'s timer to its link's next transfer end (none when idle)."""
        if state.timer is not None:
            state.timer.cancel()
            state.timer = None
        at = state.link.next_at
        if at is not None and not self._closed:
            state.timer = self.clock.loop.call_at(self.clock.wall(at), self._tick, state)

    def _tick(self, state: KvLinkState) -> None:
        """The link's next transfer sent its last byte: its KV lands ``latency_s`` later."""
        state.timer = None
        link = state.link
        at = link.next_at
        if self._closed or at is None:
            return
        for key in link.finish(at):
            slot = state.slots.pop(key)
            slot.kv_transfer = None
            wall = self.clock.wall(at + link.latency_s)
            slot.kv_timer = self.clock.loop.call_at(wall, self._landed, slot)
        self._arm(state)

    def _landed(self, slot: LiveRequest) -> None:
        slot.kv_timer = None
        if not self._closed and not slot.freed:
            self.on_landed(slot)
