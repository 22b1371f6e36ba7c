"""SINCERE's rules as its server applies them: at each arrival and on a timer thread.

SINCERE's scheduler (a Flask server, one thread per request) does not decide when the
GPU becomes free. It decides in two places, and the GPU serves the batches they hand
off in the order their threads queued for it:

* **at an arrival** -- the request joins its model's queue; if the queue now satisfies
  the strategy's target rule (BestBatch's best batch, SelectBatch's selected size, or
  FCFS's one request), the whole queue is handed off as a batch;
* **on the timer thread** -- every pass it fires the models whose Timer has expired and,
  with PartialBatch, flushes the resident model's queue once the model has stayed long
  enough and the queue holds more than a fraction of its best batch.

A model's Timer starts at the first arrival after its previous batch finished (not at
the head's arrival) with the length :meth:`Timer.timer_s` gives for the queue then.

:class:`ServerRules` answers these three questions from a composed strategy's rules;
the engine that models the server's threads, its hand-off slot and its lock is
:class:`~sincere.engine.sincere_server.SincereServerEngine`. Clock-free: ``now`` is an
argument.
"""

from __future__ import annotations

from sincere.core.types import Seconds
from sincere.policy.batching.base import BatchingView, ModelQueueView, Readiness
from sincere.policy.batching.composed import ComposedStrategy
from sincere.policy.batching.partial_batch import PartialBatch
from sincere.policy.batching.timer import Timer


class ServerRules:
    """The arrival, timer and flush questions of SINCERE's server, from a strategy."""

    def __init__(self, strategy: ComposedStrategy) -> None:
        self.strategy = strategy
        self._targets = [r for r in strategy.rules if r.role in ("exclusive", "target")]
        self._timers = [r for r in strategy.rules if isinstance(r, Timer)]
        self._flushes = [r for r in strategy.rules if isinstance(r, PartialBatch)]

    @property
    def has_timer(self) -> bool:
        """Whether the strategy has a Timer."""
        return bool(self._timers)

    @property
    def has_flush(self) -> bool:
        """Whether the strategy flushes the resident model (PartialBatch)."""
        return bool(self._flushes)

    def observe_arrival(self, model: str, at: Seconds) -> None:
        """Tell the rules (SelectBatch's rate estimate) about an arrival."""
        self.strategy.observe_arrival(model, at)

    def hand_off_on_arrival(self, queue: ModelQueueView, view: BatchingView, now: Seconds) -> bool:
        """Whether the queue, just joined by a request, now meets the target rule."""
        return any(r.assess(queue, view, now).ready for r in self._targets)

    def timer_s(self, queue: ModelQueueView) -> Seconds | None:
        """Length of the timer a first request starts (``None``: no Timer)."""
        return min((t.timer_s(queue) for t in self._timers), default=None)

    def flush(self, queue: ModelQueueView, view: BatchingView, now: Seconds) -> Readiness:
        """PartialBatch on the resident model's queue: ready now, or when it would be."""
        answers = [r.assess(queue, view, now) for r in self._flushes]
        if any(a.ready for a in answers):
            return Readiness(queue.num_queued)
        wakes = [a.wake_at for a in answers if a.wake_at is not None]
        return Readiness(0, min(wakes) if wakes else None)
