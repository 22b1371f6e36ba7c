"""Data-parallel attention ranks sharing one expert-parallel group, stepping together.

A mixture-of-experts model served with attention DP and expert parallelism (vLLM's
``--data-parallel-size D --enable-expert-parallel``, SGLang's and TensorRT-LLM's attention
DP) is ``D`` engines behind one endpoint: each rank has its own scheduler, waiting queue,
running batch and KV cache, and the server spreads new requests over them. Their GPUs
form one MoE group, so the ranks meet at every MoE layer: every iteration starts and ends
at the same instant on every rank and lasts as long as the slowest rank's, and a rank
with nothing to do runs a dummy batch to take part (:mod:`sincere.perf.lockstep` prices
such an iteration, with vLLM's padding of every rank to one CUDA-graph size). A long
prefill on one rank therefore holds every other rank's decodes for as long as it runs:
what the instance-per-rank model, where every rank carries the same load, cannot show.

:class:`LockstepGroup` is that instance: ``D`` :class:`~.continuous.ContinuousEngine`
ranks, each cutting its work into single iterations, driven together. At each iteration
boundary every rank plans its next iteration (its own scheduler, limits and asynchronous
intake), the group prices them together and every rank's iteration is given the group's
duration. A new request goes to the rank vLLM's front end would pick (the lowest
``4 × waiting + running``, the first of equals); one for a rank that sits idle while the
group runs waits for the next boundary, when that rank joins (an idle rank's dummy
iterations run in step with the others).

With the attention-DP balance of its execution model (TensorRT-LLM's
``attention_dp_config: enable_balance``, :mod:`sincere.perf.execution`) the group holds
every new prompt and decides at each boundary, before the ranks plan, whether the held
ones go to their ranks: when every rank has a prompt (held or queued) and a free slot the
count restarts and they go (after up to ``batching_wait_iters`` more iterations while
every rank decodes); otherwise the count goes up and they go when it reaches
``timeout_iters`` or some rank has nothing to decode. As in TensorRT-LLM the count runs
at every iteration, prompts or not, so a lone prompt waits until the count next reaches
its timeout.

Ranks that speculate (``engine.speculation``, e.g. DeepSeek's MTP) each draw their own
acceptances; the group's iteration is the slowest rank's speculative step
(:mod:`sincere.perf.lockstep`). Not supported on a group (refused where the deployment is
built): KV offload tiers, prefill / decode roles, live driving (the emulator).
"""

from __future__ import annotations

from collections.abc import Sequence

from sincere.core.errors import ConfigError
from sincere.core.types import InstanceId, Seconds
from sincere.engine.base import (
    DecodeProgress,
    EngineBase,
    EngineLoad,
    EngineStats,
    SpecDecodeStats,
)
from sincere.engine.continuous import ContinuousEngine
from sincere.engine.gaps import GapHistogram
from sincere.engine.runs import chunk_sums
from sincere.engine.time_scale import TimeScaled, unscaled
from sincere.perf.base import Batch
from sincere.perf.execution import balance_iters
from sincere.perf.lockstep import LockstepTiming

WAITING_WEIGHT = 4
"""vLLM's data-parallel load balancing scores a rank ``4 × waiting + running``
(``DPLBAsyncMPClient.get_core_engine_for_request``) and sends a request to the lowest."""


def lockstep_group(
    ident: InstanceId, ranks: Sequence[ContinuousEngine], where: str
) -> LockstepGroup:
    """``ranks`` as one group, priced together from their (shared) step model."""
    step = ranks[0].step_model
    factor = step.factor if isinstance(step, TimeScaled) else 1.0
    try:
        timing = LockstepTiming(unscaled(step), len(ranks), factor)
    except ConfigError as exc:
        raise ConfigError(str(exc), where=f"{where}.engine.dp_ranks") from None
    return LockstepGroup(ident, ranks, timing)


def piece_batch(rank: ContinuousEngine) -> Batch:
    """What ``rank``'s iteration in flight computes (empty when it is idle)."""
    run = rank.piece
    if run is None:
        return Batch()
    tokens, cached, pairs = chunk_sums(run.chunks, rank.state.pre)
    return Batch(len(run.chunks), tokens, cached, pairs, run.num_decode, run.ctx_tokens)


