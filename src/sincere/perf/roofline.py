"""Analytic roofline step-time model, built layer by layer from catalog figures.

One iteration on one GPU is the sum of the kernels a transformer layer runs, times the
layers, plus the LM head and the CPU's work (each a roofline of its own):

* **linear work** of a layer: four GEMMs (QKV, O, gate/up, down, split over TP) each
  taking ``(compute^p + memory^p)^(1/p)`` -- compute = ``2·K·N`` FLOPs per token over
  the dense peak × ``mfu_efficiency``, memory = the weight bytes plus the activations
  in and out over HBM bandwidth × ``bw_efficiency``; ``p = overlap_exponent``
  (``inf`` is the classic ``max``, smaller values let a GEMM near the ridge point
  pay for both). Above one tile, the token count a GEMM computes is rounded up to a
  multiple of ``token_tile``: the steps measured kernels take just above multiples of
  128 tokens. The elementwise kernels (two norms, rotary, activation, residual add)
  move their activation bytes at ``elementwise_bw_efficiency``, and the layer pays
  ``layer_overhead_s`` of fixed kernel cost;
* **attention** of a layer: per prefill chunk the causal query-key pairs (a pair inside
  the chunk counts ``attn_diag_factor`` times one against cached context; a pair's work
  is :func:`attention_pair_flops`) over the dense peak × ``attn_mfu_efficiency``, or
  its KV bytes over HBM × ``attn_bw_efficiency``, whichever is slower; the decode
  batch reads its KV cache likewise; each kernel adds ``attn_kernel_s``;
* **communication**: at TP > 1 two all-reduces per layer of ``tokens · hidden ·
  activation_bytes``, a ring moving ``2 (tp-1)/tp`` of it over the one-way link
  bandwidth × ``interconnect_efficiency`` plus ``allreduce_latency_s`` each (times
  ``allreduce_latency_share``: an engine whose all-reduce kernel is quicker than the
  measured one, :mod:`.execution_settings`);
* the **LM head**: a GEMM over the vocabulary (split over TP) for the sequences that
  sample a token (one per sequence), priced like the layers' GEMMs;
* **overhead**: the CPU's scheduling, input preparation and sampling,
  ``overhead_s + overhead_per_seq_s · sequences``.

The code follows that split: :class:`RooflineKernels` holds the per-kernel terms (one
layer's linear work with the FFN as its own replaceable term, prefill and decode
attention, the LM head; :class:`KernelCoef` the folded attention, communication and CPU
constants), :class:`Roofline` composes them into an iteration.

Pipeline parallelism (PP), our assumption: each of the ``pp`` stages holds ``1/pp`` of
the layers; the batch is cut into ``m = min(pp_microbatches, num_seqs)`` micro-batches
and the iteration lasts ``(m + pp - 1)`` stage times of one micro-batch (the GPipe
bubble, Huang et al. 2019), plus an activation send between stages. With ``m = 1`` PP
adds no speed, only memory.

The roofline form is Williams et al. (CACM 2009) applied per kernel to LLM inference
(e.g. Yuan et al., "LLM Inference Unveiled", 2024). :class:`RooflineParams` defaults
are datasheet-style assumptions; the constants sincere uses by default for an
accelerator are fitted to measured kernels and shipped as data
(:mod:`sincere.perf.calibration`, ``sincere fit gpu-profiles``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sincere.catalog.specs import PRECISION_BYTES, ModelArch
from sincere.core.errors import ConfigError
from sincere.core.types import Seconds
from sincere.perf.arch_step import ArchStep, MoEParams, arch_utilization, grouped_decode_s
from sincere.perf.base import Batch, Deployment, StepParts, StepTimeBase, SwapTime
from sincere.perf.gemm import gemm_grid, gemm_s
from sincere.perf.moe import INT4_WEIGHTS
from sincere.perf.series import sum_max_affine
from sincere.perf.shape_grid import ShapeGrid, allreduce_factor, kv_group, prefill_factor

_EFFICIENCIES = (
    "mfu_efficiency",
    "bw_efficiency",
    "elementwise_bw_efficiency",
    "attn_mfu_efficiency",
    "attn_bw_efficiency",
    "interconnect_efficiency",
    "load_efficiency",
    "gdn_mfu_efficiency",
    "gdn_bw_efficiency",
    "gdn_decode_bw_efficiency",
    "gdn_spill_bw_efficiency",
)
_TIMES = (
    "layer_overhead_s",
    "attn_kernel_s",
    "overhead_s",
    "overhead_per_seq_s",
    "allreduce_latency_s",
    "allreduce_eager_s",
    "allreduce_eager_floor_s",
    "alltoall_protocol_s",
    "moe_kernel_s",
    "moe_expert_s",
    "fp8_gemm_kernel_s",
    "nvfp4_gemm_kernel_s",
    "p2p_latency_s",
    "load_overhead_s",
    "unload_s",
    "gdn_kernel_s",
    "gdn_decode_kernel_s",
    "attn_decode_grouped_s",
)

_OPTIONAL_EFFICIENCIES = (
    "fp8_mfu_efficiency",
    "nvfp4_mfu_efficiency",
    "moe_mfu_efficiency",
    "moe_bw_efficiency",
    "moe_fp8_mfu_efficiency",
    "moe_fp8_bw_efficiency",
    "moe_mxfp4_mfu_efficiency",
    "moe_mxfp4_bw_efficiency",
    "moe_nvfp4_mfu_efficiency",
    "moe_nvfp4_bw_efficiency",
    "moe_mxfp4_mxfp8_mfu_efficiency",
    "moe_mxfp4_mxfp8_bw_efficiency",
    "moe_int4_mfu_efficiency",
    "moe_int4_bw_efficiency",
    "mla_decode_mfu_efficiency",
    "mla_decode_bw_efficiency",
    "mla_decode_fp8_bw_efficiency",
)
MXFP4_ACTIVATIONS = ("bf16", "mxfp8")
"""What MXFP4 experts multiply their weights with: bf16 activations (vLLM's default kernel)
or activations quantised to MXFP8 at the fp8 rate (FlashInfer's TensorRT-LLM kernel that
vLLM runs on Blackwell with ``VLLM_USE_FLASHINFER_MOE_MXFP4_MXFP8=1``)."""


GRID_FIELDS = (
    "gemm_bf16_grid",
    "gemm_fp8_grid",
    "gemm_nvfp4_grid",
    "prefill_attention_grid",
    "allreduce_grid",
)
"""Parameters that hold a kernel family's factor by shape (:mod:`sincere.perf.shape_grid`)."""


@dataclass(frozen=True, slots=True)
class RooflineParams:
    """The roofline's constants (see the module docstring). Units in the names.

    These defaults are datasheet-style assumptions; :func:`sincere.perf.calibration.
    default_roofline_params` gives the fitted ones an accelerator uses by default.
    """

    mfu_efficiency: float = 0.5  # GEMMs: share of the dense peak reached
    # compute rate under sustained load over a kernel benchmark's (power-limited clocks):
    # scales every compute-bound term (GEMMs, attention, experts, linear attention)
    sustained_compute_ratio: float = 1.0
    bw_efficiency: float = 0.85  # GEMMs: share of HBM bandwidth moving weights and activations
    elementwise_bw_efficiency: float = 0.85  # norms, rotary, activation, add: share of HBM
    overlap_exponent: float = math.inf  # p of a GEMM's (compute^p + memory^p)^(1/p); inf: max
    token_tile: int = 1  # GEMM token count rounded up to a multiple of this above one tile
    fp8_token_tile: int | None = None  # fp8-compute GEMMs' own tile (None: token_tile)
    nvfp4_token_tile: int | None = None  # NVFP4-compute GEMMs' own tile (None: token_tile)
    layer_overhead_s: float = 0.0  # fixed kernel cost of one layer's linear work
    attn_mfu_efficiency: float = 0.5  # prefill attention: share of the dense bf16 peak
    attn_bw_efficiency: float = 0.85  # attention reading the KV cache: share of HBM bandwidth
    attn_kernel_s: float = 0.0  # fixed cost of one attention kernel (prefill or decode) per layer
    attn_diag_factor: float = 1.0  # work of a pair inside a prefill chunk vs one against cache
    overhead_s: float = 0.001  # fixed CPU cost per iteration
    overhead_per_seq_s: float = 0.0  # CPU cost per sequence in the iteration
    interconnect_efficiency: float = 0.7  # share of NVLink / PCIe bandwidth in collectives
    allreduce_latency_s: float = 10e-6  # fixed cost of one all-reduce (2 GPUs, in a CUDA graph)
    allreduce_gpus: tuple[int, ...] = ()  # GPU counts with their own all-reduce terms (below)
    allreduce_latencies_s: tuple[float, ...] = ()  # graph all-reduce latency at each count
    allreduce_efficiencies: tuple[float, ...] = ()  # bus bandwidth share of the link at each
    allreduce_eager_s: float = 0.0  # all-reduce latency added outside a CUDA graph
    allreduce_eager_floor_s: float = 0.0  # outside a graph an all-reduce takes at least this
    # the engine's all-reduce latency as a share of the fitted one (vLLM's custom all-reduce):
    # 1 for vLLM and SGLang; TensorRT-LLM's fused one-shot kernel less (execution_settings)
    allreduce_latency_share: float = 1.0
    alltoall_gpus: tuple[int, ...] = ()  # GPU counts with a measured all-to-all (EP dispatch)
    alltoall_latencies_s: tuple[float, ...] = ()  # all-to-all latency at each count
    alltoall_efficiencies: tuple[float, ...] = ()  # share of the one-way link at each count
    alltoall_protocol_s: float = 0.0  # all-to-all latency added as the bytes sent pass the knee
    alltoall_knee_bytes: float = 1.0  # bytes sent where half of alltoall_protocol_s is added
    cuda_graph_max_tokens: int = 512  # iterations up to this many tokens replay CUDA graphs
    fp8_mfu_efficiency: float | None = None  # fp8 GEMMs' share of the fp8 peak (None: mfu's)
    fp8_gemm_kernel_s: float = 0.0  # fp8 GEMM's extra fixed cost (activation quantisation)
    fp8_act_s: float = 0.0  # fp8 GEMM's extra time per input activation (quantisation), s
    nvfp4_mfu_efficiency: float | None = None  # NVFP4 GEMMs' share of the fp4 peak (None: mfu's)
    nvfp4_gemm_kernel_s: float = 0.0  # NVFP4 GEMM's extra fixed cost (activation quantisation)
    nvfp4_act_s: float = 0.0  # NVFP4 GEMM's extra time per input activation (quantisation), s
    # measured GEMMs' factor by shape beyond the form, per compute precision (None: none)
    gemm_bf16_grid: ShapeGrid | None = None
    gemm_fp8_grid: ShapeGrid | None = None
    gemm_nvfp4_grid: ShapeGrid | None = None
    # measured prefill attention's factor by query tokens per sequence, sequences, query heads
    # and query heads per KV head (None: none)
    prefill_attention_grid: ShapeGrid | None = None
    # the all-reduce's factor by message bytes, GPUs and graph/eager (fitted to its calls)
    allreduce_grid: ShapeGrid | None = None
    shape_corrections: bool = True  # apply the grids (False: the roofline's form alone)
    attn_decode_kernel_s: float | None = None  # decode attention's fixed cost (None: attn's)
    # decode: more per call of 2+ sequences at 2+ KV heads a GPU (FlashAttention-2's path)
    attn_decode_grouped_s: float = 0.0
    attn_query_pairs: float = 0.0  # prefill: pairs' worth of work per query row beyond its own
    attn_head_dim_offset: float = 0.0  # a pair's work per query head as if head_dim were wider
    attn_kv_head_work: float = 0.0  # a pair's work per KV head, in head_dim multiply-adds' shares
    attn_decode_seq_tokens: float = 1.0  # decode: KV tokens' worth of traffic per sequence
    # MLA decode from the measured MLA modules (None: decode attention's constants)
    mla_decode_mfu_efficiency: float | None = None  # the absorbed form: share of the bf16 peak
    mla_decode_bw_efficiency: float | None = None  # a bf16 latent cache: share of HBM
    mla_decode_fp8_bw_efficiency: float | None = None  # an fp8 one (None: bf16's)
    mla_decode_lone_seqs: float = 0.0  # sequences' worth more context read per call
    moe_mfu_efficiency: float | None = None  # fused-MoE share of the peak (None: mfu's)
    moe_bw_efficiency: float | None = None  # fused-MoE share of HBM (None: bw's)
    moe_kernel_s: float = 0.0  # fixed cost of one fused-MoE kernel per layer
    moe_tail_share: float = 0.0  # share of the busiest expert's rows not hidden by the others
    moe_expert_s: float = 0.0  # fused MoE's memory-side cost per active expert
    moe_width_offset: float = 0.0  # bf16 experts compute as if this much wider (and others'
    # without an offset of their own)
    moe_unaligned_factor: float = 1.0  # bf16 experts' time at widths off ALIGNED_WIDTH
    moe_ep_foreign_factor: float = 0.0  # under EP: the pass over other GPUs' routed pairs,
    # as a multiple of its bytes' time at HBM speed (0: none; perf.moe.foreign_pair_bytes)
    moe_ep_kernel_s: float = 0.0  # under EP: fixed cost per fused-MoE call beside that pass
    moe_ep_onchip_share: float = 0.0  # under EP: share of the L2 that pass's bytes stay in
    moe_fp8_mfu_efficiency: float | None = None  # fp8 experts: share of the fp8 peak (None: bf16's)
    moe_fp8_bw_efficiency: float | None = None  # fp8 experts: share of HBM (None: bf16's)
    moe_fp8_kernel_s: float | None = None  # fp8 experts: fixed cost per layer (None: bf16's)
    moe_fp8_expert_s: float | None = None  # fp8 experts: cost per active expert
    moe_fp8_width_offset: float | None = None  # fp8 experts: compute widening (None: bf16's)
    moe_mxfp4_mfu_efficiency: float | None = None  # MXFP4 experts: share of the bf16 peak
    moe_mxfp4_bw_efficiency: float | None = None  # MXFP4 experts: share of HBM
    moe_mxfp4_kernel_s: float | None = None  # MXFP4 experts: fixed cost per layer
    moe_mxfp4_expert_s: float | None = None  # MXFP4 experts: cost per active expert
    moe_mxfp4_width_offset: float | None = None  # MXFP4 experts: compute widening (None: bf16's)
    moe_nvfp4_mfu_efficiency: float | None = None  # NVFP4 experts: share of the fp4 peak
    moe_nvfp4_bw_efficiency: float | None = None  # NVFP4 experts: share of HBM
    moe_nvfp4_kernel_s: float | None = None  # NVFP4 experts: fixed cost per layer
    moe_nvfp4_expert_s: float | None = None  # NVFP4 experts: cost per active expert
    moe_nvfp4_width_offset: float | None = None  # NVFP4 experts: compute widening (None: bf16's)
    moe_mxfp4_mxfp8_mfu_efficiency: float | None = None  # MXFP4 x MXFP8 experts: of the fp8 peak
    moe_mxfp4_mxfp8_bw_efficiency: float | None = None  # MXFP4 x MXFP8 experts: share of HBM
    moe_mxfp4_mxfp8_kernel_s: float | None = None  # MXFP4 x MXFP8 experts: fixed cost per layer
    moe_mxfp4_mxfp8_expert_s: float | None = None  # MXFP4 x MXFP8: cost per active expert
    moe_mxfp4_mxfp8_width_offset: float | None = (
        None  # MXFP4 x MXFP8: compute widening (None: bf16's)
    )
    moe_int4_mfu_efficiency: float | None = None  # INT4 (W4A16) experts: share of the bf16 peak
    moe_int4_bw_efficiency: float | None = None  # INT4 experts: share of HBM
    moe_int4_kernel_s: float | None = None  # INT4 experts: fixed cost per layer
    moe_int4_expert_s: float | None = None  # INT4 experts: cost per active expert
    moe_int4_width_offset: float | None = None  # INT4 experts: compute widening (None: bf16's)
    mxfp4_activations: str = "bf16"  # MXFP4 experts' activations: one of MXFP4_ACTIVATIONS
    # Gated DeltaNet layers (sincere.perf.linear_attention); defaults: the mean of the
    # H100, H200 and B200 fits (vLLM 0.24's gdn kernels)
    gdn_mfu_efficiency: float = 0.278  # chunked delta rule: share of the bf16 peak
    gdn_parallel_units: float = 116.9  # (sequence, value head) blocks that fill the GPU
    gdn_bw_efficiency: float = 0.478  # prefill convolution: share of HBM
    gdn_kernel_s: float = 14.3e-6  # prefill kernels' fixed cost per layer
    gdn_decode_bw_efficiency: float = 0.841  # decode: state read and written, share of HBM
    gdn_decode_kernel_s: float = 6.0e-6  # decode kernels' fixed cost per layer
    gdn_spill_bytes: float = 0.0  # prefill intermediates per token and value head (Triton)
    gdn_onchip_share: float = 1.0  # of the L2 those intermediates stay in
    gdn_spill_bw_efficiency: float = 1.0  # intermediates beyond it: share of HBM
    kernel_tables: str | None = None  # measured kernels' folder: routed experts from their rows
    kernel_release: str | None = None  # vLLM release of the measured rows (None: the newest)
    p2p_latency_s: float = 10e-6  # fixed cost of one pipeline-stage activation send
    activation_bytes: float = 2.0  # bytes per activation element (bf16)
    pp_microbatches: int = 1  # micro-batches an iteration is cut into under PP
    load_efficiency: float = 0.5  # share of host-link bandwidth reached while loading
    disk_read_gbps: float | None = None  # storage read rate, GB/s (None: not limiting)
    load_overhead_s: float = 1.0  # fixed cost of a load (allocation, graph capture)
    unload_s: float = 0.02  # time to free the model

    def __post_init__(self) -> None:
        for name in _EFFICIENCIES:
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ConfigError(f"RooflineParams.{name} must be in (0, 1]", value=value)
        for name in _TIMES:
            if getattr(self, name) < 0.0:
                raise ConfigError(
                    f"RooflineParams.{name} must be >= 0 s", value=getattr(self, name)
                )
        if not 0.0 <= self.allreduce_latency_share <= 1.0:
            raise ConfigError(
                "RooflineParams.allreduce_latency_share must be in [0, 1] (1: the fitted "
                "all-reduce's latency)",
                value=self.allreduce_latency_share,
            )
        if not self.overlap_exponent >= 1.0:
            raise ConfigError("RooflineParams.overlap_exponent must be >= 1 (inf: max)")
        for name in GRID_FIELDS:
            grid = getattr(self, name)
            if grid is not None and not isinstance(grid, ShapeGrid):
                raise ConfigError(
                    f"RooflineParams.{name} must be a shape grid (sincere.perf.shape_grid)",
                    value=type(grid).__name__,
                )
        if not 1.0 <= self.attn_diag_factor <= 2.0:
            raise ConfigError(
                "RooflineParams.attn_diag_factor must be in [1, 2]", value=self.attn_diag_factor
            )
        for name in _OPTIONAL_EFFICIENCIES:
            value = getattr(self, name)
            if value is not None and not 0.0 < value <= 1.0:
                raise ConfigError(f"RooflineParams.{name} must be in (0, 1]", value=value)
        if self.mxfp4_activations not in MXFP4_ACTIVATIONS:
            raise ConfigError(
                "RooflineParams.mxfp4_activations: unknown activation format",
                value=self.mxfp4_activations,
                allowed=list(MXFP4_ACTIVATIONS),
            )
        experts = ("moe_fp8", "moe_mxfp4", "moe_nvfp4", "moe_mxfp4_mxfp8", "moe_int4")
        for name in (f"{e}_{term}" for e in experts for term in ("kernel_s", "expert_s")):
            if (value := getattr(self, name)) is not None and value < 0.0:
                raise ConfigError(f"RooflineParams.{name} must be >= 0 s", value=value)
        for name in (f"{e}_width_offset" for e in experts):
            if (value := getattr(self, name)) is not None and value < 0.0:
                raise ConfigError(f"RooflineParams.{name} must be >= 0", value=value)
        if self.attn_decode_kernel_s is not None and self.attn_decode_kernel_s < 0.0:
            raise ConfigError(
                "RooflineParams.attn_decode_kernel_s must be >= 0 s",
                value=self.attn_decode_kernel_s,
            )
        counts = (self.allreduce_gpus, self.allreduce_latencies_s, self.allreduce_efficiencies)
        if len({len(c) for c in counts}) != 1:
            raise ConfigError(
                "RooflineParams.allreduce_gpus, allreduce_latencies_s and allreduce_efficiencies "
                "must have one entry per GPU count",
                value=counts,
            )
        if any(g < 2 for g in self.allreduce_gpus) or any(
            v < 0.0 for v in self.allreduce_latencies_s
        ):
            raise ConfigError("all-reduce GPU counts must be >= 2 and latencies >= 0", value=counts)
        if any(not 0.0 < v <= 1.0 for v in self.allreduce_efficiencies):
            raise ConfigError(
                "RooflineParams.allreduce_efficiencies must be in (0, 1]",
                value=self.allreduce_efficiencies,
            )
        _check_counts(
            "alltoall", self.alltoall_gpus, self.alltoall_latencies_s, self.alltoall_efficiencies
        )
        if self.alltoall_knee_bytes <= 0.0:
            raise ConfigError(
                "RooflineParams.alltoall_knee_bytes must be > 0", value=self.alltoall_knee_bytes
            )
        for name in ("fp8_act_s", "nvfp4_act_s"):
            if getattr(self, name) < 0.0:
                raise ConfigError(f"RooflineParams.{name} must be >= 0", value=getattr(self, name))
        for name in (
            "attn_query_pairs",
            "attn_decode_seq_tokens",
            "mla_decode_lone_seqs",
            "attn_head_dim_offset",
            "attn_kv_head_work",
            "gdn_spill_bytes",
            "gdn_onchip_share",
            "moe_width_offset",
            "moe_ep_foreign_factor",
            "moe_ep_kernel_s",
            "moe_ep_onchip_share",
        ):
            if getattr(self, name) < 0.0:
                raise ConfigError(f"RooflineParams.{name} must be >= 0", value=getattr(self, name))
        if not self.gdn_parallel_units >= 1.0:
            raise ConfigError(
                "RooflineParams.gdn_parallel_units must be >= 1", value=self.gdn_parallel_units
            )
        if not 0.0 <= self.moe_tail_share <= 1.0:
            raise ConfigError("RooflineParams.moe_tail_share must be in [0, 1]")
        if not self.moe_unaligned_factor > 0.0:
            raise ConfigError(
                "RooflineParams.moe_unaligned_factor must be > 0", value=self.moe_unaligned_factor
            )
        if self.cuda_graph_max_tokens < 0:
            raise ConfigError("RooflineParams.cuda_graph_max_tokens must be >= 0")
        for name in ("token_tile", "fp8_token_tile", "nvfp4_token_tile"):
            tile = getattr(self, name)
            if tile is not None and tile < 1:
                raise ConfigError(f"RooflineParams.{name} must be >= 1", value=tile)
        if self.pp_microbatches < 1:
            raise ConfigError("RooflineParams.pp_microbatches must be >= 1")
        if self.activation_bytes <= 0.0:
            raise ConfigError("RooflineParams.activation_bytes must be > 0")


def _check_counts(
    name: str, gpus: tuple[int, ...], latencies: tuple[float, ...], shares: tuple[float, ...]
) -> None:
    """Per-GPU-count collective terms: one entry per count, counts >= 2, shares in (0, 1]."""
    if not len(gpus) == len(latencies) == len(shares):
        raise ConfigError(
            f"RooflineParams.{name}_gpus, {name}_latencies_s and {name}_efficiencies must have "
            "one entry per GPU count",
            value=(gpus, latencies, shares),
        )
    if any(g < 2 for g in gpus) or any(v < 0.0 for v in latencies):
        raise ConfigError(f"{name} GPU counts must be >= 2 and latencies >= 0", value=gpus)
    if any(not 0.0 < v <= 1.0 for v in shares):
        raise ConfigError(f"RooflineParams.{name}_efficiencies must be in (0, 1]", value=shares)


@dataclass(frozen=True, slots=True)
class Gemm:
    """One GEMM of a layer on one GPU: ``tokens × K`` times ``K × N``."""

    k: int  # input features
    n: int  # output features (this GPU's shard)


def layer_gemms(model: ModelArch, tp: int) -> tuple[Gemm, Gemm, Gemm, Gemm]:
    """QKV, O, gate/up and down projections of one layer on one of ``tp`` GPUs.

    Query heads split over TP; KV heads split while ``tp <= num_kv_heads`` and are
    replicated beyond.
    """
    hd = model.head_size
    q = max(1, model.num_heads // tp) * hd
    kv = max(1, math.ceil(model.num_kv_heads / tp)) * hd
    inter = max(1, model.intermediate_size // tp)
    up = 2 * inter if model.gated_mlp else inter
    h = model.hidden_size
    return Gemm(h, q + 2 * kv), Gemm(q, h), Gemm(h, up), Gemm(inter, h)


def elementwise_elements(model: ModelArch, tp: int) -> float:
    """Activation elements the elementwise kernels of one layer read and write per token.

    Two RMS norms (read and write the hidden state), rotary embedding (queries and
    keys in and out), the activation (gated: two halves in, one out) and the residual
    add (two in, one out).
    """
    hd, h = model.head_size, model.hidden_size
    q = max(1, model.num_heads // tp) * hd
    kv = max(1, math.ceil(model.num_kv_heads / tp)) * hd
    inter = max(1, model.intermediate_size // tp)
    act = 3 * inter if model.gated_mlp else 2 * inter
    return 2 * 2 * h + 2 * (q + kv) + act + 3 * h


@dataclass(frozen=True, slots=True)
class KernelCoef:
    """Attention, communication and CPU terms folded into per-unit times of one GPU.

    The hot path is plain float math over these (see :meth:`Roofline.iteration_s_fast`).
    """

    layers: float  # layers one GPU (one pipeline stage) runs
    pp: int  # pipeline stages
    pp_microbatches: int  # micro-batches an iteration is cut into under PP
    cpu_s: float  # CPU cost per iteration
    cpu_seq_s: float  # CPU cost per sequence
    pair_s: float  # attention compute time per (weighted) query-key pair, per layer
    diag: float  # weight of a pair inside a prefill chunk
    query_pairs: float  # pairs' worth of work per prefill query row beyond its own pairs
    seq_tokens: float  # KV tokens' worth of traffic per decoding sequence beyond its context
    kv_token_s: float  # time to move one token's KV bytes, per layer
    attn_kernel_s: float  # fixed cost of one prefill attention kernel, per layer
    decode_kernel_s: float  # fixed cost of one decode attention kernel, per layer
    decode_grouped_s: float  # more per decode call of 2+ sequences (0 at 1 KV head a GPU)
    comm_fixed_s: float  # all-reduce latency per layer in a CUDA graph (0 without TP)
    comm_eager_s: float  # all-reduce latency per layer added outside a graph (0 without TP)
    comm_floor_s: float  # least time of a layer's all-reduces outside a graph (0 without TP)
    graph_tokens: int  # iterations up to this many tokens run in CUDA graphs
    comm_token_s: float  # all-reduce time per token per layer
    p2p_fixed_s: float  # pipeline send latency (0 without PP)
    p2p_token_s: float  # pipeline send time per token
    prefill_grid: ShapeGrid | None  # prefill attention's factor by shape (None: the form's)
    q_heads: int  # query heads on one GPU (the grid's third axis)
    kv_group: float  # query heads per KV head on one GPU (the grid's fourth axis)
    comm_grid: ShapeGrid | None  # the all-reduce's factor by message size (None: the form's)
    comm_bytes: float  # bytes one all-reduce moves per token
    comm_gpus: float  # GPUs an all-reduce spans


def attention_pair_flops(
    params: RooflineParams, q_heads: int, kv_heads: int, head_dim: int
) -> float:
    """FLOPs' worth of one query-key pair of one layer on one GPU (a ``head_dim`` product
    for the score and one for the value per query head, four FLOPs a dimension), each query
    head as if ``attn_head_dim_offset`` wider and each KV head adding ``attn_kv_head_work``
    of a head's product (both 0 by default: plain FLOPs; fitted by ``sincere fit kernels``)."""
    per_head = q_heads * (head_dim + params.attn_head_dim_offset)
    return 4.0 * (per_head + params.attn_kv_head_work * kv_heads * head_dim)


def kv_share(deployment: Deployment) -> float:
    """Share of one token's KV bytes (all layers) one TP rank stores (MLA's latent is one
    head shared by all query heads: every rank keeps it whole)."""
    if deployment.model.is_mla:
        return 1.0
    heads = deployment.model.num_kv_heads
    return math.ceil(heads / deployment.tp) / heads


def gemm_mfu(params: RooflineParams, compute_precision: str) -> float:
    """The GEMMs' share of the peak in ``compute_precision`` (fp8 and NVFP4 may have their own)."""
    if compute_precision == "fp8" and params.fp8_mfu_efficiency is not None:
        return params.fp8_mfu_efficiency
    if compute_precision == "nvfp4" and params.nvfp4_mfu_efficiency is not None:
        return params.nvfp4_mfu_efficiency
    return params.mfu_efficiency


def quantisation_terms(
    params: RooflineParams, compute_precision: str
) -> tuple[float, float, int] | None:
    """(fixed cost s, extra time per input activation s, token tile) of a
    ``compute_precision`` GEMM (fp8 or NVFP4) whose activations are quantised first: the
    quantisation and the kernel's own tile (the bf16 GEMMs' where not fitted); None: the
    GEMM takes them as is."""
    p = params
    if compute_precision == "fp8":
        tile = p.token_tile if p.fp8_token_tile is None else p.fp8_token_tile
        return p.fp8_gemm_kernel_s, p.fp8_act_s, tile
    if compute_precision == "nvfp4":
        tile = p.token_tile if p.nvfp4_token_tile is None else p.nvfp4_token_tile
        return p.nvfp4_gemm_kernel_s, p.nvfp4_act_s, tile
    return None


def expert_constants(
    params: RooflineParams, precision: str, compute_precision: str
) -> tuple[float | None, float | None, float, str, float, float]:
    """(share of the peak, share of HBM, fixed cost per layer, precision of the peak, cost
    per active expert, width offset) of the fused-MoE kernel for experts stored in
    ``precision`` and computed in ``compute_precision``: fp8 experts run at the fp8 rate,
    MXFP4 ones dequantised to bf16 (or, with ``mxfp4_activations: mxfp8``, against MXFP8
    activations at the fp8 rate), NVFP4 ones at the fp4 rate and INT4 ones dequantised to
    bf16 (W4A16), each with its own fitted kernel where the fit has one (``moe_fp8_*``,
    ``moe_mxfp4_*``, ``moe_mxfp4_mxfp8_*``, ``moe_nvfp4_*``, ``moe_int4_*``; a family without
    its own width offset takes the bf16 experts'); otherwise the bf16 experts' (None: the
    GEMMs' shares). MXFP8 activations without a fit of their own take the fp8 experts'
    kernel."""
    p = params
    family = _expert_family(p, precision, compute_precision)
    if family is None:
        rate = "fp8" if precision == "mxfp4" and p.mxfp4_activations == "mxfp8" else None
        bf16 = (p.moe_mfu_efficiency, p.moe_bw_efficiency, p.moe_kernel_s)
        return (*bf16, rate or compute_precision, p.moe_expert_s, p.moe_width_offset)
    name, rate = family
    mfu, bw = getattr(p, f"{name}_mfu_efficiency"), getattr(p, f"{name}_bw_efficiency")
    kernel = getattr(p, f"{name}_kernel_s") or 0.0
    offset = getattr(p, f"{name}_width_offset")
    offset = p.moe_width_offset if offset is None else offset
    return mfu, bw, kernel, rate, getattr(p, f"{name}_expert_s") or 0.0, offset


def expert_unaligned_factor(
    params: RooflineParams, precision: str, compute_precision: str
) -> float:
    """``moe_unaligned_factor`` where experts stored in ``precision`` run the bf16 experts'
    kernel (:func:`expert_constants`; the factor was fitted on it), else 1."""
    if _expert_family(params, precision, compute_precision) is None:
        return params.moe_unaligned_factor
    return 1.0


def _expert_family(
    p: RooflineParams, precision: str, compute_precision: str
) -> tuple[str, str] | None:
    """(the quantised-expert constants' prefix, the precision of their peak) that price
    experts stored in ``precision``; None: the bf16 experts' constants."""
    if precision == "mxfp4" and p.mxfp4_activations == "mxfp8":
        if p.moe_mxfp4_mxfp8_mfu_efficiency is not None:
            return "moe_mxfp4_mxfp8", "fp8"
        return ("moe_fp8", "fp8") if p.moe_fp8_mfu_efficiency is not None else None
    if compute_precision == "fp8" and p.moe_fp8_mfu_efficiency is not None:
        return "moe_fp8", compute_precision
    if compute_precision == "nvfp4" and p.moe_nvfp4_mfu_efficiency is not None:
        return "moe_nvfp4", compute_precision
    if precision == "mxfp4" and p.moe_mxfp4_mfu_efficiency is not None:
        return "moe_mxfp4", compute_precision
    if precision in INT4_WEIGHTS and p.moe_int4_mfu_efficiency is not None:
        return "moe_int4", "bf16"
    return None


def allreduce_terms(params: RooflineParams, gpus: int) -> tuple[float, float]:
    """(latency in a CUDA graph, bus bandwidth share) of one all-reduce over ``gpus`` GPUs.

    The measured GPU count nearest in doublings gives them when ``allreduce_gpus`` lists
    any (the link's topology changes with the count: PCIe switches, NVSwitch); else the
    scalar ``allreduce_latency_s`` and ``interconnect_efficiency``.
    """
    best = nearest_count(params.allreduce_gpus, gpus)
    share = params.allreduce_latency_share
    if best is None:
        return share * params.allreduce_latency_s, params.interconnect_efficiency
    return share * params.allreduce_latencies_s[best], params.allreduce_efficiencies[best]


def alltoall_terms(params: RooflineParams, moe: MoEParams, gpus: int) -> tuple[float, float]:
    """(latency, share of the one-way link) of one expert-parallel all-to-all over ``gpus``:
    the measured NCCL all-to-all at the nearest GPU count when ``alltoall_gpus`` lists any,
    else ``moe``'s assumed ``a2a_latency_s`` and ``a2a_bw_efficiency``."""
    best = nearest_count(params.alltoall_gpus, gpus)
    if best is None:
        return moe.a2a_latency_s, moe.a2a_bw_efficiency
    return params.alltoall_latencies_s[best], params.alltoall_efficiencies[best]


def nearest_count(counts: tuple[int, ...], gpus: int) -> int | None:
    """Index of the GPU count nearest ``gpus`` in doublings (the first on a tie; None: none)."""
    best: int | None = None
    for i, count in enumerate(counts):
        if best is None or abs(math.log2(count / gpus)) < abs(math.log2(counts[best] / gpus)):
            best = i
    return best


def fold_coefficients(deployment: Deployment, params: RooflineParams) -> KernelCoef:
    """Attention, communication and CPU constants of ``deployment``, folded once."""
    dep, p = deployment, params
    model, acc = dep.model, dep.accelerator
    attn_peak = acc.peak_tflops("bf16") * 1e12 * p.attn_mfu_efficiency * p.sustained_compute_ratio
    attn_hbm = acc.hbm_bandwidth_gbps * 1e9 * p.attn_bw_efficiency
    q_heads = max(1, model.num_heads // dep.tp)
    kv_heads = max(1, math.ceil(model.num_kv_heads / dep.tp))
    kv_bytes = model.kv_bytes_per_token(dep.kv_precision) * kv_share(dep) / model.num_layers
    link = acc.interconnect_gbps_per_direction * 1e9 * p.interconnect_efficiency
    allreduce_s, allreduce_eff = allreduce_terms(p, dep.tp)
    ring_link = acc.interconnect_gbps_per_direction * 1e9 * allreduce_eff
    message = model.hidden_size * p.activation_bytes  # bytes per token
    tp_on = dep.tp > 1
    pp_on = dep.pp > 1
    ring = 2.0 * (dep.tp - 1) / dep.tp
    return KernelCoef(
        layers=model.num_layers / dep.pp,
        pp=dep.pp,
        pp_microbatches=p.pp_microbatches,
        cpu_s=p.overhead_s,
        cpu_seq_s=p.overhead_per_seq_s,
        pair_s=attention_pair_flops(p, q_heads, kv_heads, model.head_size) / attn_peak,
        diag=p.attn_diag_factor,
        query_pairs=p.attn_query_pairs,
        seq_tokens=p.attn_decode_seq_tokens,
        kv_token_s=kv_bytes / attn_hbm,
        attn_kernel_s=p.attn_kernel_s,
        decode_kernel_s=p.attn_kernel_s
        if p.attn_decode_kernel_s is None
        else p.attn_decode_kernel_s,
        decode_grouped_s=grouped_decode_s(dep, p),
        comm_fixed_s=2.0 * allreduce_s if tp_on else 0.0,
        comm_eager_s=2.0 * p.allreduce_eager_s if tp_on else 0.0,
        comm_floor_s=2.0 * p.allreduce_eager_floor_s if tp_on else 0.0,
        graph_tokens=p.cuda_graph_max_tokens,
        comm_token_s=2.0 * ring * message / ring_link if tp_on else 0.0,
        p2p_fixed_s=p.p2p_latency_s if pp_on else 0.0,
        p2p_token_s=message / link if pp_on else 0.0,
        prefill_grid=prefill_attention_grid(p, model),
        q_heads=q_heads,
        kv_group=kv_group(q_heads, kv_heads),
        comm_grid=allreduce_grid(p) if tp_on else None,
        comm_bytes=message,
        comm_gpus=float(dep.tp),
    )


def allreduce_grid(params: RooflineParams) -> ShapeGrid | None:
    """The measured all-reduce's factor by message size the step takes: the fit's, unless
    ``shape_corrections`` is off."""
    return params.allreduce_grid if params.shape_corrections else None


def prefill_attention_grid(params: RooflineParams, model: ModelArch) -> ShapeGrid | None:
    """The measured prefill attention's factor by shape a model's full-attention layers take:
    the fit's, unless ``shape_corrections`` is off or the layers are MLA (other kernels)."""
    if not params.shape_corrections or model.is_mla:
        return None
    return params.prefill_attention_grid


class RooflineKernels:
    """The per-kernel terms of one GPU: each kernel's time for one layer (or the head).

    Linear work (attention projections, FFN, elementwise kernels), attention (prefill,
    decode) and the LM head, each a roofline of its own; :class:`Roofline` composes
    them into an iteration (layers, pipeline stages, communication, overhead). A
    different FFN (e.g. a mixture of experts) replaces :meth:`ffn_s` only.
    """

    def __init__(self, deployment: Deployment, params: RooflineParams) -> None:
        self.deployment = deployment
        self.params = params
        model, tp = deployment.model, deployment.tp
        self.gemms = layer_gemms(model, tp)
        self.head = Gemm(model.hidden_size, max(1, model.vocab_size // tp))
        self.coef = fold_coefficients(deployment, params)
        acc, p = deployment.accelerator, params
        compute_precision = acc.compute_precision(deployment.precision)
        mfu = gemm_mfu(p, compute_precision)
        self._quant = quantisation_terms(p, compute_precision)
        self._peak = acc.peak_tflops(deployment.precision) * 1e12 * mfu * p.sustained_compute_ratio
        self._hbm = acc.hbm_bandwidth_gbps * 1e9 * p.bw_efficiency
        self._weight_bytes = PRECISION_BYTES[deployment.precision]
        self._grid = gemm_grid(p, compute_precision, self._weight_bytes)
        ew_hbm = acc.hbm_bandwidth_gbps * 1e9 * p.elementwise_bw_efficiency
        self._ew_token_s = elementwise_elements(model, tp) * p.activation_bytes / ew_hbm
        self.linear_memo: dict[int, float] = {}
        self.head_memo: dict[int, float] = {}
        self.comm_memo: dict[int, float] = {}

    def gridded_comm_layer_s(self, tokens: int) -> float:
        """One layer's all-reduces in an iteration of ``tokens`` tokens with the all-reduce's
        factor by message size (:func:`gridded_comm_s`), kept per token count: the factor's
        look-up would otherwise cost the hot path more than the rest of the layer."""
        cached = self.comm_memo.get(tokens)
        if cached is None:
            cached = gridded_comm_s(self.coef, tokens, tokens > self.coef.graph_tokens)
            self.comm_memo[tokens] = cached
        return cached

    def gemm_s(self, gemm: Gemm, tokens: int) -> float:
        """One GEMM over ``tokens`` tokens (:func:`sincere.perf.gemm.gemm_s`)."""
        rates = (self._peak, self._hbm)
        return gemm_s(
            self.params, gemm.k, gemm.n, self._weight_bytes, tokens, rates, self._quant, self._grid
        )

    def fixed_and_elementwise_s(self, tokens: int) -> float:
        """A layer's fixed kernel cost plus its elementwise kernels over ``tokens``."""
        return self.params.layer_overhead_s + self._ew_token_s * tokens

    def projections_s(self, tokens: int) -> tuple[float, float]:
        """The attention block's GEMMs over ``tokens``: fused QKV, then O."""
        qkv, out = self.gemms[0], self.gemms[1]
        return self.gemm_s(qkv, tokens), self.gemm_s(out, tokens)

    def ffn_s(self, tokens: int) -> tuple[float, ...]:
        """The FFN's kernels over ``tokens``, in order: fused gate/up, then down."""
        up, down = self.gemms[2], self.gemms[3]
        return self.gemm_s(up, tokens), self.gemm_s(down, tokens)

    def linear_layer_s(self, tokens: int) -> Seconds:
        """One layer's linear work over ``tokens`` tokens on one GPU (memoised).

        Summed kernel by kernel in a fixed order (fixed and elementwise, QKV, O, then
        the FFN's kernels), so a result does not depend on how the terms are grouped.
        """
        cached = self.linear_memo.get(tokens)
        if cached is not None:
            return cached
        total = self.fixed_and_elementwise_s(tokens)
        for term in self.projections_s(tokens):
            total += term
        for term in self.ffn_s(tokens):
            total += term
        self.linear_memo[tokens] = total
        return total

    def lm_head_s(self, num_seqs: int) -> Seconds:
        """The LM head for ``num_seqs`` sampled positions on one GPU (memoised)."""
        if num_seqs <= 0:
            return 0.0
        cached = self.head_memo.get(num_seqs)
        if cached is not None:
            return cached
        value = self.gemm_s(self.head, num_seqs)
        self.head_memo[num_seqs] = value
        return value

    def prefill_attn_s(
        self, share: float, num_seqs: int, tokens: int, ctx_tokens: int, pairs: float
    ) -> float:
        """Prefill attention of one layer for ``share`` of the chunks (one kernel)."""
        c = self.coef
        ctx_pairs = tokens * ctx_tokens / num_seqs  # exact for one chunk
        if ctx_pairs > pairs:
            ctx_pairs = pairs
        compute = (
            share * c.pair_s * (ctx_pairs + c.diag * (pairs - ctx_pairs) + c.query_pairs * tokens)
        )
        memory = share * c.kv_token_s * (tokens + ctx_tokens)
        out = c.attn_kernel_s + (compute if compute > memory else memory)
        if c.prefill_grid is not None:
            out *= prefill_factor(
                c.prefill_grid, c.q_heads, share * tokens, share * num_seqs, c.kv_group
            )
        return out

    def decode_attn_s(self, share: float, num_seqs: int, ctx_tokens: int) -> float:
        """Decode attention of one layer for ``share`` of the sequences (one kernel)."""
        c = self.coef
        compute = share * c.pair_s * ctx_tokens
        memory = share * c.kv_token_s * (ctx_tokens + c.seq_tokens * num_seqs)
        kernel = c.decode_kernel_s + (c.decode_grouped_s if grouped_call(share, num_seqs) else 0.0)
        return kernel + (compute if compute > memory else memory)


def grouped_call(share: float, num_seqs: int) -> bool:
    """Whether a decode-attention call over ``share`` of ``num_seqs`` sequences (a
    micro-batch's) holds more than one sequence, so pays ``attn_decode_grouped_s``: the
    same test for one iteration and for the closed-form sum of many (a ``share`` of 1/m
    and more sequences than micro-batches gives at least 1 + 1/m)."""
    return share * num_seqs > 1.000001


def comm_layer_s(coef: KernelCoef, tokens: int, step_tokens: int) -> float:
    """One layer's all-reduces over ``tokens``; eager when the step's tokens exceed the graphs."""
    return with_comm_s(coef, 0.0, tokens, step_tokens)


def with_comm_s(coef: KernelCoef, base_s: float, tokens: int, step_tokens: int) -> float:
    """``base_s`` plus one layer's all-reduces over ``tokens``. Outside a CUDA graph (the
    step's tokens above it) they take at least ``allreduce_eager_floor_s`` each -- the
    CPU's launch hides a transfer below it -- plus ``allreduce_eager_s``. Summed in the
    order the terms always were, so a model without a floor gives the same floats. With the
    all-reduce's factor by message size (``allreduce_grid``) each call's time takes it."""
    if coef.comm_grid is not None:
        return base_s + gridded_comm_s(coef, tokens, step_tokens > coef.graph_tokens)
    value = base_s + coef.comm_fixed_s + coef.comm_token_s * tokens
    if step_tokens <= coef.graph_tokens:
        return value
    if coef.comm_floor_s <= 0.0:
        return value + coef.comm_eager_s
    graph = coef.comm_fixed_s + coef.comm_token_s * tokens
    return base_s + (graph if graph > coef.comm_floor_s else coef.comm_floor_s) + coef.comm_eager_s


def gridded_comm_s(coef: KernelCoef, tokens: int, eager: bool) -> float:
    """One layer's all-reduces over ``tokens`` (:func:`with_comm_s`'s form) times the factor
    the all-reduce's grid gives a call of that size, in or outside a CUDA graph."""
    graph = coef.comm_fixed_s + coef.comm_token_s * tokens
    if eager:
        graph = (graph if graph > coef.comm_floor_s else coef.comm_floor_s) + coef.comm_eager_s
    nbytes = coef.comm_bytes * tokens
    form = (coef.comm_fixed_s, coef.comm_token_s / coef.comm_bytes)
    return graph * allreduce_factor(coef.comm_grid, nbytes, coef.comm_gpus, eager, form)


def needs_arch_step(deployment: Deployment) -> bool:
    """The model has experts, latent attention, sliding windows or linear-attention layers
    (see :mod:`.arch_step`)."""
    model = deployment.model
    return model.uses_layer_groups or model.num_sliding_layers > 0 or model.num_linear_layers > 0


class Roofline(StepTimeBase):
    """Roofline step time of a :class:`Deployment`: the composition of its kernels.

    The per-kernel terms are :class:`RooflineKernels`'; this class sums them over the
    layers, pipeline stages and the batch, and adds communication and overhead (see
    the module docstring). ``params=None`` takes the accelerator's default constants
    (:func:`sincere.perf.calibration.default_roofline_params`).
    """

    def __init__(self, deployment: Deployment, params: RooflineParams | None = None) -> None:
        self.deployment = deployment
        if params is None:
            from sincere.perf.calibration import default_roofline_params

            params = default_roofline_params(deployment.accelerator)
        self.params = params
        for name, precision in (("weight", deployment.precision), ("KV", deployment.kv_precision)):
            if precision not in PRECISION_BYTES:
                raise ConfigError(
                    f"unknown {name} precision", value=precision, allowed=PRECISION_BYTES
                )
        deployment.accelerator.compute_precision(deployment.precision)
        super().__init__(self._load_time(), SwapTime(self.params.unload_s))
        # Experts, latent attention, windows or linear attention: ArchStep's kernels (same
        # constants).
        self._arch: ArchStep | None = None
        if needs_arch_step(deployment):
            self._arch = ArchStep(deployment, params)
        self.kernels = RooflineKernels(deployment, params)
        self._coef = self.kernels.coef
        self._linear_memo = self.kernels.linear_memo  # shared: the hot path reads them inline
        self._head_memo = self.kernels.head_memo
        self._comm_memo = self.kernels.comm_memo

    # --- per-GPU figures -------------------------------------------------------------
    @property
    def kv_share(self) -> float:
        """Share of one token's KV bytes (all layers) one TP rank stores."""
        return kv_share(self.deployment)

    def _load_time(self) -> SwapTime:
        p, acc = self.params, self.deployment.accelerator
        rate = acc.host_link_gbps * p.load_efficiency
        if p.disk_read_gbps is not None:
            rate = min(rate, p.disk_read_gbps)
        return SwapTime(self.deployment.weight_bytes_per_gpu / (rate * 1e9) + p.load_overhead_s)

    def linear_layer_s(self, tokens: int) -> Seconds:
        """One layer's linear work over ``tokens`` tokens on one GPU (memoised)."""
        return self.kernels.linear_layer_s(tokens)

    def lm_head_s(self, num_seqs: int) -> Seconds:
        """The LM head for ``num_seqs`` sampled positions on one GPU (memoised)."""
        return self.kernels.lm_head_s(num_seqs)

    # --- the iteration ---------------------------------------------------------------
    def iteration_s_fast(
        self,
        num_prefill_seqs: int,
        prefill_tokens: int,
        prefill_ctx_tokens: int,
        prefill_attn_pairs: float,
        num_decode_seqs: int,
        decode_ctx_tokens: int,
    ) -> Seconds:
        """:meth:`iteration_s` of the batch with these fields, without building it.

        The engines' hot path: without PP the kernels are summed inline (the same
        formulas as :meth:`RooflineKernels.prefill_attn_s` / ``decode_attn_s``, which
        :meth:`parts` uses; the tests hold the two equal).
        """
        c = self._coef
        if self._arch is not None or c.pp != 1:
            batch = Batch(
                num_prefill_seqs,
                prefill_tokens,
                prefill_ctx_tokens,
                prefill_attn_pairs,
                num_decode_seqs,
                decode_ctx_tokens,
            )
            if self._arch is not None:  # experts, MLA, windows, linear attention: own step
                return self._arch.iteration_s(batch)
            return self._pipelined_s(batch)
        tokens = prefill_tokens + num_decode_seqs
        if tokens == 0:
            return 0.0
        seqs = num_prefill_seqs + num_decode_seqs
        linear = self._linear_memo.get(tokens)
        if linear is None:
            linear = self.linear_layer_s(tokens)
        head = self._head_memo.get(seqs)
        if head is None:
            head = self.lm_head_s(seqs)
        if c.comm_grid is not None:
            comm = self._comm_memo.get(tokens)
            if comm is None:
                comm = self.kernels.gridded_comm_layer_s(tokens)
            layer = linear + comm
        elif tokens > c.graph_tokens:
            layer = with_comm_s(c, linear, tokens, tokens)
        else:
            layer = linear + c.comm_fixed_s + c.comm_token_s * tokens
        if num_prefill_seqs > 0:
            ctx_pairs = prefill_tokens * prefill_ctx_tokens / num_prefill_seqs
            if ctx_pairs > prefill_attn_pairs:
                ctx_pairs = prefill_attn_pairs
            compute = c.pair_s * (
                ctx_pairs
                + c.diag * (prefill_attn_pairs - ctx_pairs)
                + c.query_pairs * prefill_tokens
            )
            memory = c.kv_token_s * (prefill_tokens + prefill_ctx_tokens)
            attn = c.attn_kernel_s + (compute if compute > memory else memory)
            if c.prefill_grid is not None:
                attn *= prefill_factor(
                    c.prefill_grid, c.q_heads, prefill_tokens, num_prefill_seqs, c.kv_group
                )
            layer += attn
        if num_decode_seqs > 0:
            compute = c.pair_s * decode_ctx_tokens
            memory = c.kv_token_s * (decode_ctx_tokens + c.seq_tokens * num_decode_seqs)
            layer += c.decode_kernel_s + (compute if compute > memory else memory)
            if num_decode_seqs >= 2:
                layer += c.decode_grouped_s
        return c.cpu_s + c.cpu_seq_s * seqs + c.layers * layer + head

    def _pipelined_s(self, batch: Batch) -> Seconds:
        """The iteration under PP: ``(m + pp - 1)`` stage times of one micro-batch."""
        c = self._coef
        tokens, seqs = batch.num_tokens, batch.num_seqs
        if tokens == 0:
            return 0.0
        num_mb = max(1, min(c.pp_microbatches, seqs))
        share = 1.0 / num_mb
        mb_tokens = math.ceil(tokens * share)
        attn = self._attention_s(share, batch)
        layer = with_comm_s(c, self.linear_layer_s(mb_tokens) + attn, mb_tokens, tokens)
        stage = c.layers * layer + self.lm_head_s(math.ceil(seqs * share))
        p2p = c.p2p_fixed_s + c.p2p_token_s * mb_tokens
        return c.cpu_s + c.cpu_seq_s * seqs + (num_mb + c.pp - 1.0) * (stage + p2p)

    def _attention_s(self, share: float, batch: Batch) -> float:
        """One layer's attention kernels over a ``share`` of ``batch``'s sequences."""
        attn = 0.0
        if batch.num_prefill_seqs > 0:
            attn += self.kernels.prefill_attn_s(
                share,
                batch.num_prefill_seqs,
                batch.prefill_tokens,
                batch.prefill_ctx_tokens,
                batch.prefill_attn_pairs,
            )
        if batch.num_decode_seqs > 0:
            attn += self.kernels.decode_attn_s(
                share, batch.num_decode_seqs, batch.decode_ctx_tokens
            )
        return attn

    def iteration_s(self, batch: Batch) -> Seconds:
        """Duration of one iteration: see the module docstring."""
        return self.iteration_s_fast(
            batch.num_prefill_seqs,
            batch.prefill_tokens,
            batch.prefill_ctx_tokens,
            batch.prefill_attn_pairs,
            batch.num_decode_seqs,
            batch.decode_ctx_tokens,
        )

    def decode_steps_s(self, num_seqs: int, ctx_tokens: int, num_steps: int) -> Seconds:
        """Exact sum of decode iterations: only decode attention changes, split at its ridge."""
        if num_steps <= 0 or num_seqs <= 0:
            return 0.0
        if self._arch is not None:  # experts, MLA, windows, linear attention: own closed form
            return self._arch.decode_steps_s(num_seqs, ctx_tokens, num_steps)
        c = self._coef
        num_mb = 1 if c.pp == 1 else max(1, min(c.pp_microbatches, num_seqs))
        share = 1.0 / num_mb
        mb = num_seqs if num_mb == 1 else math.ceil(num_seqs * share)
        grouped = c.decode_grouped_s if grouped_call(share, num_seqs) else 0.0
        kernel = c.decode_kernel_s + grouped
        if c.comm_grid is not None and mb == num_seqs:  # the factor's look-up kept
            fixed = self.linear_layer_s(mb) + kernel
            fixed += self.kernels.gridded_comm_layer_s(mb)
        else:
            fixed = with_comm_s(c, self.linear_layer_s(mb) + kernel, mb, num_seqs)
        stage = c.layers * fixed + self.lm_head_s(mb)
        scale = 1.0 if num_mb == 1 and c.pp == 1 else num_mb + c.pp - 1.0
        if scale != 1.0:
            stage += c.p2p_fixed_s + c.p2p_token_s * mb
        per_step = c.cpu_s + c.cpu_seq_s * num_seqs + scale * stage
        w = scale * c.layers * share
        attention = sum_max_affine(
            w * c.pair_s * ctx_tokens,
            w * c.pair_s * num_seqs,
            w * c.kv_token_s * (ctx_tokens + c.seq_tokens * num_seqs),
            w * c.kv_token_s * num_seqs,
            num_steps,
        )
        return num_steps * per_step + attention

    def cpu_step_s(self, num_seqs: int) -> Seconds:
        """The CPU part of an iteration of ``num_seqs`` sequences (in :meth:`iteration_s`)."""
        c = self._coef
        return c.cpu_s + c.cpu_seq_s * num_seqs

    # --- breakdown and utilisation ---------------------------------------------------
    def parts(self, batch: Batch) -> StepParts:
        """The iteration split into its kernels' shares (they sum to :meth:`iteration_s`)."""
        if self._arch is not None:
            return self._arch.parts(batch)
        c = self._coef
        tokens, seqs = batch.num_tokens, batch.num_seqs
        if tokens == 0:
            return StepParts()
        num_mb = 1 if c.pp == 1 else max(1, min(c.pp_microbatches, seqs))
        share = 1.0 / num_mb
        mb_tokens = tokens if num_mb == 1 else math.ceil(tokens * share)
        scale = 1.0 if num_mb == 1 and c.pp == 1 else num_mb + c.pp - 1.0
        attn = self._attention_s(share, batch)
        comm = c.layers * comm_layer_s(c, mb_tokens, tokens)
        if scale != 1.0:
            comm += c.p2p_fixed_s + c.p2p_token_s * mb_tokens
        return StepParts(
            linear_s=scale * c.layers * self.linear_layer_s(mb_tokens),
            attention_s=scale * c.layers * attn,
            communication_s=scale * comm,
            lm_head_s=scale * self.lm_head_s(seqs if num_mb == 1 else math.ceil(seqs * share)),
            overhead_s=c.cpu_s + c.cpu_seq_s * seqs,
        )

    def utilization(self, batch: Batch) -> tuple[float, float]:
        """Model-FLOPs and memory-bandwidth utilisation (0..1) of one iteration, per GPU.

        Useful FLOPs: the GEMMs (untiled) and the causal attention pairs; bytes: the
        weights, the activations and the KV cache read and written; over the
        iteration's time at the datasheet peaks.
        """
        duration = self.iteration_s(batch)
        if duration <= 0.0:
            return 0.0, 0.0
        if self._arch is not None:
            return arch_utilization(self._arch, batch, duration)
        dep, p = self.deployment, self.params
        acc, model = dep.accelerator, dep.model
        layers = model.num_layers / dep.pp
        tokens = batch.num_tokens
        pairs = batch.prefill_attn_pairs + batch.decode_ctx_tokens
        gemm_flops = sum(2.0 * g.k * g.n for g in self.kernels.gemms) * tokens
        q_heads = max(1, model.num_heads // dep.tp)
        flops = layers * (gemm_flops + 4.0 * q_heads * model.head_size * pairs)
        head = self.kernels.head
        flops += 2.0 * head.k * head.n * batch.num_seqs
        weights = sum(g.k * g.n for g in self.kernels.gemms) * layers + head.k * head.n
        kv_tokens = batch.decode_ctx_tokens + batch.prefill_ctx_tokens + tokens
        kv = kv_tokens * model.kv_bytes_per_token(dep.kv_precision) * self.kv_share / dep.pp
        moved = weights * PRECISION_BYTES[dep.precision] + kv
        moved += layers * elementwise_elements(model, dep.tp) * tokens * p.activation_bytes
        mfu = flops / (duration * acc.peak_tflops(dep.precision) * 1e12)
        mbu = moved / (duration * acc.hbm_bandwidth_gbps * 1e9)
        return min(mfu, 1.0), min(mbu, 1.0)
