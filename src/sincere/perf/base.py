"""The step-time protocol: how long one engine iteration takes, and model swaps.

Every part of sincere that needs time (the simulator's engines, the emulator, the
planner, the deployment chooser) asks a :class:`StepTimeModel`. Implementations
differ in where their numbers come from (a roofline over catalog figures, fitted
linear forms, measured profiles) but answer the same questions:

* ``iteration_s(batch)`` -- one continuous-batching iteration, described by the
  aggregate :class:`Batch` (sums over its sequences, so the call is O(1));
* ``iteration_s_fast(...)`` -- the same with the six :class:`Batch` fields as
  arguments, no object built (the engines' and routers' hot path);
  :class:`StepTimeBase` provides it by building the batch, and models with a scalar
  form override it;
* ``decode_steps_s(n, ctx, k)`` -- ``k`` consecutive decode-only iterations of the
  same ``n`` sequences, the context growing by ``n`` tokens per step; the simulator
  uses it to jump over runs of identical iterations in closed form;
* ``request_batch_s(prompts, out)`` -- a request-level batch run to completion
  (SINCERE's setting, a HF-pipeline call);
* ``load_time()`` / ``unload_time()`` -- swapping the model in and out.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from sincere.catalog.specs import PRECISION_BYTES, Accelerator, ModelArch
from sincere.core.errors import ConfigError
from sincere.core.types import Seconds


@dataclass(frozen=True, slots=True)
class Batch:
    """What one iteration computes, summed over its sequences.

    A prefill chunk of ``c`` tokens for a sequence with ``p`` tokens already cached
    adds ``c`` to ``prefill_tokens``, ``p`` to ``prefill_ctx_tokens`` and
    ``c*p + c*(c+1)/2`` to ``prefill_attn_pairs`` (causal query-key pairs). A decode
    sequence with ``L`` tokens of context adds one token and ``L`` to
    ``decode_ctx_tokens``.
    """

    num_prefill_seqs: int = 0  # sequences with a prefill chunk in this iteration
    prefill_tokens: int = 0  # prompt tokens computed in this iteration
    prefill_ctx_tokens: int = 0  # tokens already cached before the chunks, summed
    prefill_attn_pairs: float = 0.0  # causal attention pairs of the chunks, summed
    num_decode_seqs: int = 0  # sequences producing one output token
    decode_ctx_tokens: int = 0  # context lengths of the decode sequences, summed

    @classmethod
    def of(cls, prefill: Iterable[tuple[int, int]] = (), decode: Iterable[int] = ()) -> Batch:
        """Build from ``(chunk_tokens, cached_tokens)`` pairs and decode context lengths."""
        n_pre = tok = ctx = 0
        pairs = 0.0
        for chunk, cached in prefill:
            n_pre += 1
            tok += chunk
            ctx += cached
            pairs += chunk * cached + chunk * (chunk + 1) / 2
        dec = list(decode)
        return cls(n_pre, tok, ctx, pairs, len(dec), sum(dec))

    @property
    def num_tokens(self) -> int:
        """Tokens computed in this iteration (prefill plus one per decode sequence)."""
        return self.prefill_tokens + self.num_decode_seqs

    @property
    def num_seqs(self) -> int:
        """Sequences in the batch."""
        return self.num_prefill_seqs + self.num_decode_seqs


@dataclass(frozen=True, slots=True)
class StepParts:
    """One iteration's time split by what runs, seconds; the parts sum to the whole.

    The layers' kernels are ``linear_s`` (GEMMs and elementwise kernels), ``attention_s``
    and ``communication_s`` (all-reduces, pipeline sends); ``lm_head_s`` is the output
    projection of the sampled positions (kernel profiles leave it out, so it is kept
    apart); ``overhead_s`` is the CPU's share (scheduling, inputs, sampling).
    """

    linear_s: float = 0.0  # the layers' GEMMs and elementwise kernels
    attention_s: float = 0.0  # the layers' attention kernels
    communication_s: float = 0.0  # tensor-parallel all-reduces and pipeline sends
    lm_head_s: float = 0.0  # the LM head over the sampled positions
    overhead_s: float = 0.0  # CPU work per iteration
    router_s: float = 0.0  # MoE layers' router GEMMs
    experts_s: float = 0.0  # MoE layers' routed experts (grouped GEMMs and permutation)
    all_to_all_s: float = 0.0  # expert-parallel dispatch and combine

    @property
    def has_experts(self) -> bool:
        """The iteration ran mixture-of-experts layers (their parts are apart)."""
        return self.router_s > 0.0 or self.experts_s > 0.0 or self.all_to_all_s > 0.0

    @property
    def total_s(self) -> float:
        """The whole iteration."""
        total = (
            self.linear_s + self.attention_s + self.communication_s + self.lm_head_s
        ) + self.overhead_s
        if self.has_experts:
            total += self.router_s + self.experts_s + self.all_to_all_s
        return total

    @property
    def kernels_s(self) -> float:
        """The layers' kernels only (what operator profiles compose): linear, attention, comm."""
        kernels = self.linear_s + self.attention_s + self.communication_s
        if self.has_experts:
            kernels += self.router_s + self.experts_s + self.all_to_all_s
        return kernels

    def as_dict(self) -> dict[str, float]:
        """``{"linear": s, "attention": s, "communication": s, "lm_head": s, "overhead": s}``,
        plus ``router``, ``experts`` and ``all_to_all`` for a model with experts."""
        parts = {
            "linear": self.linear_s,
            "attention": self.attention_s,
            "communication": self.communication_s,
            "lm_head": self.lm_head_s,
            "overhead": self.overhead_s,
        }
        if self.has_experts:
            parts["router"] = self.router_s
            parts["experts"] = self.experts_s
            parts["all_to_all"] = self.all_to_all_s
        return parts


