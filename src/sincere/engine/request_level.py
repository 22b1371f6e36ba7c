"""A request-level engine: several models share one GPU and swap in and out (SINCERE).

SINCERE (docs/references.md, SINCERE) serves three 7-8B models on one H100 through the HF
transformers pipeline: requests queue per model (FIFO); a batch of one model's
requests runs to completion; a model that is not resident must be loaded first,
unloading the least recently used one when the device holds ``max_resident_models``
already. A :class:`~sincere.policy.batching.base.BatchStrategy` decides, whenever the
engine is idle (after a batch, at an arrival, at a timer it asked for), which model
to serve and how many of its requests to batch.

Timing comes from each model's :class:`~sincere.perf.base.StepTimeModel`:
``request_batch_s(prompts, out)`` for a batch (``out`` = the longest answer in the
batch, since a pipeline call decodes until every sequence is done), ``load_time()``
and ``unload_time()`` for swaps (their means, or draws from a normal with their std,
clipped at 0, when ``sample_swap_times``). A swap happens right before the batch that
needs it, so a batch decided at ``t`` starts at ``t + unloads + load``. Step models
that also offer :class:`~sincere.perf.sincere_runs.RequestLevelCosts` (the
``sincere-runs`` calibration) add what SINCERE's served runs show: the run's first load
takes ``cold_load_s()``; after each batch the engine is busy ``after_batch_s(n)`` more
(writing results) before its next action; and strategies plan with the swap figures
of ``planning()`` (the standalone profile SINCERE's scheduler used), not the real ones.

``dispatch`` in :class:`RequestLevelConfig` chooses who decides: ``server`` (default)
is SINCERE's threaded server as its runs show it
(:class:`~sincere.engine.sincere_server.SincereServerEngine`); ``idle`` is this
engine, an idealised scheduler that asks the strategy whenever the GPU is free. Both
queue, swap and record batches with the same pieces (:mod:`sincere.engine.request_batches`).

Records: ``first_scheduled_at`` = batch start (after the swap), and
``first_token_at`` = ``finished_at`` = batch end, because a request-level batch
returns the whole answer at once (TTFT = E2E; TPOT is computed but meaningless);
``output_tokens`` = ``min(output_tokens, max_tokens)``.

Requests still queued when arrivals stop stay unfinished unless the driver calls
:meth:`RequestLevelEngine.drain`: then every queue is served (a final flush), which
matters for strategies such as BestBatch that wait for a full batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

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
from sincere.engine.sincere_server import SincereServerEngine
from sincere.perf.base import StepTimeModel
from sincere.perf.sincere_runs import RequestLevelCosts
from sincere.policy.batching import (
    BatchingView,
    BatchStrategy,
    ComposedParams,
    ComposedStrategy,
    Idle,
    ModelQueueView,
    RunBatch,
    SelectHorizon,
    WaitUntil,
    make_strategy,
    parse_strategy_name,
)

SINCERE_POLL_PERIOD_S = 0.1  # SINCERE's timer thread sleeps 0.1 s between passes (its code)


@dataclass(frozen=True, slots=True)
class _Running:
    """The batch in flight (its swap already decided)."""

    model: ModelName
    positions: IntArray
    start_at: Seconds
    end_at: Seconds
    swap_s: Seconds
    num_loads: int
    reason: str
    release_at: Seconds  # end_at plus the server's after-batch work


class RequestLevelEngine(EngineBase):
    """SINCERE's multi-model request-level engine, driven through the Engine protocol."""

    def __init__(
        self,
        id: InstanceId,
        requests: RequestArrays,
        records: RecordArrays,
        instance_ix: int,
        step_models: Mapping[ModelName, StepTimeModel],
        strategy: BatchStrategy,
        *,
        max_resident_models: int = 1,
        max_batch_size: int | None = None,
        rng: np.random.Generator | None = None,
        sample_swap_times: bool = False,
    ) -> None:
        check_engine_args(
            id, step_models, max_resident_models, max_batch_size, rng, sample_swap_times
        )
        self.id = id
        self.requests = requests
        self.records = records
        self.instance_ix = instance_ix
        self.step_models = dict(step_models)
        self.strategy = strategy
        self.max_resident_models = max_resident_models
        self.max_batch_size = max_batch_size
        self._planned = planned_swaps(self.step_models)
        self._residency = Residency(self.step_models, max_resident_models, rng, sample_swap_times)
        self._finished_running = False
        self._queues: dict[ModelName, Fifo] = {m: Fifo() for m in self.step_models}
        self._running: _Running | None = None
        self._wake_at: Seconds | None = None
        self._done: list[int] = []
        self._done_at: Seconds = 0.0
        self._draining = False
        self._num_waiting = 0
        self._waiting_prefill_tokens = 0
        self._book = BatchBook(requests, records)

    # -- the Engine protocol -------------------------------------------------------

    def add(self, request_ix: int, now: Seconds) -> None:
        """Queue request ``request_ix`` for its model; decide at once if the engine is idle."""
        model = self.requests.models[int(self.requests.model[request_ix])]
        if model not in self._queues:
            raise ConfigError(
                f"engine {self.id}: request {request_ix} is for a model it does not serve",
                value=model,
                allowed=self._queues,
            )
        self.records.instance[request_ix] = self.instance_ix
        self._queues[model].push(request_ix, now)
        self._num_waiting += 1
        self._waiting_prefill_tokens += int(self.requests.prompt_tokens[request_ix])
        self.strategy.observe_arrival(model, now)
        if self._running is None:
            self._step(now)

    def next_event_at(self) -> Seconds | None:
        """End of the batch in flight, else the strategy's timer; ``None`` when idle."""
        if self._done:
            return self._done_at
        if self._running is not None:
            return self._running.release_at if self._finished_running else self._running.end_at
        return self._wake_at

    def advance(self, now: Seconds) -> list[int]:
        """Finish the batch ending by ``now``, start the next; return finished requests."""
        self._step(now)
        done, self._done = self._done, []
        return done

    def drain(self, now: Seconds) -> None:
        """No more requests will arrive: from now on every queue is served to the end."""
        self._draining = True
        if self._running is None:
            self._step(now)

    @property
    def holds_back(self) -> bool:
        """Yes: a queue may wait for a fuller batch until the arrivals end."""
        return True

    def load(self) -> EngineLoad:
        """Queue and batch sizes, and the most recently used resident model."""
        running = None if self._finished_running else self._running
        remaining = 0 if running is None else int(self.requests.max_tokens[running.positions].sum())
        ctx = 0 if running is None else int(self.requests.prompt_tokens[running.positions].sum())
        return EngineLoad(
            num_running=0 if running is None else len(running.positions),
            num_waiting=self._num_waiting,
            waiting_prefill_tokens=self._waiting_prefill_tokens,
            running_remaining_tokens=remaining,
            running_ctx_tokens=ctx,
            kv_usage=0.0,
            busy_s=self._book.busy_s,
            resident_model=self._residency.most_recent,
        )

    def queue_sizes(self) -> tuple[int, int, int]:
        """The batch size, waiting requests and their prompt tokens (as ``load()``)."""
        running = None if self._finished_running else self._running
        num_running = 0 if running is None else len(running.positions)
        return num_running, self._num_waiting, self._waiting_prefill_tokens

    def stats(self) -> EngineStats:
        """Totals over finished batches (``num_steps`` = batches, ``num_swaps`` = loads)."""
        return self._book.stats()

    # -- reports and views -----------------------------------------------------------

    def batch_log(self) -> BatchLog:
        """Every finished batch: start, end, model, size, swap time before it."""
        return self._book.log()

    def view(self) -> BatchingView:
        """What the strategy sees: per-model queues, residency and limits."""
        queues = tuple(
            ModelQueueView(
                model=m,
                queued_at=self._queues[m].times(),
                load=self._planned[m][0],
                unload=self._planned[m][1],
                loaded_at=self._residency.loaded_at.get(m),
                queued_ids=self._queues[m].ids(),
            )
            for m in self._queues
        )
        return BatchingView(
            queues=queues,
            resident=tuple(self._residency.loaded_at),
            max_resident_models=self.max_resident_models,
            max_batch_size=self.max_batch_size,
            draining=self._draining,
        )

    # -- internals -------------------------------------------------------------------

    def _step(self, now: Seconds) -> None:
        """Finish what ends by ``now`` and ask the strategy until it waits or idles."""
        while True:
            running = self._running
            if running is not None:
                if not self._finished_running:
                    if running.end_at > now:
                        return
                    self._finish(running)
                if running.release_at > now:
                    return
                self._running, self._finished_running = None, False
                continue
            decision = self.strategy.decide(self.view(), now)
            if isinstance(decision, RunBatch):
                self._start(decision, now)
            elif isinstance(decision, WaitUntil):
                self._wait(decision, now)
                return
            else:
                self._idle(decision)
                return

    def _wait(self, decision: WaitUntil, now: Seconds) -> None:
        if not decision.wake_at > now:
            raise ConfigError(
                f"engine {self.id}: strategy {self.strategy.name!r} asked to wait until a "
                f"time not after now ({now})",
                value=decision.wake_at,
                allowed="a time > now",
            )
        self._wake_at = decision.wake_at

    def _idle(self, decision: Idle) -> None:
        if self._draining and self._num_waiting:
            raise ConfigError(
                f"engine {self.id}: strategy {self.strategy.name!r} idles while draining "
                f"with {self._num_waiting} requests queued",
                value=decision,
                allowed="RunBatch or WaitUntil while queues are non-empty",
            )
        self._wake_at = None

    def _start(self, decision: RunBatch, now: Seconds) -> None:
        """Take the batch off its queue, swap its model in, and time it."""
        positions = self._take(decision)
        swap_s, num_loads = self._residency.swap_in(decision.model, now)
        start_at = now + swap_s
        duration_s = self.step_models[decision.model].request_batch_s(
            self.requests.prompt_tokens[positions].tolist(),
            int(answer_tokens(self.requests, positions).max()),
        )
        self.records.first_scheduled_at[positions] = start_at
        self._wake_at = None
        end_at = start_at + duration_s
        self._running = _Running(
            decision.model,
            positions,
            start_at,
            end_at,
            swap_s,
            num_loads,
            decision.reason,
            end_at + after_batch_s(self.step_models[decision.model], len(positions)),
        )

    def _take(self, decision: RunBatch) -> IntArray:
        queue = self._queues.get(decision.model)
        available = 0 if queue is None else len(queue)
        num = min(decision.num_requests, available, self.max_batch_size or available)
        if queue is None or num < 1:
            raise ConfigError(
                f"engine {self.id}: strategy {self.strategy.name!r} asked for an empty batch",
                value=decision,
                allowed="a served model with queued requests and num_requests >= 1",
            )
        positions = queue.pop(num)
        self._num_waiting -= num
        self._waiting_prefill_tokens -= int(self.requests.prompt_tokens[positions].sum())
        return positions

    def _finish(self, run: _Running) -> None:
        """Write the batch's records and totals."""
        pos = run.positions
        batch = BatchRecord(run.start_at, run.end_at, run.model, len(pos), run.swap_s, run.reason)
        self._book.finish(batch, pos, run.num_loads)
        self._done.extend(pos.tolist())
        self._done_at = run.end_at
        self._finished_running = True


