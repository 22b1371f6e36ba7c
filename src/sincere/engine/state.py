"""The state of a continuous-batching engine: who waits, who runs, which KV blocks they hold.

Model (vLLM v0's scheduler and block manager, in aggregate). A request the engine holds
is in exactly one place: the wait queue (ordered by the scheduler's key), ``pre``
(admitted and prefilling; the value is the prompt tokens computed so far) or ``offset``
(decoding). Admission reserves the blocks of the whole prefill at once; a decoding
sequence holds the blocks of its cached tokens and takes a new one at each block
boundary. Preemption frees a sequence's blocks and queues it again to *recompute* its
prompt plus the tokens it produced; the last chunk of a prefill produces one token.

Invariants (kept by the transitions below, relied on by the engine and its tests):

* used blocks = ``pre_blocks`` (the sum over ``pre`` of ``blocks_for(prefill_len)``, less
  ``cache.shared``: blocks two running sequences share count once) + ``dec.total(step)``
  (decode sequences, by residue class: :mod:`.kv`) <= the pool.
* with prefix caching (``cache`` set, :mod:`.prefix_cache`): a prefill admitted with a
  hit of ``h`` blocks starts at ``pre[i] = h * block``; cached blocks no running sequence
  holds count as free and are evicted when the distinct blocks in use need their room.
* decoding ``i`` holds ``offset[i] + step`` cached tokens; ``step`` counts iterations,
  each of which gives every decoding sequence one token (a speculating engine's accepted
  drafts move ``offset[i]`` and its ``finish_step`` on: :meth:`BatchState.gain`);
  ``offset_sum`` is the sum of ``offset``. The next decode step must have room for
  ``lookahead`` tokens of each (1; ``k + 1`` verified positions when speculating).
* decoding ``i`` is done at step ``held[i].finish_step`` (-1 while it does not decode);
  ``finish`` is a heap of ``(finish step, request)`` whose stale entries (preempted,
  aborted) are skipped.
* every request the engine holds (accepted, not yet finished or aborted) has a
  :class:`Held` in ``held``: its target and cap of output tokens, its tier, its finish
  step, and ``produced_before``, the tokens made before the current prefill (0 unless
  recomputing); ``waiting_tokens`` is the sum of ``prefill_len`` over the queue.
* running sums for an O(1) load report: ``pre_done_sum`` is the sum of ``pre``'s values,
  ``pre_cap_sum`` the sum of the caps over ``pre``, and ``dec_due_sum`` the sum over
  decoding ``i`` of ``cap - target + finish_step`` (so the output tokens a router still
  budgets for are ``pre_cap_sum + dec_due_sum - step * len(offset)``).
* dict insertion order is meaningful: ``pre`` is in admission order, ``offset`` in
  decode-start order (the scheduler's tie-break among equal keys, the token hook's order).

Outcomes (first scheduling, first token, finish, rejection, preemptions) are written into
the run's :class:`~sincere.core.records.RecordArrays` by the transitions themselves; busy
time and inter-token gaps (one :class:`~sincere.engine.gaps.GapHistogram` per tier) into
its :class:`TimeAccount`. The state knows neither the policy nor the clock: times come in
as arguments.
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

from sincere.core.errors import check_in_range
from sincere.core.records import RecordArrays
from sincere.core.types import Seconds
from sincere.engine.gaps import GapHistogram
from sincere.engine.kv import DecodeBlocks, blocks_for
from sincere.engine.kv_tiers import TierLimits
from sincere.engine.prefix_cache import PrefixCache
from sincere.engine.waiting import WaitQueue


@dataclass(frozen=True, slots=True)
class EngineLimits:
    """Batch and memory limits of one engine (vLLM's names)."""

    num_kv_blocks: int  # KV blocks in the pool (from the memory plan)
    max_num_seqs: int = 256  # sequences per iteration
    max_num_batched_tokens: int = 8192  # tokens per iteration (prefill chunks + decodes)
    block_size: int = 16  # tokens per KV block
    watermark: float = 0.01  # fraction of blocks admissions must leave free
    max_model_len: int | None = None  # longest prompt + output; None: no limit
    enable_prefix_caching: bool = True  # reuse KV blocks of equal prompt prefixes (vLLM V1)
    kv_tiers: TierLimits | None = None  # CPU / disk tiers below the prefix cache; None: off

    def __post_init__(self) -> None:
        checks = {
            "num_kv_blocks": self.num_kv_blocks >= 1,
            "max_num_seqs": self.max_num_seqs >= 1,
            "max_num_batched_tokens": self.max_num_batched_tokens >= 1,
            "block_size": self.block_size >= 1,
            "watermark": 0.0 <= self.watermark < 1.0,
            "max_model_len": self.max_model_len is None or self.max_model_len >= 2,
        }
        check_in_range(
            self,
            checks,
            "engine limit ",
            "integers >= 1 (watermark in [0, 1), max_model_len >= 2)",
        )

    @property
    def watermark_blocks(self) -> int:
        """Blocks admissions leave free."""
        return int(self.watermark * self.num_kv_blocks)


class TimeAccount:
    """Busy time and, per tier, the inter-token gaps of the iterations an engine ran.

    An iteration of ``d`` seconds gives each decoding sequence one token: with ``n``
    sequences of tier ``t`` decoding, it adds ``n`` gaps of ``d`` to tier ``t``'s
    histogram. Runs of iterations come either as an arithmetic series (``first_s + j *
    slope_s``) or timed one by one.
    """

    def __init__(self, num_tiers: int) -> None:
        self.busy_s = 0.0
        self.gaps = [GapHistogram() for _ in range(num_tiers)]  # ITL gaps per tier

    def add_run(
        self,
        first_s: Seconds,
        slope_s: Seconds,
        steps: int,
        dur: Seconds,
        per_tier: list[int] | None,
    ) -> None:
        """``steps`` iterations lasting ``first_s + j * slope_s``, ``dur`` in all (their
        exact total), with ``per_tier[t]`` sequences of tier ``t`` decoding (None: none)."""
        self.busy_s += dur
        if per_tier is None:
            return
        gaps = self.gaps
        for t, count in enumerate(per_tier):
            if count:
                gaps[t].add_run(first_s, slope_s, steps, count, dur)

    def add_each(
        self,
        durations: tuple[Seconds, ...],
        start: Seconds,
        end: Seconds,
        per_tier: list[int] | None,
        split: bool,
    ) -> None:
        """Iterations timed one by one from ``start`` to ``end``, ``per_tier`` as in
        :meth:`add_run`. ``split``: add the ITL sums of several iterations one iteration at
        a time, as one event per iteration adds them (the same float sums;
        ``ContinuousEngine.configure(inner_ends=...)``)."""
        at = start
        if len(durations) == 1:
            at = end
            self.busy_s += at - start
        else:
            busy = self.busy_s
            for d in durations:
                stop = at + d
                busy += stop - at
                at = stop
            self.busy_s = busy
        if per_tier is None:
            return
        split = split and len(durations) > 1
        for t, count in enumerate(per_tier):
            if not count:
                continue
            if split:
                self.gaps[t].add_each_apart(durations, count, start)
            else:
                self.gaps[t].add_each(durations, count, at - start)


class Held:
    """What an engine keeps of one request from its acceptance to its end: the output
    tokens it will make (``target``) and may make (``cap``), its tier, the tokens made
    before its current prefill, and the step its decoding ends at (-1: not decoding). One
    object per request rather than an entry in five dicts keyed by it: a request's end
    reads and drops them with one look-up, which matters when many engines' state is cold
    between their turns."""

    __slots__ = ("cap", "finish_step", "produced_before", "target", "tier")

    def __init__(self, target: int, cap: int, tier: int) -> None:
        self.target = target
        self.cap = cap
        self.tier = tier
        self.produced_before = 0
        self.finish_step = -1


class BatchState:
    """Queues, running sets and KV blocks of one engine, with their transitions."""

    def __init__(self, limits: EngineLimits, records: RecordArrays, num_tiers: int) -> None:
        self.block = limits.block_size
        self.num_blocks = limits.num_kv_blocks
        self.watermark_blocks = limits.watermark_blocks
        self.records = records
        self.queue = WaitQueue()
        self.waiting_tokens = 0
        self.held: dict[int, Held] = {}  # every request in the engine: its target, cap, tier
        self.prefill_len: dict[int, int] = {}  # tokens to prefill: waiting and prefilling
        self.pre: dict[int, int] = {}  # prefilling -> tokens prefilled so far
        self.pre_blocks = 0
        self.pre_done_sum = 0  # sum of pre's values
        self.pre_cap_sum = 0  # sum of cap over pre
        self.dec_due_sum = 0  # sum over decoding of cap - target + finish step
        self.step = 0  # iterations run so far (each one decode step)
        self.dec = DecodeBlocks(limits.block_size)
        self.offset: dict[int, int] = {}  # decoding -> cached tokens minus step
        self.offset_sum = 0
        self.finish: list[tuple[int, int]] = []  # heap of (finish step, request)
        # every start of decoding, in order: machine integers, so the log does not keep
        # an int object alive per finished request (~40 bytes each at 1M requests)
        self.decode_starts = array("q")
        self.tier_decoding = [0] * num_tiers  # decode sequences per tier
        self.preempted_at: dict[int, Seconds] = {}  # decoding when preempted -> when
        self.time = TimeAccount(num_tiers)  # busy time and ITL gaps
        self.gaps = self.time.gaps  # ITL gaps per tier
        self.done: list[int] = []  # finished or rejected since the driver last asked
        # ITL sums of a multi-iteration piece added iteration by iteration, as one event
        # per iteration adds them (the same float sums; ``ContinuousEngine.configure``)
        self.split_sums = False
        self.num_preemptions = 0
        self.num_generated = 0
        self.lookahead = 1  # tokens per decoding sequence the next step writes KV for
        # content-addressed blocks; None: caching off (every prefill starts from zero)
        self.cache: PrefixCache | None = (
            PrefixCache(limits.block_size, limits.kv_tiers)
            if limits.enable_prefix_caching
            else None
        )

    # ------------------------------------------------------------------ queries

    @property
    def num_running(self) -> int:
        """Sequences holding KV memory."""
        return len(self.pre) + self.dec.num_seqs

    @property
    def used_blocks(self) -> int:
        """KV blocks held now (prefill reservations plus decode sequences)."""
        return self.pre_blocks + self.dec.total(self.step)

    def num_produced(self, i: int) -> int:
        """Output tokens ``i`` has produced."""
        held = self.held.get(i)
        if held is None:
            return 0
        if held.finish_step < 0:
            return held.produced_before
        return held.target - (held.finish_step - self.step)

    def next_finish_step(self) -> int:
        """The earliest step at which a decoding sequence is done (some must decode)."""
        heap, held = self.finish, self.held
        while not _due(held.get(heap[0][1]), heap[0][0]):
            heapq.heappop(heap)
        return heap[0][0]

    # -------------------------------------------------------------- transitions

    def accept(self, i: int, target: int, tier: int, cap: int) -> None:
        """Take request ``i`` in; it will generate ``target`` tokens of at most ``cap``
        (then :meth:`wait`)."""
        self.held[i] = Held(target, cap, tier)

    def wait(self, i: int, prefill_len: int) -> None:
        """``i`` needs ``prefill_len`` tokens prefilled; the caller queues it with its key.

        Recorded before the key is computed: a key may read the prefill left (SRPF).
        """
        self.prefill_len[i] = prefill_len
        self.waiting_tokens += prefill_len

    def admit(self, admitted: Sequence[int], now: Seconds) -> None:
        """Waiting requests start prefilling, in order; each reserves its whole prefill's blocks."""
        first_scheduled, queue, length, pre, held = (
            self.records.first_scheduled_at,
            self.queue,
            self.prefill_len,
            self.pre,
            self.held,
        )
        block = self.block
        cache = self.cache
        for i in admitted:
            queue.remove(i)
            length_i = length[i]
            self.waiting_tokens -= length_i
            self.pre_blocks += -(-length_i // block)
            self.pre_cap_sum += held[i].cap
            first = math.isnan(first_scheduled[i])
            if first:
                first_scheduled[i] = now
            if cache is None:
                pre[i] = 0
                continue
            hit = cache.match(i, length_i)[0]
            self.pre_blocks -= cache.acquire(i, hit, length_i)
            pre[i] = hit * block
            self.pre_done_sum += hit * block
            if first:
                self.records.cached_tokens[i] = hit * block
        if cache is not None and cache.num_free:
            self.evict()

    def evict(self) -> None:
        """Evict cached free blocks the distinct blocks in use now need the room of."""
        cache = self.cache
        if cache is not None and cache.num_free:
            cache.evict(self.num_blocks - self.pre_blocks - self.dec.total(self.step))

    def prefix_hit(self, i: int) -> tuple[int, int]:
        """(prompt tokens cached, blocks held by running sequences) for waiting ``i`` now."""
        cache = self.cache
        if cache is None:
            return (0, 0)
        hit, shared = cache.match(i, self.prefill_len[i])
        return (hit * self.block, shared)

    def preempt(self, i: int, now: Seconds) -> int:
        """Free running ``i``'s blocks to recompute it later; return the tokens it made.

        The caller queues it again (:meth:`wait`) for its prompt plus those tokens.
        """
        produced = self.num_produced(i)
        if i in self.pre:
            self._drop_prefilling(i)
        else:
            self._drop_decoding(i, self.held[i])
            self.preempted_at[i] = now
        if self.cache is not None:
            self.pre_blocks += self.cache.release(i)
        self.records.num_preemptions[i] += 1
        self.num_preemptions += 1
        self.held[i].produced_before = produced
        return produced

    def prefilled(self, chunks: Sequence[tuple[int, int]], end: Seconds) -> None:
        """The chunks were computed by ``end``; finished prefills decode or are done."""
        pre, length, cache = self.pre, self.prefill_len, self.cache
        for i, c in chunks:
            done = pre[i] + c
            pre[i] = done
            self.pre_done_sum += c
            if cache is not None:
                cache.register(i, done)
            if done >= length[i]:
                self._prefill_done(i, end)

    def pop_finished(self, end: Seconds) -> None:
        """Decoding sequences whose last token came by the current step are done."""
        heap, held = self.finish, self.held
        step = self.step
        while heap and heap[0][0] <= step:
            fs, i = heapq.heappop(heap)
            h = held.get(i)
            if h is not None and h.finish_step == fs:
                self._drop_decoding(i, h)
                self._finish(i, end)

    def gain(self, i: int, extra: int) -> None:
        """Decoding ``i`` made ``extra`` tokens beyond the current step's one (accepted
        drafts): its cache and its output move that far on, at most to its last token."""
        held = self.held[i]
        offset, fs = self.offset[i], held.finish_step - extra
        assert extra > 0 and self.step <= fs, "a gain past the request's last token"
        self.dec.remove(offset)
        self.dec.add(offset + extra)
        self.offset[i] = offset + extra
        self.offset_sum += extra
        held.finish_step = fs
        self.dec_due_sum -= extra
        self.num_generated += extra
        heapq.heappush(self.finish, (fs, i))  # the entry at the old step is stale now

    def reject(self, i: int, reason: str) -> None:
        """``i`` is refused before it is taken in."""
        self.records.reject(i, reason)
        self.done.append(i)

    def abort(self, i: int) -> bool:
        """Cancel held ``i``: free its blocks, forget it, report it; whether it was running."""
        self.records.output_tokens[i] = self.num_produced(i)
        running = i not in self.queue
        if not running:
            self.queue.remove(i)
            self.waiting_tokens -= self.prefill_len[i]
        elif i in self.pre:
            self._drop_prefilling(i)
        else:
            self._drop_decoding(i, self.held[i])
        del self.held[i], self.prefill_len[i]
        self.preempted_at.pop(i, None)
        if self.cache is not None:
            self.pre_blocks += self.cache.release(i)
            self.cache.forget(i)
        self.reject(i, "aborted")
        return running

    # ----------------------------------------------------------------- time

    @property
    def busy_s(self) -> Seconds:
        """Seconds the engine has computed (its :class:`TimeAccount`'s)."""
        return self.time.busy_s

    def account_run(
        self, first_s: Seconds, slope_s: Seconds, steps: int, dur: Seconds, decoding: bool
    ) -> None:
        """:meth:`TimeAccount.add_run` for the tiers decoding now (``decoding``: whether the
        iterations gave decode sequences a token)."""
        self.time.add_run(first_s, slope_s, steps, dur, self.tier_decoding if decoding else None)

    def account_each(
        self, durations: tuple[Seconds, ...], start: Seconds, end: Seconds, decoding: bool
    ) -> None:
        """:meth:`TimeAccount.add_each` for the tiers decoding now."""
        per_tier = self.tier_decoding if decoding else None
        self.time.add_each(durations, start, end, per_tier, self.split_sums)

    # ---------------------------------------------------------------- internals

    def _prefill_done(self, i: int, end: Seconds) -> None:
        """Last chunk computed: one more token; the sequence decodes or is done."""
        length = self.prefill_len[i]
        self._drop_prefilling(i)
        self.num_generated += 1
        held = self.held[i]
        before = held.produced_before
        if before == 0:  # no token before this prefill: it makes the first one
            self.records.first_token_at[i] = end
        else:
            self.gaps[held.tier].add(end - self.preempted_at.pop(i, end))
        left = held.target - before - 1
        if left <= 0:
            self._finish(i, end)
            return
        self._decode_from(i, held, length, left)

    def start_decoding(self, i: int, kv_tokens: int) -> None:
        """Accepted ``i`` joins the decode batch holding ``kv_tokens`` tokens of KV computed
        elsewhere (a disaggregated prefill): its first token came with them."""
        held = self.held[i]
        held.produced_before = 1
        self.prefill_len[i] = kv_tokens
        self._decode_from(i, held, kv_tokens, held.target - 1)

    def _decode_from(self, i: int, held: Held, length: int, left: int) -> None:
        """``i`` (``held``) decodes from ``length`` cached tokens, ``left`` tokens still to
        make."""
        step = self.step
        offset = length - step
        self.offset[i] = offset
        self.offset_sum += offset
        self.dec.add(offset)
        self.tier_decoding[held.tier] += 1
        self.decode_starts.append(i)
        fs = step + left
        held.finish_step = fs
        self.dec_due_sum += held.cap - held.target + fs
        heapq.heappush(self.finish, (fs, i))

    def _drop_prefilling(self, i: int) -> None:
        self.pre_done_sum -= self.pre.pop(i)
        self.pre_cap_sum -= self.held[i].cap
        self.pre_blocks -= blocks_for(self.prefill_len[i], self.block)

    def _drop_decoding(self, i: int, held: Held) -> None:
        offset = self.offset.pop(i)
        self.offset_sum -= offset
        self.dec.remove(offset)
        self.tier_decoding[held.tier] -= 1
        self.dec_due_sum -= held.cap - held.target + held.finish_step
        held.finish_step = -1

    def _finish(self, i: int, end: Seconds) -> None:
        self.records.finished_at[i] = end
        self.records.output_tokens[i] = self.held.pop(i).target
        del self.prefill_len[i]
        if self.cache is not None:
            self.pre_blocks += self.cache.release(i)
            self.cache.forget(i)
        self.done.append(i)


def _due(held: Held | None, step: int) -> bool:
    """Whether a finish-heap entry at ``step`` is current: its request still decodes and
    ends there (a preempted, aborted or speculating request leaves stale entries)."""
    return held is not None and held.finish_step == step