class LockstepGroup(EngineBase):
    """``ranks`` stepping together as one instance (module docstring)."""

    def __init__(
        self, id: InstanceId, ranks: Sequence[ContinuousEngine], timing: LockstepTiming
    ) -> None:
        if len(ranks) < 2:
            raise ValueError("a lockstep group has at least two ranks")
        self.id = id
        self.ranks = list(ranks)
        for rank in self.ranks:
            rank.one_iteration = True
        self.timing = timing
        self._held: list[list[int]] = [[] for _ in self.ranks]  # requests held per rank
        self._boundary: Seconds | None = None  # end of the group's iteration in flight
        self.busy_s = 0.0
        self.num_steps = 0
        # the attention-DP balance (0: off) of the ranks' execution model, and its two
        # counts of iterations
        executed = timing.executed
        self._timeout, self._batching = (0, 0) if executed is None else balance_iters(executed)
        self._waited = self._batched = 0

    # ----------------------------------------------------------------- Engine API
    def add(self, request_ix: int, now: Seconds) -> None:
        """Send ``request_ix`` to the least loaded rank (it joins at the next boundary if
        that rank is idle while the group runs)."""
        r = self._least_loaded()
        rank = self.ranks[r]
        running = self._boundary is not None and self._boundary > now
        if running and (rank.piece is None or self._timeout):
            self._held[r].append(request_ix)
            return
        rank.add(request_ix, now)

    def next_event_at(self) -> Seconds | None:
        """The end of the group's iteration in flight, or a rank's pending start."""
        if self._boundary is not None:
            return self._boundary
        starts = [at for at in (rank.next_event_at() for rank in self.ranks) if at is not None]
        return min(starts) if starts else None

    def advance(self, now: Seconds) -> list[int]:
        """Complete every group iteration ending by ``now``, starting the next ones."""
        done: list[int] = []
        while True:
            at = self.next_event_at()
            if at is None or at > now:
                return done
            if self._timeout and self._boundary == at and self._balanced():
                self._release(at)  # before the ranks plan: they take the prompts now
            for rank in self.ranks:  # every piece ends at ``at``: complete, plan the next
                done.extend(rank.advance(at))
            if not self._timeout:  # ranks idle while the group ran join now
                self._release(at)
            for rank in self.ranks:  # ranks woken at ``at`` start their iteration
                if rank.piece is None and rank.next_event_at() == at:
                    done.extend(rank.advance(at))
            self._start(at)

    def _release(self, at: Seconds) -> None:
        """Every held request goes to its rank at ``at``."""
        for rank, held in zip(self.ranks, self._held, strict=True):
            for i in held:
                rank.add(i, at)
            held.clear()

    def _balanced(self) -> bool:
        """The attention-DP balance at the end of a group iteration: whether the held
        prompts go to their ranks now (module docstring), its counts moved on."""
        ctx = gen = free = True
        for r, rank in enumerate(self.ranks):
            st = rank.state
            decoding = st.dec.num_seqs
            ctx = ctx and bool(self._held[r] or st.queue or st.pre)
            gen = gen and decoding > 0
            free = free and decoding < rank.limits.max_num_seqs
        if ctx and free:
            self._waited = 0
            if gen and self._batched < self._batching:
                self._batched += 1
                return False
            self._batched = 0
            return True
        self._waited += 1
        if self._waited >= self._timeout or not gen:
            self._waited = 0
            return True
        return False

    def _start(self, at: Seconds) -> None:
        """Give every rank's new iteration the group's duration."""
        working = [rank for rank in self.ranks if rank.piece is not None]
        if not working:
            self._boundary = None
            return
        duration = self.timing.iteration_s([piece_batch(rank) for rank in self.ranks])
        for rank in working:
            run = rank.piece
            assert run is not None and run.start_at == at
            run.retime(duration)
        self._boundary = at + duration
        self.busy_s += duration
        self.num_steps += 1

    def _least_loaded(self) -> int:
        best, best_score = 0, -1
        for r, rank in enumerate(self.ranks):
            running, waiting, _ = rank.queue_sizes()
            score = WAITING_WEIGHT * (waiting + len(self._held[r])) + running
            if best_score < 0 or score < best_score:
                best, best_score = r, score
        return best

    # ----------------------------------------------------------------- reads
    def load(self) -> EngineLoad:
        """The ranks' loads together (KV usage: the share of all their blocks in use)."""
        loads = [rank.load() for rank in self.ranks]
        queries = [x.prefix_cache_queries for x in loads]
        hits = [x.prefix_cache_hits for x in loads]
        return EngineLoad(
            num_running=sum(x.num_running or 0 for x in loads),
            num_waiting=sum(x.num_waiting or 0 for x in loads) + self._num_held,
            waiting_prefill_tokens=sum(x.waiting_prefill_tokens or 0 for x in loads)
            + self._held_prompt_tokens,
            running_remaining_tokens=sum(x.running_remaining_tokens or 0 for x in loads),
            running_ctx_tokens=sum(x.running_ctx_tokens or 0 for x in loads),
            kv_usage=sum(x.kv_usage or 0.0 for x in loads) / len(loads),
            busy_s=self.busy_s,
            prefix_cache_queries=None if None in queries else sum(q or 0 for q in queries),
            prefix_cache_hits=None if None in hits else sum(h or 0 for h in hits),
        )

    def queue_sizes(self) -> tuple[int, int, int]:
        """Running sequences, waiting requests and their prompt tokens, over the ranks."""
        sizes = [rank.queue_sizes() for rank in self.ranks]
        return (
            sum(s[0] for s in sizes),
            sum(s[1] for s in sizes) + self._num_held,
            sum(s[2] for s in sizes) + self._held_prompt_tokens,
        )

    @property
    def _num_held(self) -> int:
        return sum(len(held) for held in self._held)

    @property
    def _held_prompt_tokens(self) -> int:
        prompts = self.ranks[0].requests.prompt_tokens
        return sum(int(prompts[i]) for held in self._held for i in held)

    def stats(self) -> EngineStats:
        """The ranks' totals; busy time and iterations are the group's."""
        each = [rank.stats() for rank in self.ranks]
        return EngineStats(
            busy_s=self.busy_s,
            swap_s=0.0,
            num_steps=self.num_steps,
            num_swaps=0,
            num_preemptions=sum(s.num_preemptions for s in each),
            num_generated_tokens=sum(s.num_generated_tokens for s in each),
            prefix_cache_queries=sum(s.prefix_cache_queries for s in each),
            prefix_cache_hits=sum(s.prefix_cache_hits for s in each),
            prefix_cache_evictions=sum(s.prefix_cache_evictions for s in each),
            spec_decode=_spec_totals([s.spec_decode for s in each]),
        )

    @property
    def gaps(self) -> list[GapHistogram]:
        """Inter-token gaps per tier over the ranks."""
        merged = []
        for tier in zip(*(rank.gaps for rank in self.ranks), strict=True):
            into = GapHistogram()
            for hist in tier:
                into.merge(hist)
            merged.append(into)
        return merged

    def progress_at(self, now: Seconds) -> DecodeProgress | None:
        """None: every piece is one iteration, so the load changes only at events."""
        return None

    def progress_until(self, now: Seconds) -> tuple[DecodeProgress | None, Seconds]:
        """Nothing moves until the next event."""
        return None, float("inf")

    @property
    def max_model_len(self) -> int | None:
        """Longest prompt plus ``max_tokens`` served (every rank's)."""
        return self.ranks[0].max_model_len

    def rejection_detail(self, request_ix: int, reason: str) -> str | None:
        """Why a rank refused ``request_ix`` (every rank has the same limits)."""
        return self.ranks[0].rejection_detail(request_ix, reason)


def _spec_totals(each: Sequence[SpecDecodeStats | None]) -> SpecDecodeStats | None:
    """The ranks' speculative-decoding counters summed (None: the ranks do not speculate)."""
    ranks = [s for s in each if s is not None]
    return SpecDecodeStats.total(ranks) if ranks else None
