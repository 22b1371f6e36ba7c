"""Speculative decoding in a continuous-batching engine: each step's accepted drafts.

Model. An engine configured with ``engine.speculation`` drafts ``k`` tokens for every
decoding sequence in each iteration and verifies ``k + 1`` positions of each in the
target's forward (:mod:`sincere.perf.speculation` prices the draft and the verify pass;
:class:`~sincere.perf.speculation.SpeculativeStepModel` is the engine's timing then).
After the iteration, every sequence that was decoding gains the iteration's one token
plus its accepted drafts: drafted position ``i`` is kept when it and every draft before
it were accepted, each with its rate ``p_i`` (one uniform draw per drafted position from
the engine's seeded generator), capped by the tokens the request has left. The KV of
rejected positions is rolled back: a sequence's cache grows by the tokens it kept only,
but the step must have room for all ``k + 1`` verified positions of every sequence
(vLLM's lookahead slots; :attr:`~sincere.engine.state.BatchState.lookahead`).

Above ``max_batch`` decoding sequences an iteration does not speculate: no draft, a
plain decode step, one token each (vLLM's ``num_speculative_tokens_per_batch_size``
schedule with 0 tokens above it; older releases' ``disable_by_batch_size``).

Counters, vLLM's: drafts (sequences' speculative steps), drafted tokens, accepted tokens
and accepted tokens per drafted position; accepted counts the verify pass's decision, before
the cap at a request's last token.

Memory. The step's KV check (:mod:`.runs`) preempts until every sequence has room for its
``k + 1`` positions, except a lone sequence, which needs room for one; a sequence keeps
only the accepted drafts whose blocks are free (none are held beyond the pool).

Not modelled: tree drafts' acceptance (a tree verifies ``verify_tokens`` positions and is
priced so, but acceptance runs along one chain), the draft model's own KV cache and
weights (not taken from the KV pool), drafting for a sequence whose prefill ends in the
iteration, the draft's CPU and scheduling work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from sincere.core.errors import ConfigError
from sincere.engine.base import SpecDecodeStats
from sincere.engine.kv import blocks_for
from sincere.perf.base import Deployment, StepTimeModel
from sincere.perf.speculation import (
    SPEC_METHODS,
    SpeculationParams,
    SpeculativeDecode,
    SpeculativeStepModel,
    speculation_params,
)

if TYPE_CHECKING:
    from sincere.engine.state import BatchState


class SpeculationConfig(BaseModel):
    """The ``engine.speculation`` block: how a continuous engine speculates."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    method: str  # eagle, mtp, draft-model or ngram
    num_draft_tokens: int | None = Field(None, ge=1)  # k; None: one per rate (mtp: 1)
    # p_1 ... p_k: one rate for every position, or one per position (the last repeats);
    # None: the method's published default (mtp only)
    acceptance: float | list[float] | None = None
    draft_layers: float = Field(1.0, gt=0)  # eagle / mtp: the draft head's decoder layers
    max_batch: int | None = Field(None, ge=1)  # speculate only up to this many decodes
    verify_tokens: int | None = Field(None, ge=2)  # a tree's verified positions (None: k + 1)
    draft_model: str | None = None  # catalog model drafting (method draft-model only)
    # the draws' seed where the driver gives the engine no random stream (the emulator);
    # the simulator draws from its run seed's stream of each instance
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _valid(self) -> SpeculationConfig:
        if self.method not in SPEC_METHODS:
            raise ConfigError(
                "unknown speculative decoding method", value=self.method, allowed=SPEC_METHODS
            )
        if (self.method == "draft-model") != (self.draft_model is not None):
            raise ConfigError(
                "draft_model names the drafting model with method draft-model, and only then",
                value=self.draft_model,
                allowed="a catalog model with method: draft-model",
            )
        if self.acceptance is None and self.method != "mtp":
            raise ConfigError(
                f"speculation with method {self.method!r} needs its acceptance: it depends on "
                "the draft, the model and the traffic (only mtp has a published default)",
                allowed="acceptance: 0.7 (every position) or [0.8, 0.7, 0.6] (per position)",
            )
        self.params()  # a bad rate, count or width: a ConfigError now
        return self

    def params(self) -> SpeculationParams:
        """The settings as :mod:`sincere.perf.speculation` prices them."""
        rates = self.acceptance
        return speculation_params(
            self.method,
            num_draft_tokens=self.num_draft_tokens,
            acceptance=[rates] if isinstance(rates, float) else rates,
            draft_layers=self.draft_layers,
            max_batch=self.max_batch,
            verify_tokens=self.verify_tokens,
        )


