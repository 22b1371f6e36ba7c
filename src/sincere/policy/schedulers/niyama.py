"""Niyama: deadline-aware iteration scheduling with a dynamic prefill chunk.

From Niyama (docs/references.md), on a Sarathi-style engine with chunked prefill:

* **Order** of waiting requests (``order``): ``hybrid`` (default) sorts by
  ``arrival + ttft_deadline + h * remaining_prefill_tokens`` (``h_s_per_token``,
  s/token), relegated requests last; ``fcfs``, ``edf`` and ``srpf`` are the
  ablations. TTLT tiers get a TTFT deadline ``ttlt - n_dec * tbt`` with ``n_dec``
  the predicted decode tokens (``predicted_output_tokens`` or ``max_tokens``).
* **Dynamic chunk**: the token budget is the largest ``T`` in ``chunk_sizes``
  with ``slack_factor * predicted_batch_time(T) <= min decode slack``, where a
  decode's slack is the time until its next token is due (``max(first token,
  ttft deadline) + k * tbt``). When none fits, the smallest. Under KV pressure
  (usage above ``kv_pressure``) the choice is capped at ``pressure_max_chunk``.
  The batch time comes from ``predictor`` (any step-time model; Niyama used its
  binned linear regression).
* **Eager relegation**: a waiting request (it holds no memory yet) that cannot
  finish its own remaining prefill before its TTFT deadline at the current prefill
  throughput -- an EMA (``ema_alpha``) of prompt tokens per second over
  iterations that computed prompt tokens -- moves behind all others, for good.
  Requests are checked as planning reaches them, in order; none is relegated
  before a first throughput observation (or ``initial_prefill_tps``).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import Field

from sincere.core.params import Params, params_from
from sincere.core.registry import Needs
from sincere.core.types import Seconds
from sincere.perf.base import Batch, StepTimeModel
from sincere.policy.schedulers.base import (
    DecodeTimeline,
    EngineView,
    IterationScheduler,
    SortKey,
)
from sincere.policy.schedulers.deadlines import NextTokenDue, next_token_due_at, ttft_deadline_at
from sincere.policy.schedulers.registry import SCHEDULERS

DEFAULT_CHUNKS = (128, 256, 512, 1024, 1536, 2048, 2552)


class NiyamaParams(Params):
    """Parameters of ``niyama`` (see the module docstring)."""

    order: Literal["hybrid", "fcfs", "edf", "srpf"] = Field(
        "hybrid", description="order of waiting requests (hybrid, or an ablation)"
    )
    h_s_per_token: float = Field(
        0.012,
        ge=0,
        description="hybrid order's weight of remaining prefill, s/token",
    )
    chunk_sizes: tuple[Annotated[int, Field(ge=1)], ...] = Field(
        DEFAULT_CHUNKS,
        min_length=1,
        strict=False,
        description="token budgets the dynamic chunk chooses from, tokens",
    )
    slack_factor: float = Field(
        1.2, gt=0, description="safety factor on the predicted batch time against the slack"
    )
    relegation: bool = Field(True, description="eager relegation of hopeless requests")
    ema_alpha: float = Field(
        0.2, gt=0, le=1, description="EMA weight of the newest prefill throughput"
    )
    initial_prefill_tps: float | None = Field(
        None, gt=0, description="prefill throughput before the first observation, tokens/s"
    )
    kv_pressure: float = Field(
        0.9, gt=0, le=1, description="KV usage above which the chunk is capped (fraction)"
    )
    pressure_max_chunk: int = Field(256, ge=1, description="chunk cap under KV pressure, tokens")
    predicted_output_tokens: int | None = Field(
        None,
        ge=1,
        description="output tokens assumed when converting TTLT deadlines; null: max_tokens",
    )


PREDICTOR = Needs("predictor", StepTimeModel, "a batch-time predictor (a step-time model)")
"""Niyama's collaborator: predicts an iteration's time (the instance's step-time model)."""


@SCHEDULERS.register("niyama", params=NiyamaParams, needs=(PREDICTOR,))
class Niyama(IterationScheduler):
    """Niyama's scheduler; parameters are described in the module docstring."""

    def __init__(
        self, predictor: StepTimeModel, params: NiyamaParams | None = None, **values: Any
    ) -> None:
        p = params_from(NiyamaParams, params, values, "engine scheduler 'niyama'")
        self.predictor = predictor
        self.order = p.order
        self.h_s_per_token = p.h_s_per_token
        self.chunk_sizes = tuple(sorted(p.chunk_sizes))
        self.slack_factor = p.slack_factor
        self.relegation = p.relegation
        self.ema_alpha = p.ema_alpha
        self.prefill_tps = p.initial_prefill_tps  # EMA of prompt tokens / s
        self.kv_pressure = p.kv_pressure
        self.pressure_max_chunk = p.pressure_max_chunk
        self.predicted_output_tokens = p.predicted_output_tokens
        self._due_view: EngineView | None = None  # the view ``_due`` tracks
        self._due: NextTokenDue | None = None

    def deadline_at(self, view: EngineView, i: int) -> Seconds:
        """Absolute TTFT deadline of ``i`` (TTLT tiers converted)."""
        return ttft_deadline_at(view.requests, i, self.predicted_output_tokens)

    def waiting_key(self, view: EngineView, i: int) -> SortKey:
        """The order's key; ``hybrid``: deadline + h * remaining prefill."""
        arrival = float(view.requests.arrival_at[i])
        if self.order == "fcfs":
            return (arrival, arrival)
        if self.order == "srpf":
            return (float(view.prefill_remaining(i)), arrival)
        due = self.deadline_at(view, i)
        if self.order == "edf":
            return (due, arrival)
        return (due + self.h_s_per_token * view.prefill_remaining(i), arrival)

    def should_relegate(self, view: EngineView, i: int, now: Seconds) -> bool:
        """Eager relegation: its prefill cannot finish by its TTFT deadline."""
        if not self.relegation or not self.prefill_tps:
            return False
        finish_at = now + view.prefill_remaining(i) / self.prefill_tps
        return finish_at > self.deadline_at(view, i)

    def observe(self, prefill_tokens: int, duration_s: Seconds) -> None:
        """Update the prefill-throughput EMA from an iteration that computed prompts."""
        if prefill_tokens <= 0 or duration_s <= 0:
            return
        tps = prefill_tokens / duration_s
        old = self.prefill_tps
        self.prefill_tps = tps if old is None else old + self.ema_alpha * (tps - old)

    def min_decode_slack_s(self, view: EngineView, now: Seconds) -> Seconds:
        """Least time any decode sequence has until its next token is due (inf if none).

        On an engine that reports its decode timeline the least due time is kept
        incrementally (:class:`NextTokenDue`); otherwise every decode sequence is scanned.
        Both give the same number.
        """
        if view is not self._due_view:
            self._due_view = view
            self._due = None
            if isinstance(view, DecodeTimeline):
                self._due = NextTokenDue(view, self.deadline_at)
        if self._due is not None:
            return self._due.earliest_due_at() - now
        return self.scan_decode_slack_s(view, now)

    def scan_decode_slack_s(self, view: EngineView, now: Seconds) -> Seconds:
        """:meth:`min_decode_slack_s` by scanning every decode sequence (the reference)."""
        req = view.requests
        best = math.inf
        for i in view.decoding():
            tbt = req.tiers[int(req.tier[i])].tbt_s
            if tbt is None:
                continue
            due = next_token_due_at(
                self.deadline_at(view, i), view.first_token_at(i), view.num_produced(i), tbt
            )
            best = min(best, due - now)
        return best

    def candidates(self, view: EngineView) -> tuple[int, ...]:
        """Chunk sizes allowed now: within the engine's limit and the KV-pressure cap."""
        top = view.max_num_batched_tokens
        if view.kv_usage > self.kv_pressure:
            top = min(top, self.pressure_max_chunk)
        allowed = tuple(c for c in self.chunk_sizes if c <= top)
        return allowed or (min(self.chunk_sizes[0], view.max_num_batched_tokens),)

    def predicted_batch_s(self, view: EngineView, num_tokens: int) -> Seconds:
        """Predicted time of an iteration of ``num_tokens`` tokens with today's decodes."""
        n_dec = view.num_decoding
        pre = max(num_tokens - n_dec, 0)
        batch = Batch(
            num_prefill_seqs=1 if pre else 0,
            prefill_tokens=pre,
            prefill_attn_pairs=pre * (pre + 1) / 2.0,
            num_decode_seqs=n_dec,
            decode_ctx_tokens=view.decode_ctx_tokens,
        )
        return self.predictor.iteration_s(batch)

    def token_budget(self, view: EngineView, now: Seconds) -> int:
        """Dynamic chunk: largest allowed T with slack_factor * time(T) <= min slack."""
        options = self.candidates(view)
        slack = self.min_decode_slack_s(view, now)
        if math.isinf(slack):
            return options[-1]
        for size in reversed(options):
            if self.slack_factor * self.predicted_batch_s(view, size) <= slack:
                return size
        return options[0]
