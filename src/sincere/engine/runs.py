"""Pieces of work of a continuous-batching engine, and the one loop that plans them.

A *piece of work* (:class:`Run`) is what the engine computes between two events:

* **prefill iterations**: one iteration of prefill chunks (plus one token per decode), or
  several identical ones whose plan is known in advance, each timed on its own with
  ``iteration_s_fast``;
* a **decode run**: ``steps`` iterations with no prefill work. The batch does not change
  until a sequence finishes, the KV pool runs dry or a request arrives, so they are timed
  in closed form (``decode_steps_s``): iteration ``j`` lasts ``first_s + j * slope_s``.

The planning loop (:meth:`RunPlanner.start`), before every piece:

1. preempt running sequences (the scheduler's ``victim`` first) until the next decode
   step's KV blocks fit;
2. plan the next iteration: the scheduler's ``plan``, or, for a *view-only* policy
   (:meth:`~sincere.policy.schedulers.base.IterationScheduler.plan_is_view_only`), the
   same loop computed here on the state (continuing prefills in admission order, then
   admissions in key order while tokens, sequences and blocks above the watermark last),
   which gives the policy's plan without building views or plan objects;
3. with prefill chunks, run them. When a view-only plan is the first running prefill
   taking every token the decodes leave, the following iterations have that same plan
   (no token is left to admit anyone, whatever arrives), so they go as one piece, up to
   a decode finish, the KV blocks the decodes grow into, or ``max_prefill_run``;
4. without chunks, a decode run up to the next finish or the KV limit.

Exactness: every piece gives the per-request times, tokens and totals that one plan per
iteration would (tests/engine/test_engine_runs.py). An arrival during a decode run cuts
it at the iteration in progress (unless nothing could be admitted); an abort cuts any
piece after the iteration in flight.

Approximation: within a piece the scheduler is not consulted, so time-driven changes of a
policy (Niyama's relegation of a blocked queue head) wait for the piece's end.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

from sincere.core.types import Seconds
from sincere.engine.state import BatchState, EngineLimits
from sincere.engine.time_scale import unscaled
from sincere.engine.view import StateView
from sincere.engine.waiting import Entry
from sincere.perf.base import StepTimeModel
from sincere.perf.execution import mixes_prefill
from sincere.policy.schedulers.base import IterationScheduler

IterationTime = Callable[[int, int, int, float, int, int], Seconds]
"""``iteration_s_fast``'s signature: the six :class:`~sincere.perf.base.Batch` fields."""

DecodeStepsTime = Callable[[int, int, int], Seconds]
"""``decode_steps_s(num_decode, ctx_tokens, steps)``: the duration of a decode run."""

Chunks = tuple[tuple[int, int], ...]
"""(request position, prompt tokens computed) of each prefill chunk."""