@runtime_checkable
class StepBreakdown(Protocol):
    """A step-time model that can split an iteration into :class:`StepParts`."""

    def parts(self, batch: Batch) -> StepParts:
        """The parts of one iteration computing ``batch``."""
        ...


@dataclass(frozen=True, slots=True)
class SwapTime:
    """Mean and standard deviation of a model load or unload, seconds."""

    mean_s: Seconds
    std_s: Seconds = 0.0


STATE_PRECISIONS = ("fp32", "bf16", "fp16")
"""Precisions a linear-attention layer's recurrent state may be kept in (``Deployment.
state_precision``; vLLM's ``--mamba-ssm-cache-dtype``, SGLang's ``--mamba-ssm-dtype``)."""


@dataclass(frozen=True, slots=True)
class Deployment:
    """A model served on accelerators in a given configuration.

    With ``attention_dp = D`` (an MoE model) the deployment is one of ``D`` data-parallel
    attention ranks, each on its own ``tp × pp`` GPUs (``num_gpus``), whose ``D × tp`` GPUs
    form one MoE group the routed experts spread over: by expert parallelism (``ep > 1``
    dividing it, the tokens exchanged by all-to-all) or, with ``ep = 1``, every expert
    split by TP over the whole group (the tokens gathered and the outputs reduced by
    all-reduces over it: SGLang's DP attention without EP). The way SGLang, vLLM and
    TensorRT-LLM run DeepSeek or GPT-OSS with DP attention."""

    model: ModelArch
    accelerator: Accelerator
    precision: str = "bf16"  # weight precision
    kv_precision: str = "fp16"  # KV-cache precision
    tp: int = 1  # tensor-parallel degree
    pp: int = 1  # pipeline-parallel degree
    ep: int = 1  # expert-parallel degree: the MoE group's GPUs the routed experts spread over
    attention_dp: int = 1  # data-parallel attention ranks sharing one MoE group (this is one)
    state_precision: str = "fp32"  # linear-attention layers' recurrent state (STATE_PRECISIONS)

    def __post_init__(self) -> None:
        if self.tp < 1 or self.pp < 1:
            raise ConfigError("tp and pp must be >= 1", value=(self.tp, self.pp))
        if self.state_precision not in STATE_PRECISIONS:
            raise ConfigError(
                "state_precision: the recurrent state of linear-attention layers is kept in "
                "fp32 (SGLang's default, the measured kernels') or 16 bits (--mamba-ssm-dtype "
                "bfloat16)",
                value=self.state_precision,
                allowed=list(STATE_PRECISIONS),
            )
        if self.attention_dp != 1:
            self._check_attention_dp()
        if self.ep != 1:
            self._check_ep()

    @property
    def weight_bytes_per_gpu(self) -> float:
        """Weight bytes one GPU holds: all of them over its TP x PP GPUs; under attention DP
        the routed experts spread over the whole MoE group (``attention_dp`` x that)."""
        total = self.model.weight_bytes(self.precision)
        if self.attention_dp == 1:
            return total / self.num_gpus
        routed = self.model.param_groups()[0] * PRECISION_BYTES[self.precision]
        return (total - routed) / self.num_gpus + routed / (self.num_gpus * self.attention_dp)

    @property
    def moe_group_gpus(self) -> int:
        """GPUs the expert layers run over: the TP group of each of the attention ranks."""
        return self.tp * self.attention_dp

    def _check_attention_dp(self) -> None:
        """Attention DP shares one MoE group between the ranks' TP groups (an MoE model)."""
        if self.attention_dp < 1:
            raise ConfigError("attention_dp must be >= 1", value=self.attention_dp)
        if not self.model.is_moe:
            raise ConfigError(
                f"attention_dp: {self.model.name} has no experts to share (data-parallel "
                "replicas of a dense model are separate instances)",
                value=self.attention_dp,
                allowed=["1"],
            )

    def _check_ep(self) -> None:
        """EP splits an MoE model's experts over GPUs of the MoE group (TP x attention DP)."""
        model, group = self.model, self.moe_group_gpus
        if not model.is_moe:
            raise ConfigError(
                f"ep: {model.name} has no experts to spread", value=self.ep, allowed=["1"]
            )
        if self.ep < 1 or group % self.ep:
            allowed = [str(d) for d in range(1, group + 1) if group % d == 0]
            raise ConfigError(
                f"ep must divide tp {self.tp} x attention_dp {self.attention_dp} = {group} "
                "(experts spread over the MoE group's GPUs)",
                value=self.ep,
                allowed=allowed,
            )
        if model.num_experts % self.ep:
            allowed = [
                str(d) for d in range(1, model.num_experts + 1) if model.num_experts % d == 0
            ]
            raise ConfigError(
                f"ep {self.ep} does not divide num_experts {model.num_experts} of {model.name}",
                value=self.ep,
                allowed=allowed,
            )

    @property
    def num_gpus(self) -> int:
        """Accelerators one replica occupies."""
        return self.tp * self.pp


