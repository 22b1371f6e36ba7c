"""Timer: serve a queue before its oldest request can miss the SLA.

From SINCERE (docs/references.md).

When a model's first request is queued a timer starts with

    T = max(SLA - T_adj, min_timer_s),
    T_adj = (load_mean + load_std) + (unload_mean + unload_std) + est_batch_time_s,

the time budget left once a pessimistic swap (mean plus one std of the model's own
load and unload times) and a batch are paid. With ``q`` requests queued it shrinks to
``max(T / (1 + timer_queue_factor * q), min_timer_s)``. It fires at
``head_queued_at + T`` (the oldest queued request's arrival, so leftovers of a batch
capped by ``max_batch_size`` are already due) and then whatever is queued runs.
Defaults: ``est_batch_time_s`` 8 s (set by hand in SINCERE), ``min_timer_s`` 5 s,
``timer_queue_factor`` 0.001.
"""

from __future__ import annotations

from sincere.core.types import Seconds
from sincere.policy.batching.base import (
    NOT_READY,
    STRATEGIES,
    BatchingView,
    BatchRule,
    ModelQueueView,
    Readiness,
    TimerParams,
    timer_adjust_s,
)


@STRATEGIES.register("timer", params=TimerParams)
class Timer(BatchRule):
    """Ready when the oldest queued request has waited ``timer_s``."""

    role = "trigger"

    def __init__(self, params: TimerParams) -> None:
        self.sla_s = params.sla_s
        self.est_batch_time_s = params.est_batch_time_s
        self.min_timer_s = params.min_timer_s
        self.timer_queue_factor = params.timer_queue_factor

    def timer_s(self, queue: ModelQueueView) -> Seconds:
        """The timer's length for this queue's current length."""
        floor = self.min_timer_s
        base = max(self.sla_s - timer_adjust_s(queue, self.est_batch_time_s), floor)
        return max(base / (1.0 + self.timer_queue_factor * queue.num_queued), floor)

    def fires_at(self, queue: ModelQueueView) -> Seconds | None:
        """When the timer of this queue fires; ``None`` for an empty queue."""
        head = queue.head_queued_at
        return None if head is None else head + self.timer_s(queue)

    def assess(self, queue: ModelQueueView, view: BatchingView, now: Seconds) -> Readiness:
        """Everything queued once the timer has fired; otherwise wake at its firing."""
        at = self.fires_at(queue)
        if at is None:
            return NOT_READY
        if now >= at:
            return Readiness(view.cap(queue.num_queued))
        return Readiness(0, wake_at=at)
