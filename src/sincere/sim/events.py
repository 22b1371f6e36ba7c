"""A minimal discrete-event queue: one heap keyed by ``(time, priority, sequence)``.

It knows nothing of engines or requests (SimPy's core, without processes): an event is a
*kind* and an *index* (what the kind's handler acts on: an engine, a request, a link)
due at a time; among events due at the same time a smaller ``priority`` comes first, then
the one pushed first. Times are seconds of simulated time.
"""

from __future__ import annotations

import heapq


class EventQueue:
    """Pending events in time order."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int, int, int]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, at: float, priority: int, kind: int, index: int) -> None:
        """Schedule an event of ``kind`` about ``index`` at time ``at``."""
        self._seq += 1
        heapq.heappush(self._heap, (at, priority, self._seq, kind, index))

    def pop(self) -> tuple[float, int, int]:
        """The next event's ``(time, kind, index)``; raises ``IndexError`` when empty."""
        at, _, _, kind, index = heapq.heappop(self._heap)
        return at, kind, index