class Speculator:
    """Draws and applies each speculative iteration's accepted drafts; keeps the counters.

    ``step_model`` is the engine's timing with speculation (the speculating step model),
    ``rng`` the engine's generator (drawn from only when an iteration speculates).
    """

    def __init__(
        self, params: SpeculationParams, step_model: SpeculativeStepModel, rng: np.random.Generator
    ) -> None:
        self.params = params
        self.step_model = step_model
        self._rng = rng
        self._rates = np.array(params.rates(), dtype=np.float64)
        self.num_drafts = 0
        self.num_draft_tokens = 0
        self.num_accepted_tokens = 0
        self.accepted_per_pos = [0] * params.num_draft_tokens

    @property
    def lookahead(self) -> int:
        """Positions per sequence a step verifies, so writes KV for: ``k + 1`` (a tree's)."""
        return self.params.width

    def verified(self, state: BatchState, num_decode: int) -> list[int]:
        """An iteration of ``num_decode`` decoding sequences ended (``state.step`` counts
        it): each sequence still decoding gains its accepted drafts. Returns each sequence
        once per token gained beyond the iteration's one, in decode order."""
        if not self.params.speculates(num_decode) or not state.offset:
            return []
        seqs = list(state.offset)
        k = self.params.num_draft_tokens
        kept = np.cumprod(self._rng.random((len(seqs), k)) < self._rates, axis=1)
        accepted = kept.sum(axis=1).tolist()
        self._count(kept, len(seqs))
        step, held, offset, block = state.step, state.held, state.offset, state.block
        room = state.num_blocks - state.pre_blocks - state.dec.total(step)  # free blocks
        extra_tokens: list[int] = []
        for i, a in zip(seqs, accepted, strict=True):
            cached = offset[i] + step
            slack = -cached % block  # tokens that fit in its last block
            extra = min(int(a), held[i].finish_step - step, slack + room * block)
            if extra > 0:
                room -= blocks_for(cached + extra, block) - blocks_for(cached, block)
                state.gain(i, extra)
                extra_tokens.extend([i] * extra)
        return extra_tokens

    def _count(self, kept: np.ndarray, num_seqs: int) -> None:
        """Add one iteration's drafts and acceptances to the counters."""
        per_pos = kept.sum(axis=0).tolist()
        self.num_drafts += num_seqs
        self.num_draft_tokens += num_seqs * self.params.num_draft_tokens
        self.num_accepted_tokens += int(sum(per_pos))
        self.accepted_per_pos = [
            a + int(b) for a, b in zip(self.accepted_per_pos, per_pos, strict=True)
        ]

    def stats(self) -> SpecDecodeStats:
        """The counters so far."""
        return SpecDecodeStats(
            num_drafts=self.num_drafts,
            num_draft_tokens=self.num_draft_tokens,
            num_accepted_tokens=self.num_accepted_tokens,
            accepted_per_pos=tuple(self.accepted_per_pos),
        )


def build_speculator(
    config: SpeculationConfig,
    target: StepTimeModel,
    deployment: Deployment,
    draft: StepTimeModel | None,
    rng: np.random.Generator | None,
) -> Speculator:
    """The speculator of an engine timed by ``target`` on ``deployment``; ``draft``: the
    draft model's step model (method ``draft-model``); ``rng``: the driver's stream (None:
    one seeded with ``config.seed``). A step model that cannot split its iterations into
    parts (the roofline can; CC mode and measured tables cannot) is a ConfigError."""
    params = config.params()
    spec = SpeculativeDecode(target, params, deployment.model.num_layers, draft)
    gen = rng if rng is not None else np.random.default_rng(config.seed)
    return Speculator(params, SpeculativeStepModel(spec), gen)
