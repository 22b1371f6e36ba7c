"""The classic orders of a continuous-batching engine's waiting queue.

* ``fcfs`` -- arrival order, the whole token budget per iteration (vLLM's default).
* ``priority`` -- the request's ``priority`` (smaller first), then arrival (vLLM's
  ``--scheduling-policy priority``).
* ``edf`` -- earliest TTFT deadline first, TTLT tiers converted as in
  :mod:`.deadlines` (Niyama's EDF baseline).
* ``srpf`` -- shortest remaining prefill first (prompt tokens left to compute).
* ``sarathi`` -- FCFS with a fixed token budget per iteration, ``chunk_size``
  tokens including decodes (Sarathi-Serve's stall-free batching).

All five are view-only (their plan is a function of the engine state; the budget
depends on ``chunk_size`` and the engine's limits only), so the engine may compute
their plans itself (:meth:`~.base.IterationScheduler.plan_is_view_only`).

``max_tokens``-based predictions only: no policy reads a request's true output length.
"""

from __future__ import annotations

from sincere.core.errors import ConfigError
from sincere.core.types import Seconds
from sincere.policy.schedulers.base import EngineView, IterationScheduler, SortKey
from sincere.policy.schedulers.deadlines import ttft_deadline_at
from sincere.policy.schedulers.registry import SCHEDULERS


@SCHEDULERS.register("fcfs")
class Fcfs(IterationScheduler, view_only=True):
    """First come, first served (arrival order), as vLLM."""


@SCHEDULERS.register("priority")
class Priority(IterationScheduler, view_only=True):
    """Smaller ``priority`` first, then arrival."""

    def waiting_key(self, view: EngineView, i: int) -> SortKey:
        """(priority, arrival)."""
        req = view.requests
        return (float(req.priority[i]), float(req.arrival_at[i]))


@SCHEDULERS.register("edf")
class Edf(IterationScheduler, view_only=True):
    """Earliest TTFT deadline first.

    ``predicted_output_tokens`` fixes the output length used to convert TTLT
    deadlines; ``None`` uses each request's ``max_tokens``.
    """

    def __init__(self, predicted_output_tokens: int | None = None) -> None:
        _check_positive("predicted_output_tokens", predicted_output_tokens)
        self.predicted_output_tokens = predicted_output_tokens

    def waiting_key(self, view: EngineView, i: int) -> SortKey:
        """(absolute TTFT deadline, arrival)."""
        due = ttft_deadline_at(view.requests, i, self.predicted_output_tokens)
        return (due, float(view.requests.arrival_at[i]))


@SCHEDULERS.register("srpf")
class Srpf(IterationScheduler, view_only=True):
    """Shortest remaining prefill first (fewest prompt tokens left)."""

    def waiting_key(self, view: EngineView, i: int) -> SortKey:
        """(remaining prefill tokens, arrival)."""
        return (float(view.prefill_remaining(i)), float(view.requests.arrival_at[i]))


@SCHEDULERS.register("sarathi")
class Sarathi(IterationScheduler, view_only=True):
    """FCFS with a fixed budget of ``chunk_size`` tokens per iteration (decodes included)."""

    def __init__(self, chunk_size: int = 512) -> None:
        _check_positive("chunk_size", chunk_size)
        self.chunk_size = chunk_size

    def token_budget(self, view: EngineView, now: Seconds) -> int:
        """``chunk_size``, capped by the engine's ``max_num_batched_tokens``."""
        most = view.max_num_batched_tokens
        return self.chunk_size if self.chunk_size < most else most


def _check_positive(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or value < 1):
        raise ConfigError(f"scheduler parameter {name} must be >= 1", value=value)
