"""Roofline step time of mixture-of-experts, MLA, sliding-window and hybrid linear-attention
models.

The roofline (:mod:`sincere.perf.roofline`) hands a model with experts, latent
attention or sliding-window layers to :class:`ArchStep`, which prices one iteration
with the same per-kernel rooflines and constants (:class:`~sincere.perf.roofline.
RooflineParams`) and these layer terms (formulas: :mod:`sincere.perf.moe`):

* **attention projections** (QKV and O, or MLA's compressions ``q_a``, ``q_b``,
  ``kv_a``, ``kv_b`` and O, query heads split over TP) and the **dense MLP** of the
  ``num_dense_layers`` leading layers: GEMMs as in the roofline, weights in the
  precision's bytes (bf16 under MXFP4, which only the experts use);
* the **router**: a ``hidden × experts`` GEMM on every GPU;
* **shared experts**: a dense MLP of ``shared · expert_intermediate`` split over TP;
* **routed experts**: each GPU holds ``1/ep`` of the experts, each split over
  ``tp · attention_dp / ep`` GPUs. At ``ep`` 1 every GPU reads the weights of the
  distinct experts the batch activates
  (:func:`~sincere.perf.moe.expected_distinct_experts`) and computes its ``T k`` routed
  tokens; at ``ep`` > 1 each GPU reads its ``1/ep`` share of the active experts and
  computes ``T k / ep`` routed tokens (the mean rank: ``MoEParams.busiest_rank`` prices
  the busiest rank instead, above the mean by the routing's spread over the ranks,
  :func:`~sincere.perf.moe.busiest_rank_load`; the measured EP points do not favour it),
  times ``ep_imbalance`` (a further factor, 1 unless set); the
  tokens padded per expert to ``MoEParams.expert_tile`` rows, the
  permutation's traffic with the tokens'; compute and memory combined by the roofline's
  p-norm: the kernel fit's own formula (:func:`~sincere.perf.moe.expert_work`,
  :func:`~sincere.perf.moe.fused_moe_s`);
* **attention data parallelism** (``attention_dp = D``): the deployment is one of ``D``
  ranks, each running attention over its own batch on its own TP group, that share one
  MoE group of ``D · tp`` GPUs. Under symmetric load (every rank carries a batch like
  this one) the experts see ``T = D ×`` this batch's tokens; the router, the shared
  experts and attention see this batch alone;
* **all-to-all** at ``ep > 1`` with attention DP: two exchanges per MoE layer (dispatch,
  combine), each GPU sending ``T/ep`` tokens' ``k`` copies bound to other ranks (with
  ``busiest_rank``, the busiest rank's routed copies); priced by the
  accelerator's measured NCCL all-to-all where its kernel fit has one
  (``alltoall_*``: latency and link share at the nearest GPU count, plus the latency
  step past the protocol knee), else at ``a2a_bw_efficiency`` plus ``a2a_latency_s``.
  Without attention DP (``ep`` GPUs of one TP group) there is none: every GPU of the group
  already holds every token after attention, runs its own experts on the ones routed to
  them and the layer's TP all-reduce sums the experts' outputs, as vLLM (all-to-all
  kernels only with data parallelism), SGLang without DeepEP and TensorRT-LLM without
  attention DP run expert parallelism;
* **the group's all-reduces** under attention DP at ``ep = 1`` (every expert split by TP
  over the whole group, as SGLang runs DP attention without EP): the ranks' tokens are
  gathered onto every GPU of the group before the experts and their outputs reduced over
  it after, each an all-reduce of the group's ``T`` tokens' hidden states over the
  ``D · tp`` GPUs (SGLang gathers by an all-reduce of a buffer holding every rank's
  tokens), priced as the TP all-reduce is, at the group's GPU count. The reduction takes
  the place of the MLP's all-reduce within the rank's TP group in the expert layers;
  reported in the ``all_to_all`` part (the experts' exchange);
* **attention**: as the roofline (compute or KV bytes, whichever is slower, plus the
  kernel cost), with MLA's absorbed form in decode and the expanded one in prefill,
  MLA's latent read whole by every TP rank, and sliding-window layers reading at
  most the window;
* **linear attention** (Gated DeltaNet layers, as Qwen3-Next / Qwen3.5 interleave them
  with full attention): their own projections in place of the attention ones, and the
  convolution and delta-rule kernels of :mod:`sincere.perf.linear_attention` in place of
  attention (a fixed state per sequence: the decode cost does not grow with the context);
* TP all-reduces, the LM head (weights in at least bf16), the CPU overhead and
  pipeline stages exactly as the roofline.

Weight precision: fp8 computes at the accelerator's fp8 rate where it has one and at
bf16 after dequantisation otherwise, MXFP4 always at bf16, NVFP4 at the fp4 rate (every
matmul of the layers; refused where the accelerator has no fp4 tensor cores)
(:meth:`~sincere.catalog.specs.Accelerator.compute_precision`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sincere.core.errors import ConfigError
from sincere.perf.base import Batch, Deployment, StepParts
from sincere.perf.gemm import gemm_grid, gemm_s
from sincere.perf.linear_attention import GdnCost, onchip_bytes
from sincere.perf.measured_moe import deployment_curve
from sincere.perf.moe import (
    all_to_all_bytes,
    all_to_all_s,
    busiest_rank_load,
    expected_distinct_experts,
    expert_work,
    foreign_pair_bytes,
    fused_moe_s,
    mla_decode_flops_per_pair,
    mla_prefill_flops_per_pair,
    narrow_expert_scale,
    unaligned_factor,
    windowed_context,
    windowed_pairs,
)
from sincere.perf.series import sum_max_affine
from sincere.perf.shape_grid import allreduce_factor, kv_group, prefill_factor

if TYPE_CHECKING:
    from sincere.perf.roofline import RooflineParams
    from sincere.perf.shape_grid import ShapeGrid


@dataclass(frozen=True, slots=True)
class MoEParams:
    """Constants of the expert layers. Units in the names.

    ``a2a_bw_efficiency`` 0.75: DeepEP's published intranode EP8 dispatch / combine on
    H800 reach 153 / 158 GB/s of NVLink's 200 GB/s one way (github.com/deepseek-ai/DeepEP,
    README, "Normal kernels with NVLink and RDMA forwarding"). ``a2a_latency_s`` and
    ``expert_tile`` are assumptions (a small NCCL collective's latency; vLLM's fused
    MoE ``BLOCK_SIZE_M`` at small batches).
    """

    routing_skew: float = 0.0  # Zipf exponent of expert popularity (0: uniform routing)
    expert_tile: int = 16  # rows each active expert's tokens are padded to
    ep_imbalance: float = 1.0  # a further factor on the EP GPU's routed tokens (>= 1)
    # price the busiest expert-parallel rank of a drawn routing (its expected distinct
    # experts and routed tokens, :func:`~sincere.perf.moe.busiest_rank_load`) rather than
    # the mean rank's share. Off by default: on InferenceX's 191 colocated EP points it
    # takes the mean TPOT's median error from 12.6 to 12.9 % (vLLM's Kimi-K2.5 and
    # MiniMax-M2.5 EP points, already slow, get slower; SGLang's and TensorRT-LLM's,
    # fast, barely move: benchmarks/README.md, "The busiest expert-parallel rank")
    busiest_rank: bool = False
    a2a_bw_efficiency: float = 0.75  # share of the one-way link an all-to-all reaches
    a2a_latency_s: float = 25e-6  # fixed cost of one all-to-all exchange

    def __post_init__(self) -> None:
        if self.routing_skew < 0.0:
            raise ConfigError("MoEParams.routing_skew must be >= 0", value=self.routing_skew)
        if self.expert_tile < 1:
            raise ConfigError("MoEParams.expert_tile must be >= 1", value=self.expert_tile)
        if self.ep_imbalance < 1.0:
            raise ConfigError("MoEParams.ep_imbalance must be >= 1", value=self.ep_imbalance)
        if not 0.0 < self.a2a_bw_efficiency <= 1.0:
            raise ConfigError(
                "MoEParams.a2a_bw_efficiency must be in (0, 1]", value=self.a2a_bw_efficiency
            )
        if self.a2a_latency_s < 0.0:
            raise ConfigError("MoEParams.a2a_latency_s must be >= 0 s", value=self.a2a_latency_s)


@dataclass(frozen=True, slots=True)
class _Mat:
    """One weight matrix of a layer on one GPU: ``k × n`` at ``weight_bytes`` a weight."""

    k: int
    n: int
    weight_bytes: float


def _full_attention_factor(
    prefill: tuple[ShapeGrid | None, int, float], share: float, batch: Batch, window: int
) -> float:
    """A full-attention layer's prefill factor by shape over ``share`` of ``batch``
    (:func:`~sincere.perf.shape_grid.prefill_factor` with its grid, query heads and query
    heads per KV head; a sliding-window layer runs other kernels: 1)."""
    if window:
        return 1.0
    grid, heads, group = prefill
    tokens, seqs = share * batch.prefill_tokens, share * batch.num_prefill_seqs
    return prefill_factor(grid, heads, tokens, seqs, group)


def _prefill_shape(
    params: RooflineParams, deployment: Deployment
) -> tuple[ShapeGrid | None, int, float]:
    """What :func:`_full_attention_factor` reads of a deployment: prefill attention's grid,
    the GPU's query heads and its query heads per KV head."""
    from sincere.perf.roofline import prefill_attention_grid

    model, tp = deployment.model, deployment.tp
    heads = max(1, model.num_heads // tp)
    kv_heads = max(1, math.ceil(model.num_kv_heads / tp))
    return prefill_attention_grid(params, model), heads, kv_group(heads, kv_heads)


def _mla_decode_terms(
    deployment: Deployment, params: RooflineParams
) -> tuple[float, float, float] | None:
    """MLA decode's (s per pair, s per cached token, lone sequences) from the constants fitted
    to the measured MLA modules (``mla_decode_*``, at the bf16 peak kept under load); None
    for other attention or where they were not fitted (decode attention's then)."""
    model, p = deployment.model, params
    if not model.is_mla or p.mla_decode_mfu_efficiency is None:
        return None
    bw = p.mla_decode_bw_efficiency
    if _bytes(deployment.kv_precision) < 2.0 and p.mla_decode_fp8_bw_efficiency is not None:
        bw = p.mla_decode_fp8_bw_efficiency
    if bw is None:
        return None
    rope, rank = model.qk_rope_head_dim, model.kv_lora_rank
    peak = deployment.accelerator.peak_tflops("bf16") * 1e12 * p.sustained_compute_ratio
    pair = mla_decode_flops_per_pair(max(1, model.num_heads // deployment.tp), rank, rope)
    hbm = deployment.accelerator.hbm_bandwidth_gbps * 1e9 * bw
    token = (rank + rope) * _bytes(deployment.kv_precision) / hbm
    return pair / (peak * p.mla_decode_mfu_efficiency), token, p.mla_decode_lone_seqs


def _decode_attention(
    p: RooflineParams,
    attn: tuple[float, float, float],
    mla: tuple[float, float, float] | None,
    share: float,
    num_seqs: int,
    grouped_s: float = 0.0,
) -> DecodeAttention:
    """One layer's decode attention for ``share`` of a batch of ``num_seqs`` (:class:`ArchStep`'s
    constants ``attn``, or MLA's fitted ones ``mla``: a call of ``n`` sequences reads their
    context as if ``lone`` more of the mean length came with it); a call of more than one
    sequence pays ``grouped_s`` more (``attn_decode_grouped_s`` where a GPU holds two or more
    KV heads, :func:`~sincere.perf.roofline.grouped_call`)."""
    kernel = p.attn_kernel_s if p.attn_decode_kernel_s is None else p.attn_decode_kernel_s
    if grouped_s and share * num_seqs > 1.000001:  # roofline's grouped_call, inlined
        kernel += grouped_s
    if mla is None:
        _, dec_pair, token_s = attn
    else:
        dec_pair, token_s, lone = mla
        token_s *= 1.0 + lone / max(1.0, share * num_seqs)
    return DecodeAttention(
        kernel, share * dec_pair, share * token_s, p.attn_decode_seq_tokens * num_seqs
    )


def grouped_decode_s(dep: Deployment, p: RooflineParams) -> float:
    """``attn_decode_grouped_s`` where a decode call of several sequences pays it: two or
    more KV heads a GPU, not MLA's latent (:func:`_decode_attention`, and the dense
    roofline's :func:`~sincere.perf.roofline.fold_coefficients`)."""
    model = dep.model
    grouped = not model.is_mla and math.ceil(model.num_kv_heads / dep.tp) >= 2
    return p.attn_decode_grouped_s if grouped else 0.0


class ArchStep:
    """Iteration time of one deployment of an MoE / MLA / sliding-window model."""

    def __init__(
        self, deployment: Deployment, params: RooflineParams, moe: MoEParams | None = None
    ) -> None:
        self.deployment = deployment
        self.params = params
        self.moe = moe or MoEParams()
        dep, p = deployment, params
        model, acc = dep.model, dep.accelerator
        from sincere.perf.roofline import (
            allreduce_grid,
            allreduce_terms,
            alltoall_terms,
            expert_constants,
            expert_unaligned_factor,
            gemm_mfu,
            quantisation_terms,
        )

        self.compute_precision = acc.compute_precision(dep.precision)
        self._quant = quantisation_terms(p, self.compute_precision)
        sustained = p.sustained_compute_ratio  # power-limited clocks under load
        self._peak = acc.peak_tflops(dep.precision) * 1e12 * gemm_mfu(p, self.compute_precision)
        self._peak *= sustained
        self._hbm = acc.hbm_bandwidth_gbps * 1e9 * p.bw_efficiency
        if dep.precision == "mxfp4" and p.mxfp4_activations == "mxfp8" and not acc.fp4_tflops:
            raise ConfigError(
                f"mxfp4_activations: mxfp8 runs Blackwell's MXFP4 x MXFP8 expert kernel; "
                f"{acc.name} has no fp4 tensor cores",
                value=p.mxfp4_activations,
                allowed=["bf16"],
            )
        moe_mfu, moe_bw, self._moe_kernel_s, moe_rate, self._moe_expert_s, self._moe_offset = (
            expert_constants(p, dep.precision, self.compute_precision)
        )
        self._moe_unaligned = expert_unaligned_factor(p, dep.precision, self.compute_precision)
        moe_peak = acc.peak_tflops(moe_rate) * 1e12 * sustained
        self._moe_peak = moe_peak * (gemm_mfu(p, moe_rate) if moe_mfu is None else moe_mfu)
        self._moe_hbm = self._hbm if moe_bw is None else acc.hbm_bandwidth_gbps * 1e9 * moe_bw
        self.measured_experts = deployment_curve(deployment, params, self.compute_precision)
        self._allreduce_s, self._allreduce_eff = allreduce_terms(p, dep.tp)
        self._comm_grid = allreduce_grid(p)
        self._a2a_terms = alltoall_terms(p, self.moe, dep.ep)
        group = dep.ep == 1 and dep.attention_dp > 1  # experts split by TP over the group
        self._group_allreduce = allreduce_terms(p, dep.moe_group_gpus) if group else None
        self._ew_hbm = acc.hbm_bandwidth_gbps * 1e9 * p.elementwise_bw_efficiency
        self._attn_peak = acc.peak_tflops("bf16") * 1e12 * p.attn_mfu_efficiency * sustained
        self._attn_hbm = acc.hbm_bandwidth_gbps * 1e9 * p.attn_bw_efficiency
        self._link = acc.interconnect_gbps_per_direction * 1e9
        dense_bytes = model.dense_weight_bytes(dep.precision)
        self.dense_bytes = dense_bytes
        self.expert_bytes = _bytes(dep.precision)
        self._head = _Mat(model.hidden_size, max(1, model.vocab_size // dep.tp), dense_bytes)
        if model.uses_layer_groups:
            self._head = _Mat(self._head.k, self._head.n, max(dense_bytes, 2.0))
        self._attn_mats = _attention_mats(deployment, dense_bytes)
        self._dense_mlp = _mlp_mats(model.intermediate_size, deployment, dense_bytes)
        shared = model.num_shared_experts * model.expert_intermediate_size
        self._shared = _mlp_mats(shared, deployment, dense_bytes) if shared else ()
        self._layers = model.num_layers / dep.pp
        self._moe_frac = model.num_moe_layers / model.num_layers
        self._window_frac = model.num_sliding_layers / model.num_layers
        self._linear_frac = model.num_linear_layers / model.num_layers
        self._linear_mats = _linear_attention_mats(deployment, dense_bytes)
        self._gdn = GdnCost(deployment, params)
        self._memo: dict[int, tuple[float, float, float, float]] = {}
        self._attn = self._attention_consts()
        self._mla = _mla_decode_terms(deployment, params)
        self._grouped_s = grouped_decode_s(deployment, params)
        self._prefill = _prefill_shape(p, deployment)

    # --- GEMMs ---------------------------------------------------------------------------
    def _gemm_s(self, mat: _Mat, tokens: int) -> float:
        """One GEMM (:func:`sincere.perf.gemm.gemm_s`); fp8 or NVFP4 compute quantises the
        activations of a matrix stored below 16 bits."""
        quant = self._quant if mat.weight_bytes < 2.0 else None
        rates = (self._peak, self._hbm)
        grid = gemm_grid(self.params, self.compute_precision, mat.weight_bytes)
        return gemm_s(self.params, mat.k, mat.n, mat.weight_bytes, tokens, rates, quant, grid)

    def _routed_s(self, tokens: int) -> tuple[float, float]:
        """(router, routed experts with their permutation) of one MoE layer over ``tokens``;
        under attention DP the experts see every rank's like batch: ``attention_dp · tokens``."""
        dep, m, p = self.deployment, self.moe, self.params
        model, ep = dep.model, dep.ep
        h, k, e = model.hidden_size, model.experts_per_token, model.num_experts
        router = self._gemm_s(_Mat(h, e, 2.0), tokens)
        if self.measured_experts is not None:
            return router, self.measured_experts.seconds(tokens)
        tokens *= dep.attention_dp
        width = expert_width(dep)
        routing = (e, k, m.routing_skew, m.expert_tile)
        work = expert_work(tokens, h, width, routing, p.activation_bytes, model.gated_mlp, ep,
                           m.ep_imbalance, busiest=m.busiest_rank)  # fmt: skip
        one = np.array(work).reshape(5, 1)
        one[:2] *= narrow_expert_scale(width, self._moe_offset)
        experts = fused_moe_s(
            (one[0], one[1], one[2], one[3], one[4]),
            (self._moe_peak, self._moe_hbm),
            self.expert_bytes,
            self._moe_kernel_s,
            p.moe_tail_share,
            p.overlap_exponent,
            self._moe_expert_s,
        )
        experts_s = float(experts[0]) * unaligned_factor(width, self._moe_unaligned)
        return router, experts_s + foreign_pass_s(dep, p, tokens, width)

    def _all_to_all_s(self, tokens: int) -> float:
        dep, m = self.deployment, self.moe
        if dep.ep == 1:
            if self._group_allreduce is None:
                return 0.0
            terms = (self._group_allreduce, self._link, self._comm_grid)
            return group_exchange_s(dep, self.params, terms, tokens)
        if dep.attention_dp == 1:  # every GPU holds every token: the TP all-reduce combines
            return 0.0
        model = dep.model
        size = all_to_all_bytes(
            tokens * dep.attention_dp,
            model.experts_per_token,
            model.hidden_size,
            dep.ep,
            self.params.activation_bytes,
        )
        latency, efficiency = self._a2a_terms
        p = self.params
        latency += p.alltoall_protocol_s * size / (size + p.alltoall_knee_bytes)
        imbalance = m.ep_imbalance * _busiest_share(dep, m, tokens)
        return 2.0 * all_to_all_s(size, self._link * efficiency, latency, imbalance)

    def layer_linear(self, tokens: int) -> tuple[float, float, float, float]:
        """(linear, router, experts, all-to-all) of one average layer over ``tokens`` tokens."""
        cached = self._memo.get(tokens)
        if cached is not None:
            return cached
        linear = self.params.layer_overhead_s + elementwise_s(
            self.deployment, self.params, self._moe_frac, self._ew_hbm, tokens
        )
        if self._linear_frac > 0.0:  # Gated DeltaNet layers project in and out otherwise
            full = sum(self._gemm_s(mat, tokens) for mat in self._attn_mats)
            gdn = sum(self._gemm_s(mat, tokens) for mat in self._linear_mats)
            linear += full + self._linear_frac * (gdn - full)
        else:
            for mat in self._attn_mats:
                linear += self._gemm_s(mat, tokens)
        dense_frac = 1.0 - self._moe_frac
        if dense_frac > 0.0:
            linear += dense_frac * sum(self._gemm_s(mat, tokens) for mat in self._dense_mlp)
        router = experts = a2a = 0.0
        if self._moe_frac > 0.0:
            linear += self._moe_frac * sum(self._gemm_s(mat, tokens) for mat in self._shared)
            r, x = self._routed_s(tokens)
            router, experts = self._moe_frac * r, self._moe_frac * x
            a2a = self._moe_frac * self._all_to_all_s(tokens)
        value = (linear, router, experts, a2a)
        self._memo[tokens] = value
        return value

    def lm_head_s(self, num_seqs: int) -> float:
        """The LM head over ``num_seqs`` sampled positions."""
        return self._gemm_s(self._head, num_seqs) if num_seqs > 0 else 0.0

    # --- attention ---------------------------------------------------------------------
    def _attention_consts(self) -> tuple[float, float, float]:
        """(prefill s per pair, decode s per pair, s per cached token) of one layer."""
        dep = self.deployment
        model = dep.model
        q_heads = max(1, model.num_heads // dep.tp)
        kv_bytes = _bytes(dep.kv_precision)
        if model.is_mla:
            rope, r = model.qk_rope_head_dim, model.kv_lora_rank
            prefill = mla_prefill_flops_per_pair(q_heads, model.head_size, rope)
            decode = mla_decode_flops_per_pair(q_heads, r, rope)
            per_token = (r + rope) * kv_bytes
        else:
            from sincere.perf.roofline import attention_pair_flops

            kv_heads = max(1, math.ceil(model.num_kv_heads / dep.tp))
            prefill = decode = attention_pair_flops(self.params, q_heads, kv_heads, model.head_size)
            per_token = 2.0 * math.ceil(model.num_kv_heads / dep.tp) * model.head_size * kv_bytes
        return prefill / self._attn_peak, decode / self._attn_peak, per_token / self._attn_hbm

    def attention_s(self, batch: Batch, share: float) -> float:
        """One average layer's attention for ``share`` of the batch."""
        window = self.deployment.model.sliding_window
        full = self._attention_of(batch, share, 0)
        if self._window_frac == 0.0 and self._linear_frac == 0.0:
            return full
        total = (1.0 - self._window_frac - self._linear_frac) * full
        if self._window_frac:
            total += self._window_frac * self._attention_of(batch, share, window)
        if self._linear_frac:  # Gated DeltaNet (sincere.perf.linear_attention)
            total += self._linear_frac * self._gdn.iteration_s(
                share * batch.prefill_tokens,
                share * batch.num_prefill_seqs,
                share * batch.num_decode_seqs,
            )
        return total

    def _attention_of(self, batch: Batch, share: float, window: int) -> float:
        pre_pair, _, token_s = self._attn
        p, total = self.params, 0.0
        if batch.num_prefill_seqs > 0:
            pairs, ctx = batch.prefill_attn_pairs, float(batch.prefill_ctx_tokens)
            if window:
                pairs = windowed_pairs(pairs, batch.prefill_tokens, window)
                ctx = windowed_context(ctx, batch.num_prefill_seqs, window)
            ctx_pairs = min(batch.prefill_tokens * ctx / batch.num_prefill_seqs, pairs)
            query = p.attn_query_pairs * batch.prefill_tokens
            compute = (
                share * pre_pair * (ctx_pairs + p.attn_diag_factor * (pairs - ctx_pairs) + query)
            )
            memory = share * token_s * (batch.prefill_tokens + ctx)
            prefill = p.attn_kernel_s + max(compute, memory)
            total += prefill * _full_attention_factor(self._prefill, share, batch, window)
        if batch.num_decode_seqs > 0:
            ctx = float(batch.decode_ctx_tokens)
            if window:
                ctx = windowed_context(ctx, batch.num_decode_seqs, window)
            total += self._decode_attention(share, batch.num_decode_seqs).step_s(ctx)
        return total

    def _decode_attention(self, share: float, num_seqs: int) -> DecodeAttention:
        """One layer's decode attention for ``share`` of a batch of ``num_seqs``."""
        return _decode_attention(
            self.params, self._attn, self._mla, share, num_seqs, self._grouped_s
        )

    # --- the iteration -----------------------------------------------------------------
    def parts(self, batch: Batch) -> StepParts:
        """The iteration split into its parts, expert layers apart."""
        tokens, seqs = batch.num_tokens, batch.num_seqs
        if tokens == 0:
            return StepParts()
        dep, p = self.deployment, self.params
        pp = dep.pp
        num_mb = 1 if pp == 1 else max(1, min(p.pp_microbatches, seqs))
        share = 1.0 / num_mb
        mb_tokens = tokens if num_mb == 1 else math.ceil(tokens * share)
        mb_seqs = seqs if num_mb == 1 else math.ceil(seqs * share)
        scale = 1.0 if num_mb == 1 and pp == 1 else num_mb + pp - 1.0
        linear, router, experts, a2a = self.layer_linear(mb_tokens)
        message = dep.model.hidden_size * p.activation_bytes
        link = self._link * p.interconnect_efficiency
        comm = 0.0
        if dep.tp > 1:
            byte_s = 2.0 * (dep.tp - 1) / dep.tp / (self._link * self._allreduce_eff)  # ring
            one = allreduce_one_s(p, self._allreduce_s, byte_s * message * mb_tokens, tokens)
            eager = tokens > p.cuda_graph_max_tokens
            form = (self._allreduce_s, byte_s)
            one *= allreduce_factor(self._comm_grid, message * mb_tokens, dep.tp, eager, form)
            # experts split over the whole group: their reduction is the group's (all_to_all)
            per_layer = 2.0 - (self._moe_frac if self._group_allreduce is not None else 0.0)
            comm = self._layers * per_layer * one
        if pp > 1:
            comm += p.p2p_latency_s + message * mb_tokens / link
        layers = scale * self._layers
        return StepParts(
            linear_s=layers * linear,
            attention_s=layers * self.attention_s(batch, share),
            communication_s=scale * comm,
            lm_head_s=scale * self.lm_head_s(mb_seqs),
            overhead_s=p.overhead_s + p.overhead_per_seq_s * seqs,
            router_s=layers * router,
            experts_s=layers * experts,
            all_to_all_s=layers * a2a,
        )

    def iteration_s(self, batch: Batch) -> float:
        """Duration of one iteration."""
        return self.parts(batch).total_s

    def decode_steps_s(self, num_seqs: int, ctx_tokens: int, num_steps: int) -> float:
        """Exact sum of ``num_steps`` decode iterations, the context growing by ``num_seqs``
        each: all but attention is the same every step (the batch's tokens and sequences do
        not change); a layer's decode attention is its kernel plus the larger of two affine
        terms in the context, and a window layer's context stops growing at ``num_seqs x
        window``: each piece is summed in closed form (:func:`sum_max_affine`)."""
        if num_steps <= 0 or num_seqs <= 0:
            return 0.0
        n = num_seqs
        base = self.parts(Batch(num_decode_seqs=n, decode_ctx_tokens=0))
        fixed = base.total_s - base.attention_s
        dep = self.deployment
        num_mb = 1 if dep.pp == 1 else max(1, min(self.params.pp_microbatches, n))
        share = 1.0 / num_mb
        scale = 1.0 if num_mb == 1 and dep.pp == 1 else num_mb + dep.pp - 1.0
        terms = self._decode_attention(share, n)
        attention = terms.sum(ctx_tokens, n, num_steps, None)
        if self._window_frac or self._linear_frac:
            attention *= 1.0 - self._window_frac - self._linear_frac
        if self._window_frac:
            window = float(n) * dep.model.sliding_window
            attention += self._window_frac * terms.sum(ctx_tokens, n, num_steps, window)
        if self._linear_frac:  # a fixed state: the same every step
            attention += self._linear_frac * num_steps * self._gdn.decode_step_s(share * n)
        return num_steps * fixed + scale * self._layers * attention


def elementwise_s(
    dep: Deployment, params: RooflineParams, moe_frac: float, hbm: float, tokens: int
) -> float:
    """One average layer's norms, rotary, activation and adds over ``tokens`` on one GPU:
    their elements' bytes at ``hbm`` bytes/s (the MLP's width averaged over the MoE
    layers' ``moe_frac`` and the dense ones)."""
    model, tp = dep.model, dep.tp
    h = model.hidden_size
    q = max(1, model.num_heads // tp) * model.head_size
    kv = max(1, math.ceil(model.num_kv_heads / tp)) * model.head_size
    width = model.intermediate_size
    if model.is_moe:
        moe_width = model.experts_per_token + model.num_shared_experts
        moe_width *= model.expert_intermediate_size
        width = round(moe_frac * moe_width + (1.0 - moe_frac) * model.intermediate_size)
    inter = max(1, width // tp)
    act = 3 * inter if model.gated_mlp else 2 * inter
    elements = 2 * 2 * h + 2 * (q + kv) + act + 3 * h
    return elements * tokens * params.activation_bytes / hbm


def foreign_pass_s(dep: Deployment, p: RooflineParams, tokens: float, width: int) -> float:
    """The fused MoE's pass over the other GPUs' routed pairs of one MoE layer on one GPU
    (:func:`sincere.perf.moe.foreign_pair_bytes` at HBM speed times
    ``moe_ep_foreign_factor``, the bytes beyond ``moe_ep_onchip_share`` of the L2) and the
    call's fixed cost under EP (``moe_ep_kernel_s``): under EP without attention DP every
    GPU of the group holds every token and vLLM's Triton kernel runs its buffers over all
    their pairs; with attention DP the all-to-all sends each GPU its own pairs only (0 s),
    as without EP."""
    if dep.ep == 1 or dep.attention_dp > 1:
        return 0.0
    if not p.moe_ep_foreign_factor:  # no pass: the call's cost alone
        return p.moe_ep_kernel_s
    m, acc = dep.model, dep.accelerator
    pairs = foreign_pair_bytes(
        tokens, m.experts_per_token, m.hidden_size, width, m.gated_mlp, dep.ep, p.activation_bytes
    )
    spilled = max(0.0, pairs - onchip_bytes(acc, p.moe_ep_onchip_share))
    return p.moe_ep_kernel_s + p.moe_ep_foreign_factor * spilled / (acc.hbm_bandwidth_gbps * 1e9)


def expert_width(dep: Deployment) -> int:
    """Elements of one routed expert's width on one GPU: each expert is split over the
    ``moe_group_gpus / ep`` GPUs that hold it."""
    return max(1, dep.model.expert_intermediate_size // (dep.moe_group_gpus // dep.ep))


def group_exchange_s(
    dep: Deployment,
    params: RooflineParams,
    terms: tuple[tuple[float, float], float, ShapeGrid | None],
    tokens: int,
) -> float:
    """Gather and reduction of one MoE layer whose experts are split by TP over the whole
    attention-DP group: two all-reduces of the group's ``attention_dp · tokens`` hidden
    states over its GPUs at ``terms`` (latency in a graph and share of the link, the
    link's bytes/s, the all-reduce's factor by message size) (module docstring)."""
    (latency, efficiency), link, grid = terms
    gpus = dep.moe_group_gpus
    size = tokens * dep.attention_dp * dep.model.hidden_size * params.activation_bytes
    byte_s = 2.0 * (gpus - 1) / gpus / (link * efficiency)
    eager = tokens > params.cuda_graph_max_tokens
    factor = allreduce_factor(grid, size, gpus, eager, (latency, byte_s))
    return 2.0 * allreduce_one_s(params, latency, byte_s * size, tokens) * factor


def allreduce_one_s(params: RooflineParams, latency: float, transfer: float, tokens: int) -> float:
    """One all-reduce moving ``transfer`` seconds' worth of its ring's traffic after its
    CUDA-graph ``latency``; an iteration of more tokens than a graph holds runs it eager
    (launch cost and floor, as :func:`~sincere.perf.roofline.with_comm_s`)."""
    if tokens <= params.cuda_graph_max_tokens:
        return latency + transfer
    if params.allreduce_eager_floor_s > 0.0:
        return max(latency + transfer, params.allreduce_eager_floor_s) + params.allreduce_eager_s
    return latency + params.allreduce_eager_s + transfer


def arch_utilization(step: ArchStep, batch: Batch, duration_s: float) -> tuple[float, float]:
    """Model-FLOPs and memory-bandwidth utilisation (0..1) per GPU of ``step``'s iteration
    of ``batch`` lasting ``duration_s``: the active parameters' FLOPs and the causal pairs;
    weights of the attention, dense and shared layers, the activated experts and the KV
    cache read."""
    if duration_s <= 0.0:
        return 0.0, 0.0
    dep = step.deployment
    model, acc = dep.model, dep.accelerator
    tokens = batch.num_tokens
    pairs = batch.prefill_attn_pairs + batch.decode_ctx_tokens
    flops = model.flops_per_token() * tokens / dep.num_gpus
    flops += model.attention_flops_per_pair() * pairs / dep.num_gpus
    routed, other, emb = model.param_groups()
    dense = step.dense_bytes
    moved = (other * dense + emb / 2.0 * max(dense, 2.0)) / dep.num_gpus
    if model.is_moe:
        distinct = expected_distinct_experts(
            tokens, model.num_experts, model.experts_per_token, step.moe.routing_skew
        )
        moved += routed * distinct / model.num_experts * step.expert_bytes / dep.num_gpus
    kv_tokens = batch.decode_ctx_tokens + batch.prefill_ctx_tokens + tokens
    moved += kv_tokens * model.kv_bytes_per_token(dep.kv_precision) / dep.num_gpus
    mfu = flops / (duration_s * acc.peak_tflops(dep.precision) * 1e12)
    mbu = moved / (duration_s * acc.hbm_bandwidth_gbps * 1e9)
    return min(mfu, 1.0), min(mbu, 1.0)


@dataclass(frozen=True, slots=True)
class DecodeAttention:
    """One layer's decode attention as a function of the batch's summed context ``c``:
    ``kernel_s + max(pair_s * c, token_s * (c + seq_tokens))`` (per step)."""

    kernel_s: float
    pair_s: float  # compute per cached token (the batch's share)
    token_s: float  # KV traffic per cached token (the batch's share)
    seq_tokens: float  # KV tokens' worth of traffic per step beyond the context

    def step_s(self, ctx: float) -> float:
        """One step at summed context ``ctx``."""
        return self.kernel_s + max(self.pair_s * ctx, self.token_s * (ctx + self.seq_tokens))

    def sum(self, ctx: int, n: int, steps: int, limit: float | None) -> float:
        """Summed over ``steps`` steps from context ``ctx`` (``n`` more each step), the
        context read capped at ``limit`` (a window's ``n x window``): closed form."""
        growing = steps
        if limit is not None:
            growing = 0 if ctx >= limit else min(steps, math.ceil((limit - ctx) / n))
        a, b, seq = self.pair_s, self.token_s, self.seq_tokens
        total = steps * self.kernel_s
        total += sum_max_affine(a * ctx, a * n, b * (ctx + seq), b * n, growing)
        if growing < steps:  # the window is full: the same read every step
            assert limit is not None
            total += (steps - growing) * max(a * limit, b * (limit + seq))
        return total


def _bytes(precision: str) -> float:
    from sincere.catalog.specs import PRECISION_BYTES

    return PRECISION_BYTES[precision]


def _attention_mats(dep: Deployment, weight_bytes: float) -> tuple[_Mat, ...]:
    """One layer's attention projections on one of ``tp`` GPUs."""
    model, tp = dep.model, dep.tp
    h, hd = model.hidden_size, model.head_size
    q_heads = max(1, model.num_heads // tp)
    if not model.is_mla:
        kv = max(1, math.ceil(model.num_kv_heads / tp)) * hd
        q = q_heads * hd * (2 if model.attention_output_gate else 1)  # the gate beside the query
        return _Mat(h, q + 2 * kv, weight_bytes), _Mat(q_heads * hd, h, weight_bytes)
    rope, r = model.qk_rope_head_dim, model.kv_lora_rank
    qk = hd + rope
    mats = [_Mat(h, r + rope, weight_bytes), _Mat(r, q_heads * 2 * hd, weight_bytes)]
    if model.q_lora_rank:
        mats += [
            _Mat(h, model.q_lora_rank, weight_bytes),
            _Mat(model.q_lora_rank, q_heads * qk, weight_bytes),
        ]
    else:
        mats.append(_Mat(h, q_heads * qk, weight_bytes))
    mats.append(_Mat(q_heads * hd, h, weight_bytes))
    return tuple(mats)


def _linear_attention_mats(dep: Deployment, weight_bytes: float) -> tuple[_Mat, ...]:
    """One Gated DeltaNet layer's projections on one of ``tp`` GPUs: queries, keys, values
    and the output gate in (with a decay and a write strength per value head), values out;
    none for a model without such layers."""
    model, tp = dep.model, dep.tp
    if not model.num_linear_layers:
        return ()
    h = model.hidden_size
    keys = max(1, math.ceil(model.linear_num_key_heads / tp)) * model.linear_key_head_dim
    heads = max(1, math.ceil(model.linear_num_value_heads / tp))
    values = heads * model.linear_value_head_dim
    return _Mat(h, 2 * keys + 2 * values + 2 * heads, weight_bytes), _Mat(values, h, weight_bytes)


def _mlp_mats(width: int, dep: Deployment, weight_bytes: float) -> tuple[_Mat, ...]:
    """A dense MLP of ``width`` split over TP: gate / up and down."""
    model = dep.model
    inter = max(1, width // dep.tp)
    up = 2 * inter if model.gated_mlp else inter
    return _Mat(model.hidden_size, up, weight_bytes), _Mat(inter, model.hidden_size, weight_bytes)


def _busiest_share(dep: Deployment, m: MoEParams, tokens: int) -> float:
    """The busiest expert-parallel rank's routed copies over the mean rank's, for a rank's
    ``tokens`` under attention DP (:func:`~sincere.perf.moe.busiest_rank_load`); 1 unless
    ``m.busiest_rank``."""
    if tokens <= 0 or not m.busiest_rank:
        return 1.0
    total = tokens * dep.attention_dp
    k = dep.model.experts_per_token
    routed = busiest_rank_load(total, dep.model.num_experts, k, m.routing_skew, dep.ep)[1]
    return routed / (total * k / dep.ep)
