"""Facts about hardware and models, as frozen records.

The figures live in data files (``sincere/data/accelerators.yaml`` and
``models.yaml``) with the public source of each; these classes are what the rest of
sincere reads. Units are in the field names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PRECISION_BYTES: dict[str, float] = {
    "fp32": 4.0,
    "fp16": 2.0,
    "bf16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "int4": 0.5,
    "int4-gptq": 0.5,
    "mxfp4": 0.53125,
    "nvfp4": 0.5625,
}
"""Bytes per weight (or KV element) for each precision sincere knows.

``mxfp4`` is the OCP microscaling format: 4-bit elements with one 8-bit shared scale
per block of 32, 4.25 bits a weight. ``nvfp4`` is NVIDIA's: 4-bit (E2M1) elements with
one fp8 (E4M3) scale per block of 16, 4.5 bits a weight (the one fp32 scale per tensor
adds nothing measurable); its activations are quantised alike, so its GEMMs run on the
fp4 tensor cores (Blackwell). ``fp8`` is counted at one byte: block scales
(one fp32 per 128 x 128 weights in DeepSeek-V3's checkpoint) add under 0.03 %.
"""

GPU_VENDORS: frozenset[str] = frozenset({"NVIDIA", "AMD"})
"""Vendors whose accelerators have fp8 / MXFP4 kernels (natively or dequantising)."""

SIXTEEN_BIT: frozenset[str] = frozenset({"fp16", "bf16"})
"""Precisions the tensor cores compute in without any conversion."""

FP4_TENSOR: frozenset[str] = frozenset({"nvfp4"})
"""Formats whose GEMMs need fp4 tensor cores (an accelerator with ``fp4_tflops``)."""

WEIGHT_ONLY: frozenset[str] = frozenset({"mxfp4"})
"""Formats only a model's routed experts are stored in (attention and embeddings stay bf16),
as in GPT-OSS's checkpoints."""

UNQUANTIZED_KV: frozenset[str] = frozenset({"fp16", "bf16", "fp32"})
"""KV-cache precisions that count as "not quantized" in relative-accuracy keys."""


def accuracy_key(precision: str, kv_precision: str = "fp16") -> str:
    """The ``relative_accuracy`` key of weights in ``precision`` and a KV cache in ``kv_precision``.

    An unquantized KV cache (fp16 / bf16 / fp32) adds nothing (``"int8"``); a quantized
    one adds ``+kv-<precision>`` (``"int8+kv-int8"``).
    """
    if kv_precision in UNQUANTIZED_KV:
        return precision
    return f"{precision}+kv-{kv_precision}"


GIB = 2**30

DEVICE_MEMORY_SHARE = 0.98
"""The share of a device's nominal memory, read in GiB, that its runtime reports as total
(what vLLM multiplies by ``gpu_memory_utilization``). Vendors' "24 GB", "80 GB", "180 GB"
of device memory are binary: an RTX 4090 ("24 GB") reports 25,250,627,584 bytes, 0.98 of
24 GiB (``../shared/data/serving-runs/llmservingsim-vllm/RTX4090_Llama-3.1-8B/meta.json``,
``hardware.device_total_memory_bytes``), 1.05x the 24e9 bytes a decimal reading gives; the
rest is held by the driver and firmware (and ECC where a GDDR part turns it on, which
leaves less)."""


@dataclass(frozen=True, slots=True)
class Accelerator:
    """One accelerator type (a GPU, or the host CPU as ``cpu``)."""

    name: str  # catalog key, e.g. "H100-SXM"
    vendor: str
    memory_gb: float  # device memory as vendors state it ("80 GB": binary, see device_memory_bytes)
    hbm_bandwidth_gbps: float  # device memory bandwidth, GB/s
    bf16_tflops: float  # dense bf16 / fp16 tensor throughput, TFLOP/s
    fp8_tflops: float | None  # dense fp8 throughput, TFLOP/s (None: not supported)
    int8_tops: float | None  # dense int8 throughput, TOP/s (None: not supported)
    interconnect_gbps: float  # GPU-to-GPU GB/s per GPU, both directions (vendors' NVLink figure)
    host_link_gbps: float  # host-to-device bandwidth (PCIe), one direction, GB/s
    price_per_hour_usd: float  # on-demand cloud price of one device, USD/h
    power_w: float  # board power (TDP), W
    cc_supported: bool  # confidential-computing mode available
    sources: dict[str, str] = field(default_factory=dict, hash=False)  # field -> public source
    aliases: tuple[str, ...] = ()  # other spellings that resolve to this entry (any case)
    fp4_tflops: float | None = None  # dense fp4 (NVFP4) throughput, TFLOP/s (None: no fp4)
    l2_cache_mb: float | None = None  # last-level on-chip cache, MB (None: not stated)
    compute_capability: float | None = None  # CUDA compute capability (None: not CUDA)

    @property
    def device_memory_bytes(self) -> float:
        """The device's total memory as its runtime reports it, bytes: the nominal figure
        read in GiB times :data:`DEVICE_MEMORY_SHARE`."""
        return self.memory_gb * GIB * DEVICE_MEMORY_SHARE

    @property
    def interconnect_gbps_per_direction(self) -> float:
        """Device-to-device bandwidth one way, GB/s (what a ring all-reduce step moves at)."""
        return self.interconnect_gbps / 2.0

    def compute_precision(self, precision: str) -> str:
        """The precision GEMMs over ``precision`` weights run in on this accelerator.

        fp8 weights compute at fp8 where the accelerator has an fp8 rate and at bf16
        after dequantisation otherwise (A100); MXFP4 weights are dequantised to bf16
        (as vLLM runs GPT-OSS's checkpoint); NVFP4 weights run at the fp4 rate with their
        activations quantised to NVFP4. Raises ``ConfigError`` naming the precision when
        this accelerator cannot run it at all: the CPU host has no fp8 or MXFP4 kernels,
        and NVFP4 needs fp4 tensor cores (Blackwell: ``fp4_tflops``), which A100, H100,
        H200 and L40S lack.
        """
        from sincere.core.errors import ConfigError

        if precision not in PRECISION_BYTES:
            raise ConfigError(
                f"unknown weight precision for {self.name}",
                value=precision,
                allowed=list(PRECISION_BYTES),
            )
        if precision in ("fp8", "mxfp4") and self.vendor not in GPU_VENDORS:
            raise ConfigError(
                f"precision: {self.name} cannot run {precision} weights",
                value=precision,
                allowed=self.runnable_precisions(),
            )
        if precision in FP4_TENSOR and not self.fp4_tflops:
            raise ConfigError(
                f"precision: {self.name} has no fp4 tensor cores for {precision} weights"
                " (Blackwell GPUs have them)",
                value=precision,
                allowed=self.runnable_precisions(),
            )
        if precision in FP4_TENSOR:
            return precision
        if precision == "fp8":
            return "fp8" if self.fp8_tflops else "bf16"
        if precision == "mxfp4":
            return "bf16"
        return precision

    def runnable_precisions(self) -> list[str]:
        """The weight precisions this accelerator runs (natively or dequantised)."""
        out = [p for p in PRECISION_BYTES if p not in FP4_TENSOR or self.fp4_tflops]
        if self.vendor not in GPU_VENDORS:
            out = [p for p in out if p not in ("fp8", "mxfp4")]
        return out

    def peak_tflops(self, precision: str) -> float:
        """Dense peak for compute in ``precision`` (falls back to bf16 when unsupported)."""
        if precision in FP4_TENSOR and self.fp4_tflops:
            return self.fp4_tflops
        if precision == "fp8" and self.fp8_tflops:
            return self.fp8_tflops
        if precision in ("int8", "int4", "int4-gptq") and self.int8_tops:
            return self.int8_tops
        return self.bf16_tflops


@dataclass(frozen=True, slots=True)
class ModelArch:
    """A decoder-only transformer's architecture, as in its public config.

    ``relative_accuracy`` maps a precision key to the model's accuracy in that setting
    as a percentage of its fp16 accuracy (100 = no loss). A key is the weight precision
    (a name of :data:`PRECISION_BYTES`), followed by ``+kv-<precision>`` when the KV
    cache is quantized: ``"fp16"``, ``"int8"``, ``"int4-gptq"``, ``"int8+kv-int8"``.
    Build keys with :func:`accuracy_key`. The shipped figures come from MaverIQ's
    relative MMLU table (``mmlu_relative_accuracy.json``, keys
    ``<model>_<float16|int8|int4|int4_gptq>_<int8 KV: True|False>_None``); models
    outside it carry only ``fp16`` / ``bf16`` = 100 (``accuracy_source`` says which).
    """

    name: str  # catalog key, e.g. "llama-3-8b"
    family: str
    num_params_b: float  # parameters, billions
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    vocab_size: int
    max_context: int
    head_dim: int = 0  # per-head dimension; catalog entries fill it (hidden // heads unless given)
    precisions: tuple[str, ...] = ("fp16", "bf16")
    relative_accuracy: dict[str, float] = field(default_factory=dict, hash=False)  # key -> %
    source: str = ""  # the public config the figures come from
    aliases: tuple[str, ...] = ()  # other spellings that resolve to this entry (any case)
    gated_mlp: bool = True  # three MLP matrices (SwiGLU / GeGLU) rather than two
    tied_embeddings: bool = False  # the output head shares the input embedding
    accuracy_source: str = ""  # where ``relative_accuracy`` comes from
    # mixture of experts (0: a dense model)
    num_experts: int = 0  # routed experts per MoE layer
    experts_per_token: int = 0  # routed experts each token is sent to (top-k)
    num_shared_experts: int = 0  # experts every token passes through besides the routed ones
    expert_intermediate_size: int = 0  # MLP width of one expert (routed or shared)
    num_dense_layers: int = 0  # leading layers with a dense MLP (intermediate_size)
    # multi-head latent attention (0: none); head_dim is the per-head no-rope / value dim
    q_lora_rank: int = 0  # low-rank query compression (0: a full query projection)
    kv_lora_rank: int = 0  # latent KV dimension cached per token and layer
    qk_rope_head_dim: int = 0  # rotary part of each query / key head, cached beside the latent
    # sliding-window attention (0: every layer attends to the whole context)
    sliding_window: int = 0  # tokens a sliding-window layer attends to
    num_sliding_layers: int = 0  # layers that use the window
    # linear attention (Gated DeltaNet, as Qwen3-Next / Qwen3.5 interleave it; 0: none):
    # a layer keeps a fixed recurrent state per sequence instead of a KV cache
    num_linear_layers: int = 0  # layers with Gated DeltaNet in place of attention
    linear_num_key_heads: int = 0  # its query / key heads
    linear_num_value_heads: int = 0  # its value heads (each with a dk x dv state)
    linear_key_head_dim: int = 0  # dk
    linear_value_head_dim: int = 0  # dv
    linear_conv_kernel: int = 0  # width of its short causal convolution
    attention_output_gate: bool = False  # full attention gates its output (q_proj doubled)
    native_precision: str = "bf16"  # precision of the published weights

    @property
    def head_size(self) -> int:
        """Dimension of one attention head."""
        return self.head_dim or self.hidden_size // self.num_heads

    def relative_accuracy_of(self, precision: str, kv_precision: str = "fp16") -> float | None:
        """Relative accuracy (%) in that setting, or ``None`` when nobody measured it."""
        return self.relative_accuracy.get(accuracy_key(precision, kv_precision))

    @property
    def is_moe(self) -> bool:
        """The model has mixture-of-experts layers."""
        return self.num_experts > 0

    @property
    def is_mla(self) -> bool:
        """The model uses multi-head latent attention (a cached latent, not K and V)."""
        return self.kv_lora_rank > 0

    @property
    def uses_layer_groups(self) -> bool:
        """Weights and FLOPs are counted from the architecture's parts (MoE or MLA), not
        from ``num_params_b`` as for a plain dense decoder."""
        return self.is_moe or self.is_mla

    @property
    def num_moe_layers(self) -> int:
        """Layers with a mixture-of-experts MLP."""
        return self.num_layers - self.num_dense_layers if self.is_moe else 0

    @property
    def num_full_attention_layers(self) -> int:
        """Layers that attend to the whole context (the rest use the sliding window or
        linear attention)."""
        return self.num_layers - self.num_sliding_layers - self.num_linear_layers

    @property
    def linear_conv_channels(self) -> int:
        """Channels a Gated DeltaNet layer's convolution runs over: queries, keys, values."""
        keys = 2 * self.linear_num_key_heads * self.linear_key_head_dim
        return keys + self.linear_num_value_heads * self.linear_value_head_dim

    def linear_attention_params(self) -> int:
        """Weights of one Gated DeltaNet layer's projections: queries, keys, values and the
        output gate in, a decay and a write strength per value head, values out."""
        h = self.hidden_size
        values = self.linear_num_value_heads * self.linear_value_head_dim
        return (
            h * (self.linear_conv_channels + values + 2 * self.linear_num_value_heads) + values * h
        )

    def linear_state_bytes_per_seq(self, state_precision: str = "fp32") -> float:
        """Bytes one sequence's recurrent state takes over the linear-attention layers: the
        ``dk x dv`` state of every value head in ``state_precision`` (fp32: as the measured
        decode kernels and SGLang keep it by default) and the convolution's last
        ``kernel - 1`` inputs in bf16."""
        if not self.num_linear_layers:
            return 0.0
        heads = self.linear_num_value_heads
        element = PRECISION_BYTES[state_precision]
        state = heads * self.linear_key_head_dim * self.linear_value_head_dim * element
        conv = (self.linear_conv_kernel - 1) * self.linear_conv_channels * 2.0
        return self.num_linear_layers * (state + conv)

    def expert_params(self) -> int:
        """Weights of one expert's MLP (gate / up and down)."""
        return (3 if self.gated_mlp else 2) * self.hidden_size * self.expert_intermediate_size

    def attention_params(self) -> int:
        """Weights of one layer's attention projections (MLA's compressions included)."""
        h, hd = self.hidden_size, self.head_size
        if not self.is_mla:
            gate = h * hd * self.num_heads if self.attention_output_gate else 0
            return 2 * h * hd * (self.num_heads + self.num_kv_heads) + gate
        qk = hd + self.qk_rope_head_dim
        if self.q_lora_rank:
            q = h * self.q_lora_rank + self.q_lora_rank * self.num_heads * qk
        else:
            q = h * self.num_heads * qk
        kv_a = h * (self.kv_lora_rank + self.qk_rope_head_dim)
        kv_b = self.kv_lora_rank * self.num_heads * 2 * hd
        return q + kv_a + kv_b + self.num_heads * hd * h

    def param_groups(self) -> tuple[float, float, float]:
        """``(routed experts, other matmuls, embeddings)`` parameter counts of the whole model.

        Other matmuls: attention, dense MLPs, shared experts and routers.
        """
        gate_up = 3 if self.gated_mlp else 2
        dense_mlp = gate_up * self.hidden_size * self.intermediate_size
        emb = self.vocab_size * self.hidden_size * (1 if self.tied_embeddings else 2)
        attention = (self.num_layers - self.num_linear_layers) * self.attention_params()
        attention += self.num_linear_layers * self.linear_attention_params()
        if not self.is_moe:
            return 0.0, float(attention + self.num_layers * dense_mlp), emb
        moe = self.num_moe_layers
        routed = moe * self.num_experts * self.expert_params()
        shared = moe * self.num_shared_experts * self.expert_params()
        router = moe * self.hidden_size * self.num_experts
        other = attention + self.num_dense_layers * dense_mlp
        return float(routed), float(other + shared + router), float(emb)

    def estimated_params_b(self) -> float:
        """Parameters implied by the architecture, billions (matmuls and embeddings only).

        Norms and biases are left out (well under 1 %), so this lands within a few
        percent of ``num_params_b`` for a correct entry.
        """
        return sum(self.param_groups()) / 1e9

    def active_params_b(self) -> float:
        """Parameters one token passes through, billions (the routed experts it picks only)."""
        if not self.is_moe:
            return self.num_params_b
        routed, other, emb = self.param_groups()
        picked = routed * self.experts_per_token / self.num_experts
        return (picked + other + emb) / 1e9

    def kv_elements_per_token_layer(self) -> int:
        """Cached elements one token takes in one layer: K and V heads, or MLA's latent and
        rotary key (shared by all heads)."""
        if self.is_mla:
            return self.kv_lora_rank + self.qk_rope_head_dim
        return 2 * self.num_kv_heads * self.head_size

    def kv_bytes_per_token(self, kv_precision: str = "fp16") -> float:
        """KV-cache bytes one token occupies across the full-attention layers.

        Sliding-window layers keep at most ``sliding_window`` tokens per sequence:
        :meth:`window_kv_bytes_per_seq` counts them.
        """
        per_elem = PRECISION_BYTES[kv_precision]
        if self.is_mla:
            return self.num_layers * self.kv_elements_per_token_layer() * per_elem
        return 2.0 * self.num_full_attention_layers * self.num_kv_heads * self.head_size * per_elem

    def window_kv_bytes_per_seq(self, kv_precision: str = "fp16") -> float:
        """KV bytes one sequence holds at most in the sliding-window layers."""
        if not self.num_sliding_layers:
            return 0.0
        window = min(self.sliding_window, self.max_context)
        per_layer = self.kv_elements_per_token_layer() * PRECISION_BYTES[kv_precision]
        return float(self.num_sliding_layers * window * per_layer)

    def weight_bytes(self, precision: str = "fp16") -> float:
        """Bytes of all weights in ``precision``.

        A dense decoder counts ``num_params_b`` at that precision. An MoE or MLA model
        counts its parts: routed experts in ``precision``; attention, dense MLPs, shared
        experts and routers in it too except for MXFP4 (bf16, as GPT-OSS ships them);
        embeddings and the LM head in bf16 when ``precision`` is narrower (as the fp8
        and MXFP4 checkpoints keep them).
        """
        size = PRECISION_BYTES[precision]
        if not self.uses_layer_groups:
            return self.num_params_b * 1e9 * size
        routed, other, emb = self.param_groups()
        return routed * size + other * self.dense_weight_bytes(precision) + emb * max(size, 2.0)

    def dense_weight_bytes(self, precision: str) -> float:
        """Bytes per weight of the non-expert matmuls when the model is served in ``precision``."""
        if precision in WEIGHT_ONLY and self.uses_layer_groups:
            return 2.0
        return PRECISION_BYTES[precision]

    def flops_per_token(self) -> float:
        """Matmul FLOPs per token, excluding attention over the context (2 x active params)."""
        return 2.0 * self.active_params_b() * 1e9

    def attention_flops_per_pair(self) -> float:
        """FLOPs per (query token, context token) pair, summed over layers (QK^T and AV).

        MLA counts its expanded form (query-key over no-rope + rope dims, values over
        ``head_dim``), as prefill runs it.
        """
        if self.is_mla:
            qk = self.head_size + self.qk_rope_head_dim
            return 2.0 * self.num_layers * self.num_heads * (qk + self.head_size)
        layers = self.num_layers - self.num_linear_layers  # linear attention has no pairs
        return 4.0 * layers * self.num_heads * self.head_size
