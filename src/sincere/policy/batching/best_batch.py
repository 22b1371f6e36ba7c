"""BestBatch: wait until a model's queue reaches its throughput-optimal batch size.

SINCERE (docs/references.md, SINCERE) profiles batch sizes until out-of-memory and keeps the
size with the highest throughput per model: granite-7b 48, gemma-7b 64, llama3-8b
64 on an H100. Parameter: ``best_batch`` (model -> size; ``default_best_batch`` for
others), capped by the engine's ``max_batch_size``. Exactly that many requests run.
Alone, BestBatch never serves a queue below its target: the engine's ``drain()``
(no more arrivals) makes the composed strategy flush such queues at the end.
"""

from __future__ import annotations

from sincere.core.types import Seconds
from sincere.policy.batching.base import (
    NOT_READY,
    STRATEGIES,
    BatchingView,
    BatchRule,
    BestBatchParams,
    BestBatchTable,
    ModelQueueView,
    Readiness,
)


@STRATEGIES.register("best-batch", params=BestBatchParams)
class BestBatch(BatchRule):
    """Ready when the queue holds the model's best batch."""

    role = "target"

    def __init__(self, params: BestBatchParams) -> None:
        self.best_batch = BestBatchTable.of(params)

    def target(self, queue: ModelQueueView, view: BatchingView) -> int:
        """The batch size this rule waits for."""
        return view.cap(self.best_batch.size(queue.model))

    def assess(self, queue: ModelQueueView, view: BatchingView, now: Seconds) -> Readiness:
        """A batch of exactly the target once the queue reaches it."""
        size = self.target(queue, view)
        return Readiness(size) if queue.num_queued >= size else NOT_READY
