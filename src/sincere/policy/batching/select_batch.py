"""SelectBatch: a batch size matched to the model's recent arrival rate.

From SINCERE (docs/references.md).

The rate ``λ̂`` of a model is estimated from its last ``select_window`` (100)
inter-arrival times as their count over their sum. The batch size is the element of
``select_sizes`` ({8, 16, 32, 64}) closest to ``λ̂ · span``, where ``T_adj`` is the
Timer's adjustment (load mean + std, unload mean + std, estimated batch time) of the
model and the span (``select_horizon``) is either ``SLA - T_adj`` (``sla-slack``: the
requests expected while the oldest one can still wait, as the published description has it)
or ``T_adj`` (``swap-and-batch``: the requests expected during one swap and batch,
which is what SINCERE's real runs show: their sizes do not change with the SLA; see
docs/validation.md). Ties go to the smaller size. Before the model has two arrivals there is no
rate and the model's best batch is used. Capped by the engine's ``max_batch_size``.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from sincere.core.types import ModelName, Seconds
from sincere.policy.batching.base import (
    NOT_READY,
    STRATEGIES,
    BatchingView,
    BatchRule,
    BestBatchTable,
    ModelQueueView,
    Readiness,
    SelectBatchParams,
    timer_adjust_s,
)


def closest_size(target: float, sizes: tuple[int, ...]) -> int:
    """The element of ``sizes`` nearest to ``target`` (the smaller on a tie)."""
    return int(min(sizes, key=lambda size: (abs(size - target), size)))


@STRATEGIES.register("select-batch", params=SelectBatchParams)
class SelectBatch(BatchRule):
    """Ready when the queue holds the size selected from the arrival rate."""

    role = "target"

    def __init__(self, params: SelectBatchParams) -> None:
        self.best_batch = BestBatchTable.of(params)
        self.sla_s = params.sla_s
        self.est_batch_time_s = params.est_batch_time_s
        self.select_window = params.select_window
        self.select_sizes = params.select_sizes
        self.select_horizon = params.select_horizon
        self._arrivals: dict[ModelName, deque[Seconds]] = {}

    def observe_arrival(self, model: ModelName, at: Seconds) -> None:
        """Remember the last ``select_window + 1`` arrival times of ``model``."""
        times = self._arrivals.get(model)
        if times is None:
            times = self._arrivals[model] = deque(maxlen=self.select_window + 1)
        times.append(at)

    def rate(self, model: ModelName) -> float | None:
        """Estimated arrivals per second of ``model``; ``None`` before two arrivals."""
        times = self._arrivals.get(model)
        if times is None or len(times) < 2:
            return None
        span = times[-1] - times[0]
        return float("inf") if span <= 0 else (len(times) - 1) / span

    def span_s(self, queue: ModelQueueView) -> Seconds:
        """The span of expected arrivals: ``SLA - T_adj`` (sla-slack) or ``T_adj``."""
        t_adj = timer_adjust_s(queue, self.est_batch_time_s)
        return t_adj if self.select_horizon == "swap-and-batch" else self.sla_s - t_adj

    def target(self, queue: ModelQueueView, view: BatchingView) -> int:
        """The batch size this rule waits for."""
        rate = self.rate(queue.model)
        if rate is None:
            return view.cap(self.best_batch.size(queue.model))
        expected = rate * self.span_s(queue) if np.isfinite(rate) else float("inf")
        return view.cap(closest_size(expected, self.select_sizes))

    def assess(self, queue: ModelQueueView, view: BatchingView, now: Seconds) -> Readiness:
        """A batch of exactly the target once the queue reaches it."""
        size = self.target(queue, view)
        return Readiness(size) if queue.num_queued >= size else NOT_READY
