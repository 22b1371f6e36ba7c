"""What an engine scheduler reads: a read-only view of a :class:`~.state.BatchState`.

:class:`StateView` implements :class:`~sincere.policy.schedulers.base.EngineView` and
:class:`~sincere.policy.schedulers.base.DecodeTimeline` over the state's containers, so a
policy sees the engine's queues, running sets and KV blocks without being able to change
them. :class:`~sincere.engine.continuous.ContinuousEngine` is a ``StateView``: the
scheduler reads the engine itself, and so can a driver or a test.

Every read is O(1) except the iterators, which are lazy: ``waiting()`` walks the queue in
key order without popping it (:mod:`.waiting`), so a policy that stops after a few
admissions pays only for those.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from sincere.core.records import RecordArrays
from sincere.core.request import RequestArrays
from sincere.core.types import Seconds
from sincere.engine.base import EngineBase, EngineLoad, EngineStats
from sincere.engine.kv import blocks_for
from sincere.engine.speculation import Speculator
from sincere.engine.state import BatchState, EngineLimits


class StateView(EngineBase):
    """An :class:`~sincere.policy.schedulers.base.EngineView` (and decode timeline) of a state;
    the read side of an engine (so also the engine contract's defaults and the reads
    a driver makes of a state: totals, load, a rejection's numbers)."""

    def __init__(
        self,
        requests: RequestArrays,
        records: RecordArrays,
        limits: EngineLimits,
        state: BatchState,
        speculator: Speculator | None = None,
    ) -> None:
        self.requests = requests
        self.records = records
        self.limits = limits
        self.state = state
        # speculative decoding's draws and counters (None: one token per decode step)
        self.speculator = speculator
        if speculator is not None:  # a step writes KV for every verified position
            state.lookahead = speculator.lookahead

    def stats(self) -> EngineStats:
        """The engine's totals so far (:class:`~sincere.engine.base.EngineStats`)."""
        st = self.state
        return EngineStats(
            busy_s=st.busy_s,
            swap_s=0.0,
            num_steps=st.step,
            num_swaps=0,
            num_preemptions=st.num_preemptions,
            num_generated_tokens=st.num_generated,
            prefix_cache_queries=0 if st.cache is None else st.cache.num_queries,
            prefix_cache_hits=0 if st.cache is None else st.cache.num_hits,
            prefix_cache_evictions=0 if st.cache is None else st.cache.num_evictions,
            kv_tiers=None if st.cache is None or st.cache.tiers is None else st.cache.tiers.stats(),
            spec_decode=None if self.speculator is None else self.speculator.stats(),
        )

    def rejection_detail(self, request_ix: int, reason: str) -> str | None:
        """A ``kv_capacity`` rejection with its token counts: what the request needs at
        most (its prompt, then a recompute of all but its last output token) and the most
        KV one request may hold here (the blocks less the watermark); else ``None``."""
        if reason != "kv_capacity":
            return None
        lim, i = self.limits, request_ix
        prompt, output = int(self.requests.prompt_tokens[i]), int(self.requests.output_tokens[i])
        most = lim.num_kv_blocks - lim.watermark_blocks
        return (
            f"kv_capacity: {prompt} prompt tokens and {output} output "
            f"{'token needs' if output == 1 else 'tokens need'} up to "
            f"{prompt + output - 1} tokens of KV; this engine holds at most "
            f"{most * lim.block_size} tokens for one request ({most} blocks of "
            f"{lim.block_size} tokens, its watermark kept free)"
        )

    def take_tier_loaded_tokens(self, request_ix: int) -> tuple[int, int]:
        """Prompt tokens ``request_ix``'s first load brought from the CPU and disk tiers
        (:meth:`.KvTiers.take_first_load`); (0, 0) without tiers."""
        cache = self.state.cache
        tiers = None if cache is None else cache.tiers
        return (0, 0) if tiers is None else tiers.take_first_load(request_ix)

    def load_with(self, also_waiting: int, also_waiting_tokens: int = 0) -> EngineLoad:
        """What routers see: queue (plus ``also_waiting`` requests the engine holds apart,
        with ``also_waiting_tokens`` prompt tokens), batch, remaining and cached tokens, KV
        usage, busy time.

        Cached context: a decoding sequence holds ``offset + step`` tokens, a prefilling
        one the prompt tokens computed so far.
        """
        st = self.state
        step = st.step
        remaining = st.pre_cap_sum + st.dec_due_sum - step * len(st.offset)
        ctx = st.offset_sum + step * len(st.offset) + st.pre_done_sum
        cache = st.cache
        return EngineLoad(
            num_running=st.num_running,
            num_waiting=len(st.queue) + also_waiting,
            waiting_prefill_tokens=st.waiting_tokens + also_waiting_tokens,
            running_remaining_tokens=remaining,
            running_ctx_tokens=ctx,
            kv_usage=self.kv_usage,
            busy_s=st.busy_s,
            prefix_cache_queries=None if cache is None else cache.num_queries,
            prefix_cache_hits=None if cache is None else cache.num_hits,
        )

    @property
    def max_num_seqs(self) -> int:
        """Sequences per iteration."""
        return self.limits.max_num_seqs

    @property
    def max_num_batched_tokens(self) -> int:
        """Tokens per iteration."""
        return self.limits.max_num_batched_tokens

    @property
    def num_running(self) -> int:
        """Sequences holding KV memory."""
        return self.state.num_running

    @property
    def num_decoding(self) -> int:
        """Sequences decoding in the next iteration."""
        return self.state.dec.num_seqs

    @property
    def num_waiting(self) -> int:
        """Requests waiting for admission."""
        return len(self.state.queue)

    @property
    def decode_ctx_tokens(self) -> int:
        """Summed context of the next decode step (cached tokens + the new one)."""
        st = self.state
        return st.offset_sum + st.dec.num_seqs * (st.step + 1)

    @property
    def free_blocks(self) -> int:
        """Blocks free after the next decode step's needs."""
        st = self.state
        return st.num_blocks - st.pre_blocks - st.dec.total(st.step + st.lookahead)

    @property
    def watermark_blocks(self) -> int:
        """Blocks admissions leave free."""
        return self.state.watermark_blocks

    @property
    def kv_usage(self) -> float:
        """Fraction of KV blocks in use."""
        return self.state.used_blocks / self.state.num_blocks

    @property
    def used_blocks(self) -> int:
        """KV blocks held now (prefill reservations plus decode sequences)."""
        return self.state.used_blocks

    def seq_blocks(self, i: int) -> int:
        """Blocks request ``i`` holds now (0 when it holds none)."""
        st = self.state
        if i in st.pre:
            return blocks_for(st.prefill_len[i], st.block)
        if i in st.offset:
            return blocks_for(st.offset[i] + st.step, st.block)
        return 0

    def prefilling(self) -> Iterable[int]:
        """Running prefills in admission order."""
        return iter(self.state.pre)

    def decoding(self) -> Iterable[int]:
        """Decode sequences, in the order they began decoding."""
        return iter(self.state.offset)

    def waiting(self) -> Iterator[int]:
        """Waiting requests in the scheduler's order, relegated last."""
        return self.state.queue.ordered()

    def is_relegated(self, i: int) -> bool:
        """Whether waiting request ``i`` was relegated."""
        return self.state.queue.is_relegated(i)

    def prefill_remaining(self, i: int) -> int:
        """Tokens ``i`` has left to prefill (0 while it decodes)."""
        st = self.state
        if i in st.offset:
            return 0
        done = st.pre.get(i)
        if done is None:  # waiting: a prefix-cache hit is not computed again
            return st.prefill_len[i] - st.prefix_hit(i)[0]
        return st.prefill_len[i] - done

    def prefill_blocks(self, i: int) -> int:
        """New blocks ``i``'s whole prefill reserves on admission (shared cached ones are free)."""
        st = self.state
        return blocks_for(st.prefill_len[i], st.block) - st.prefix_hit(i)[1]

    def num_produced(self, i: int) -> int:
        """Output tokens ``i`` has produced."""
        return self.state.num_produced(i)

    def first_token_at(self, i: int) -> Seconds:
        """When ``i`` produced its first token (NaN if not yet)."""
        return float(self.records.first_token_at[i])

    @property
    def num_iterations(self) -> int:
        """Iterations run so far; each gave every decoding sequence one token."""
        return self.state.step

    def decode_starts(self, since: int) -> list[int]:
        """Sequences that began decoding, from the ``since``-th start on (0: the first)."""
        return self.state.decode_starts[since:].tolist()

    def is_decoding(self, i: int) -> bool:
        """Whether ``i`` is decoding now."""
        return i in self.state.offset
