"""A continuous-batching (iteration-level) engine: vLLM / Sarathi-Serve, in simulation.

Model. Requests wait in a queue ordered by the engine scheduler's key. Each iteration
computes one token for every decoding sequence plus prefill chunks the scheduler picks
within a token budget (chunked prefill) and ``max_num_seqs``. A request admitted for
prefill reserves the KV blocks of its whole prefill (vLLM v0); decoding sequences grow
one token per iteration and take a new block at each block boundary. When the next
decode step does not fit in the free blocks, running sequences are preempted (the
scheduler's ``victim``; by default the largest key first) and later *recomputed*: their
prompt plus the tokens already generated are prefilled again, and the last chunk of that
prefill yields their next token. The last prefill chunk of a request produces its first
token. Iteration times come from a :class:`~sincere.perf.base.StepTimeModel`, which
folds in tensor parallelism, precision and confidential-computing costs.

The engine is four parts, one module each:

* :mod:`.state` -- queues, running sets and KV blocks, and their transitions;
* :mod:`.runs` -- the pieces of work (prefill iterations, closed-form decode runs) and
  the one planning loop that makes them (work per piece is O(log n) plus the
  scheduler's, not O(tokens); docs/simulator_speed.md);
* :mod:`.view` -- the read-only view the scheduler sees (the engine is one);
* :mod:`.speculation` -- with ``speculation`` configured, every decoding sequence's
  accepted drafts after each iteration (every piece of work is then one iteration);
* this module -- the :class:`~sincere.engine.base.Engine` API a driver calls: ``add``,
  ``next_event_at``, ``advance``, ``load``, ``stats``, and, for live driving
  (:class:`~sincere.engine.base.StreamingEngine`), ``abort`` and the ``on_tokens`` hook.

Live driving: request fields are read at ``add`` or later; with ``on_tokens`` set, every
piece of work is one iteration and the hook hears of each token; ``abort`` cancels a
request and frees its blocks.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from sincere.core.records import RecordArrays
from sincere.core.request import RequestArrays
from sincere.core.types import InstanceId, Seconds
from sincere.engine.async_intake import AsyncIntake
from sincere.engine.base import DecodeProgress, EngineLoad, KvIntake, TokenHook, check_pacing
from sincere.engine.clock import EngineClock
from sincere.engine.gaps import GapHistogram
from sincere.engine.kv_intake import ArrivedKv
from sincere.engine.request_fit import RequestFit
from sincere.engine.runs import DecodeStepsTime, Run, RunPlanner
from sincere.engine.speculation import Speculator
from sincere.engine.state import BatchState, EngineLimits
from sincere.engine.time_scale import unscaled
from sincere.engine.view import StateView
from sincere.perf.base import StepTimeModel
from sincere.perf.execution import batch_wait_iters, recv_interval, schedules_ahead
from sincere.policy.schedulers.base import IterationScheduler

__all__ = ["ContinuousEngine", "EngineLimits", "TokenHook"]


class ContinuousEngine(StateView):
    """An iteration-level engine (a :class:`~sincere.engine.base.StreamingEngine`) and the
    :class:`~sincere.policy.schedulers.base.EngineView` its scheduler reads.

    ``max_tokens`` (optional) overrides the requests' caps, e.g. a budget-aware router's;
    ``context_caps`` (default: the caps) are the output tokens checked against
    ``max_model_len``: a prefill instance makes one token but refuses a request whose
    prompt plus its decode's ``max_tokens`` would not fit the context, as vLLM does.

    It holds nothing back (``drain`` is the default no-op): requests an asynchronous
    scheduler has not seen yet are seen at the next iteration's start, an event of the
    engine's own."""

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
        context_caps: npt.NDArray[np.int64] | None = None,
        speculator: Speculator | None = None,
        clock: EngineClock | None = None,
    ) -> None:
        state = BatchState(limits, records, len(requests.tiers))
        super().__init__(requests, records, limits, state, speculator)
        self.id = id
        self.instance_ix = instance_ix
        self.step_model = step_model if speculator is None else speculator.step_model
        self.clock = clock  # the GPU's (engine/clock.py): it tunes the planner's prefills
        self.scheduler = scheduler
        self._planner = RunPlanner(self.state, scheduler, self.step_model, limits, clock)
        self._observes = type(scheduler).observe is not IterationScheduler.observe
        # most iterations one prefill run may hold; 1 keeps ``load()`` exact at every
        # iteration (``configure(exact_loads=True)``, when a router reads the engines)
        self.max_prefill_run = 1 << 30
        # live drivers: called after every iteration with its end time and the requests
        # that produced a token in it; while set, every piece of work is one iteration
        self.on_tokens: TokenHook | None = None
        # every piece of work one iteration (a rank of a lockstep group: engine/lockstep.py)
        self.one_iteration = False
        self._max_tokens = requests.max_tokens if max_tokens is None else max_tokens
        self._context_caps = self._max_tokens if context_caps is None else context_caps
        # which requests can ever be served here; its two bounds copied for ``add``
        self._fit = RequestFit(limits)
        self._max_model_len = self._fit.max_model_len
        self._fits_tokens = self._fit.fits_tokens
        self._run: Run | None = None
        self._wake_at: Seconds | None = None
        # an asynchronously scheduling engine sees new requests one iteration late
        executed = unscaled(step_model)
        self._intake = (
            AsyncIntake(recv_interval(executed), batch_wait_iters(executed))
            if schedules_ahead(executed)
            else None
        )
        # where the ends of the iterations inside a piece of work go (``configure``)
        self._inner_ends: list[float] | None = None
        # disaggregated decodes whose KV arrived, waiting for free blocks, and their starts
        self._arrived = ArrivedKv(limits)

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
        asked = int(self._context_caps[i])
        if prompt + target > self._fits_tokens or prompt + asked > self._max_model_len:
            reason = self._fit.reject_reason(prompt, target, asked)
            if reason is not None:
                self.state.reject(i, reason)
                self._wake(now)
                return
        self.state.accept(i, target, int(req.tier[i]), cap)
        cache = self.state.cache
        if cache is not None and req.block_ids:
            ids = req.block_ids[i]
            if len(ids):
                cache.add(i, req.block_keys(i), req.block_tokens, prompt)
        run = self._run
        if self._intake is not None and run is not None and run.end_at > now:
            room = self.state.num_running < self.limits.max_num_seqs  # seen when it ends
            self._intake.arrive(i, prompt, now, run, self.step_model.decode_steps_s, room)
            return
        self._planner.enqueue(self, i, prompt)
        if run is None:
            self._wake(now)
        elif not run.chunks:
            self._planner.cut_on_arrival(run, now)

    def add_prefilled(self, request_ix: int, now: Seconds, kv_tokens: int) -> None:
        """Take request ``request_ix`` whose prompt was prefilled on another instance and
        whose ``kv_tokens`` tokens of KV have arrived (its first token came with them).

        It joins the decode batch at the next iteration boundary once the blocks of its KV
        (and the ``max_num_seqs`` slot) are free, in arrival order -- backpressure: until
        then it waits, holding nothing. Rejected (``kv_capacity``) when it could never fit.
        """
        i = request_ix
        req = self.requests
        self.records.instance[i] = self.instance_ix
        target = min(int(req.output_tokens[i]), int(self._max_tokens[i]))
        prompt, asked = int(req.prompt_tokens[i]), int(self._context_caps[i])
        reason = self._fit.reject_reason(prompt, target, asked)
        if reason is not None:
            self.state.reject(i, reason)
            self._wake(now)
            return
        self.state.accept(i, target, int(req.tier[i]), int(self._max_tokens[i]))
        self._arrived.arrive(i, kv_tokens)
        run = self._run
        if run is None:
            self._wake(now)
        elif not (run.chunks or run.durations) and run.steps > 1:
            decode_steps_s = self.step_model.decode_steps_s
            run.cut_decode(run.steps_covering(now, decode_steps_s), decode_steps_s)

    def next_event_at(self) -> Seconds | None:
        """End of the work in progress, or a pending start; ``None`` when idle."""
        return self._run.end_at if self._run is not None else self._wake_at

    @property
    def piece(self) -> Run | None:
        """The piece of work in flight (``None``: idle, or a start pending)."""
        return self._run

    def advance(self, now: Seconds) -> list[int]:
        """Complete every piece of work ending by ``now``, starting the next; return finished."""
        while True:
            run = self._run
            if run is not None:
                if run.end_at > now:
                    break
                self._complete(run)
                if self._intake is not None:
                    self._intake.ended(run, self.step_model.decode_steps_s)
                self._run = self._start(run.end_at)
            elif self._wake_at is not None and self._wake_at <= now:
                at, self._wake_at = self._wake_at, None
                self._run = self._start(at)
            else:
                break
        st = self.state
        done, st.done = st.done, []
        return done

    def configure(
        self, *, exact_loads: bool = False, inner_ends: list[float] | None = None
    ) -> None:
        """How the driver needs the work cut into events (said once, before the run).

        ``exact_loads``: a router reads ``load()`` between any two iterations: end an
        event at each. ``inner_ends``: nothing reads ``load()`` between events, but the
        sums must be those of one event per iteration: identical prefill iterations run as
        one piece, their busy time and ITL are summed iteration by iteration, and when
        such a piece starts, the end of each of its iterations but the last is appended to
        ``inner_ends`` (for the driver's own time integrals). The records are the same
        either way; this keeps the float sums of the summary (ITL mean, requests in the
        system) bit for bit too, at one event per piece. Neither: pieces as they come.
        """
        check_pacing(exact_loads, inner_ends)
        self.max_prefill_run = 1 if exact_loads else 1 << 30
        self.state.split_sums = inner_ends is not None
        self._inner_ends = inner_ends

    @property
    def kv_intake(self) -> KvIntake:
        """Itself: it takes KV prefilled elsewhere (:meth:`add_prefilled`)."""
        return self

    @property
    def kv_admitted(self) -> list[tuple[int, Seconds]]:
        """``(request, time)`` of each start of decoding of a request whose KV arrived,
        since the driver last cleared this list."""
        return self._arrived.admitted

    @property
    def max_model_len(self) -> int | None:
        """Longest prompt plus ``max_tokens`` served (``None``: no context limit)."""
        return self.limits.max_model_len

    @property
    def gaps(self) -> list[GapHistogram]:
        """Inter-token gaps per tier (vLLM's ITL)."""
        return self.state.gaps

    def load(self) -> EngineLoad:
        """What routers see (:meth:`~.view.StateView.load_with`): the waiting include the
        decodes whose KV arrived and waits for blocks (backpressure) and the requests an
        asynchronous scheduler has not seen yet, with their prompt tokens."""
        held, tokens = _held(self._intake)
        return self.load_with(len(self._arrived.waiting) + held, tokens)

    def queue_sizes(self) -> tuple[int, int, int]:
        """Running sequences, waiting requests and their prompt tokens (as ``load()``)."""
        st = self.state
        held, tokens = _held(self._intake)
        return len(st.pre) + st.dec.num_seqs, len(st.queue) + held, st.waiting_tokens + tokens

    def progress_at(self, now: Seconds) -> DecodeProgress | None:
        """Decode iterations of the run in flight that ended by ``now`` (None: none yet)."""
        return run_progress(self._run, self.state, self.step_model.decode_steps_s, now)

    def progress_until(self, now: Seconds) -> tuple[DecodeProgress | None, Seconds]:
        """:meth:`progress_at` ``now``, and when the next decode iteration of the run in
        flight ends (``inf``: none is left; ``now``: nothing promised); see
        :func:`progress_until`."""
        return progress_until(self._run, self.state, self.step_model.decode_steps_s, now)

    def abort(self, request_ix: int, now: Seconds) -> bool:
        """Cancel a waiting or running request; return whether it was here.

        Its KV blocks are freed at once and it is marked rejected (``"aborted"``, with the
        tokens it produced as ``output_tokens``); ``advance`` returns it like any other
        rejection. An iteration in flight still ends as planned (its time includes the
        request) but yields nothing for it; a longer run is cut after that iteration so
        the scheduler re-plans with the freed room. Call ``next_event_at`` again after.
        """
        if request_ix not in self.state.held:
            return False
        held = None if self._intake is None else self._intake.take(request_ix)
        if held is not None:
            self._planner.enqueue(self, *held)  # the state's abort takes it from the queue
        if self._arrived.abort(request_ix, self.state, self.records):
            return False
        was_running = self.state.abort(request_ix)
        run = self._run
        if was_running and run is not None:
            run.drop(request_ix, now, self.step_model.decode_steps_s)
        self._wake(now)
        return True

    # ------------------------------------------------------------- internals

    def _start(self, now: Seconds) -> Run | None:
        if self._arrived.waiting:
            self._arrived.admit(self.state, now)
        live = self.on_tokens is not None or self.speculator is not None or self.one_iteration
        intake, planner = self._intake, self._planner
        if intake is not None:
            intake.before_planning(planner, self)
        run = planner.start(self, now, self.max_prefill_run, live)
        if intake is not None:
            run = intake.after_planning(
                run, lambda: planner.start(self, now, self.max_prefill_run, live), planner,
                self, self.step_model.decode_steps_s,
            )  # fmt: skip
        inner = self._inner_ends
        if inner is not None and run is not None and len(run.durations) > 1:
            at = run.start_at
            for d in run.durations[:-1]:  # as one event per iteration would end them
                at += d
                inner.append(at)
        return run

    def _complete(self, run: Run) -> None:
        """Apply a finished piece of work: time, tokens, first tokens, finishes."""
        st = self.state
        end = run.end_at
        self._planner.finished(run)
        hook = self.on_tokens
        produced = list(st.offset) if hook is not None else None
        if run.num_decode or not run.chunks or self._planner.mixed:
            st.step += run.steps  # not a prefill run beside waiting decodes (SGLang's)
        st.num_generated += run.num_decode * run.steps
        decoding = run.num_decode > 0
        spec = self.speculator  # accepted drafts: tokens beyond the iteration's one
        gained = spec.verified(st, run.num_decode) if spec is not None and decoding else ()
        if run.durations:
            st.account_each(run.durations, run.start_at, end, decoding)
        else:
            st.account_run(run.first_s, run.slope_s, run.steps, end - run.start_at, decoding)
        if run.chunks:
            if self._observes:
                self.scheduler.observe(run.prefill_tokens, end - run.start_at)
            st.prefilled(run.chunks, end)
        finish = st.finish
        if finish and finish[0][0] <= st.step:
            st.pop_finished(end)
        if decoding:
            st.evict()  # decode steps took new blocks
        if hook is not None and produced is not None:
            produced.extend(i for i, _ in run.chunks if i not in st.pre)
            produced.extend(gained)
            hook(end, produced)

    def _wake(self, now: Seconds) -> None:
        if self._run is None and self._wake_at is None:
            self._wake_at = now