class Run:
    """One piece of work: prefill iterations (``chunks`` set) or a decode run.

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
        chunks: Chunks,
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
        self.chunks = chunks  # prefill chunks; one chunk of every iteration's tokens if steps > 1
        self.first_s = first_s  # duration of the first iteration
        self.slope_s = slope_s  # growth of the iteration time per decode step (decode runs)
        self.prefill_tokens = prefill_tokens  # prompt tokens the chunks compute
        self.durations = durations  # each iteration of prefill work (empty for decode runs)

    def steps_covering(self, now: Seconds, decode_steps_s: DecodeStepsTime) -> int:
        """Fewest iterations of this decode run that end at or after ``now`` (at least one)."""
        elapsed = now - self.start_at
        a, b = self.first_s, self.slope_s
        if abs(b) > 1e-15:
            disc = (a - b / 2.0) ** 2 + 2.0 * b * elapsed
            j = math.ceil((-(a - b / 2.0) + math.sqrt(max(disc, 0.0))) / b)
        else:
            j = math.ceil(elapsed / a) if a > 0 else 1
        j = min(max(j, 1), self.steps)
        n, ctx, start = self.num_decode, self.ctx_tokens, self.start_at
        while j < self.steps and start + decode_steps_s(n, ctx, j) < now:
            j += 1
        while j > 1 and start + decode_steps_s(n, ctx, j - 1) >= now:
            j -= 1
        return j

    def steps_ended_by(self, now: Seconds, decode_steps_s: DecodeStepsTime) -> int:
        """Decode iterations of this run that ended by ``now`` (0 for prefill work)."""
        if self.chunks or now <= self.start_at:
            return 0
        j = self.steps_covering(now, decode_steps_s)
        if self.start_at + decode_steps_s(self.num_decode, self.ctx_tokens, j) > now:
            j -= 1  # the j-th iteration is still running
        return j

    def last_iteration_start(self, decode_steps_s: DecodeStepsTime) -> Seconds:
        """When this piece's last iteration began."""
        if self.steps <= 1:
            return self.start_at
        if self.durations:
            return self.end_at - self.durations[-1]
        return self.start_at + decode_steps_s(self.num_decode, self.ctx_tokens, self.steps - 1)

    def delay(self, extra_s: Seconds) -> None:
        """Its first iteration lasts ``extra_s`` longer (it waits for KV loads)."""
        self.first_s += extra_s
        self.end_at += extra_s
        if self.durations:
            self.durations = (self.durations[0] + extra_s, *self.durations[1:])

    def retime(self, duration_s: Seconds) -> None:
        """This piece of one iteration lasts ``duration_s`` (its group's iteration)."""
        assert self.steps == 1, "only a piece of one iteration is retimed"
        self.first_s = duration_s
        self.end_at = self.start_at + duration_s
        if self.durations:
            self.durations = (duration_s,)

    def cut_decode(self, steps: int, decode_steps_s: DecodeStepsTime) -> None:
        """End this decode run after ``steps`` iterations."""
        if steps < self.steps:
            self.steps = steps
            self.end_at = self.start_at + decode_steps_s(self.num_decode, self.ctx_tokens, steps)

    def iteration_covering(self, now: Seconds) -> tuple[int, Seconds]:
        """The iteration of this prefill work in flight at ``now`` (counted from 1; the last
        when ``now`` is past them all) and when it ends."""
        end, steps = self.start_at, 0
        for d in self.durations:
            end += d
            steps += 1
            if end >= now:
                break
        return steps, end

    def cut_iterations(self, now: Seconds) -> None:
        """End prefill iterations after the one in flight at ``now``."""
        steps, end = self.iteration_covering(now)
        if steps == self.steps:
            return
        per_step = self.prefill_tokens // self.steps
        self.durations = self.durations[:steps]
        self.prefill_tokens = per_step * steps
        self.chunks = tuple((j, self.prefill_tokens) for j, _ in self.chunks)
        self.steps, self.end_at = steps, end

    def drop(self, i: int, now: Seconds, decode_steps_s: DecodeStepsTime) -> None:
        """Request ``i`` was aborted: it gets nothing; the rest ends after ``now``'s iteration.

        The iteration in flight still ends as planned (its time includes ``i``).
        """
        if any(j == i for j, _ in self.chunks):
            self.chunks = tuple(chunk for chunk in self.chunks if chunk[0] != i)
        if self.durations:
            self.cut_iterations(now)
        elif not self.chunks and self.steps > 1:
            self.cut_decode(self.steps_covering(now, decode_steps_s), decode_steps_s)


def chunk_sums(chunks: Chunks, pre: dict[int, int]) -> tuple[int, int, float]:
    """Prompt tokens ``chunks`` compute, the tokens cached before them and their causal
    attention pairs (``pre``: tokens each request has done): the prefill fields of a
    :class:`~sincere.perf.base.Batch`."""
    tokens = cached = 0
    pairs = 0.0
    for i, c in chunks:
        done = pre[i]
        tokens += c
        cached += done
        pairs += c * done + c * (c + 1) / 2.0
    return tokens, cached, pairs


