"""The contract of request-level batching strategies (SINCERE, docs/references.md, SINCERE).

Several models share one GPU; one (or a few) is resident at a time and swapping
costs an unload plus a load. Requests queue per model, FIFO, and a batch of one
model's requests runs to completion. A :class:`BatchStrategy` decides, whenever the
engine is idle, what to do next: run a batch of a model (:class:`RunBatch`), wait for
a timer (:class:`WaitUntil`), or nothing until the next arrival (:class:`Idle`).

Strategies are clock-free: they get ``now`` and a read-only :class:`BatchingView`
and may keep their own state, learnt from :meth:`BatchStrategy.observe_arrival`.
SINCERE's strategies are built from small *rules* (FCFS, BestBatch, Timer,
SelectBatch, PartialBatch), each registered in :data:`STRATEGIES` and combined by
:class:`~sincere.policy.batching.composed.ComposedStrategy`. A rule looks at one
model's queue and answers with a :class:`Readiness`: how many requests it would
run now, and when it would next become ready if nothing else arrives.
"""

from __future__ import annotations

import typing
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, ClassVar, Literal, TypeAlias

import numpy as np
import numpy.typing as npt
from pydantic import Field, field_validator

from sincere.core.errors import ConfigError
from sincere.core.params import Params
from sincere.core.registry import Registry
from sincere.core.types import ModelName, RequestId, Seconds
from sincere.perf.base import SwapTime

FloatArray: TypeAlias = npt.NDArray[np.float64]
IntArray: TypeAlias = npt.NDArray[np.int64]

DEFAULT_BEST_BATCH: Mapping[ModelName, int] = MappingProxyType(
    {"granite-7b": 48, "gemma-7b": 64, "llama3-8b": 64, "llama-3-8b": 64}
)
"""Throughput-optimal batch sizes from SINCERE's batch profiling on an H100
(docs/references.md, SINCERE).

``llama-3-8b`` is the catalog's name of SINCERE's ``llama3-8b``."""


SelectHorizon: TypeAlias = Literal["sla-slack", "swap-and-batch"]
"""SelectBatch's span of expected arrivals (see :data:`SELECT_HORIZONS`)."""

SELECT_HORIZONS: tuple[SelectHorizon, ...] = typing.get_args(SelectHorizon)
"""SelectBatch's spans: expected arrivals while the head can still wait (``SLA - T_adj``,
the published description) or during one swap and batch (``T_adj``, what SINCERE's runs
show)."""


@dataclass(frozen=True, slots=True, eq=False)
class ModelQueueView:
    """One model's FIFO queue and residency, as a strategy sees it.

    The arrays are read-only views of the engine's queue (no copy per decision).
    """

    model: ModelName
    queued_at: FloatArray  # times the queued requests reached the engine, oldest first
    load: SwapTime  # time to load this model (mean, std)
    unload: SwapTime  # time to unload this model (mean, std)
    loaded_at: Seconds | None = None  # when it became resident (end of load); None if not
    queued_ids: IntArray | None = None  # ids (run positions) of the queued requests, if known

    @property
    def num_queued(self) -> int:
        """Requests waiting for this model."""
        return len(self.queued_at)

    @property
    def head_queued_at(self) -> Seconds | None:
        """When the oldest queued request arrived; ``None`` for an empty queue."""
        return float(self.queued_at[0]) if len(self.queued_at) else None

    @property
    def head_order(self) -> tuple[Seconds, RequestId]:
        """Sort key of the head request: arrival time, then id (ids follow arrival order)."""
        if not len(self.queued_at):
            return float("inf"), 0
        ids = self.queued_ids
        head_id = int(ids[0]) if ids is not None and len(ids) else 0
        return float(self.queued_at[0]), head_id

    @property
    def resident(self) -> bool:
        """Whether the model is on the device now."""
        return self.loaded_at is not None


