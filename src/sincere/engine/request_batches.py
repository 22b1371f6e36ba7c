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
* :func:`finish_batch`: a batch returns every answer whole, ``min(output_tokens,
  max_tokens)`` tokens at its end; :class:`BatchRecord` / :class:`BatchLog`: the batches
  of a run, for SINCERE's reports.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from sincere.core.errors import ConfigError
from sincere.core.records import RecordArrays
from sincere.core.request import RequestArrays
from sincere.core.types import InstanceId, ModelName, Seconds
from sincere.perf.base import StepTimeModel, SwapTime
from sincere.perf.sincere_runs import RequestLevelCosts

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """One batch the engine ran."""

    start_at: Seconds  # inference start (after any swap)
    end_at: Seconds  # inference end = when its requests finished
    model: ModelName
    size: int  # requests in the batch
    swap_s: Seconds  # unload + load time paid right before it (0 when resident)
    reason: str = ""  # the strategy's reason (which rule fired)


@dataclass(frozen=True, eq=False)
class BatchLog:
    """Every batch of a run as arrays, for SINCERE's reports."""

    start_at: FloatArray
    end_at: FloatArray
    size: IntArray
    swap_s: FloatArray
    model: tuple[ModelName, ...]

    @classmethod
    def of(cls, batches: list[BatchRecord]) -> BatchLog:
        """Pack batch records into arrays."""
        return cls(
            start_at=np.array([b.start_at for b in batches], dtype=np.float64),
            end_at=np.array([b.end_at for b in batches], dtype=np.float64),
            size=np.array([b.size for b in batches], dtype=np.int64),
            swap_s=np.array([b.swap_s for b in batches], dtype=np.float64),
            model=tuple(b.model for b in batches),
        )

    def __len__(self) -> int:
        return len(self.size)

    @property
    def duration_s(self) -> FloatArray:
        """Inference time of each batch."""
        return self.end_at - self.start_at

    @property
    def batch_throughput(self) -> FloatArray:
        """Requests per second of inference, per batch (SINCERE's batch throughput)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.size / self.duration_s

    @property
    def num_model_switches(self) -> int:
        """Consecutive batches of different models (SINCERE's model switch count)."""
        return sum(a != b for a, b in zip(self.model, self.model[1:], strict=False))

    def inference_fraction(self, total_s: Seconds) -> float:
        """Share of ``total_s`` spent in inference (not swapping, not idle)."""
        if not total_s > 0:
            raise ConfigError("inference_fraction: total_s must be > 0", value=total_s)
        return float(self.duration_s.sum() / total_s)


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


def finish_batch(
    requests: RequestArrays, records: RecordArrays, positions: IntArray, end_at: Seconds
) -> int:
    """Write a finished batch's records (the whole answer at ``end_at``); tokens generated."""
    answers = answer_tokens(requests, positions)
    records.first_token_at[positions] = end_at
    records.finished_at[positions] = end_at
    records.output_tokens[positions] = answers
    return int(answers.sum())


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
