"""What SINCERE's two request-level engines share: queues, residency, batch records.

:class:`~sincere.engine.request_level.RequestLevelEngine` (decides whenever the GPU is
idle) and :class:`~sincere.engine.sincere_server.SincereServerEngine` (SINCERE's threaded
server) differ in *when* a batch is decided; they queue requests, swap models in and out,
time swaps and write a finished batch's records the same way, with the pieces here:

* :class:`Fifo`: a model's queue of (request position, queued time), viewed in O(1);
* :class:`Residency`: which models the device holds (least recently used first) and what a
  swap costs (means, or draws from a normal with their std, clipped at 0);
* :func:`planned_swaps`, :func:`after_batch_s`: the figures strategies plan with and the
  server's work after a batch (from :class:`~sincere.perf.sincere_runs.RequestLevelCosts`
  when the step model offers them);
* :class:`BatchBook`: a finished batch's records (every answer whole, ``min(output_tokens,
  max_tokens)`` tokens at its end) and the engine's totals; :class:`~.batch_log.BatchRecord`
  / :class:`~.batch_log.BatchLog`: the batches of a run, for SINCERE's reports.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from sincere.core.errors import ConfigError
from sincere.core.records import RecordArrays
from sincere.core.request import RequestArrays
from sincere.core.types import InstanceId, ModelName, Seconds
from sincere.engine.base import EngineStats
from sincere.engine.batch_log import BatchLog, BatchRecord
from sincere.perf.base import StepTimeModel, SwapTime
from sincere.perf.sincere_runs import RequestLevelCosts

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


class Fifo:
    """A growable FIFO of (request position, queued time) in two arrays.

    ``ids()`` and ``times()`` are read-only views, so a strategy's view costs O(1)
    however long the queue grows.
    """

    def __init__(self, capacity: int = 64) -> None:
        self._ids = np.empty(capacity, dtype=np.int64)
        self._times = np.empty(capacity, dtype=np.float64)
        self._head = 0
        self._tail = 0

    def __len__(self) -> int:
        return self._tail - self._head

    def push(self, request_ix: int, at: Seconds) -> None:
        """Append one request."""
        if self._tail == len(self._ids):
            self._make_room()
        self._ids[self._tail] = request_ix
        self._times[self._tail] = at
        self._tail += 1

    def pop(self, num: int) -> IntArray:
        """Remove and return the ``num`` oldest positions."""
        out = self._ids[self._head : self._head + num].copy()
        self._head += num
        return out

    def ids(self) -> IntArray:
        """Queued positions, oldest first (read-only view)."""
        return _read_only(self._ids[self._head : self._tail])

    def times(self) -> FloatArray:
        """Queued times, oldest first (read-only view)."""
        return _read_only(self._times[self._head : self._tail])

    def _make_room(self) -> None:
        size = len(self)
        capacity = len(self._ids) * (2 if size > len(self._ids) // 2 else 1)
        ids, times = np.empty(capacity, dtype=np.int64), np.empty(capacity, dtype=np.float64)
        ids[:size] = self._ids[self._head : self._tail]
        times[:size] = self._times[self._head : self._tail]
        self._ids, self._times, self._head, self._tail = ids, times, 0, size


ArrayT = TypeVar("ArrayT", bound=npt.NDArray[Any])


def _read_only(values: ArrayT) -> ArrayT:
    values.flags.writeable = False
    return values


def planned_swaps(
    step_models: Mapping[ModelName, StepTimeModel],
) -> dict[ModelName, tuple[SwapTime, SwapTime]]:
    """Per model, the (load, unload) times strategies plan with."""
    out = {}
    for m, step in step_models.items():
        if isinstance(step, RequestLevelCosts):
            plan = step.planning()
            out[m] = (plan.load, plan.unload)
        else:
            out[m] = (step.load_time(), step.unload_time())
    return out


def after_batch_s(step: StepTimeModel, num_requests: int) -> Seconds:
    """The server's work after a batch (0 unless the step model knows it)."""
    return step.after_batch_s(num_requests) if isinstance(step, RequestLevelCosts) else 0.0


def cold_load_s(step: StepTimeModel) -> Seconds | None:
    """The first load of a run, when the step model knows it."""
    return step.cold_load_s() if isinstance(step, RequestLevelCosts) else None


