"""SLA deadlines of a request, as Niyama defines them.

A tier sets a TTFT deadline directly, or a TTLT (last-token) deadline that Niyama
converts to a TTFT deadline by leaving room for the predicted decode tokens:
``ttft_deadline = ttlt_deadline - n_dec * tbt`` (Niyama, docs/references.md). After the first
token, token ``k`` of a request is due at
``max(first_token_at, arrival + ttft_deadline) + k * tbt``. Times in seconds.

:class:`NextTokenDue` keeps the earliest such due time over an engine's decode
sequences incrementally (per-tier heaps), for Niyama's dynamic chunk.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from sincere.core.request import RequestArrays, Tier
from sincere.core.types import Seconds
from sincere.policy.schedulers.base import DecodeTimeline, EngineView


def ttft_deadline_s(tier: Tier, predicted_decode_tokens: float) -> Seconds:
    """TTFT deadline relative to arrival (``inf`` when the tier sets none)."""
    if tier.ttft_s is not None:
        return tier.ttft_s
    if tier.ttlt_s is not None:
        return tier.ttlt_s - predicted_decode_tokens * (tier.tbt_s or 0.0)
    return math.inf


def predicted_decode_tokens(requests: RequestArrays, i: int, fixed: int | None) -> int:
    """Decode tokens after the first: ``fixed - 1`` if given, else ``max_tokens - 1``."""
    out = fixed if fixed is not None else int(requests.max_tokens[i])
    return max(out - 1, 0)


def ttft_deadline_at(requests: RequestArrays, i: int, fixed_output: int | None = None) -> Seconds:
    """Absolute TTFT deadline of request ``i``."""
    tier = requests.tiers[int(requests.tier[i])]
    n_dec = predicted_decode_tokens(requests, i, fixed_output)
    return float(requests.arrival_at[i]) + ttft_deadline_s(tier, n_dec)


def next_token_due_at(
    deadline_at: Seconds, first_token_at: Seconds, num_produced: int, tbt_s: float
) -> Seconds:
    """When the next token (index ``num_produced``, 0 = first) of a decode is due."""
    return max(first_token_at, deadline_at) + num_produced * tbt_s


DeadlineOf = Callable[[EngineView, int], Seconds]
"""``deadline_of(view, i)``: absolute TTFT deadline of request ``i``."""

# Heap keys differ from the due times they stand for by rounding only (a few ulps of the
# times involved); entries within this much of the least key are all checked exactly.
_KEY_SLACK_S = 1e-6
_KEY_SLACK_REL = 1e-12


@dataclass(slots=True)
class _Tier:
    """Decode sequences of one tier: a heap of ``(key, start number, position, base)``."""

    tbt_s: float
    heap: list[tuple[float, int, int, float]] = field(default_factory=list)


class NextTokenDue:
    """Earliest next-token due time over an engine's decode sequences, kept incrementally.

    Sequence ``i`` of a tier with ``tbt`` has its next token due at
    ``base_i + produced_i * tbt``, ``base_i = max(first token, TTFT deadline)``. While it
    decodes, ``produced_i`` grows by one per iteration, so ``due_i = key_i + n * tbt``
    after ``n`` iterations with the constant ``key_i = base_i + (produced_i - n) * tbt``.
    Within a tier every due time drifts alike, so the least key gives the earliest due
    time: one heap per tier, finished or preempted sequences deleted lazily. The result is
    the same number a scan computes (:func:`next_token_due_at` on every sequence): keys
    within rounding of the least are all re-evaluated with that formula.
    """

    def __init__(self, view: DecodeTimeline, deadline_of: DeadlineOf) -> None:
        self.view = view
        self.deadline_of = deadline_of
        self._num_read = 0  # decode starts read from the view's log
        self._start_of: dict[int, int] = {}  # position -> number of its latest start
        self._tiers: dict[int, _Tier] = {}

    @property
    def num_entries(self) -> int:
        """Heap entries held, stale ones included (kept within twice the decodes + 64)."""
        return sum(len(t.heap) for t in self._tiers.values())

    def earliest_due_at(self) -> Seconds:
        """Earliest next-token due time of a decode sequence with a TBT target (inf if none)."""
        self._read_starts()
        iteration = self.view.num_iterations
        best = math.inf
        for tier in self._tiers.values():
            due = self._tier_earliest(tier, iteration)
            if due < best:
                best = due
        if self.num_entries > 2 * self.view.num_decoding + 64:
            self._compact()
        return best

    def _read_starts(self) -> None:
        """Push every sequence that began decoding since the last call."""
        view = self.view
        new = view.decode_starts(self._num_read)
        if not new:
            return
        req, iteration = view.requests, view.num_iterations
        for number, i in enumerate(new, start=self._num_read):
            t = int(req.tier[i])
            tbt = req.tiers[t].tbt_s
            if tbt is None or not view.is_decoding(i):
                continue
            tier = self._tiers.get(t)
            if tier is None:
                tier = self._tiers[t] = _Tier(tbt)
            base = max(view.first_token_at(i), self.deadline_of(view, i))
            key = base + (view.num_produced(i) - iteration) * tbt
            self._start_of[i] = number
            heapq.heappush(tier.heap, (key, number, i, base))
        self._num_read += len(new)

    def _live(self, number: int, i: int) -> bool:
        """Whether a heap entry still stands for a decoding sequence."""
        return self._start_of.get(i) == number and self.view.is_decoding(i)

    def _tier_earliest(self, tier: _Tier, iteration: int) -> Seconds:
        """Exact least due time of a tier: the least key and every key within rounding."""
        heap = tier.heap
        while heap and not self._live(heap[0][1], heap[0][2]):
            _, number, i, _ = heapq.heappop(heap)
            if self._start_of.get(i) == number:
                del self._start_of[i]
        if not heap or math.isinf(heap[0][0]):
            return math.inf if not heap else heap[0][0]
        tbt = tier.tbt_s
        limit = heap[0][0] + _KEY_SLACK_S + _KEY_SLACK_REL * (abs(heap[0][0]) + iteration * tbt)
        best = math.inf
        stack = [0]
        while stack:  # the heap's nodes with a key <= limit form a subtree at the root
            k = stack.pop()
            key, number, i, base = heap[k]
            if key > limit:
                continue
            if self._live(number, i):
                due = base + self.view.num_produced(i) * tbt
                if due < best:
                    best = due
            stack.extend(c for c in (2 * k + 1, 2 * k + 2) if c < len(heap))
        return best

    def _compact(self) -> None:
        """Drop every stale entry (bounds memory by the decode sequences alive)."""
        for tier in self._tiers.values():
            tier.heap = [e for e in tier.heap if self._live(e[1], e[2])]
            heapq.heapify(tier.heap)
        self._start_of = {i: n for i, n in self._start_of.items() if self.view.is_decoding(i)}
