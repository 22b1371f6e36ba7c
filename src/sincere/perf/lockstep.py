"""One iteration of data-parallel attention ranks that step together.

A mixture-of-experts model served with data-parallel attention and expert parallelism
(vLLM's ``--data-parallel-size D --enable-expert-parallel``, SGLang's and TensorRT-LLM's
attention DP) runs ``D`` ranks, each with its own scheduler, batch and KV cache, whose
GPUs form one MoE group: at every MoE layer the ranks exchange their tokens, so every
rank waits for the slowest at every layer and the ranks' iterations start and end
together. A rank with nothing to do runs a dummy batch to take part. What one such
iteration costs, given the ranks' batches (:class:`LockstepTiming`):

* **padded** (every rank's batch runs under a CUDA graph): the ranks agree on one token
  count, the largest captured size any of them needs, and each runs its batch padded to
  it (vLLM's DP padding: ``coordinate_batch_across_dp`` pads every rank to the maximum
  when the ranks' synchronised graph mode is not ``NONE``). Every rank's linear work,
  router and LM head run at that count, and the experts see ``D`` times it;
* **unpadded** (any rank's batch is too large for a graph, e.g. a prefill chunk): each
  rank runs its own tokens and the experts see the sum over the ranks.

Each rank's time is then its own dense work (linear, attention, TP all-reduces, LM head)
plus the group's expert layers (routed experts and the exchange), with its CPU part
overlapped or in series as its execution model says; the iteration lasts as long as the
slowest rank's. The step model's MoE parts already price the experts of a group of ``D``
ranks from one rank's token count (``Deployment.attention_dp``: the experts see ``D ×``
this rank's tokens), so the group's expert time at ``S`` tokens in all is read at
``⌈S / D⌉`` tokens a rank.

Needs a step model that splits an iteration into parts (the roofline:
:class:`~sincere.perf.base.StepBreakdown`, with its CPU part apart), optionally run by an
execution model and time-scaled.

**Speculating ranks** (a :class:`~sincere.perf.speculation.SpeculativeStepModel`, as
TensorRT-LLM and SGLang run DeepSeek's MTP with attention DP): a rank's iteration is its
own speculative step -- the drafts and the verify pass of its decodes, beside its prefill
chunks -- priced by the rank's step model as one rank of the group under even load (its
experts as if every rank carried its batch), and the group's iteration lasts as long as
the slowest rank's. The padding to one graph size and the experts on the ranks' real sum
are not applied to them: a speculative step is several forward passes, which the parts of
one iteration do not describe.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from sincere.core.errors import ConfigError
from sincere.core.types import Seconds
from sincere.perf.base import Batch, StepBreakdown, StepParts, StepTimeModel
from sincere.perf.execution import ExecutedStepModel, SeparableCpu
from sincere.perf.speculation import SpeculativeStepModel


class LockstepTiming:
    """Iteration times of ``ranks`` attention ranks stepping together (module docstring).

    ``step_model`` is one rank's (its deployment's ``attention_dp`` the group's ranks);
    ``factor`` multiplies every answer (a time-compressed deployment's, whose step model
    is handed in unscaled)."""

    def __init__(self, step_model: StepTimeModel, ranks: int, factor: float = 1.0) -> None:
        if ranks < 1:
            raise ConfigError("a lockstep group needs at least one rank", value=ranks)
        self.ranks = ranks
        self.factor = factor
        # speculating ranks: each rank's own speculative step (module docstring)
        self.speculative = step_model if isinstance(step_model, SpeculativeStepModel) else None
        if self.speculative is not None:
            step_model = self.speculative.target
        self.executed = step_model if isinstance(step_model, ExecutedStepModel) else None
        base = self.executed.inner if self.executed is not None else step_model
        if not isinstance(base, StepBreakdown) or not isinstance(base, SeparableCpu):
            raise ConfigError(
                "ranks stepping together need a step model that splits an iteration into "
                f"its parts with the CPU apart (the roofline); {type(base).__name__} does "
                "not",
                value=type(base).__name__,
                allowed="step_model kind: roofline",
            )
        self._parts = base.parts
        self._cpu = base.cpu_step_s
        self._flat: dict[int, tuple[float, float]] = {}  # tokens -> (dense, experts) s

    def iteration_s(self, batches: Sequence[Batch]) -> Seconds:
        """The iteration of the ranks with these batches (an empty batch: an idle rank)."""
        busy = [b for b in batches if b.num_tokens > 0]
        if not busy:
            return 0.0
        if self.speculative is not None:
            return max(map(self.speculative.iteration_s, busy)) * self.factor
        executed = self.executed
        padded = executed is not None and all(
            executed.graphed(b.num_tokens, b.num_prefill_seqs == 0) for b in busy
        )
        if padded:
            assert executed is not None
            size = max(executed.padded(b.num_tokens, b.num_prefill_seqs == 0) for b in busy)
            padded_dense, experts = self._flat_parts(size)
        else:
            total = sum(b.num_tokens for b in busy)
            experts = self._flat_parts(math.ceil(total / self.ranks))[1]
        longest = 0.0
        for b in busy:
            parts: StepParts = self._parts(b)
            own = parts.total_s - parts.overhead_s - parts.experts_s - parts.all_to_all_s
            if padded:
                own += padded_dense - self._flat_parts(b.num_tokens)[0]
            gpu = own + experts
            cpu = self._cpu(b.num_seqs)
            took = gpu + cpu if executed is None else executed.overlapped(gpu, cpu)
            longest = max(longest, took)
        return longest * self.factor

    def _flat_parts(self, tokens: int) -> tuple[float, float]:
        """(dense work, expert layers) of ``tokens`` one-token sequences with no context:
        what a rank's padded slots cost, and the group's experts at ``tokens`` a rank."""
        known = self._flat.get(tokens)
        if known is not None:
            return known
        parts: StepParts = self._parts(Batch(num_decode_seqs=tokens, decode_ctx_tokens=0))
        experts = parts.experts_s + parts.all_to_all_s
        dense = parts.total_s - parts.overhead_s - parts.attention_s - experts
        self._flat[tokens] = (dense, experts)
        return dense, experts
