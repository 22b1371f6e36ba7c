"""A continuous-batching (iteration-level) engine: vLLM / Sarathi-Serve, in simulation.

Model. Requests wait in a queue ordered by the engine scheduler's key. Each
iteration computes one token for every decoding sequence plus prefill chunks the
scheduler picks within a token budget (chunked prefill) and ``max_num_seqs``. A
request admitted for prefill reserves the KV blocks of its whole prefill (vLLM
v0); decoding sequences grow one token per iteration and take a new block at each
block boundary. When the next decode step does not fit in the free blocks, running
sequences are preempted (largest scheduler key first) and later *recomputed*:
their prompt plus the tokens already generated are prefilled again, and the last
chunk of that prefill yields their next token. The last prefill chunk of a request
produces its first token. Iteration times come from a
:class:`~sincere.perf.base.StepTimeModel`, which folds in tensor parallelism,
precision and confidential-computing costs of the deployment.

Speed. An iteration without prefill work leaves the batch unchanged until a
sequence finishes, the KV pool runs dry, or a request arrives, so the engine runs
all those identical decode iterations as one *run* timed in closed form
(``decode_steps_s``). An arrival during a run cuts it at the iteration in progress
(unless nothing could be admitted anyway); finishes are kept in a heap by decode
step; decode KV blocks are counted by residue class (:mod:`.kv`). Work per run is
O(log n) plus the scheduler's, not O(tokens). Likewise, with a *view-only* policy
(:meth:`~sincere.policy.schedulers.base.IterationScheduler.plan_is_view_only`), the
iterations in which the first running prefill takes every token the decodes leave have a
known plan (that chunk, no admission, whatever arrives), so they run as one *prefill
run*, each iteration timed on its own (``iteration_s_fast``), up to a decode finish,
the KV blocks the decodes grow into, or ``max_prefill_run`` iterations.

For a view-only policy the engine also computes every other plan itself
(``_plan_known``: the shared planning loop run on the engine's own state), which gives
the policy's plan without building views or plan objects.

Live driving (engine/base.py): request fields are read at ``add`` or later; with
``on_tokens`` set, every piece of work is one iteration and the hook hears of each
token; ``abort`` cancels a request and frees its blocks.

Approximation: within a run the scheduler is not consulted, so time-driven changes
of a policy (Niyama's relegation of a blocked queue head) wait for the run's end.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sincere.core.errors import ConfigError
from sincere.core.records import RecordArrays
from sincere.core.request import RequestArrays
from sincere.core.types import InstanceId, Seconds
from sincere.engine.base import EngineLoad, EngineStats
from sincere.engine.gaps import GapHistogram
from sincere.engine.kv import DecodeBlocks, blocks_for
from sincere.engine.waiting import WaitQueue
from sincere.perf.base import StepTimeModel
from sincere.policy.schedulers.base import IterationPlan, IterationScheduler


@dataclass(frozen=True, slots=True)
class EngineLimits:
    """Batch and memory limits of one engine (vLLM's names)."""

    num_kv_blocks: int  # KV blocks in the pool (from the memory plan)
    max_num_seqs: int = 256  # sequences per iteration
    max_num_batched_tokens: int = 8192  # tokens per iteration (prefill chunks + decodes)
    block_size: int = 16  # tokens per KV block
    watermark: float = 0.01  # fraction of blocks admissions must leave free
    max_model_len: int | None = None  # longest prompt + output; None: no limit

    def __post_init__(self) -> None:
        checks = {
            "num_kv_blocks": self.num_kv_blocks >= 1,
            "max_num_seqs": self.max_num_seqs >= 1,
            "max_num_batched_tokens": self.max_num_batched_tokens >= 1,
            "block_size": self.block_size >= 1,
            "watermark": 0.0 <= self.watermark < 1.0,
            "max_model_len": self.max_model_len is None or self.max_model_len >= 2,
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(
                    f"engine limit {name} is out of range",
                    value=getattr(self, name),
                    allowed="integers >= 1 (watermark in [0, 1), max_model_len >= 2)",
                )

    @property
    def watermark_blocks(self) -> int:
        """Blocks admissions leave free."""
        return int(self.watermark * self.num_kv_blocks)


IterationTime = Callable[[int, int, int, float, int, int], Seconds]
"""``iteration_s_fast``'s signature: the six :class:`Batch` fields in order."""

TokenHook = Callable[[Seconds, list[int]], None]
"""``on_tokens(iteration_end_at, positions)``: requests that produced a token, in order."""


class _Run:
    """The piece of work in progress: one mixed iteration, or ``steps`` decode iterations.

    A plain class rather than a dataclass: its ``__init__`` is then compiled along with
    the engine (see :mod:`sincere.native`); one is made per piece of work.
    """

    __slots__ = (
        "chunks",
        "ctx_tokens",
        "durations",
        "end_at",
        "first_s",
        "num_decode",
        "prefill_tokens",
        "slope_s",
        "start_at",
        "steps",
    )

    def __init__(
        self,
        start_at: Seconds,
        end_at: Seconds,
        steps: int,
        num_decode: int,
        ctx_tokens: int,
        chunks: tuple[tuple[int, int], ...],
        first_s: Seconds,
        slope_s: Seconds,
        prefill_tokens: int = 0,
        durations: tuple[Seconds, ...] = (),
    ) -> None:
        self.start_at = start_at
        self.end_at = end_at
        self.steps = steps
        self.num_decode = num_decode  # decode sequences in every iteration of the run
        self.ctx_tokens = ctx_tokens  # their summed context at the first iteration
        self.chunks = chunks  # prefill chunks (mixed iteration only)
        self.first_s = first_s  # duration of the first iteration
        self.slope_s = slope_s  # growth of the iteration time per decode step
        self.prefill_tokens = prefill_tokens  # prompt tokens the chunks compute
        self.durations = durations  # each iteration of a prefill run (else empty)


class ContinuousEngine:
    """An iteration-level engine; implements :class:`~sincere.engine.base.Engine`.

    It is also the :class:`~sincere.policy.schedulers.base.EngineView` its scheduler
    reads. ``max_tokens`` (optional) overrides the requests' caps, e.g. set by a
    budget-aware router.
    """

    def __init__(
        self,
        id: InstanceId,
        requests: RequestArrays,
        records: RecordArrays,
        instance_ix: int,
        step_model: StepTimeModel,
        scheduler: IterationScheduler,
        limits: EngineLimits,
        max_tokens: npt.NDArray[np.int64] | None = None,
    ) -> None:
        self.id = id
        self.requests = requests
        self.records = records
        self.instance_ix = instance_ix
        self.step_model = step_model
        self._iteration_s: IterationTime = step_model.iteration_s_fast
        self.scheduler = scheduler
        self._observes = type(scheduler).observe is not IterationScheduler.observe
        self._view_only = scheduler.plan_is_view_only()
        self._budget: int | None = None  # the view-only policy's token budget
        # most iterations one prefill run may hold; 1 keeps ``load()`` exact at every
        # iteration (the cluster sets it when a router reads the engines)
        self.max_prefill_run = 1 << 30
        # live drivers: called after every iteration with its end time and the requests
        # that produced a token in it; while set, every piece of work is one iteration
        self.on_tokens: TokenHook | None = None
        self.limits = limits
        self.gaps = [GapHistogram() for _ in requests.tiers]  # ITL gaps per tier
        self._tier_decoding = [0] * len(requests.tiers)  # decode sequences per tier
        self._max_tokens = requests.max_tokens if max_tokens is None else max_tokens
        self._block = limits.block_size
        self._num_blocks = limits.num_kv_blocks
        self._watermark_blocks = limits.watermark_blocks
        self._queue = WaitQueue()
        # prompt + output tokens that always fit (blocks_for(prompt + target - 1) <= most)
        self._fits_tokens = (limits.num_kv_blocks - self._watermark_blocks) * self._block
        self._tier_of: dict[int, int] = {}  # tier of each request in the engine
        self._waiting_tokens = 0
        self._prefill_len: dict[int, int] = {}  # tokens to prefill: waiting and prefilling
        self._produced_before: dict[int, int] = {}  # tokens made before this prefill
        self._target: dict[int, int] = {}  # tokens each request will generate
        self._pre: dict[int, int] = {}  # prefilling -> tokens prefilled so far
        self._pre_blocks = 0
        self._step = 0  # decode steps run so far
        self._dec = DecodeBlocks(limits.block_size)
        self._offset: dict[int, int] = {}  # decoding -> cached tokens minus step
        self._offset_sum = 0
        self._finish_step: dict[int, int] = {}  # decoding -> step at which it is done
        self._finish: list[tuple[int, int]] = []  # heap of (finish step, request)
        self._decode_starts: list[int] = []  # every start of decoding, in order (for policies)
        self._preempted_at: dict[int, Seconds] = {}
        self._run: _Run | None = None
        self._blocked_head: tuple[float, float, int, int] | None = None
        self._wake_at: Seconds | None = None
        self._done: list[int] = []
        self._busy_s = 0.0
        self._num_steps = 0
        self._num_preemptions = 0
        self._num_generated = 0

    # ----------------------------------------------------------------- Engine API

    def add(self, request_ix: int, now: Seconds) -> None:
        """Queue request ``request_ix``; rejects it if it can never fit the KV cache."""
        i = request_ix
        req = self.requests
        self.records.instance[i] = self.instance_ix
        prompt = int(req.prompt_tokens[i])
        target = int(req.output_tokens[i])
        cap = int(self._max_tokens[i])
        if cap < target:
            target = cap
        if prompt + target > self._fits_tokens or self.limits.max_model_len is not None:
            reason = self._reject_reason(prompt, target)
            if reason is not None:
                self.records.reject(i, reason)
                self._done.append(i)
                self._wake(now)
                return
            if self.limits.max_model_len is not None:
                target = min(target, self.limits.max_model_len - prompt)
        self._target[i] = target
        self._produced_before[i] = 0
        self._tier_of[i] = int(req.tier[i])
        self._enqueue(i, prompt)
        run = self._run
        if run is None:
            self._wake(now)
        elif not run.chunks:
            self._maybe_cut(now)

    def next_event_at(self) -> Seconds | None:
        """End of the work in progress, or a pending start; ``None`` when idle."""
        return self._run.end_at if self._run is not None else self._wake_at

    def advance(self, now: Seconds) -> list[int]:
        """Complete every run ending by ``now``, starting the next ones; return finished."""
        while True:
            run = self._run
            if run is not None:
                if run.end_at > now:
                    break
                self._complete(run)
                self._start(run.end_at)
            elif self._wake_at is not None and self._wake_at <= now:
                at, self._wake_at = self._wake_at, None
                self._start(at)
            else:
                break
        done, self._done = self._done, []
        return done

    def load(self) -> EngineLoad:
        """What routers see: queue, batch, KV usage, busy time."""
        step = self._step
        remaining = sum(self._max_tokens[i] for i in self._pre) + sum(
            int(self._max_tokens[i]) - self._target[i] + fs - step
            for i, fs in self._finish_step.items()
        )
        return EngineLoad(
            num_running=self.num_running,
            num_waiting=len(self._queue),
            waiting_prefill_tokens=self._waiting_tokens,
            running_remaining_tokens=int(remaining),
            kv_usage=self.kv_usage,
            busy_s=self._busy_s,
        )

    def stats(self) -> EngineStats:
        """Totals so far."""
        return EngineStats(
            busy_s=self._busy_s,
            swap_s=0.0,
            num_steps=self._num_steps,
            num_swaps=0,
            num_preemptions=self._num_preemptions,
            num_generated_tokens=self._num_generated,
        )

    def abort(self, request_ix: int, now: Seconds) -> bool:
        """Cancel a waiting or running request; return whether it was here.

        Its KV blocks are freed at once and it is marked rejected (``"aborted"``, with the
        tokens it produced as ``output_tokens``); ``advance`` returns it like any other
        rejection. An iteration in flight still ends as planned (its time includes the
        request) but yields nothing for it; a longer run is cut after that iteration so
        the scheduler re-plans with the freed room. Call ``next_event_at`` again after.
        """
        i = request_ix
        if i not in self._target:
            return False
        self.records.output_tokens[i] = self.num_produced(i)
        if i in self._queue:
            self._queue.remove(i)
            self._waiting_tokens -= self._prefill_len[i]
        else:
            self._release_running(i, now)
        del self._target[i], self._prefill_len[i], self._produced_before[i], self._tier_of[i]
        self._preempted_at.pop(i, None)
        self.records.reject(i, "aborted")
        self._done.append(i)
        self._wake(now)
        return True

    # ------------------------------------------------------- EngineView (policy)

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
        return len(self._pre) + self._dec.num_seqs

    @property
    def num_decoding(self) -> int:
        """Sequences decoding in the next iteration."""
        return self._dec.num_seqs

    @property
    def num_waiting(self) -> int:
        """Requests waiting for admission."""
        return len(self._queue)

    @property
    def decode_ctx_tokens(self) -> int:
        """Summed context of the next decode step (cached tokens + the new one)."""
        return self._offset_sum + self._dec.num_seqs * (self._step + 1)

    @property
    def free_blocks(self) -> int:
        """Blocks free after the next decode step's needs."""
        return self.limits.num_kv_blocks - self._pre_blocks - self._dec.total(self._step + 1)

    @property
    def watermark_blocks(self) -> int:
        """Blocks admissions leave free."""
        return self._watermark_blocks

    @property
    def kv_usage(self) -> float:
        """Fraction of KV blocks in use."""
        used = self._pre_blocks + self._dec.total(self._step)
        return used / self.limits.num_kv_blocks

    @property
    def used_blocks(self) -> int:
        """KV blocks held now (prefill reservations plus decode sequences)."""
        return self._pre_blocks + self._dec.total(self._step)

    def seq_blocks(self, i: int) -> int:
        """Blocks request ``i`` holds now (0 when it holds none)."""
        if i in self._pre:
            return blocks_for(self._prefill_len[i], self._block)
        if i in self._offset:
            return blocks_for(self._offset[i] + self._step, self._block)
        return 0

    def prefilling(self) -> Iterable[int]:
        """Running prefills in admission order."""
        return iter(self._pre)

    def decoding(self) -> Iterable[int]:
        """Decode sequences."""
        return iter(self._offset)

    def waiting(self) -> Iterator[int]:
        """Waiting requests in the scheduler's order, relegated last."""
        return self._queue.ordered()

    def is_relegated(self, i: int) -> bool:
        """Whether waiting request ``i`` was relegated."""
        return self._queue.is_relegated(i)

    def prefill_remaining(self, i: int) -> int:
        """Tokens ``i`` has left to prefill (0 while it decodes)."""
        if i in self._offset:
            return 0
        return self._prefill_len[i] - self._pre.get(i, 0)

    def prefill_blocks(self, i: int) -> int:
        """Blocks ``i``'s whole prefill reserves on admission."""
        return blocks_for(self._prefill_len[i], self._block)

    def num_produced(self, i: int) -> int:
        """Output tokens ``i`` has produced."""
        fs = self._finish_step.get(i)
        if fs is None:
            return self._produced_before.get(i, 0)
        return self._target[i] - (fs - self._step)

    def first_token_at(self, i: int) -> Seconds:
        """When ``i`` produced its first token (NaN if not yet)."""
        return float(self.records.first_token_at[i])

    @property
    def num_iterations(self) -> int:
        """Iterations run so far; each gave every decoding sequence one token."""
        return self._step

    def decode_starts(self, since: int) -> list[int]:
        """Sequences that began decoding, from the ``since``-th start on (0: the first)."""
        return self._decode_starts[since:]

    def is_decoding(self, i: int) -> bool:
        """Whether ``i`` is decoding now."""
        return i in self._offset

    # ------------------------------------------------------------- internals

    def _release_running(self, i: int, now: Seconds) -> None:
        """Free running ``i``'s blocks and drop it from the work in flight (an abort)."""
        if i in self._pre:
            del self._pre[i]
            self._pre_blocks -= blocks_for(self._prefill_len[i], self._block)
        else:
            self._drop_decoding(i)
        run = self._run
        if run is None:
            return
        if any(j == i for j, _ in run.chunks):
            run.chunks = tuple(chunk for chunk in run.chunks if chunk[0] != i)
        if run.durations:
            self._cut_prefill_run(run, now)
        elif not run.chunks and run.steps > 1:
            self._cut_decode_run(run, self._steps_covering(run, now))

    def _cut_prefill_run(self, run: _Run, now: Seconds) -> None:
        """End a prefill run after the iteration in flight at ``now``."""
        end, steps = run.start_at, 0
        for d in run.durations:
            end += d
            steps += 1
            if end >= now:
                break
        if steps == run.steps:
            return
        per_step = run.prefill_tokens // run.steps
        run.durations = run.durations[:steps]
        run.prefill_tokens = per_step * steps
        run.chunks = tuple((j, run.prefill_tokens) for j, _ in run.chunks)
        run.steps, run.end_at = steps, end

    def _cut_decode_run(self, run: _Run, steps: int) -> None:
        """End a decode run after ``steps`` iterations."""
        if steps < run.steps:
            run.steps = steps
            run.end_at = run.start_at + self.step_model.decode_steps_s(
                run.num_decode, run.ctx_tokens, steps
            )

    def _reject_reason(self, prompt: int, target: int) -> str | None:
        lim = self.limits
        if lim.max_model_len is not None and prompt >= lim.max_model_len:
            return "prompt_too_long"
        # the longest prefill it may need is a recompute of prompt + all but one output
        most = lim.num_kv_blocks - self._watermark_blocks
        if blocks_for(prompt + target - 1, self._block) > most:
            return "kv_capacity"
        return None

    def _wake(self, now: Seconds) -> None:
        if self._run is None and self._wake_at is None:
            self._wake_at = now

    def _enqueue(self, i: int, prefill_len: int) -> None:
        self._prefill_len[i] = prefill_len
        self._waiting_tokens += prefill_len
        self._queue.push(i, self.scheduler.waiting_key(self, i))

    def _maybe_cut(self, now: Seconds) -> None:
        """An arrival during a decode run: end the run at the iteration in progress."""
        run = self._run
        if run is None or run.chunks or run.durations or run.steps <= 1:
            return
        if self.num_running >= self.limits.max_num_seqs:
            return  # nothing can be admitted before a sequence finishes
        head = self._queue.head()
        if self._blocked_head is not None and head == self._blocked_head:
            return  # the queue head was blocked and still is: order unchanged
        self._cut_decode_run(run, self._steps_covering(run, now))

    def _steps_covering(self, run: _Run, now: Seconds) -> int:
        """Fewest iterations of ``run`` that end at or after ``now`` (at least one)."""
        elapsed = now - run.start_at
        a, b = run.first_s, run.slope_s
        if abs(b) > 1e-15:
            disc = (a - b / 2.0) ** 2 + 2.0 * b * elapsed
            j = math.ceil((-(a - b / 2.0) + math.sqrt(max(disc, 0.0))) / b)
        else:
            j = math.ceil(elapsed / a) if a > 0 else 1
        j = min(max(j, 1), run.steps)
        dec = self.step_model.decode_steps_s
        while j < run.steps and run.start_at + dec(run.num_decode, run.ctx_tokens, j) < now:
            j += 1
        while j > 1 and run.start_at + dec(run.num_decode, run.ctx_tokens, j - 1) >= now:
            j -= 1
        return j

    def _start(self, now: Seconds) -> None:
        """Plan and start the next piece of work at ``now`` (or go idle)."""
        self._run = None
        self._blocked_head = None
        dec = self._dec
        if dec.num_seqs and not dec.fits(self._step + 1, self._num_blocks - self._pre_blocks):
            self._preempt_for_decode(now)
        if self._view_only:
            self._start_known(now)
            return
        plan: IterationPlan | None = None
        if self._pre or self._queue:
            plan = self.scheduler.plan(self, now)
            self._apply(plan, now)
        if plan is not None and plan.chunks:
            self._start_mixed(now, plan.chunks)
        elif self._dec.num_seqs:
            if plan is not None and not plan.admit and not plan.relegate:
                self._blocked_head = self._queue.head()
            self._start_decode_run(now)

    def _start_known(self, now: Seconds) -> None:
        """:meth:`_start` for a view-only policy: its plan, computed here from the state."""
        if self._pre and self._start_prefill_run(now):
            return
        chunks = self._plan_known(now) if self._pre or self._queue else []
        if chunks:
            self._start_mixed(now, tuple(chunks))
        elif self._dec.num_seqs:
            self._blocked_head = self._queue.head()
            self._start_decode_run(now)

    def _plan_known(self, now: Seconds) -> list[tuple[int, int]]:
        """A view-only policy's plan (the shared loop of ``IterationScheduler.plan``).

        Same chunks and admissions as asking the policy: continuing prefills in
        admission order, then waiting requests in key order while tokens, sequences and
        blocks above the watermark last, stopping at the first that does not fit.
        Admissions are applied.
        """
        if self._budget is None:  # a view-only policy's budget never changes
            self._budget = self.scheduler.token_budget(self, now)
        left = self._budget - self._dec.num_seqs
        chunks: list[tuple[int, int]] = []
        if left <= 0:
            return chunks
        length = self._prefill_len
        for i, done in self._pre.items():
            n = length[i] - done
            if n >= left:
                chunks.append((i, left))
                return chunks
            chunks.append((i, n))
            left -= n
        seqs = self.limits.max_num_seqs - len(self._pre) - self._dec.num_seqs
        if seqs > 0 and self._queue:
            self._admit_known(now, left, seqs, chunks)
        return chunks

    def _admit_known(
        self, now: Seconds, left: int, seqs: int, chunks: list[tuple[int, int]]
    ) -> None:
        """Admit waiting requests in order while tokens, sequences and KV blocks last."""
        blocks = self.free_blocks - self._watermark_blocks
        length, block, pre = self._prefill_len, self._block, self._pre
        admitted: list[int] = []
        for i in self._queue.ordered():
            need = -(-length[i] // block)
            if need > blocks:
                break
            n = length[i]
            chunks.append((i, n if n < left else left))
            admitted.append(i)
            left -= n
            seqs -= 1
            blocks -= need
            if left <= 0 or seqs <= 0:
                break
        if not admitted:
            return
        first_scheduled, queue = self.records.first_scheduled_at, self._queue
        for i in admitted:
            queue.remove(i)
            length_i = length[i]
            self._waiting_tokens -= length_i
            self._pre_blocks += -(-length_i // block)
            pre[i] = 0
            if math.isnan(first_scheduled[i]):
                first_scheduled[i] = now

    def _apply(self, plan: IterationPlan, now: Seconds) -> None:
        """Relegate and admit as planned; admitted requests reserve their blocks."""
        if not plan.admit and not plan.relegate:
            return
        first_scheduled = self.records.first_scheduled_at
        for i in plan.relegate:
            self._queue.relegate(i)
        for i in plan.admit:
            self._queue.remove(i)
            length = self._prefill_len[i]
            self._waiting_tokens -= length
            self._pre_blocks += blocks_for(length, self._block)
            self._pre[i] = 0
            if math.isnan(first_scheduled[i]):
                first_scheduled[i] = now

    def _start_mixed(self, now: Seconds, chunks: tuple[tuple[int, int], ...]) -> None:
        tokens = cached = 0
        pairs = 0.0
        pre = self._pre
        for i, c in chunks:
            done = pre[i]
            tokens += c
            cached += done
            pairs += c * done + c * (c + 1) / 2.0
        n = self._dec.num_seqs
        ctx = self._offset_sum + n * (self._step + 1)
        dur = self._iteration_s(len(chunks), tokens, cached, pairs, n, ctx)
        self._run = _Run(now, now + dur, 1, n, ctx, chunks, dur, 0.0, tokens)

    def _start_prefill_run(self, now: Seconds) -> bool:
        """Start the iterations whose plan is known (a view-only policy), if any.

        While the first running prefill has at least the ``left`` tokens the decodes
        leave, the plan is that one chunk of ``left`` tokens and no admission, so a run
        of such iterations goes at once, up to a decode finish, the KV blocks its
        decodes grow into, and ``max_prefill_run``. Each iteration is still timed on
        its own.
        """
        n = self._dec.num_seqs
        if self._budget is None:  # a view-only policy's budget never changes
            self._budget = self.scheduler.token_budget(self, now)
        left = self._budget - n
        i = next(iter(self._pre))
        done = self._pre[i]
        if left <= 0 or self._prefill_len[i] - done < left:
            return False
        most = max(1, self.max_prefill_run) if self.on_tokens is None else 1
        steps = min((self._prefill_len[i] - done) // left, most)
        if n:
            step, dec = self._step, self._dec
            steps = min(steps, self._next_finish_step() - step)
            need = n * (steps // self._block + 2)
            if self._num_blocks - self._pre_blocks - dec.upper(step) < need:
                free = self._num_blocks - self._pre_blocks - dec.total(step)
                if free < need:
                    steps = min(steps, dec.max_steps(step, free))
        ctx = self._offset_sum + n * (self._step + 1)
        self._run = self._prefill_run(now, i, done, left, steps, n, ctx)
        return True

    def _prefill_run(
        self, now: Seconds, i: int, done: int, left: int, steps: int, n: int, ctx: int
    ) -> _Run:
        """``steps`` iterations of ``left`` prompt tokens of ``i`` plus ``n`` decodes."""
        iteration_s, end = self._iteration_s, now
        tail = left * (left + 1) / 2.0
        if steps == 1:
            dur = iteration_s(1, left, done, left * done + tail, n, ctx)
            return _Run(now, now + dur, 1, n, ctx, ((i, left),), dur, 0.0, left, (dur,))
        durations = []
        for j in range(steps):
            cached = done + j * left
            dur = iteration_s(1, left, cached, left * cached + tail, n, ctx + j * n)
            durations.append(dur)
            end += dur
        first = durations[0]
        tokens = steps * left
        chunk = ((i, tokens),)
        return _Run(now, end, steps, n, ctx, chunk, first, 0.0, tokens, tuple(durations))

    def _start_decode_run(self, now: Seconds) -> None:
        n = self._dec.num_seqs
        steps = self._next_finish_step() - self._step if self.on_tokens is None else 1
        free = self.limits.num_kv_blocks - self._pre_blocks - self._dec.total(self._step)
        if free < n * (steps // self._block + 2):
            steps = min(steps, self._dec.max_steps(self._step, free))
        ctx = self.decode_ctx_tokens
        dec = self.step_model.decode_steps_s
        first = dec(n, ctx, 1)
        slope = dec(n, ctx, 2) - 2.0 * first if steps > 1 else 0.0
        dur = dec(n, ctx, steps) if steps > 1 else first
        self._run = _Run(now, now + dur, steps, n, ctx, (), first, slope)

    def _next_finish_step(self) -> int:
        heap = self._finish
        while self._finish_step.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0]

    def _preempt_for_decode(self, now: Seconds) -> None:
        """Preempt (largest key first) until the next decode step's blocks fit."""
        while self._dec.num_seqs:
            free = self.limits.num_kv_blocks - self._pre_blocks
            if self._dec.fits(self._step + 1, free):
                return
            self._preempt(self._victim(), now)

    def _victim(self) -> int:
        running = list(self._pre) + list(self._offset)
        return max(running, key=lambda i: self.scheduler.waiting_key(self, i))

    def _preempt(self, i: int, now: Seconds) -> None:
        """Free ``i``'s blocks and queue it to recompute prompt + generated tokens."""
        produced = self.num_produced(i)
        if i in self._pre:
            del self._pre[i]
            self._pre_blocks -= blocks_for(self._prefill_len[i], self._block)
        else:
            self._drop_decoding(i)
            self._preempted_at[i] = now
        self.records.num_preemptions[i] += 1
        self._num_preemptions += 1
        self._produced_before[i] = produced
        self._enqueue(i, int(self.requests.prompt_tokens[i]) + produced)

    def _drop_decoding(self, i: int) -> None:
        offset = self._offset.pop(i)
        self._offset_sum -= offset
        self._dec.remove(offset)
        self._tier_decoding[self._tier_of[i]] -= 1
        del self._finish_step[i]

    def _complete(self, run: _Run) -> None:
        """Apply a finished run: tokens, first tokens, finishes, statistics."""
        end = run.end_at
        steps = run.steps
        hook = self.on_tokens
        produced = list(self._offset) if hook is not None else None
        self._step += steps
        self._num_steps += steps
        self._num_generated += run.num_decode * steps
        if run.durations:
            self._complete_each(run)
        else:
            dur = end - run.start_at
            self._busy_s += dur
            if run.num_decode:
                gaps = self.gaps
                for t, count in enumerate(self._tier_decoding):
                    if count:
                        gaps[t].add_run(run.first_s, run.slope_s, steps, count, dur)
        if run.chunks:
            if self._observes:
                self.scheduler.observe(run.prefill_tokens, end - run.start_at)
            pre, length = self._pre, self._prefill_len
            for i, c in run.chunks:
                done = pre[i] + c
                pre[i] = done
                if done >= length[i]:
                    self._prefill_done(i, end)
        finish = self._finish
        if finish and finish[0][0] <= self._step:
            self._pop_finished(end)
        if hook is not None and produced is not None:
            produced.extend(i for i, _ in run.chunks if i not in self._pre)
            hook(end, produced)

    def _complete_each(self, run: _Run) -> None:
        """A prefill run's busy time and ITL gaps, iteration by iteration."""
        at = start = run.start_at
        durations = run.durations
        if len(durations) == 1:
            at = run.end_at
            self._busy_s += at - start
        else:
            busy = self._busy_s
            for d in durations:
                end = at + d
                busy += end - at
                at = end
            self._busy_s = busy
        if run.num_decode:
            for t, count in enumerate(self._tier_decoding):
                if count:
                    self.gaps[t].add_each(durations, count, at - start)

    def _prefill_done(self, i: int, end: Seconds) -> None:
        """Last chunk computed: one more token; the sequence decodes or is done."""
        length = self._prefill_len[i]
        del self._pre[i]
        self._pre_blocks -= -(-length // self._block)
        self._num_generated += 1
        before = self._produced_before[i]
        tier = self._tier_of[i]
        if before == 0:  # no token before this prefill: it makes the first one
            self.records.first_token_at[i] = end
        else:
            self.gaps[tier].add(end - self._preempted_at.pop(i, end))
        left = self._target[i] - before - 1
        if left <= 0:
            self._finish_request(i, end)
            return
        step = self._step
        offset = length - step
        self._offset[i] = offset
        self._offset_sum += offset
        self._dec.add(offset)
        self._tier_decoding[tier] += 1
        self._decode_starts.append(i)
        fs = step + left
        self._finish_step[i] = fs
        heapq.heappush(self._finish, (fs, i))

    def _pop_finished(self, end: Seconds) -> None:
        heap = self._finish
        step = self._step
        while heap and heap[0][0] <= step:
            fs, i = heapq.heappop(heap)
            if self._finish_step.get(i) == fs:
                self._drop_decoding(i)
                self._finish_request(i, end)

    def _finish_request(self, i: int, end: Seconds) -> None:
        self.records.finished_at[i] = end
        self.records.output_tokens[i] = self._target.pop(i)
        del self._prefill_len[i], self._produced_before[i], self._tier_of[i]
        self._done.append(i)
