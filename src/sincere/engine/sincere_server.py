"""SINCERE's threaded server as its real runs show it: hand-offs, one lock, a timer thread.

SINCERE's scheduler is a Flask server with a thread per request and one background
timer thread. Its published runs (docs/validation.md) are reproduced by these
mechanisms, all of which this engine models:

* **Hand-off at arrival.** A request joins its model's queue. When the queue meets the
  strategy's target (:class:`~sincere.policy.batching.server.ServerRules`), the thread
  moves the whole queue into the model's **hand-off slot** and waits for the GPU lock.
  A model has one slot: a hand-off made while the previous one still waits *replaces*
  it, and the requests it held are never served (rejected here with reason
  ``"overwritten"``). Under load this loses whole batches, as the runs do.
* **One lock, first come first served.** Threads that handed off queue for the GPU in
  order; the holder serves its model's slot (whatever it holds now; an empty slot is
  released at once), loading the model first if needed, then does the after-batch work
  of the step model before releasing the lock.
* **The timer thread.** Every ``poll_period_s`` it takes a snapshot of the models whose
  Timer has expired (and, with PartialBatch, the resident model if it is due a flush);
  for each in turn it hands off that model's queue (even an empty one) and waits for
  the lock and the batch, so the thread checks nothing else meanwhile, and later
  entries of its snapshot fire even if their timer was reset in between. A model's
  Timer starts at its first arrival after its last batch ended and is reset when a
  batch of it ends.

There is no final flush: after the last arrival the server only finishes what its
threads already hold (``drain`` does nothing), so requests left queued stay
unfinished. Timing (batch, swap, cold load, after-batch work, planning figures) comes
from the step models as in :class:`~sincere.engine.request_level.RequestLevelEngine`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from sincere.core.errors import ConfigError
from sincere.core.records import RecordArrays
from sincere.core.request import RequestArrays
from sincere.core.types import InstanceId, ModelName, Seconds
from sincere.engine.base import EngineBase, EngineLoad, EngineStats
from sincere.engine.batch_log import BatchLog, BatchRecord
from sincere.engine.request_batches import (
    BatchBook,
    Fifo,
    IntArray,
    Residency,
    after_batch_s,
    answer_tokens,
    check_engine_args,
    planned_swaps,
)
from sincere.perf.base import StepTimeModel
from sincere.policy.batching import BatchingView, ComposedStrategy, ModelQueueView, ServerRules

OVERWRITTEN = "overwritten"  # reject reason of requests whose hand-off was replaced


@dataclass(frozen=True, slots=True)
class _Holder:
    """The thread holding the GPU lock and the batch it runs."""

    model: ModelName
    by_timer_thread: bool
    positions: IntArray
    start_at: Seconds  # inference start, after any swap
    end_at: Seconds  # inference end: its requests finish
    release_at: Seconds  # after the after-batch work: the lock is free
    swap_s: Seconds
    num_loads: int


class SincereServerEngine(EngineBase):
    """SINCERE's server (see the module docstring), driven through the Engine protocol."""

    def __init__(
        self,
        id: InstanceId,
        requests: RequestArrays,
        records: RecordArrays,
        instance_ix: int,
        step_models: Mapping[ModelName, StepTimeModel],
        strategy: ComposedStrategy,
        *,
        poll_period_s: Seconds,
        max_resident_models: int = 1,
        max_batch_size: int | None = None,
        rng: np.random.Generator | None = None,
        sample_swap_times: bool = False,
    ) -> None:
        check_engine_args(id, step_models, max_resident_models, max_batch_size, rng,
                          sample_swap_times)  # fmt: skip
        if not poll_period_s > 0:
            raise ConfigError(f"engine {id}: poll_period_s must be > 0", value=poll_period_s)
        self.id = id
        self.requests = requests
        self.records = records
        self.instance_ix = instance_ix
        self.step_models = dict(step_models)
        self.strategy = strategy
        self.rules = ServerRules(strategy)
        self.poll_period_s = poll_period_s
        self.max_resident_models = max_resident_models
        self.max_batch_size = max_batch_size
        self._planned = planned_swaps(self.step_models)
        self._queues: dict[ModelName, Fifo] = {m: Fifo() for m in self.step_models}
        self._slots: dict[ModelName, IntArray | None] = dict.fromkeys(self.step_models)
        self._timer_at: dict[ModelName, Seconds | None] = {}  # in order of first arrival
        self._lock_queue: deque[tuple[ModelName, bool]] = deque()
        self._holder: _Holder | None = None
        self._finished_holder = False
        self._residency = Residency(self.step_models, max_resident_models, rng, sample_swap_times)
        self._timer_blocked = False  # the timer thread waits for the lock or its batch
        self._snapshot: deque[ModelName] = deque()  # rest of the timer thread's pass
        self._timer_free_at = 0.0  # its passes run at _timer_free_at + k * period
        self._next_pass_at: Seconds | None = None
        self._done: list[int] = []
        self._done_at: Seconds = 0.0
        self._num_waiting = 0
        self._num_overwritten = 0
        self._book = BatchBook(requests, records)

    # -- the Engine protocol -------------------------------------------------------

    def add(self, request_ix: int, now: Seconds) -> None:
        """A request thread: queue it, start its model's timer, hand off on target."""
        model = self.requests.models[int(self.requests.model[request_ix])]
        if model not in self._queues:
            raise ConfigError(f"engine {self.id}: request {request_ix} is for a model it "
                              "does not serve", value=model, allowed=self._queues)  # fmt: skip
        self.records.instance[request_ix] = self.instance_ix
        self._queues[model].push(request_ix, now)
        self._num_waiting += 1
        self.rules.observe_arrival(model, now)
        queue = self._queue_view(model)
        if self.rules.has_timer and self._timer_at.get(model) is None:
            self._timer_at[model] = now + (self.rules.timer_s(queue) or 0.0)
        if self.rules.hand_off_on_arrival(queue, self._view(queue), now):
            self._hand_off(model, now)
            self._lock_queue.append((model, False))
            self._dispatch(now)
        self._plan_pass(now)

    def next_event_at(self) -> Seconds | None:
        """Rejections to report, the running batch's end or release, or the next pass."""
        return self._done_at if self._done else self._due_at()

    def advance(self, now: Seconds) -> list[int]:
        """Apply everything due by ``now``; return requests finished or rejected."""
        while True:
            due = self._due_at()
            if due is None or due > now:
                break
            self._step(due)
        done, self._done = self._done, []
        return done

    def load(self) -> EngineLoad:
        """Queue sizes and the most recently used resident model."""
        holder = None if self._finished_holder else self._holder
        running = 0 if holder is None else len(holder.positions)
        ctx = 0 if holder is None else int(self.requests.prompt_tokens[holder.positions].sum())
        return EngineLoad(
            num_running=running,
            num_waiting=self._num_waiting,
            waiting_prefill_tokens=0,
            running_remaining_tokens=0,
            running_ctx_tokens=ctx,
            kv_usage=0.0,
            busy_s=self._book.busy_s,
            resident_model=self._residency.most_recent,
        )

    def queue_sizes(self) -> tuple[int, int, int]:
        """The batch size and waiting requests (no prompt tokens are counted; as ``load()``)."""
        holder = None if self._finished_holder else self._holder
        return 0 if holder is None else len(holder.positions), self._num_waiting, 0

    def stats(self) -> EngineStats:
        """Totals over finished batches (``num_steps`` = batches, ``num_swaps`` = loads)."""
        return self._book.stats()

    def batch_log(self) -> BatchLog:
        """Every finished batch: start, end, model, size, swap time before it."""
        return self._book.log()

    @property
    def num_overwritten(self) -> int:
        """Requests lost because their hand-off was replaced before it was served."""
        return self._num_overwritten

    # -- internals -------------------------------------------------------------------

    def _due_at(self) -> Seconds | None:
        times = [] if self._next_pass_at is None else [self._next_pass_at]
        if self._holder is not None:
            h = self._holder
            times.append(h.release_at if self._finished_holder else h.end_at)
        return min(times) if times else None

    def _step(self, now: Seconds) -> None:
        """One due event at ``now``: a batch end, a lock release, or a timer pass."""
        h = self._holder
        if h is not None and not self._finished_holder and h.end_at <= now:
            self._finish(h)
        elif h is not None and self._finished_holder and h.release_at <= now:
            self._release(h, now)
        elif self._next_pass_at is not None and self._next_pass_at <= now:
            self._timer_pass(now)

    def _queue_view(self, model: ModelName) -> ModelQueueView:
        load, unload = self._planned[model]
        q = self._queues[model]
        loaded_at = self._residency.loaded_at.get(model)
        return ModelQueueView(model, q.times(), load, unload, loaded_at, q.ids())

    def _view(self, queue: ModelQueueView) -> BatchingView:
        resident = tuple(self._residency.loaded_at)
        return BatchingView((queue,), resident, self.max_resident_models, self.max_batch_size)

    def _hand_off(self, model: ModelName, now: Seconds) -> None:
        """Move the model's queue (up to the cap) into its slot, replacing what was there."""
        queue = self._queues[model]
        num = len(queue) if self.max_batch_size is None else min(len(queue), self.max_batch_size)
        lost = self._slots[model]
        if lost is not None and len(lost):
            for i in lost.tolist():
                self.records.reject(i, OVERWRITTEN)
            self._done.extend(lost.tolist())
            self._done_at = now
            self._num_overwritten += len(lost)
        self._slots[model] = queue.pop(num)
        self._num_waiting -= num

    def _dispatch(self, now: Seconds) -> None:
        """While the lock is free, give it to the first waiting thread."""
        while self._holder is None and self._lock_queue:
            model, by_timer = self._lock_queue.popleft()
            positions = self._slots[model]
            self._slots[model] = None
            if positions is None or not len(positions):
                if by_timer:
                    self._timer_resume(now)
                continue
            self._start(model, by_timer, positions, now)

    def _start(self, model: ModelName, by_timer: bool, positions: IntArray, now: Seconds) -> None:
        swap_s, num_loads = self._residency.swap_in(model, now)
        start_at = now + swap_s
        step = self.step_models[model]
        answers = answer_tokens(self.requests, positions)
        end_at = start_at + step.request_batch_s(
            self.requests.prompt_tokens[positions].tolist(), int(answers.max())
        )
        self.records.first_scheduled_at[positions] = start_at
        release_at = end_at + after_batch_s(step, len(positions))
        self._holder = _Holder(model, by_timer, positions, start_at, end_at, release_at, swap_s,
                               num_loads)  # fmt: skip
        self._finished_holder = False

    def _finish(self, h: _Holder) -> None:
        """The batch ends: its requests finish."""
        pos = h.positions
        who = "timer-thread" if h.by_timer_thread else "arrival"
        self._book.finish(BatchRecord(h.start_at, h.end_at, h.model, len(pos), h.swap_s, who), pos,
                          h.num_loads)  # fmt: skip
        self._done.extend(pos.tolist())
        self._done_at = h.end_at
        self._finished_holder = True

    def _release(self, h: _Holder, now: Seconds) -> None:
        """After-batch work done: reset the model's timer, free the lock, hand it on."""
        self._holder = None
        if h.model in self._timer_at:
            self._timer_at[h.model] = None
        if h.by_timer_thread:
            self._timer_resume(now)
        self._dispatch(now)
        self._plan_pass(now)

    def _timer_pass(self, now: Seconds) -> None:
        """One pass of the timer thread: snapshot what is due, then fire it in turn."""
        self._next_pass_at = None
        due = [m for m, at in self._timer_at.items() if at is not None and now >= at]
        resident = self._residency.most_recent
        if self.rules.has_flush and resident is not None and self._queues[resident]:
            queue = self._queue_view(resident)
            if self.rules.flush(queue, self._view(queue), now).ready:
                due.append(resident)
        self._snapshot = deque(due)
        self._timer_resume(now)

    def _timer_resume(self, now: Seconds) -> None:
        """The timer thread goes on with its pass: the next entry, or sleep."""
        self._timer_blocked = False
        if self._snapshot:
            model = self._snapshot.popleft()
            self._hand_off(model, now)
            self._timer_blocked = True
            self._lock_queue.append((model, True))
            self._dispatch(now)
            return
        self._timer_free_at = now
        self._plan_pass(now)

    def _plan_pass(self, now: Seconds) -> None:
        """When the timer thread's next pass will find something due (None: never)."""
        if self._timer_blocked:
            self._next_pass_at = None
            return
        # An expired timer of an empty model is left set when its slot was emptied by a
        # timer hand-off; SINCERE's thread keeps firing it every pass. Such a pass only
        # matters while the lock is taken (the thread then waits for it); when the lock is
        # free it changes nothing, so it is not scheduled (and a run can end).
        busy = self._holder is not None or bool(self._lock_queue)
        due = [at for m, at in self._timer_at.items()
               if at is not None and (busy or len(self._queues[m]))]  # fmt: skip
        resident = self._residency.most_recent
        if self.rules.has_flush and resident is not None and self._queues[resident]:
            queue = self._queue_view(resident)
            flush = self.rules.flush(queue, self._view(queue), now)
            due += [now] if flush.ready else [] if flush.wake_at is None else [flush.wake_at]
        if not due:
            self._next_pass_at = None
            return
        period = self.poll_period_s
        first = max(min(due), self._timer_free_at + period, now)
        k = math.ceil((first - self._timer_free_at) / period - 1e-9)
        self._next_pass_at = self._timer_free_at + k * period
