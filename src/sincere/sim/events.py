"""A minimal discrete-event queue: one heap keyed by ``(time, priority, sequence)``.

It knows nothing of engines or requests (SimPy's core, without processes): events
are payloads due at a time; among events due at the same time a smaller
``priority`` comes first, then the one pushed first. Times are seconds of
simulated time.
"""

from __future__ import annotations

import heapq
from typing import Generic, TypeVar

P = TypeVar("P")


class EventQueue(Generic[P]):
    """Pending events in time order."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int, P]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, at: float, priority: int, payload: P) -> None:
        """Schedule ``payload`` at time ``at``."""
        self._seq += 1
        heapq.heappush(self._heap, (at, priority, self._seq, payload))

    def pop(self) -> tuple[float, P]:
        """The next event's time and payload; raises ``IndexError`` when empty."""
        at, _, _, payload = heapq.heappop(self._heap)
        return at, payload
