"""PartialBatch: flush the resident model's queue once it has stayed long enough.

SINCERE (docs/references.md, SINCERE): once the loaded model has been resident for at least
``partial_residency_s`` (10 s), run its whole queue (capped by ``max_batch_size``)
if it holds more than ``partial_fraction`` (a quarter) of its best batch, instead of
waiting for a full one: the swap is already paid, so small batches are cheap. Only
resident models are flushed; residency counts from the end of the load.
"""

from __future__ import annotations

from sincere.core.types import Seconds
from sincere.policy.batching.base import (
    NOT_READY,
    STRATEGIES,
    BatchingView,
    BatchRule,
    BestBatchTable,
    ModelQueueView,
    PartialBatchParams,
    Readiness,
)


@STRATEGIES.register("partial-batch", params=PartialBatchParams)
class PartialBatch(BatchRule):
    """Ready for a resident model with enough residency and a big enough queue."""

    role = "flush"

    def __init__(self, params: PartialBatchParams) -> None:
        self.best_batch = BestBatchTable.of(params)
        self.partial_residency_s = params.partial_residency_s
        self.partial_fraction = params.partial_fraction

    def assess(self, queue: ModelQueueView, view: BatchingView, now: Seconds) -> Readiness:
        """Flush after the residency threshold; wake then if the queue is already big."""
        if queue.loaded_at is None:
            return NOT_READY
        if not queue.num_queued > self.partial_fraction * self.best_batch.size(queue.model):
            return NOT_READY
        flush_at = queue.loaded_at + self.partial_residency_s
        if now >= flush_at:
            return Readiness(view.cap(queue.num_queued))
        return Readiness(0, wake_at=flush_at)
