"""Iteration-level engine schedulers: the contract and the shared planning loop.

A continuous-batching engine (vLLM, Sarathi-Serve) runs one *iteration* at a time.
Before each one it asks its scheduler which prompt tokens to compute; every running
decode sequence always gets its one token first. The scheduler is clock-free: it
reads an :class:`EngineView` (a read-only view the engine implements, or a
hand-made :class:`StaticView` in tests) plus ``now``, and returns an
:class:`IterationPlan` made of request positions and token counts.

The planning loop is vLLM's / nano-vllm's (for a view-only policy, below, the engine
runs the same loop on its own state; tests/engine/test_engine_runs.py checks that the
two agree at every piece of work):

1. the iteration's token budget (``token_budget``: fixed for FCFS-style policies,
   Sarathi's fixed chunk, Niyama's dynamic chunk) less one token per decode;
2. running sequences still in prefill continue, in admission order;
3. waiting requests are admitted in the policy's order (``waiting_key``, smaller
   first) while sequences, tokens and KV blocks (above the watermark) last; the
   first request that does not fit stops admission (head-of-line blocking, as in
   vLLM), so an order is never silently broken.

A subclass changes the order (``waiting_key``), the budget, or adds a hook
(``should_relegate`` for Niyama's eager relegation). When KV blocks run out for
decodes, the engine preempts the sequences the policy names (``victim``; by default
the running sequence with the *largest* key, the one it would serve last) until the
next decode step fits.

A policy that keeps this loop, a fixed budget, no relegation and no learning declares
itself *view-only* in its class statement (``class Fcfs(IterationScheduler,
view_only=True)``; :meth:`IterationScheduler.plan_is_view_only`): its plan is a function
of the engine state, so an engine may compute it itself and run iterations whose plan is
already determined without asking (docs/simulator_speed.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, ClassVar, Protocol, runtime_checkable

from sincere.core.request import RequestArrays
from sincere.core.types import Seconds

SortKey = tuple[float, float]
"""Scheduling key of a waiting request: smaller is served first; ties by arrival."""


@dataclass(frozen=True, slots=True)
class IterationPlan:
    """What the next iteration computes besides one token per decode sequence."""

    # (request position, prompt tokens to compute) for every prefill chunk, in the
    # order chosen: continuing prefills first, then new admissions.
    chunks: tuple[tuple[int, int], ...] = ()
    # Waiting requests that enter the running set now (each also has a chunk).
    admit: tuple[int, ...] = ()
    # Waiting requests moved behind every other one (Niyama's eager relegation).
    relegate: tuple[int, ...] = ()
    # Tokens the iteration may compute, decodes included (after the policy's choice).
    token_budget: int = 0


class EngineView(Protocol):
    """What an iteration scheduler may read about its engine. Read-only."""

    @property
    def requests(self) -> RequestArrays:
        """Static facts of every request of the run (arrival, tier, prompt, ...)."""
        ...

    @property
    def max_num_seqs(self) -> int:
        """Most sequences (decoding or in prefill) in one iteration."""
        ...

    @property
    def max_num_batched_tokens(self) -> int:
        """Most tokens one iteration may compute."""
        ...

    @property
    def num_running(self) -> int:
        """Sequences holding KV memory: decoding or part-way through their prefill."""
        ...

    @property
    def num_decoding(self) -> int:
        """Sequences that produce one token in the next iteration."""
        ...

    @property
    def num_waiting(self) -> int:
        """Requests waiting for admission (relegated ones included)."""
        ...

    @property
    def decode_ctx_tokens(self) -> int:
        """Summed context of the decode sequences in the next iteration."""
        ...

    @property
    def free_blocks(self) -> int:
        """KV blocks free for admissions, after the next decode step's needs."""
        ...

    @property
    def watermark_blocks(self) -> int:
        """Blocks admissions must leave free (vLLM's watermark)."""
        ...

    @property
    def kv_usage(self) -> float:
        """Fraction of KV blocks in use, 0..1."""
        ...

    def prefilling(self) -> Iterable[int]:
        """Running sequences with prompt tokens left, in admission order."""
        ...

    def waiting(self) -> Iterable[int]:
        """Waiting requests in key order; relegated ones last (lazy: stop early)."""
        ...

    def decoding(self) -> Iterable[int]:
        """Sequences in the decode phase."""
        ...

    def is_relegated(self, i: int) -> bool:
        """Whether waiting request ``i`` was relegated."""
        ...

    def prefill_remaining(self, i: int) -> int:
        """Tokens ``i`` still has to prefill (prompt, plus output if recomputed)."""
        ...

    def prefill_blocks(self, i: int) -> int:
        """KV blocks waiting request ``i`` needs to be admitted."""
        ...

    def num_produced(self, i: int) -> int:
        """Output tokens ``i`` has produced so far."""
        ...

    def first_token_at(self, i: int) -> Seconds:
        """When ``i`` produced its first token (NaN if it has not)."""
        ...


