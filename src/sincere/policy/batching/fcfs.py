"""FCFS: one request at a time, in arrival order (SINCERE's baseline, docs/references.md, SINCERE).

Every non-empty queue is ready with a batch of one; the composed strategy then picks
the queue whose head arrived first (FCFS turns ``prefer_resident`` off by default, so
the order is strictly by arrival and the engine swaps models as needed). No
parameters.
"""

from __future__ import annotations

from sincere.core.types import Seconds
from sincere.policy.batching.base import (
    STRATEGIES,
    BatchingView,
    BatchRule,
    ModelQueueView,
    Readiness,
)


@STRATEGIES.register("fcfs")
class FcfsBatch(BatchRule):
    """Run the head request of a queue alone (a batch of one, first come first served)."""

    role = "exclusive"

    def assess(self, queue: ModelQueueView, view: BatchingView, now: Seconds) -> Readiness:
        """Always ready with one request."""
        return Readiness(1)