class RequestLevelConfig(ComposedParams):
    """User config of a request-level engine (``engine: {kind: request-level, ...}``).

    The strategy's parameters are :class:`~sincere.policy.batching.ComposedParams`'s
    fields, declared once there (ranges, units, meaning) and written flat in the engine
    block; the fields below are the engine's own.
    """

    kind: Literal["request-level"] = "request-level"
    strategy: str = "best-batch+timer"  # "+"-joined rules, see valid_strategy_names()
    sla_s: Seconds = Field(60.0, gt=0, description="end-to-end latency bound, s")
    # widened to allow null: the engine resolves it (planning()) before the strategy sees it
    select_horizon: SelectHorizon | None = Field(  # type: ignore[assignment]
        None, description="SelectBatch's span; null: as the step model's calibration says"
    )
    max_resident_models: int = Field(1, ge=1)  # models the device holds at once
    max_batch_size: int | None = Field(None, ge=1)  # cap on a batch; None = unbounded
    sample_swap_times: bool = False  # draw swap times from N(mean, std) instead of means
    dispatch: Literal["server", "idle"] = "server"  # SINCERE's server, or decide when idle
    poll_period_s: float | None = Field(None, gt=0)  # server's timer thread; None: calibrated

    @field_validator("strategy")
    @classmethod
    def _canonical_strategy(cls, value: str) -> str:
        return "+".join(parse_strategy_name(value))

    def make_strategy(
        self, step_models: Mapping[ModelName, StepTimeModel] | None = None
    ) -> ComposedStrategy:
        """A fresh strategy object for one engine (``step_models``: see :meth:`planning`)."""
        params = self.model_dump(include=set(ComposedParams.model_fields) - {"select_horizon"})
        horizon = self.planning(step_models or {})[0]
        return make_strategy(self.strategy, select_horizon=horizon, **params)

    def planning(self, step_models: Mapping[ModelName, StepTimeModel]) -> tuple[str, Seconds]:
        """(SelectBatch span, timer-thread period): as set here, else as the step models'
        calibration says, else the published span and SINCERE's code period (0.1 s)."""
        plans = [s.planning() for s in step_models.values() if isinstance(s, RequestLevelCosts)]
        horizon = self.select_horizon or (plans[0].select_horizon if plans else "sla-slack")
        poll = self.poll_period_s or (plans[0].poll_period_s if plans else SINCERE_POLL_PERIOD_S)
        return horizon, poll

    def build(
        self,
        id: InstanceId,
        requests: RequestArrays,
        records: RecordArrays,
        instance_ix: int,
        step_models: Mapping[ModelName, StepTimeModel],
        rng: np.random.Generator | None = None,
    ) -> RequestLevelEngine | SincereServerEngine:
        """An engine with this config and its own strategy object."""
        strategy = self.make_strategy(step_models)
        if self.dispatch == "server":
            return SincereServerEngine(
                id, requests, records, instance_ix, step_models, strategy,
                poll_period_s=self.planning(step_models)[1],
                max_resident_models=self.max_resident_models,
                max_batch_size=self.max_batch_size,
                rng=rng,
                sample_swap_times=self.sample_swap_times,
            )  # fmt: skip
        return RequestLevelEngine(
            id,
            requests,
            records,
            instance_ix,
            step_models,
            strategy,
            max_resident_models=self.max_resident_models,
            max_batch_size=self.max_batch_size,
            rng=rng,
            sample_swap_times=self.sample_swap_times,
        )