def prefill_iterations(
    iteration_s: IterationTime,
    now: Seconds,
    chunks: Chunks,
    pre: dict[int, int],
    num_decode: int,
    ctx: int,
) -> Run:
    """One iteration computing ``chunks`` (``pre``: tokens each has done) beside the decodes."""
    tokens, cached, pairs = chunk_sums(chunks, pre)
    dur = iteration_s(len(chunks), tokens, cached, pairs, num_decode, ctx)
    return Run(now, now + dur, 1, num_decode, ctx, chunks, dur, 0.0, tokens, (dur,))


def repeated_chunk(
    iteration_s: IterationTime,
    now: Seconds,
    i: int,
    done: int,
    left: int,
    steps: int,
    num_decode: int,
    ctx: int,
    price: Callable[[float], IterationTime] | None = None,
) -> Run:
    """``steps`` iterations of ``left`` prompt tokens of ``i`` (``done`` so far) plus decodes;
    ``price``: each iteration's time function by its start (a GPU clock: engine/clock.py)."""
    end = now
    tail = left * (left + 1) / 2.0
    durations = []
    for j in range(steps):
        cached = done + j * left
        step_s = iteration_s if price is None else price(end)
        dur = step_s(1, left, cached, left * cached + tail, num_decode, ctx + j * num_decode)
        durations.append(dur)
        end += dur
    tokens = steps * left
    chunk = ((i, tokens),)
    return Run(now, end, steps, num_decode, ctx, chunk, durations[0], 0.0, tokens, tuple(durations))


def decode_run(decode_steps_s: DecodeStepsTime, now: Seconds, n: int, ctx: int, steps: int) -> Run:
    """``steps`` decode iterations of ``n`` sequences with ``ctx`` summed context at the first."""
    first = decode_steps_s(n, ctx, 1)
    slope = decode_steps_s(n, ctx, 2) - 2.0 * first if steps > 1 else 0.0
    dur = decode_steps_s(n, ctx, steps) if steps > 1 else first
    return Run(now, now + dur, steps, n, ctx, (), first, slope)


class PlannerClock(Protocol):
    """What a :class:`RunPlanner` asks of a GPU clock (:class:`~.clock.EngineClock`)."""

    def tune(self, planner: RunPlanner, now: Seconds) -> None:
        """Set ``planner``'s prefill pricing for work starting at ``now``."""

    def ran(self, run: Run) -> None:
        """Count a finished piece of work."""


