"""Speculative decoding priced on a step-time model: what a draft costs, what it saves.

A speculative decode step drafts ``k`` tokens per sequence, then the target model verifies
``k + 1`` positions of every sequence in one forward pass: the drafted ones and the one
after them. Position ``i`` is kept when every draft before it and itself were accepted, so
with per-position acceptance rates ``p_1 … p_k`` (``p_i``: the ``i``-th draft is accepted
given the ones before it were) a step yields on average

    tokens per step = 1 + sum over i of (p_1 · p_2 · … · p_i)

tokens per sequence (the ``1``: the verify pass always yields the token after the last
accepted one). A single rate ``p`` for every position gives ``(1 - p^(k+1)) / (1 - p)``.

What a step costs, on any step-time model that splits an iteration into parts
(:class:`~sincere.perf.base.StepBreakdown`: the roofline):

* **verify**: the target's iteration over ``k + 1`` query tokens per sequence (a chain; a
  tree of drafts verifies ``verify_tokens`` of them, more than it can accept) against its
  cached context (priced as a chunk of ``k + 1`` tokens after the context: the linear work
  of ``B (k + 1)`` tokens, attention reading each sequence's KV once), plus the LM head
  over every verified position, not only the last;
* **draft**, ``k`` sequential forwards over the batch's ``B`` sequences:
  ``eagle`` and ``mtp`` run a head of ``draft_layers`` decoder layers (one for EAGLE's head
  and for DeepSeek's MTP module) priced as that share of the target's layers in a decode
  step of ``B``, and the LM head; ``draft-model`` runs a separate draft model's decode steps
  (its own step-time model); ``ngram`` looks drafts up in the prompt on the CPU, priced zero.

Engines switch speculation off above a batch size (vLLM's
``num_speculative_tokens_per_batch_size`` schedule; older releases'
``disable_by_batch_size``): ``max_batch`` does the same here. The numbers are
expectations: a real run's accepted lengths vary per request and per step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sincere.core.errors import ConfigError
from sincere.core.types import Seconds
from sincere.perf.base import Batch, StepBreakdown, StepTimeBase, StepTimeModel, SwapTime

SPEC_METHODS = ("eagle", "mtp", "draft-model", "ngram")
"""Drafting methods: a one-layer head on the target's features (EAGLE), the model's own
multi-token-prediction module (MTP), a smaller model of the same vocabulary, or n-gram
look-up in the prompt."""

MTP_DEEPSEEK_ACCEPTANCE = 0.85
"""DeepSeek-V3's MTP: "the acceptance rate of the second token prediction ranges between
85% and 90%" (DeepSeek-V3 Technical Report, arXiv 2412.19437, section 5.4.3); the lower
end. The same section reports 1.8x the tokens per second."""

_NO_PREFILL = Batch()  # an iteration without prefill chunks


@dataclass(frozen=True)
class SpeculationParams:
    """How a deployment speculates (module docstring)."""

    method: str
    num_draft_tokens: int  # k: tokens drafted per sequence per step
    acceptance: tuple[float, ...]  # p_1 … p_k; shorter: the last rate repeats
    draft_layers: float = 1.0  # eagle / mtp: the draft head's decoder layers
    max_batch: int | None = None  # speculate only up to this many decoding sequences
    verify_tokens: int | None = None  # positions verified per sequence (None: k + 1, a chain)
    source: str = ""  # where the acceptance comes from

    def __post_init__(self) -> None:
        if self.method not in SPEC_METHODS:
            raise ConfigError(
                "unknown speculative decoding method", value=self.method, allowed=SPEC_METHODS
            )
        if self.num_draft_tokens < 1:
            raise ConfigError(
                "num_draft_tokens must be >= 1", value=self.num_draft_tokens, allowed=">= 1"
            )
        if not self.acceptance or any(not 0.0 <= p <= 1.0 for p in self.acceptance):
            raise ConfigError(
                "acceptance must be one or more rates in [0, 1] (one per drafted position; "
                "the last repeats)",
                value=list(self.acceptance),
                allowed="e.g. 0.8 or 0.9,0.8,0.7",
            )
        if len(self.acceptance) > self.num_draft_tokens:
            raise ConfigError(
                f"{len(self.acceptance)} acceptance rates for {self.num_draft_tokens} drafted "
                "tokens: give at most one per drafted position",
                value=list(self.acceptance),
            )
        if not self.draft_layers > 0.0:
            raise ConfigError("draft_layers must be > 0", value=self.draft_layers, allowed="> 0")
        if self.max_batch is not None and self.max_batch < 1:
            raise ConfigError("max_batch must be >= 1 (or left out)", value=self.max_batch)
        if self.verify_tokens is not None and self.verify_tokens < self.num_draft_tokens + 1:
            raise ConfigError(
                f"verify_tokens must be at least the {self.num_draft_tokens} drafted tokens "
                "plus one (a tree verifies more)",
                value=self.verify_tokens,
                allowed=f">= {self.num_draft_tokens + 1}",
            )

    @property
    def width(self) -> int:
        """Positions the target verifies per sequence: ``k + 1``, or the tree's."""
        return self.verify_tokens or self.num_draft_tokens + 1

    def rates(self) -> list[float]:
        """``p_1 … p_k``, the last given rate repeated to ``k``."""
        given = list(self.acceptance)
        return given + [given[-1]] * (self.num_draft_tokens - len(given))

    def expected_accepted(self) -> float:
        """Drafted tokens kept per sequence per step, on average."""
        kept, reach = 0.0, 1.0
        for p in self.rates():
            reach *= p
            kept += reach
        return kept

    def tokens_per_step(self) -> float:
        """Tokens a sequence gains per speculative step: the kept drafts plus one."""
        return 1.0 + self.expected_accepted()

    def speculates(self, num_seqs: int) -> bool:
        """Whether a decode batch of ``num_seqs`` sequences speculates."""
        return self.max_batch is None or num_seqs <= self.max_batch