@runtime_checkable
class StepTimeModel(Protocol):
    """How long engine work takes for one deployment. See the module docstring."""

    def iteration_s(self, batch: Batch) -> Seconds:
        """Duration of one iteration computing ``batch``."""
        ...

    def iteration_s_fast(
        self,
        num_prefill_seqs: int,
        prefill_tokens: int,
        prefill_ctx_tokens: int,
        prefill_attn_pairs: float,
        num_decode_seqs: int,
        decode_ctx_tokens: int,
    ) -> Seconds:
        """:meth:`iteration_s` of the :class:`Batch` with these fields (the hot path)."""
        ...

    def decode_steps_s(self, num_seqs: int, ctx_tokens: int, num_steps: int) -> Seconds:
        """Total duration of ``num_steps`` decode iterations of ``num_seqs`` sequences.

        ``ctx_tokens`` is the summed context at the first step; it grows by
        ``num_seqs`` per step.
        """
        ...

    def request_batch_s(self, prompt_tokens: Sequence[int], output_tokens: int) -> Seconds:
        """Duration of a request-level batch: all prompts, then ``output_tokens`` steps."""
        ...

    def load_time(self) -> SwapTime:
        """Time to load the model's weights onto the device."""
        ...

    def unload_time(self) -> SwapTime:
        """Time to unload the model from the device."""
        ...


class StepTimeBase(ABC):
    """Base class giving every model the derived answers from ``iteration_s``.

    ``decode_steps_s`` is exact when the iteration time is affine in the decode
    context (true of every linear model here; the roofline's max() of two affine
    terms is handled there). Override it for anything else.
    """

    def __init__(self, load: SwapTime | None = None, unload: SwapTime | None = None) -> None:
        self._load = load or SwapTime(0.0)
        self._unload = unload or SwapTime(0.0)

    @abstractmethod
    def iteration_s(self, batch: Batch) -> Seconds:
        """Duration of one iteration computing ``batch``."""

    def iteration_s_fast(
        self,
        num_prefill_seqs: int,
        prefill_tokens: int,
        prefill_ctx_tokens: int,
        prefill_attn_pairs: float,
        num_decode_seqs: int,
        decode_ctx_tokens: int,
    ) -> Seconds:
        """:meth:`iteration_s` of the :class:`Batch` with these fields (the engines' hot path).

        Models with a cheaper scalar form override it; this default builds the batch.
        """
        batch = Batch(
            num_prefill_seqs,
            prefill_tokens,
            prefill_ctx_tokens,
            prefill_attn_pairs,
            num_decode_seqs,
            decode_ctx_tokens,
        )
        return self.iteration_s(batch)

    def decode_step_s(self, num_seqs: int, ctx_tokens: int) -> Seconds:
        """One decode-only iteration."""
        return self.iteration_s(Batch(num_decode_seqs=num_seqs, decode_ctx_tokens=ctx_tokens))

    def decode_steps_s(self, num_seqs: int, ctx_tokens: int, num_steps: int) -> Seconds:
        """Sum of ``num_steps`` decode iterations, context growing by ``num_seqs`` each."""
        if num_steps <= 0:
            return 0.0
        first = self.decode_step_s(num_seqs, ctx_tokens)
        if num_steps == 1:
            return first
        slope = self.decode_step_s(num_seqs, ctx_tokens + num_seqs) - first
        return num_steps * first + slope * num_steps * (num_steps - 1) / 2.0

    def request_batch_s(self, prompt_tokens: Sequence[int], output_tokens: int) -> Seconds:
        """Prefill every prompt in one iteration, then decode all until ``output_tokens``."""
        if not prompt_tokens:
            return 0.0
        prefill = self.iteration_s(Batch.of(prefill=[(p, 0) for p in prompt_tokens]))
        ctx = sum(prompt_tokens) + len(prompt_tokens)
        return prefill + self.decode_steps_s(len(prompt_tokens), ctx, output_tokens - 1)

    def load_time(self) -> SwapTime:
        """Time to load the model's weights onto the device."""
        return self._load

    def unload_time(self) -> SwapTime:
        """Time to unload the model."""
        return self._unload