@dataclass(frozen=True, slots=True)
class BatchingView:
    """The idle engine's state: every model it serves, residency and limits."""

    queues: tuple[ModelQueueView, ...]  # one per model the engine serves, in a fixed order
    resident: tuple[ModelName, ...]  # resident models, least recently used first
    max_resident_models: int = 1  # models the device holds at once
    max_batch_size: int | None = None  # most requests in one batch; None = unbounded
    draining: bool = False  # no more arrivals will come: every queue must be served

    def queue(self, model: ModelName) -> ModelQueueView:
        """The queue of ``model``; an unknown model raises ``ConfigError``."""
        for q in self.queues:
            if q.model == model:
                return q
        raise ConfigError("unknown model", value=model, allowed=[q.model for q in self.queues])

    def cap(self, num_requests: int) -> int:
        """``num_requests`` limited by ``max_batch_size``."""
        if self.max_batch_size is None:
            return num_requests
        return min(num_requests, self.max_batch_size)


@dataclass(frozen=True, slots=True)
class RunBatch:
    """Run the first ``num_requests`` queued requests of ``model`` as one batch.

    The engine swaps ``model`` in first when it is not resident (unloading the least
    recently used model when the device is full).
    """

    model: ModelName  # whose queue to serve
    num_requests: int  # how many requests from the head of its FIFO queue (>= 1)
    reason: str = ""  # which rule fired (logged; e.g. "best-batch", "timer")


@dataclass(frozen=True, slots=True)
class WaitUntil:
    """Nothing to run now; ask again at ``wake_at`` (or at the next arrival)."""

    wake_at: Seconds  # absolute time of the earliest timer, > now


@dataclass(frozen=True, slots=True)
class Idle:
    """Nothing to run and no timer: ask again at the next arrival."""


BatchDecision: TypeAlias = RunBatch | WaitUntil | Idle


@dataclass(frozen=True, slots=True)
class Readiness:
    """A rule's answer for one model's queue."""

    num_requests: int = 0  # requests it would run now (0 = not ready)
    wake_at: Seconds | None = None  # when it would become ready without new arrivals

    @property
    def ready(self) -> bool:
        """Whether the rule wants a batch now."""
        return self.num_requests > 0


NOT_READY = Readiness()


class BestBatchParams(Params):
    """The throughput-optimal batch size of each model (BestBatch; the fallback of others)."""

    best_batch: dict[str, Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: dict(DEFAULT_BEST_BATCH),
        description="model -> best batch, requests; overrides SINCERE's H100 sizes "
        "(granite-7b 48, gemma-7b 64, llama3-8b 64), others keep theirs",
    )
    default_best_batch: int = Field(
        64, ge=1, description="best batch of a model missing from best_batch, requests"
    )

    @field_validator("best_batch")
    @classmethod
    def _over_defaults(cls, table: dict[str, int]) -> dict[str, int]:
        return {**DEFAULT_BEST_BATCH, **table}


class SwapBudgetParams(Params):
    """What a strategy plans a model's swap and batch against (Timer, SelectBatch)."""

    sla_s: Seconds = Field(gt=0, description="end-to-end latency bound, s")
    est_batch_time_s: Seconds = Field(
        8.0, gt=0, description="estimated duration of one batch (set by hand in SINCERE), s"
    )


class TimerParams(SwapBudgetParams):
    """Parameters of ``timer``."""

    min_timer_s: Seconds = Field(5.0, gt=0, description="the timer's floor, s")
    timer_queue_factor: float = Field(
        0.001, ge=0, description="the timer shrinks as T / (1 + factor * queued requests)"
    )


class SelectBatchParams(SwapBudgetParams, BestBatchParams):
    """Parameters of ``select-batch``."""

    select_window: int = Field(
        100, ge=1, description="inter-arrival times the rate estimate uses (newest)"
    )
    select_sizes: tuple[Annotated[int, Field(ge=1)], ...] = Field(
        (8, 16, 32, 64), min_length=1, strict=False, description="candidate batch sizes"
    )
    select_horizon: SelectHorizon = Field(
        "sla-slack",
        description="span of expected arrivals: SLA - T_adj (published) or T_adj (runs)",
    )