def speculation_params(
    method: str,
    *,
    num_draft_tokens: int | None = None,
    acceptance: Sequence[float] | None = None,
    draft_layers: float = 1.0,
    max_batch: int | None = None,
    verify_tokens: int | None = None,
) -> SpeculationParams:
    """Settings of ``method``, the documented defaults filling what is not given.

    Only MTP has a published default (:data:`MTP_DEEPSEEK_ACCEPTANCE`, one drafted token);
    every other method needs its ``acceptance``, which depends on the draft, the target
    and the traffic.
    """
    if method == "mtp" and acceptance is None:
        return SpeculationParams(
            method,
            num_draft_tokens or 1,
            (MTP_DEEPSEEK_ACCEPTANCE,),
            draft_layers,
            max_batch,
            verify_tokens,
            source="DeepSeek-V3 Technical Report, sec. 5.4.3 (second-token acceptance 85-90 %)",
        )
    if acceptance is None:
        raise ConfigError(
            f"speculative decoding with {method!r} needs an acceptance rate: it depends on the "
            "draft, the model and the traffic (only mtp has a published default)",
            value=None,
            allowed="e.g. --acceptance 0.7 or --acceptance 0.8,0.7,0.6",
        )
    return SpeculationParams(
        method,
        num_draft_tokens or len(acceptance),
        tuple(float(p) for p in acceptance),
        draft_layers,
        max_batch,
        verify_tokens,
        source="given",
    )


