"""Device-memory plan of a deployment: weights, activations, KV cache.

Follows vLLM's accounting (``gpu_memory_utilization`` of the total memory each GPU reports,
:attr:`~sincere.catalog.specs.Accelerator.device_memory_bytes`, is the budget):
the budget minus the weights, the peak activation of a forward pass over
``max_num_batched_tokens`` tokens and a fixed runtime overhead (CUDA context, NCCL
buffers, CUDA graphs) is the KV cache, cut into blocks of ``block_size`` tokens
(PagedAttention, Kwon et al., SOSP 2023).

Per GPU: weights are ``params * bytes(precision) / (tp * pp)`` (embeddings are
assumed split too); an MoE model holds all its experts (each GPU its ``1/ep`` of them,
each split over ``tp/ep`` GPUs: the same bytes per GPU; under attention DP the routed
experts spread over the ``attention_dp · tp`` GPUs of the MoE group), counted by
:meth:`~sincere.catalog.specs.ModelArch.weight_bytes` (MXFP4 on the experts only,
embeddings in bf16 under fp8 / MXFP4). One token's KV is ``2 * layers * kv_heads *
head_dim * bytes(kv_precision)`` split over PP stages and over TP ranks while ``tp <=
kv_heads`` (replicated beyond); MLA caches ``kv_lora_rank + qk_rope_head_dim``
elements per layer, kept whole on every TP rank; sliding-window layers count no
per-token KV but reserve ``window`` tokens for each of ``max_num_seqs`` sequences
(vLLM's hybrid allocator frees a window layer's blocks behind the window), at most half
the room left for KV (vLLM's pool is shared and reserves nothing: a ``max_num_seqs`` of
full windows above that is more than its pool would ever hold at once); linear-attention
(Gated DeltaNet) layers likewise count no per-token KV and reserve their fixed recurrent
state (:meth:`~sincere.catalog.specs.ModelArch.linear_state_bytes_per_seq`, value heads
split over TP) for each of ``max_num_seqs`` sequences, under the same cap. The
activation peak is an estimate, not a measurement: per token
``(4 * hidden + 3 * intermediate / tp) * activation_bytes``
(residual, norm, attention output, MLP gate / up / activation) plus fp32 logits of
``max_num_seqs`` sequences. A deployment *fits* when weights, activations and
overhead leave room for at least ``min_kv_tokens`` of KV cache (default one
block; vLLM itself asks for one sequence of ``max_model_len``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sincere.catalog.specs import PRECISION_BYTES
from sincere.core.errors import ConfigError
from sincere.perf.base import Deployment

DEFAULT_OVERHEAD_BYTES = 1.0e9  # CUDA context, NCCL buffers, CUDA graphs, per GPU
LOGIT_BYTES = 4.0  # logits are computed in fp32 for sampling


@dataclass(frozen=True, slots=True)
class MemoryPlan:
    """Where each GPU's memory goes, bytes per GPU unless named otherwise."""

    budget_bytes: float  # weights, activations, overhead and KV: the share of the device used
    weight_bytes_per_gpu: float  # this GPU's share of the weights (a drafter's too)
    activation_bytes: float  # peak activation of one forward pass (estimate)
    overhead_bytes: float  # runtime overhead outside weights, activations and KV
    kv_bytes_per_token_per_gpu: float  # KV bytes one token takes on this GPU (drafter too)
    block_size: int  # tokens per KV block
    num_kv_blocks: int  # KV blocks that fit on each GPU
    max_num_seqs: int  # engine limit on running sequences
    fits: bool  # weights + activations + overhead leave at least min_kv_tokens of KV

    @property
    def kv_capacity_tokens(self) -> int:
        """Tokens the KV cache holds (whole blocks)."""
        return self.num_kv_blocks * self.block_size

    def max_batch_at(self, context_len: int) -> int:
        """Sequences of ``context_len`` tokens that fit at once (block-rounded)."""
        if context_len < 1:
            raise ConfigError("context_len must be >= 1", value=context_len)
        blocks_per_seq = math.ceil(context_len / self.block_size)
        return min(self.max_num_seqs, self.num_kv_blocks // blocks_per_seq)


def activation_bytes_estimate(
    deployment: Deployment, max_num_batched_tokens: int, max_num_seqs: int
) -> float:
    """Peak activation bytes per GPU of one forward pass (see the module docstring)."""
    model = deployment.model
    act_bytes = 2.0 if deployment.precision != "fp32" else 4.0
    inter = float(model.intermediate_size)
    if model.is_moe:  # the widest MLP a token passes: its experts', or a dense layer's
        moe = (model.experts_per_token + model.num_shared_experts) * model.expert_intermediate_size
        inter = max(float(moe), inter if model.num_dense_layers else 0.0)
    per_token = (4.0 * model.hidden_size + 3.0 * inter / deployment.tp) * (act_bytes)
    logits = max_num_seqs * model.vocab_size * LOGIT_BYTES / deployment.tp
    return max_num_batched_tokens * per_token + logits


def kv_bytes_per_token_per_gpu(deployment: Deployment) -> float:
    """One token's KV bytes on one GPU (split over PP and over TP up to kv_heads)."""
    model = deployment.model
    if deployment.kv_precision not in PRECISION_BYTES:
        raise ConfigError(
            "unknown KV precision", value=deployment.kv_precision, allowed=PRECISION_BYTES
        )
    return model.kv_bytes_per_token(deployment.kv_precision) * kv_share(deployment) / deployment.pp


def kv_share(deployment: Deployment) -> float:
    """Share of one token's KV bytes one TP rank stores: KV heads split while ``tp <=
    kv_heads`` (replicated beyond); MLA's latent is one head shared by all query heads,
    so every rank keeps all of it."""
    model = deployment.model
    if model.is_mla:
        return 1.0
    return math.ceil(model.num_kv_heads / deployment.tp) / model.num_kv_heads


def window_kv_bytes_per_gpu(deployment: Deployment, max_num_seqs: int) -> float:
    """KV bytes the sliding-window layers hold for ``max_num_seqs`` full windows, per GPU."""
    model = deployment.model
    per_seq = model.window_kv_bytes_per_seq(deployment.kv_precision)
    return per_seq * kv_share(deployment) / deployment.pp * max_num_seqs


def linear_state_bytes_per_gpu(deployment: Deployment, max_num_seqs: int) -> float:
    """Recurrent-state bytes the linear-attention layers hold for ``max_num_seqs``
    sequences, per GPU (their value heads split over TP)."""
    model = deployment.model
    per_seq = model.linear_state_bytes_per_seq(deployment.state_precision)
    return per_seq / deployment.tp / deployment.pp * max_num_seqs


def plan_memory(
    deployment: Deployment,
    *,
    gpu_memory_utilization: float = 0.9,
    share_of: str = "total",
    block_size: int = 16,
    max_num_seqs: int = 256,
    max_num_batched_tokens: int = 8192,
    overhead_bytes: float = DEFAULT_OVERHEAD_BYTES,
    min_kv_tokens: int | None = None,
    draft_weight_bytes: float = 0.0,
    draft_kv_bytes_per_token: float = 0.0,
) -> MemoryPlan:
    """Plan one GPU's memory for ``deployment`` the way vLLM sizes its KV cache.
    ``draft_weight_bytes`` and ``draft_kv_bytes_per_token``: a speculative drafter's
    weights and KV per token on this GPU, which share its memory and KV blocks
    (:mod:`sincere.engine.draft_memory`; 0: no drafter). ``share_of``: ``"total"``, the
    utilisation is a share of the device's memory (vLLM, SGLang); ``"free"``, of what the
    weights, activations and overhead leave of it (TensorRT-LLM's
    ``free_gpu_memory_fraction``)."""
    _check_plan_args(gpu_memory_utilization, block_size, max_num_seqs, max_num_batched_tokens)
    if deployment.precision not in PRECISION_BYTES:
        raise ConfigError(
            "unknown weight precision", value=deployment.precision, allowed=PRECISION_BYTES
        )
    deployment.accelerator.compute_precision(deployment.precision)
    if share_of not in ("total", "free"):
        raise ConfigError("memory share of what", value=share_of, allowed=["total", "free"])
    device = deployment.accelerator.device_memory_bytes
    weights = deployment.weight_bytes_per_gpu + draft_weight_bytes
    activations = activation_bytes_estimate(deployment, max_num_batched_tokens, max_num_seqs)
    per_token = kv_bytes_per_token_per_gpu(deployment) + draft_kv_bytes_per_token
    if share_of == "total":
        budget = gpu_memory_utilization * device
        free = budget - weights - activations - overhead_bytes
    else:
        free = gpu_memory_utilization * (device - weights - activations - overhead_bytes)
        budget = free + weights + activations + overhead_bytes
    if deployment.model.num_sliding_layers:
        free -= min(window_kv_bytes_per_gpu(deployment, max_num_seqs), max(free, 0.0) / 2)
    if deployment.model.num_linear_layers:
        free -= min(linear_state_bytes_per_gpu(deployment, max_num_seqs), max(free, 0.0) / 2)
    num_blocks = max(0, math.floor(free / (per_token * block_size)))
    need = block_size if min_kv_tokens is None else min_kv_tokens
    return MemoryPlan(
        budget_bytes=budget,
        weight_bytes_per_gpu=weights,
        activation_bytes=activations,
        overhead_bytes=overhead_bytes,
        kv_bytes_per_token_per_gpu=per_token,
        block_size=block_size,
        num_kv_blocks=num_blocks,
        max_num_seqs=max_num_seqs,
        fits=num_blocks * block_size >= need,
    )


def _check_plan_args(utilization: float, block_size: int, max_seqs: int, max_tokens: int) -> None:
    if not 0.0 < utilization <= 1.0:
        raise ConfigError("gpu_memory_utilization must be in (0, 1]", value=utilization)
    if block_size < 1:
        raise ConfigError("block_size must be >= 1", value=block_size)
    if max_seqs < 1:
        raise ConfigError("max_num_seqs must be >= 1", value=max_seqs)
    if max_tokens < 1:
        raise ConfigError("max_num_batched_tokens must be >= 1", value=max_tokens)