class PartialBatchParams(BestBatchParams):
    """Parameters of ``partial-batch``."""

    partial_residency_s: Seconds = Field(
        10.0, ge=0, description="residency of the loaded model before a flush, s"
    )
    partial_fraction: float = Field(
        0.25, ge=0, description="flush when the queue holds more than this x its best batch"
    )


class StrategyParams(TimerParams, SelectBatchParams, PartialBatchParams):
    """Every rule's parameters, as the rules of one strategy share them."""


@dataclass(frozen=True, slots=True)
class BestBatchTable:
    """Best batch sizes per model, read by the rules at decision time."""

    sizes: Mapping[ModelName, int]  # model -> best batch
    default: int  # for models missing from ``sizes``

    @classmethod
    def of(cls, params: BestBatchParams) -> BestBatchTable:
        """The table of checked parameters."""
        return cls(dict(params.best_batch), params.default_best_batch)

    def size(self, model: ModelName) -> int:
        """The throughput-optimal batch of ``model``."""
        return self.sizes.get(model, self.default)


def timer_adjust_s(queue: ModelQueueView, est_batch_time_s: Seconds) -> Seconds:
    """T_adj of ``queue``'s model (see :func:`swap_budget_s`)."""
    return swap_budget_s(queue.load, queue.unload, est_batch_time_s)


def swap_budget_s(load: SwapTime, unload: SwapTime, est_batch_time_s: Seconds) -> Seconds:
    """T_adj = (load mean + std) + (unload mean + std) + estimated batch time."""
    return load.mean_s + load.std_s + unload.mean_s + unload.std_s + est_batch_time_s


class BatchStrategy(ABC):
    """Decides what an idle request-level engine does next."""

    name: str = ""

    @abstractmethod
    def decide(self, view: BatchingView, now: Seconds) -> BatchDecision:
        """Run a batch, wait for a timer, or idle. When ``view.draining`` is set the
        strategy must not idle while any queue holds requests."""

    def observe_arrival(self, model: ModelName, at: Seconds) -> None:  # noqa: B027 (hook)
        """Learn that a request for ``model`` reached the engine at ``at``. Default: nothing."""


RuleRole: TypeAlias = Literal["exclusive", "target", "flush", "trigger"]
"""What a rule contributes, which decides how rules combine:

* ``exclusive``: a whole strategy on its own (FCFS);
* ``target``: a batch size to wait for (BestBatch, SelectBatch); at most one;
* ``flush``: serves small batches of a model already resident (PartialBatch); needs a
  target or a trigger to load models in the first place;
* ``trigger``: a time at which whatever is queued runs (Timer).
"""

ROLE_ORDER: tuple[RuleRole, ...] = ("exclusive", "target", "flush", "trigger")
"""Order of rules in a canonical strategy name, e.g. ``best-batch+partial-batch+timer``."""


class BatchRule(ABC):
    """One component of a strategy (a batch-size target, a timer, a flush rule).

    A rule registers in :data:`STRATEGIES` with its parameter model; its constructor
    takes the checked parameters and copies what it reads into plain attributes.
    """

    role: ClassVar[RuleRole] = "target"

    @abstractmethod
    def assess(self, queue: ModelQueueView, view: BatchingView, now: Seconds) -> Readiness:
        """Whether ``queue`` (non-empty) should run now, how many, or when to look again."""

    def observe_arrival(self, model: ModelName, at: Seconds) -> None:  # noqa: B027 (hook)
        """Learn from an arrival. Default: nothing."""


STRATEGIES: Registry[type[BatchRule]] = Registry("batching strategy")
"""SINCERE's rules by name (``fcfs``, ``best-batch``, ``timer``, ``select-batch``,
``partial-batch``); :func:`~sincere.policy.batching.composed.make_strategy` joins them
with ``+``."""
