"""A sliding-window counter: how much was used over the last ``window_s`` seconds.

The window is cut into ``num_buckets`` buckets of ``window_s / num_buckets`` seconds
(one second for a minute in 60 buckets) kept in a ring of ``num_buckets + 1`` slots,
so memory is constant whatever the rate. An amount recorded at ``t`` stays counted
until the end of the bucket one window after ``t``'s bucket: between ``window_s`` and
``window_s`` plus one bucket. The counter is therefore conservative: no true window
of ``window_s`` seconds ever holds more than the limit, and a client may be refused
up to one bucket earlier than an exact log of timestamps would refuse it.

Clock-free: every call takes ``now`` (seconds on any clock that does not jump; a
clock that steps back is treated as standing still). Amounts are integers (requests,
tokens); :meth:`SlidingWindow.adjust` corrects an amount recorded earlier (a token
reservation settled to the tokens actually used) while its bucket is still counted.
"""

from __future__ import annotations

import math


class SlidingWindow:
    """Sum of the amounts recorded over the last window, with a limit."""

    __slots__ = ("_amounts", "_head", "_total", "limit", "num_buckets", "width_s")

    def __init__(self, limit: int, window_s: float = 60.0, num_buckets: int = 60) -> None:
        if limit < 1 or not window_s > 0 or num_buckets < 1:
            raise ValueError(
                f"SlidingWindow(limit={limit}, window_s={window_s}, num_buckets={num_buckets}): "
                "allowed: limit >= 1, window_s > 0, num_buckets >= 1"
            )
        self.limit = limit  # most the window may hold
        self.num_buckets = num_buckets
        self.width_s = window_s / num_buckets  # seconds per bucket
        self._amounts = [0] * (num_buckets + 1)  # ring of per-bucket sums
        self._head = -1  # bucket number of the newest slot; -1: nothing recorded yet
        self._total = 0  # sum of the ring

    def _advance(self, now: float) -> int:
        """Move the ring to ``now``'s bucket, dropping buckets that left the window."""
        bucket = math.floor(now / self.width_s)
        if self._head < 0:
            self._head = bucket
        elif bucket > self._head:
            size = self.num_buckets + 1
            for step in range(1, min(bucket - self._head, size) + 1):
                slot = (self._head + step) % size
                self._total -= self._amounts[slot]
                self._amounts[slot] = 0
            self._head = bucket
        return self._head

    def total(self, now: float) -> int:
        """What the window holds at ``now``."""
        self._advance(now)
        return self._total

    def retry_after_s(self, now: float, amount: int) -> float | None:
        """``None`` if ``amount`` fits now; else seconds until it does (``inf``: never)."""
        head = self._advance(now)
        if self._total + amount <= self.limit:
            return None
        if amount > self.limit:
            return math.inf
        size = self.num_buckets + 1
        freed = 0
        for bucket in range(head - self.num_buckets, head + 1):
            freed += self._amounts[bucket % size]
            if self._total - freed + amount <= self.limit:
                return max((bucket + size) * self.width_s - now, 0.0)
        return math.inf  # unreachable: freeing every bucket leaves only ``amount``

    def add(self, now: float, amount: int) -> int:
        """Record ``amount`` at ``now``; returns its bucket for :meth:`adjust`."""
        head = self._advance(now)
        self._amounts[head % (self.num_buckets + 1)] += amount
        self._total += amount
        return head

    def adjust(self, bucket: int, delta: int) -> None:
        """Add ``delta`` (may be negative) to ``bucket`` if it is still in the window."""
        if bucket < 0 or self._head - bucket > self.num_buckets:
            return
        slot = bucket % (self.num_buckets + 1)
        delta = max(delta, -self._amounts[slot])
        self._amounts[slot] += delta
        self._total += delta
