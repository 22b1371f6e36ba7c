"""The waiting queue of a continuous-batching engine, ordered by the scheduler's key.

Two heaps: the main queue and the relegated queue (Niyama's eager relegation puts a
request behind every other, for good). Entries are ``(key0, key1, seq, request)``;
``seq`` makes entries unique and ties go to the earlier push. Removal is lazy: a
request's current entry is the one whose ``seq`` matches ``_version``; stale entries
are skipped and dropped when they surface. :meth:`ordered` walks a heap in key
order *without popping*, in O(k log k) for the first ``k`` requests, so a scheduler
that stops after a few admissions pays only for those.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from itertools import chain

from sincere.policy.schedulers.base import SortKey

Entry = tuple[float, float, int, int]


class WaitQueue:
    """Waiting requests: push with a key, iterate in order, remove, relegate."""

    def __init__(self) -> None:
        self._main: list[Entry] = []
        self._relegated: list[Entry] = []
        self._version: dict[int, int] = {}
        self._is_relegated: set[int] = set()
        self._keys: dict[int, SortKey] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._version)

    def __bool__(self) -> bool:
        return bool(self._version)

    def __contains__(self, i: object) -> bool:
        return i in self._version

    def push(self, i: int, key: SortKey) -> None:
        """Add request ``i`` to the main queue."""
        self._seq += 1
        self._version[i] = self._seq
        self._is_relegated.discard(i)
        self._keys[i] = key
        heapq.heappush(self._main, (key[0], key[1], self._seq, i))

    def relegate(self, i: int) -> None:
        """Move waiting request ``i`` to the relegated queue, keeping its key."""
        key = self._keys[i]
        self._seq += 1
        self._version[i] = self._seq
        self._is_relegated.add(i)
        heapq.heappush(self._relegated, (key[0], key[1], self._seq, i))

    def remove(self, i: int) -> None:
        """Take request ``i`` out of the queue (it was admitted)."""
        del self._version[i]
        del self._keys[i]
        self._is_relegated.discard(i)

    def is_relegated(self, i: int) -> bool:
        """Whether ``i`` waits in the relegated queue."""
        return i in self._is_relegated

    def head(self) -> Entry | None:
        """The main queue's first valid entry, if any."""
        heap = self._main
        while heap and self._version.get(heap[0][3]) != heap[0][2]:
            heapq.heappop(heap)
        return heap[0] if heap else None

    def ordered(self) -> Iterator[int]:
        """Waiting requests in order: the main queue, then the relegated one."""
        if not self._relegated:
            return self._walk(self._main)
        return chain(self._walk(self._main), self._walk(self._relegated))

    def _walk(self, heap: list[Entry]) -> Iterator[int]:
        version = self._version
        while heap and version.get(heap[0][3]) != heap[0][2]:
            heapq.heappop(heap)
        if not heap:
            return
        yield heap[0][3]  # the head is valid: often the only one a scheduler reads
        size = len(heap)
        frontier: list[tuple[Entry, int]] = [(heap[c], c) for c in (1, 2) if c < size]
        heapq.heapify(frontier)
        while frontier:
            entry, pos = heapq.heappop(frontier)
            if version.get(entry[3]) == entry[2]:
                yield entry[3]
            for child in (2 * pos + 1, 2 * pos + 2):
                if child < size:
                    heapq.heappush(frontier, (heap[child], child))