class SpeculativeDecode:
    """A decode batch's step with and without speculation, on a target's step model.

    ``target`` must split its iterations into parts (the roofline); ``num_layers`` is the
    target's decoder layers; ``draft`` is the draft model's step model (``draft-model``
    only).
    """

    def __init__(
        self,
        target: StepTimeModel,
        params: SpeculationParams,
        num_layers: int,
        draft: StepTimeModel | None = None,
    ) -> None:
        if not isinstance(target, StepBreakdown):
            raise ConfigError(
                f"speculative decoding is priced on a step model that splits its iterations "
                f"(the roofline); {type(target).__name__} does not",
                value=type(target).__name__,
            )
        if (params.method == "draft-model") != (draft is not None):
            raise ConfigError(
                "a draft model's step model is needed with method 'draft-model', and only then",
                value=params.method,
            )
        if num_layers < 1:
            raise ConfigError("num_layers must be >= 1", value=num_layers)
        self.target = target
        self._parts: StepBreakdown = target
        self.params = params
        self.num_layers = num_layers
        self.draft = draft

    def decode_s(self, num_seqs: int, ctx_tokens: int) -> Seconds:
        """One plain decode iteration of ``num_seqs`` sequences (``ctx_tokens`` summed)."""
        batch = Batch(num_decode_seqs=num_seqs, decode_ctx_tokens=ctx_tokens)
        return self.target.iteration_s(batch)

    def verify_s(self, num_seqs: int, ctx_tokens: int) -> Seconds:
        """The target's pass over ``k + 1`` positions of each sequence, every one sampled."""
        return self.verify_with_s(num_seqs, ctx_tokens, _NO_PREFILL)

    def verify_with_s(self, num_seqs: int, ctx_tokens: int, prefill: Batch) -> Seconds:
        """:meth:`verify_s` in one forward with ``prefill``'s chunks (a mixed iteration of
        an engine): each sequence's ``k + 1`` positions join them as one more chunk after
        its context."""
        width = self.params.width
        chunk_pairs = width * (width + 1) / 2
        batch = Batch(
            num_prefill_seqs=prefill.num_prefill_seqs + num_seqs,
            prefill_tokens=prefill.prefill_tokens + num_seqs * width,
            prefill_ctx_tokens=prefill.prefill_ctx_tokens + ctx_tokens,
            prefill_attn_pairs=prefill.prefill_attn_pairs
            + (width * ctx_tokens + num_seqs * chunk_pairs),
        )
        many = Batch(num_decode_seqs=num_seqs * width)
        one = Batch(num_decode_seqs=num_seqs)
        extra_head = self._parts.parts(many).lm_head_s - self._parts.parts(one).lm_head_s
        return self.target.iteration_s(batch) + max(0.0, extra_head)

    def draft_s(self, num_seqs: int, ctx_tokens: int) -> Seconds:
        """``k`` sequential draft forwards over the batch (module docstring)."""
        k = self.params.num_draft_tokens
        method = self.params.method
        if method == "ngram":
            return 0.0
        if self.draft is not None:
            return self.draft.decode_steps_s(num_seqs, ctx_tokens, k)
        parts = self._parts.parts(Batch(num_decode_seqs=num_seqs, decode_ctx_tokens=ctx_tokens))
        layers = parts.total_s - parts.lm_head_s - parts.overhead_s
        head = self.params.draft_layers * layers / self.num_layers + parts.lm_head_s
        return k * head

    def draft_prefill_s(self, prefill: Batch) -> Seconds:
        """The drafter's own pass over an iteration's prefill chunks (``prefill``: a batch of
        chunks only), which builds the KV it drafts from: ``draft_layers`` of the target's
        layers over the chunks for an EAGLE or MTP head (its share of the target's layer
        work, no LM head: it samples only when drafting), the draft model's iteration over
        them, nothing for n-gram."""
        if self.params.method == "ngram" or prefill.num_prefill_seqs == 0:
            return 0.0
        if self.draft is not None:
            return self.draft.iteration_s(prefill)
        parts = self._parts.parts(prefill)
        layers = parts.total_s - parts.lm_head_s - parts.overhead_s
        return self.params.draft_layers * layers / self.num_layers

    def step_s(self, num_seqs: int, ctx_tokens: int) -> Seconds:
        """One step of the batch: draft and verify, or a plain decode above ``max_batch``."""
        if not self.params.speculates(num_seqs):
            return self.decode_s(num_seqs, ctx_tokens)
        return self.draft_s(num_seqs, ctx_tokens) + self.verify_s(num_seqs, ctx_tokens)

    def tokens_per_step(self, num_seqs: int) -> float:
        """Tokens each sequence gains per step at this batch size."""
        return self.params.tokens_per_step() if self.params.speculates(num_seqs) else 1.0

    def per_token_s(self, num_seqs: int, ctx_tokens: int) -> Seconds:
        """Time per output token of a sequence (the TPOT the batch runs at)."""
        return self.step_s(num_seqs, ctx_tokens) / self.tokens_per_step(num_seqs)

    def speedup(self, num_seqs: int, ctx_tokens: int) -> float:
        """Plain decode's time per token over speculation's: > 1 where speculation pays."""
        return self.decode_s(num_seqs, ctx_tokens) / self.per_token_s(num_seqs, ctx_tokens)

    def break_even_batch(self, context: int, largest: int = 1024) -> int | None:
        """The smallest batch size up to ``largest`` (each sequence at ``context`` tokens)
        at which speculation no longer pays; None when it pays throughout."""
        for b in _batch_grid(largest):
            if self.speedup(b, b * context) <= 1.0:
                return b
        return None


