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
}
"""Bytes per weight (or KV element) for each precision sincere knows."""

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


@dataclass(frozen=True, slots=True)
class Accelerator:
    """One accelerator type (a GPU, or the host CPU as ``cpu``)."""

    name: str  # catalog key, e.g. "H100-SXM"
    vendor: str
    memory_gb: float  # device memory, GB (1e9 bytes)
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

    @property
    def interconnect_gbps_per_direction(self) -> float:
        """Device-to-device bandwidth one way, GB/s (what a ring all-reduce step moves at)."""
        return self.interconnect_gbps / 2.0

    def peak_tflops(self, precision: str) -> float:
        """Dense peak for compute in ``precision`` (falls back to bf16 when unsupported)."""
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

    @property
    def head_size(self) -> int:
        """Dimension of one attention head."""
        return self.head_dim or self.hidden_size // self.num_heads

    def relative_accuracy_of(self, precision: str, kv_precision: str = "fp16") -> float | None:
        """Relative accuracy (%) in that setting, or ``None`` when nobody measured it."""
        return self.relative_accuracy.get(accuracy_key(precision, kv_precision))

    def estimated_params_b(self) -> float:
        """Parameters implied by the architecture, billions (matmuls and embeddings only).

        Norms and biases are left out (well under 1 %), so this lands within a few
        percent of ``num_params_b`` for a correct entry.
        """
        attn = 2 * self.hidden_size * self.head_size * (self.num_heads + self.num_kv_heads)
        mlp = (3 if self.gated_mlp else 2) * self.hidden_size * self.intermediate_size
        emb = self.vocab_size * self.hidden_size * (1 if self.tied_embeddings else 2)
        return (self.num_layers * (attn + mlp) + emb) / 1e9

    def kv_bytes_per_token(self, kv_precision: str = "fp16") -> float:
        """KV-cache bytes one token occupies across all layers (K and V)."""
        per_elem = PRECISION_BYTES[kv_precision]
        return 2.0 * self.num_layers * self.num_kv_heads * self.head_size * per_elem

    def weight_bytes(self, precision: str = "fp16") -> float:
        """Bytes of all weights in ``precision``."""
        return self.num_params_b * 1e9 * PRECISION_BYTES[precision]

    def flops_per_token(self) -> float:
        """Dense matmul FLOPs per token, excluding attention over the context (2 x params)."""
        return 2.0 * self.num_params_b * 1e9

    def attention_flops_per_pair(self) -> float:
        """FLOPs per (query token, context token) pair, summed over layers (QK^T and AV)."""
        return 4.0 * self.num_layers * self.num_heads * self.head_size