@runtime_checkable
class DecodeTimeline(EngineView, Protocol):
    """An :class:`EngineView` that also tells how decoding progresses (optional).

    A policy that tracks decode sequences incrementally (Niyama's decode slack) reads
    these instead of scanning every decode sequence each iteration. An engine that
    implements them (``ContinuousEngine``) guarantees: every iteration gives every
    decoding sequence one token, and every sequence that begins decoding (again, after a
    preemption) is appended to the starts log. Hand-made views need not implement it.
    """

    @property
    def num_iterations(self) -> int:
        """Iterations run so far; each gave every decoding sequence one token."""
        ...

    def decode_starts(self, since: int) -> Sequence[int]:
        """Sequences that began decoding, from the ``since``-th start on (0: the first)."""
        ...

    def is_decoding(self, i: int) -> bool:
        """Whether ``i`` is decoding now."""
        ...


class IterationScheduler:
    """Base policy: FCFS order, the engine's full token budget. Subclass to change."""

    # Whether ``plan`` is this module's loop with a budget that depends only on the
    # engine's fixed limits (not on ``now``, not on history), never relegating and never
    # learning (``observe``): see :meth:`plan_is_view_only`. This class's plan is; each
    # subclass states its own in its class statement (``__init_subclass__``).
    view_only: ClassVar[bool] = True

    def __init_subclass__(cls, *, view_only: bool = False, **kwargs: Any) -> None:
        """Record the subclass's declaration: ``class Fcfs(IterationScheduler, view_only=True)``.

        Not inherited: a subclass that does not state it is not view-only, so one that
        changes ``plan``, relegates, learns or varies its budget never takes the
        engine's shortcut by accident.
        """
        super().__init_subclass__(**kwargs)
        cls.view_only = view_only

    def plan_is_view_only(self) -> bool:
        """Whether this policy declared its plan a function of the engine's state alone.

        Then an engine may compute the plan itself and run the iterations whose plan is
        known without asking: those where the first running prefill takes every token
        the decodes leave (nothing is admitted), so arrivals cannot change them.
        """
        return self.view_only

    def waiting_key(self, view: EngineView, i: int) -> SortKey:
        """Order of waiting request ``i`` (FCFS: arrival time)."""
        arrival = float(view.requests.arrival_at[i])
        return (arrival, arrival)

    def token_budget(self, view: EngineView, now: Seconds) -> int:
        """Tokens the next iteration may compute, decodes included."""
        return view.max_num_batched_tokens

    def should_relegate(self, view: EngineView, i: int, now: Seconds) -> bool:
        """Whether to move waiting request ``i`` behind all others. Default: never."""
        return False

    def observe(self, prefill_tokens: int, duration_s: Seconds) -> None:
        """Learn from a finished iteration (prompt tokens it computed, its duration)."""

    def victim(self, view: EngineView) -> int:
        """The running sequence to preempt when the next decode step's KV blocks do not fit.

        Called with at least one sequence running; the engine frees the victim's blocks,
        queues it to recompute, and asks again until the step fits. Default: the largest
        ``waiting_key`` (the sequence this policy would serve last), the first in
        ``prefilling()`` then ``decoding()`` order among equal keys.
        """
        running = chain(view.prefilling(), view.decoding())
        return max(running, key=lambda i: self.waiting_key(view, i))

    def plan(self, view: EngineView, now: Seconds) -> IterationPlan:
        """The next iteration's prefill work (see the module docstring)."""
        budget = self.token_budget(view, now)
        left = budget - view.num_decoding
        chunks: list[tuple[int, int]] = []
        if left > 0:
            for i in view.prefilling():
                n = view.prefill_remaining(i)
                if n > left:
                    n = left
                chunks.append((i, n))
                left -= n
                if left <= 0:
                    break
        if left <= 0 or not view.num_waiting or view.num_running >= view.max_num_seqs:
            return IterationPlan(tuple(chunks), (), (), budget)
        admit, relegate = self._admit(view, now, left, chunks)
        return IterationPlan(tuple(chunks), tuple(admit), tuple(relegate), budget)

    def _admit(
        self, view: EngineView, now: Seconds, left: int, chunks: list[tuple[int, int]]
    ) -> tuple[list[int], list[int]]:
        """Admit waiting requests in order while tokens, sequences and blocks last."""
        admit: list[int] = []
        relegate: list[int] = []
        if left <= 0 or not view.num_waiting or view.num_running >= view.max_num_seqs:
            return admit, relegate
        room = _Room(left, view.max_num_seqs - view.num_running, view.free_blocks)
        room.blocks -= view.watermark_blocks
        # a policy that never relegates is not asked (same plan, fewer calls)
        may_relegate = type(self).should_relegate is not IterationScheduler.should_relegate
        for i in view.waiting():
            if may_relegate and not view.is_relegated(i) and self.should_relegate(view, i, now):
                relegate.append(i)
            elif room.take(view, i, chunks):
                admit.append(i)
            else:
                return admit, relegate
            if room.tokens <= 0 or room.seqs <= 0:
                return admit, relegate
        for i in relegate:  # newly relegated go last, behind the already relegated
            if not room.take(view, i, chunks):
                break
            admit.append(i)
            if room.tokens <= 0 or room.seqs <= 0:
                break
        return admit, relegate