class SpeculativeStepModel:
    """A :class:`~sincere.perf.base.StepTimeModel` whose decodes speculate: what an engine
    that speculates times its iterations with.

    An iteration with ``n`` decode sequences (``n`` within ``max_batch``) costs the draft
    of ``n`` sequences plus the verify pass of their ``k + 1`` positions; with prefill
    chunks beside them the verify positions join the chunks in the same forward
    (:meth:`SpeculativeDecode.verify_with_s`). Prefill chunks also cost the drafter's own
    pass over them (:meth:`SpeculativeDecode.draft_prefill_s`: a head or draft model keeps
    KV of every prompt token to draft from), whether the decodes speculate or not. A
    sequence's first draft is priced in its first decode step, not in the iteration that
    ends its prefill (where vLLM proposes it): the same work, one iteration later. Anything
    else is ``target``'s iteration.
    ``decode_steps_s`` sums single iterations, the context growing by ``num_seqs`` a step
    (the protocol's contract; an engine that speculates times one iteration at a time, its
    sequences' gains being drawn per step).
    """

    def __init__(self, spec: SpeculativeDecode) -> None:
        self.spec = spec
        self.target = spec.target

    def iteration_s(self, batch: Batch) -> Seconds:
        """Duration of one iteration computing ``batch``, its decodes speculating."""
        return self.iteration_s_fast(
            batch.num_prefill_seqs, batch.prefill_tokens, batch.prefill_ctx_tokens,
            batch.prefill_attn_pairs, batch.num_decode_seqs, batch.decode_ctx_tokens,
        )  # fmt: skip

    def iteration_s_fast(
        self,
        num_prefill_seqs: int,
        prefill_tokens: int,
        prefill_ctx_tokens: int,
        prefill_attn_pairs: float,
        num_decode_seqs: int,
        decode_ctx_tokens: int,
    ) -> Seconds:
        """:meth:`iteration_s` of the batch with these fields."""
        spec = self.spec
        speculating = num_decode_seqs > 0 and spec.params.speculates(num_decode_seqs)
        if num_prefill_seqs == 0 and speculating:
            return spec.step_s(num_decode_seqs, decode_ctx_tokens)
        prefill = Batch(num_prefill_seqs, prefill_tokens, prefill_ctx_tokens, prefill_attn_pairs)
        drafter = spec.draft_prefill_s(prefill)  # its KV of the chunks, speculating or not
        if not speculating:
            return drafter + self.target.iteration_s_fast(
                num_prefill_seqs, prefill_tokens, prefill_ctx_tokens, prefill_attn_pairs,
                num_decode_seqs, decode_ctx_tokens,
            )  # fmt: skip
        draft = spec.draft_s(num_decode_seqs, decode_ctx_tokens)
        return drafter + draft + spec.verify_with_s(num_decode_seqs, decode_ctx_tokens, prefill)

    def decode_steps_s(self, num_seqs: int, ctx_tokens: int, num_steps: int) -> Seconds:
        """Sum of ``num_steps`` decode iterations, the context growing by ``num_seqs`` each."""
        total = 0.0
        for j in range(num_steps):
            total += self.iteration_s_fast(0, 0, 0, 0.0, num_seqs, ctx_tokens + j * num_seqs)
        return total

    def request_batch_s(self, prompt_tokens: Sequence[int], output_tokens: int) -> Seconds:
        """``target``'s request-level batch (request-level engines do not speculate)."""
        return self.target.request_batch_s(prompt_tokens, output_tokens)

    def load_time(self) -> SwapTime:
        """``target``'s model load."""
        return self.target.load_time()

    def unload_time(self) -> SwapTime:
        """``target``'s model unload."""
        return self.target.unload_time()


class PerTokenDecode(StepTimeBase):
    """A step model whose decode-only iterations are the time per output token of a
    speculating deployment (:meth:`SpeculativeDecode.per_token_s`: what the planner and the
    gateway's routers read); other iterations speculate as an engine's."""

    def __init__(self, spec: SpeculativeDecode) -> None:
        super().__init__(spec.target.load_time(), spec.target.unload_time())
        self.spec = spec
        self._step = SpeculativeStepModel(spec)

    def iteration_s(self, batch: Batch) -> Seconds:
        """A decode-only batch: its time per output token; any other: its iteration."""
        n = batch.num_decode_seqs
        if n > 0 and batch.num_prefill_seqs == 0:
            return self.spec.per_token_s(n, batch.decode_ctx_tokens)
        return self._step.iteration_s(batch)


def _batch_grid(largest: int) -> list[int]:
    """1, 2, 3, 4, 6, 8, 12, 16, … up to ``largest``: powers of two and their midpoints."""
    sizes = {1}
    p = 2
    while p <= largest:
        sizes.add(p)
        sizes.add(p + p // 2)
        p *= 2
    return sorted(s for s in sizes if s <= largest)