def _held(intake: AsyncIntake | None) -> tuple[int, int]:
    """Requests an asynchronous scheduler has not seen yet, and their prompt tokens."""
    return (0, 0) if intake is None else (len(intake), intake.tokens)


def run_progress(
    run: Run | None, st: BatchState, decode_steps_s: DecodeStepsTime, now: Seconds
) -> DecodeProgress | None:
    """Decode iterations of ``run`` (in flight on ``st``) that ended by ``now``."""
    j = 0 if run is None else run.steps_ended_by(now, decode_steps_s)
    if run is None or j <= 0:
        return None
    used = st.pre_blocks + st.dec.total(st.step + j)
    return DecodeProgress(j, run.num_decode, used / st.num_blocks)


def progress_until(
    run: Run | None, st: BatchState, decode_steps_s: DecodeStepsTime, now: Seconds
) -> tuple[DecodeProgress | None, Seconds]:
    """:func:`run_progress` at ``now`` and the end of the run's next decode iteration, until
    which it stays the same. The progress is the number of the run's iteration ends at or
    before the time asked, and those ends increase strictly with the iteration (each adds at
    least the per-step time, far above rounding), so the answer holds until the next end."""
    progress = run_progress(run, st, decode_steps_s, now)
    if run is None or run.chunks:
        return progress, math.inf  # no decode run: nothing moves until an event
    j = 0 if progress is None else progress.steps
    if j >= run.steps:
        return progress, math.inf
    until = run.start_at + decode_steps_s(run.num_decode, run.ctx_tokens, j + 1)
    return progress, until if until > now else now