@dataclass(slots=True)
class _Room:
    """What is left of an iteration while admitting: tokens, sequences, KV blocks."""

    tokens: int
    seqs: int
    blocks: int

    def take(self, view: EngineView, i: int, chunks: list[tuple[int, int]]) -> bool:
        """Admit ``i`` if its whole prefill's blocks fit; add its first chunk."""
        need = view.prefill_blocks(i)
        if need > self.blocks:
            return False
        n = min(view.prefill_remaining(i), self.tokens)
        chunks.append((i, n))
        self.tokens -= n
        self.seqs -= 1
        self.blocks -= need
        return True


@dataclass
class StaticView:
    """A hand-made engine state, for tests and for reasoning about a policy offline.

    Lists hold request positions; ``remaining`` / ``blocks`` / ``produced`` /
    ``first_token`` map a position to its value (defaults: the prompt length, one
    block per 16 tokens, 1 token, NaN). ``waiting`` is given unordered; the view
    orders it with ``scheduler``'s key, relegated ones last.
    """

    requests: RequestArrays
    scheduler: IterationScheduler
    waiting_ix: Sequence[int] = ()
    prefilling_ix: Sequence[int] = ()
    decoding_ix: Sequence[int] = ()
    relegated: frozenset[int] = frozenset()
    remaining: dict[int, int] = field(default_factory=dict)
    produced: dict[int, int] = field(default_factory=dict)
    first_token: dict[int, float] = field(default_factory=dict)
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    decode_ctx_tokens: int = 0
    free_blocks: int = 1 << 30
    watermark_blocks: int = 0
    kv_usage: float = 0.0
    block_size: int = 16

    @property
    def num_running(self) -> int:
        """Sequences holding KV memory."""
        return len(self.prefilling_ix) + len(self.decoding_ix)

    @property
    def num_decoding(self) -> int:
        """Decode sequences."""
        return len(self.decoding_ix)

    @property
    def num_waiting(self) -> int:
        """Waiting requests."""
        return len(self.waiting_ix)

    def prefilling(self) -> Iterable[int]:
        """Running prefills in the given order."""
        return iter(self.prefilling_ix)

    def decoding(self) -> Iterable[int]:
        """Decode sequences."""
        return iter(self.decoding_ix)

    def waiting(self) -> Iterable[int]:
        """Waiting requests in the scheduler's key order, relegated last."""
        arrival = self.requests.arrival_at

        def order(i: int) -> tuple[bool, SortKey, float, int]:
            key = self.scheduler.waiting_key(self, i)
            return (i in self.relegated, key, float(arrival[i]), i)

        return iter(sorted(self.waiting_ix, key=order))

    def is_relegated(self, i: int) -> bool:
        """Whether ``i`` is in the relegated set."""
        return i in self.relegated

    def prefill_remaining(self, i: int) -> int:
        """Given remaining tokens, or the whole prompt."""
        return self.remaining.get(i, int(self.requests.prompt_tokens[i]))

    def prefill_blocks(self, i: int) -> int:
        """Blocks for the remaining prefill."""
        return -(-self.prefill_remaining(i) // self.block_size)

    def num_produced(self, i: int) -> int:
        """Given produced count, or 1."""
        return self.produced.get(i, 1)

    def first_token_at(self, i: int) -> Seconds:
        """Given first-token time, or NaN."""
        return self.first_token.get(i, math.nan)