class RunPlanner:
    """The planning loop of the module docstring, over one engine's :class:`BatchState`.

    The planner asks the scheduler for plans (unless they are known), keys and
    preemption victims, handing it ``view``: what the scheduler reads (the engine
    itself). The view is an argument, not an attribute: the engine holds its planner,
    and a reference back would keep a finished engine's state alive until the cyclic
    garbage collector runs.
    """

    def __init__(
        self,
        state: BatchState,
        scheduler: IterationScheduler,
        step_model: StepTimeModel,
        limits: EngineLimits,
        clock: PlannerClock | None = None,
    ) -> None:
        self.state = state
        self.scheduler = scheduler
        self.clock = clock  # the GPU's (engine/clock.py): tunes the prefill pricing
        self.step_model = step_model
        self._iteration_s: IterationTime = step_model.iteration_s_fast
        self._max_num_seqs = limits.max_num_seqs
        # False: a prefill iteration runs alone, its decodes wait (SGLang's default)
        self.mixed = mixes_prefill(unscaled(step_model))
        self.view_only = scheduler.plan_is_view_only()
        self._budget: int | None = None  # a view-only policy's budget (it never changes)
        self._repeats = False  # the last known plan: the first prefill took every token
        self._reordered = False  # the last plan admitted or relegated someone
        self._blocked_head: Entry | None = None  # queue head when a decode run began
        # a GPU clock's pricing of repeated chunks (price_prefills); None: _iteration_s
        self._chunk_pricer: Callable[[float], Callable[[float], IterationTime]] | None = None

    def price_prefills(
        self,
        iteration_s: IterationTime,
        chunk_pricer: Callable[[float], Callable[[float], IterationTime]] | None,
    ) -> None:
        """Price the prefill work planned from now on by ``iteration_s`` (the same
        deployment and execution model at the GPU's clock: engine/clock.py), a run of
        repeated chunks by ``chunk_pricer(tokens)`` iteration by iteration; decode runs
        keep :attr:`step_model`."""
        self._iteration_s = iteration_s
        self._chunk_pricer = chunk_pricer

    def finished(self, run: Run) -> None:
        """``run`` is done: the clock, if any, counts its work."""
        if self.clock is not None:
            self.clock.ran(run)

    def enqueue(self, view: StateView, i: int, prefill_len: int) -> None:
        """Queue ``i`` for a prefill of ``prefill_len`` tokens, by the scheduler's key."""
        st = self.state
        st.wait(i, prefill_len)
        st.queue.push(i, self.scheduler.waiting_key(view, i))

    def start(self, view: StateView, now: Seconds, max_prefill_run: int, live: bool) -> Run | None:
        """Plan the piece of work starting at ``now``; ``None`` when there is none.

        ``live``: one iteration per piece (a token hook hears of each).
        """
        if self.clock is not None:
            self.clock.tune(self, now)
        st = self.state
        self._blocked_head = None
        self._repeats = self._reordered = False
        dec = st.dec
        if dec.num_seqs and not dec.fits(st.step + st.lookahead, st.num_blocks - st.pre_blocks):
            self._preempt_for_decode(view, now)
        if st.pre or st.queue:
            chunks = self._known_plan(view, now) if self.view_only else self._asked_plan(view, now)
            if chunks:
                most = 1 if live or not self._repeats else max(1, max_prefill_run)
                run = self._prefill_work(now, chunks, most)
                tiers = None if st.cache is None else st.cache.tiers
                if tiers is not None and tiers.pending_load_s:  # KV loaded back from tiers
                    delay_s = tiers.take_delay_s(run.first_s)
                    if delay_s:
                        run.delay(delay_s)
                return run
        if not dec.num_seqs:
            return None
        if not self._reordered:
            self._blocked_head = st.queue.head()
        return self._decode_run(now, live)

    def cut_on_arrival(self, run: Run, now: Seconds) -> None:
        """A request arrived during ``run``: end a decode run at the iteration in progress.

        Not when nothing could be admitted before it ends: the batch is full, or the
        queue head that could not be admitted when it began is still the head.
        """
        if run.chunks or run.durations or run.steps <= 1:
            return
        if self.state.num_running >= self._max_num_seqs:
            return
        head = self.state.queue.head()
        if self._blocked_head is not None and head == self._blocked_head:
            return
        decode_steps_s = self.step_model.decode_steps_s
        run.cut_decode(run.steps_covering(now, decode_steps_s), decode_steps_s)

    # ------------------------------------------------------------- planning

    def _known_plan(self, view: StateView, now: Seconds) -> Chunks:
        """A view-only policy's plan, computed on the state; admissions are applied.

        The loop of :meth:`~sincere.policy.schedulers.base.IterationScheduler.plan`:
        continuing prefills in admission order, then waiting requests in key order
        (:meth:`_admit_known`). Sets ``_repeats`` when the first running prefill takes
        every token the decodes leave.
        """
        st = self.state
        if self._budget is None:
            self._budget = self.scheduler.token_budget(view, now)
        left = self._budget - st.dec.num_seqs if self.mixed else self._budget
        if left <= 0:
            return ()
        chunks: list[tuple[int, int]] = []
        length = st.prefill_len
        for i, done in st.pre.items():
            n = length[i] - done
            if n >= left:
                self._repeats = not chunks
                chunks.append((i, left))
                return tuple(chunks)
            chunks.append((i, n))
            left -= n
        seqs = self._max_num_seqs - len(st.pre) - st.dec.num_seqs
        if seqs > 0 and st.queue:
            self._admit_known(now, left, seqs, chunks)
        return tuple(chunks)

    def _admit_known(
        self, now: Seconds, left: int, seqs: int, chunks: list[tuple[int, int]]
    ) -> None:
        """Admit waiting requests in order while tokens, sequences and KV blocks last."""
        st = self.state
        room = st.num_blocks - st.pre_blocks - st.dec.total(st.step + st.lookahead)
        blocks = room - st.watermark_blocks
        length, block = st.prefill_len, st.block
        caching = st.cache is not None
        admitted: list[int] = []
        for i in st.queue.ordered():
            need = -(-length[i] // block)
            n = length[i]
            if caching:  # a prefix hit computes less, and shared blocks cost nothing new
                cached, shared = st.prefix_hit(i)
                need -= shared
                n -= cached
            if need > blocks:
                break
            chunks.append((i, n if n < left else left))
            admitted.append(i)
            left -= n
            seqs -= 1
            blocks -= need
            if left <= 0 or seqs <= 0:
                break
        if admitted:
            self._reordered = True
            st.admit(admitted, now)

    def _asked_plan(self, view: StateView, now: Seconds) -> Chunks:
        """The scheduler's plan; relegations and admissions are applied."""
        st = self.state
        plan = self.scheduler.plan(view, now)
        self._reordered = bool(plan.admit or plan.relegate)
        for i in plan.relegate:
            st.queue.relegate(i)
        if plan.admit:
            st.admit(plan.admit, now)
        return plan.chunks

    # --------------------------------------------------------- pieces of work

    def _prefill_work(self, now: Seconds, chunks: Chunks, most: int) -> Run:
        """The planned iteration, or as many of it as stay the same (at most ``most``)."""
        st = self.state
        n = st.dec.num_seqs if self.mixed else 0  # apart: the decodes wait for the prefill
        ctx = st.offset_sum + n * (st.step + 1) if self.mixed else 0
        if most == 1:
            return prefill_iterations(self._iteration_s, now, chunks, st.pre, n, ctx)
        i, left = chunks[0]
        done = st.pre[i]
        steps = min((st.prefill_len[i] - done) // left, most)
        if n:
            step, dec = st.step, st.dec
            steps = min(steps, st.next_finish_step() - step)
            need = n * (steps // st.block + 2)
            if st.num_blocks - st.pre_blocks - dec.upper(step) < need:
                free = st.num_blocks - st.pre_blocks - dec.total(step)
                if free < need:
                    steps = min(steps, dec.max_steps(step, free))
        if steps == 1:
            return prefill_iterations(self._iteration_s, now, chunks, st.pre, n, ctx)
        pricer = self._chunk_pricer
        price = None if pricer is None else pricer(float(left + n))
        return repeated_chunk(self._iteration_s, now, i, done, left, steps, n, ctx, price)

    def _decode_run(self, now: Seconds, live: bool) -> Run:
        """Decode iterations up to the next finish or the KV limit (one when ``live``)."""
        st = self.state
        n = st.dec.num_seqs
        steps = 1 if live else st.next_finish_step() - st.step
        free = st.num_blocks - st.pre_blocks - st.dec.total(st.step)
        if free < n * (steps // st.block + 2):
            steps = min(steps, st.dec.max_steps(st.step, free))
        ctx = st.offset_sum + n * (st.step + 1)
        return decode_run(self.step_model.decode_steps_s, now, n, ctx, steps)

    # ------------------------------------------------------------- preemption

    def _preempt_for_decode(self, view: StateView, now: Seconds) -> None:
        """Preempt the scheduler's victims until the next decode step's blocks fit (its
        ``lookahead`` positions per sequence; a lone sequence needs room for one token and
        keeps the accepted drafts that fit, so it is never preempted for the others)."""
        st = self.state
        while st.dec.num_seqs:
            free = st.num_blocks - st.pre_blocks
            if st.dec.fits(st.step + st.lookahead, free):
                return
            if st.dec.num_seqs == 1 and st.dec.fits(st.step + 1, free):
                return
            i = self._victim(view)
            produced = st.preempt(i, now)
            self.enqueue(view, i, int(view.requests.prompt_tokens[i]) + produced)

    def _victim(self, view: StateView) -> int:
        i = self.scheduler.victim(view)
        st = self.state
        if i not in st.pre and i not in st.offset:
            raise ValueError(
                f"engine scheduler {type(self.scheduler).__name__} chose request {i} to "
                "preempt, but it is not running; victim() must return one of "
                "view.prefilling() or view.decoding()"
            )
        return i
