"""Gateway-side queue: requests wait here while every instance of their model is full.

When all instances serving a model already hold their ``max_in_flight`` requests, the
gateway parks new requests in that model's queue instead of overloading the engines.
The queue is ordered by priority (smaller first), then by deadline (earliest absolute
deadline first; none = last), then by arrival. A request may instead be inserted at
the **head** of the queue, ahead of everything already waiting: MaverIQ's "prior
inference" operation, used for priority requests. The most recent head insertion is
served first.

The queue is a plain data structure (no clock, no I/O): the gateway pushes tickets,
pops the best one when an instance frees a slot, and cancels tickets whose waiter
timed out (lazy deletion, so cancelling is O(1)).
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from sincere.core.errors import ConfigError

T = TypeVar("T")


@dataclass(eq=False, slots=True)
class Ticket(Generic[T]):
    """One queued request: its payload and the keys it is ordered by."""

    payload: T
    priority: int  # smaller is more important
    deadline_at: float  # absolute deadline, seconds; inf when none
    head: bool  # inserted at the head (MaverIQ prior inference)
    cancelled: bool = False  # waiter gave up; skipped by pop
    queued: bool = True  # still in the queue (neither popped nor cancelled)
    seq: int = 0  # insertion order
    key: tuple[int, float, float, int] = field(default=(0, 0.0, 0.0, 0))


class RequestQueue(Generic[T]):
    """A bounded priority queue of tickets with head insertion and lazy cancellation."""

    def __init__(self, max_len: int) -> None:
        if max_len < 0:
            raise ConfigError("queue: max_len must be >= 0", value=max_len, allowed="int >= 0")
        self.max_len = max_len
        self._heap: list[tuple[tuple[int, float, float, int], Ticket[T]]] = []
        self._counter = itertools.count()
        self._num_live = 0
        self._by_priority: dict[int, int] = {}  # live tickets per priority

    def __len__(self) -> int:
        return self._num_live

    def can_push(self) -> bool:
        """Whether one more ticket fits."""
        return self._num_live < self.max_len

    def push(
        self, payload: T, *, priority: int = 0, deadline_at: float | None = None, head: bool = False
    ) -> Ticket[T]:
        """Queue ``payload``; raises ``OverflowError`` when full (check ``can_push``)."""
        if not self.can_push():
            raise OverflowError(f"queue full ({self.max_len} waiting)")
        seq = next(self._counter)
        deadline = math.inf if deadline_at is None else deadline_at
        # Head insertions sort before all others, newest first; the rest by
        # (priority, deadline, arrival).
        key = (0, float(-seq), 0.0, seq) if head else (1, float(priority), deadline, seq)
        ticket = Ticket(payload, priority, deadline, head, seq=seq, key=key)
        heapq.heappush(self._heap, (key, ticket))
        self._num_live += 1
        self._by_priority[priority] = self._by_priority.get(priority, 0) + 1
        return ticket

    def num_ahead(self, priority: int) -> int:
        """Live tickets at least as important as ``priority`` (smaller or equal): ahead of it."""
        return sum(n for p, n in self._by_priority.items() if p <= priority)

    def _gone(self, ticket: Ticket[T]) -> None:
        self._num_live -= 1
        left = self._by_priority.get(ticket.priority, 1) - 1
        if left > 0:
            self._by_priority[ticket.priority] = left
        else:
            self._by_priority.pop(ticket.priority, None)

    def peek(self) -> Ticket[T] | None:
        """The ticket ``pop`` would return, without removing it."""
        self._drop_cancelled()
        return self._heap[0][1] if self._heap else None

    def pop(self) -> Ticket[T] | None:
        """Remove and return the best live ticket; ``None`` when empty."""
        self._drop_cancelled()
        if not self._heap:
            return None
        ticket = heapq.heappop(self._heap)[1]
        self._gone(ticket)
        ticket.queued = False
        return ticket

    def cancel(self, ticket: Ticket[T]) -> bool:
        """Withdraw a queued ticket (O(1)); False when it was already popped or cancelled."""
        if not ticket.queued:
            return False
        ticket.queued = False
        ticket.cancelled = True
        self._gone(ticket)
        return True

    def order(self) -> list[T]:
        """Payloads of the live tickets in the order they would be popped."""
        return [t.payload for _, t in sorted(self._heap, key=lambda e: e[0]) if not t.cancelled]

    def _drop_cancelled(self) -> None:
        while self._heap and self._heap[0][1].cancelled:
            heapq.heappop(self._heap)
