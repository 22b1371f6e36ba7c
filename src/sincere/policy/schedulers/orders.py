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

from typing import Any

from pydantic import Field

from sincere.core.params import Params, params_from
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


class EdfParams(Params):
    """Parameters of ``edf``."""

    predicted_output_tokens: int | None = Field(
        None,
        ge=1,
        description="output tokens assumed when converting TTLT deadlines; null: each "
        "request's max_tokens",
    )


@SCHEDULERS.register("edf", params=EdfParams)
class Edf(IterationScheduler, view_only=True):
    """Earliest TTFT deadline first.

    ``predicted_output_tokens`` fixes the output length used to convert TTLT
    deadlines; ``None`` uses each request's ``max_tokens``.
    """

    def __init__(self, params: EdfParams | None = None, **values: Any) -> None:
        p = params_from(EdfParams, params, values, "engine scheduler 'edf'")
        self.predicted_output_tokens = p.predicted_output_tokens

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


class SarathiParams(Params):
    """Parameters of ``sarathi``."""

    chunk_size: int = Field(
        512, ge=1, description="tokens per iteration, decodes included (capped by the engine)"
    )


@SCHEDULERS.register("sarathi", params=SarathiParams)
class Sarathi(IterationScheduler, view_only=True):
    """FCFS with a fixed budget of ``chunk_size`` tokens per iteration (decodes included)."""

    def __init__(self, params: SarathiParams | None = None, **values: Any) -> None:
        self.chunk_size = params_from(
            SarathiParams, params, values, "engine scheduler 'sarathi'"
        ).chunk_size

    def token_budget(self, view: EngineView, now: Seconds) -> int:
        """``chunk_size``, capped by the engine's ``max_num_batched_tokens``."""
        most = view.max_num_batched_tokens
        return self.chunk_size if self.chunk_size < most else most