class Residency:
    """Which models are on the device (least recently used first) and the cost of a swap.

    Swapping ``model`` in evicts least recently used models while the device is full
    (their ``unload_time()``) and loads it (``load_time()``); the run's very first load
    takes the step model's cold load when it knows one. Times are the means, or draws
    from a normal with their std (clipped at 0) when ``sample_swap_times``.
    """

    def __init__(
        self,
        step_models: Mapping[ModelName, StepTimeModel],
        max_resident_models: int,
        rng: np.random.Generator | None,
        sample_swap_times: bool,
    ) -> None:
        self.step_models = step_models
        self.max_resident_models = max_resident_models
        self.rng = rng
        self.sample_swap_times = sample_swap_times
        self.loaded_at: OrderedDict[ModelName, Seconds] = OrderedDict()  # LRU first
        self._ever_loaded = False

    @property
    def most_recent(self) -> ModelName | None:
        """The most recently used resident model."""
        return next(reversed(self.loaded_at), None)

    def swap_in(self, model: ModelName, now: Seconds) -> tuple[Seconds, int]:
        """Make ``model`` resident; the time it takes and the loads done (0 or 1)."""
        if model in self.loaded_at:
            self.loaded_at.move_to_end(model)
            return 0.0, 0
        cold = cold_load_s(self.step_models[model])
        swap_s = 0.0
        if not self._ever_loaded and cold is not None:
            swap_s = cold
        else:
            while len(self.loaded_at) >= self.max_resident_models:
                evicted, _ = self.loaded_at.popitem(last=False)
                swap_s += self._draw(self.step_models[evicted].unload_time())
            swap_s += self._draw(self.step_models[model].load_time())
        self._ever_loaded = True
        self.loaded_at[model] = now + swap_s
        return swap_s, 1

    def _draw(self, swap: SwapTime) -> Seconds:
        if not self.sample_swap_times or swap.std_s <= 0 or self.rng is None:
            return swap.mean_s
        return max(0.0, float(self.rng.normal(swap.mean_s, swap.std_s)))


def answer_tokens(requests: RequestArrays, positions: IntArray) -> IntArray:
    """Tokens each request answers: ``min(output_tokens, max_tokens)``, read now (lazily)."""
    return np.minimum(requests.output_tokens[positions], requests.max_tokens[positions])


class BatchBook:
    """A request-level engine's finished batches: their records written, their totals.

    A batch returns every answer whole: ``min(output_tokens, max_tokens)`` tokens at its
    end. The totals are those :class:`~sincere.engine.base.EngineStats` reports
    (``num_steps``: batches, ``num_swaps``: model loads)."""

    def __init__(self, requests: RequestArrays, records: RecordArrays) -> None:
        self.requests = requests
        self.records = records
        self.busy_s = 0.0
        self.swap_s = 0.0
        self.num_swaps = 0
        self.num_tokens = 0
        self.batches: list[BatchRecord] = []

    def finish(self, batch: BatchRecord, positions: IntArray, num_loads: int) -> None:
        """Write ``batch``'s records (its requests at ``positions``) and add its totals."""
        answers = answer_tokens(self.requests, positions)
        self.records.first_token_at[positions] = batch.end_at
        self.records.finished_at[positions] = batch.end_at
        self.records.output_tokens[positions] = answers
        self.num_tokens += int(answers.sum())
        self.busy_s += batch.end_at - batch.start_at
        self.swap_s += batch.swap_s
        self.num_swaps += num_loads
        self.batches.append(batch)

    def stats(self) -> EngineStats:
        """The engine's totals over finished batches."""
        return EngineStats(
            busy_s=self.busy_s,
            swap_s=self.swap_s,
            num_steps=len(self.batches),
            num_swaps=self.num_swaps,
            num_preemptions=0,
            num_generated_tokens=self.num_tokens,
        )

    def log(self) -> BatchLog:
        """Every finished batch: start, end, model, size, swap time before it."""
        return BatchLog.of(self.batches)


def check_engine_args(
    id: InstanceId,
    step_models: Mapping[ModelName, StepTimeModel],
    max_resident_models: int,
    max_batch_size: int | None,
    rng: np.random.Generator | None,
    sample_swap_times: bool,
) -> None:
    if not step_models:
        raise ConfigError(f"engine {id}: step_models is empty", allowed="one model or more")
    if max_resident_models < 1:
        raise ConfigError(
            f"engine {id}: max_resident_models must be >= 1", value=max_resident_models
        )
    if max_batch_size is not None and max_batch_size < 1:
        raise ConfigError(f"engine {id}: max_batch_size must be >= 1 or None", value=max_batch_size)
    if sample_swap_times and rng is None:
        raise ConfigError(
            f"engine {id}: sample_swap_times needs an rng", allowed="a seeded numpy Generator"
        )
