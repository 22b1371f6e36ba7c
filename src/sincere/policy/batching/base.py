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

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import ClassVar, Literal, TypeAlias

import numpy as np
import numpy.typing as npt

from sincere.core.errors import ConfigError
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


SELECT_HORIZONS = ("sla-slack", "swap-and-batch")
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


@dataclass(frozen=True, slots=True)
class StrategyParams:
    """Parameters shared by SINCERE's rules (defaults are the paper's)."""

    sla_s: Seconds  # end-to-end latency bound (SINCERE sweeps 40, 60, 80 s)
    best_batch: Mapping[ModelName, int] = field(default_factory=lambda: dict(DEFAULT_BEST_BATCH))
    default_best_batch: int = 64  # for models missing from ``best_batch``
    est_batch_time_s: Seconds = 8.0  # Timer's hand-set estimate of one batch's duration
    min_timer_s: Seconds = 5.0  # Timer's floor
    timer_queue_factor: float = 0.001  # Timer shrinks as T / (1 + factor * queued)
    select_window: int = 100  # SelectBatch: inter-arrival times used for the rate
    select_sizes: tuple[int, ...] = (8, 16, 32, 64)  # SelectBatch's candidate sizes
    partial_residency_s: Seconds = 10.0  # PartialBatch: residency before a flush
    partial_fraction: float = 0.25  # PartialBatch: flush when queued > fraction * best
    select_horizon: str = "sla-slack"  # SelectBatch's span: "sla-slack" or "swap-and-batch"

    def __post_init__(self) -> None:
        positive = {
            "sla_s": self.sla_s,
            "est_batch_time_s": self.est_batch_time_s,
            "min_timer_s": self.min_timer_s,
            "select_window": self.select_window,
            "default_best_batch": self.default_best_batch,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ConfigError(f"batching strategy: {name} must be > 0", value=value)
        for name, value in (
            ("timer_queue_factor", self.timer_queue_factor),
            ("partial_residency_s", self.partial_residency_s),
            ("partial_fraction", self.partial_fraction),
        ):
            if not value >= 0:
                raise ConfigError(f"batching strategy: {name} must be >= 0", value=value)
        if self.select_horizon not in SELECT_HORIZONS:
            raise ConfigError(
                "batching strategy: unknown select_horizon",
                value=self.select_horizon,
                allowed=SELECT_HORIZONS,
            )
        bad = {m: n for m, n in self.best_batch.items() if n < 1}
        if bad:
            raise ConfigError("batching strategy: best_batch sizes must be >= 1", value=bad)
        if not self.select_sizes or min(self.select_sizes) < 1:
            raise ConfigError(
                "batching strategy: select_sizes must be non-empty sizes >= 1",
                value=self.select_sizes,
            )

    def best_batch_of(self, model: ModelName) -> int:
        """The throughput-optimal batch of ``model`` (``default_best_batch`` if unknown)."""
        return self.best_batch.get(model, self.default_best_batch)

    def timer_adjust_s(self, queue: ModelQueueView) -> Seconds:
        """T_adj = (load mean + std) + (unload mean + std) + estimated batch time."""
        load, unload = queue.load, queue.unload
        return load.mean_s + load.std_s + unload.mean_s + unload.std_s + self.est_batch_time_s

    def select_span_s(self, queue: ModelQueueView) -> Seconds:
        """SelectBatch's span: ``SLA - T_adj`` (sla-slack) or ``T_adj`` (swap-and-batch)."""
        t_adj = self.timer_adjust_s(queue)
        return t_adj if self.select_horizon == "swap-and-batch" else self.sla_s - t_adj


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
    """One component of a strategy (a batch-size target, a timer, a flush rule)."""

    role: ClassVar[RuleRole] = "target"

    def __init__(self, params: StrategyParams) -> None:
        self.params = params

    @abstractmethod
    def assess(self, queue: ModelQueueView, view: BatchingView, now: Seconds) -> Readiness:
        """Whether ``queue`` (non-empty) should run now, how many, or when to look again."""

    def observe_arrival(self, model: ModelName, at: Seconds) -> None:  # noqa: B027 (hook)
        """Learn from an arrival. Default: nothing."""


STRATEGIES: Registry[type[BatchRule]] = Registry("batching strategy")
"""SINCERE's rules by name (``fcfs``, ``best-batch``, ``timer``, ``select-batch``,
``partial-batch``); :func:`~sincere.policy.batching.composed.make_strategy` joins them
with ``+``."""
