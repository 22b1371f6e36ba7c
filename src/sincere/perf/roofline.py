"""Analytic roofline step-time model from catalog figures.

Each iteration is bounded by compute or by memory traffic, whichever is slower:

* compute: ``2 * params * tokens`` matmul FLOPs plus ``attention_flops_per_pair``
  for every causal query-key pair (prefill chunks and decode tokens reading their
  context), over the accelerator's dense peak in the deployment's precision times
  ``mfu_efficiency``;
* memory: every weight byte once (``PRECISION_BYTES[precision]`` per parameter),
  plus the KV cache read (decode and prefill context) and written (new tokens),
  over HBM bandwidth times ``bw_efficiency``.

Prefill is therefore compute-bound and small-batch decode bandwidth-bound, as in
the roofline analyses of Williams et al. (CACM 2009) applied to LLM inference
(e.g. Yuan et al., "LLM Inference Unveiled", 2024).

Tensor parallelism (TP) splits both terms over ``tp`` GPUs (KV heads are split
while ``tp <= num_kv_heads`` and replicated beyond) and adds two all-reduces per
layer of ``tokens * hidden * activation_bytes`` each: a ring all-reduce moves
``2 (tp-1)/tp`` of the message over the one-way link bandwidth
(``interconnect_gbps_per_direction``) plus a fixed latency.

Pipeline parallelism (PP), our assumption: each of the ``pp`` stages holds
``1/pp`` of the layers; the batch is cut into ``m = min(pp_microbatches,
num_seqs)`` micro-batches and the iteration lasts ``(m + pp - 1)`` stage times of
one micro-batch (the GPipe bubble, Huang et al. 2019), plus an activation send
between stages. With ``m = 1`` PP adds no speed, only memory.

Every iteration also pays ``overhead_s`` (scheduler, sampling, kernel launches).
Default efficiencies are typical of vLLM-class engines with CUDA graphs on
H100/A100: ~50 % MFU in prefill GEMMs, ~85 % of HBM bandwidth in decode, ~1 ms of
CPU overhead per step, ~70 % of NVLink bandwidth and ~10 us per all-reduce.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sincere.catalog.specs import PRECISION_BYTES
from sincere.core.errors import ConfigError
from sincere.core.types import Seconds
from sincere.perf.base import Batch, Deployment, StepTimeBase, SwapTime
from sincere.perf.series import sum_max_affine


@dataclass(frozen=True, slots=True)
class RooflineParams:
    """Efficiency factors of the roofline; fitting may set them. Units in names."""

    mfu_efficiency: float = 0.5  # share of dense peak reached by compute-bound work
    bw_efficiency: float = 0.85  # share of HBM bandwidth reached by memory-bound work
    overhead_s: float = 0.001  # fixed CPU / launch cost per iteration
    interconnect_efficiency: float = 0.7  # share of NVLink / PCIe bandwidth in collectives
    allreduce_latency_s: float = 10e-6  # fixed cost of one all-reduce
    p2p_latency_s: float = 10e-6  # fixed cost of one pipeline-stage activation send
    activation_bytes: float = 2.0  # bytes per activation element (bf16)
    pp_microbatches: int = 1  # micro-batches an iteration is cut into under PP
    load_efficiency: float = 0.5  # share of host-link bandwidth reached while loading
    disk_read_gbps: float | None = None  # storage read rate, GB/s (None: not limiting)
    load_overhead_s: float = 1.0  # fixed cost of a load (allocation, graph capture)
    unload_s: float = 0.02  # time to free the model

    def __post_init__(self) -> None:
        for name in ("mfu_efficiency", "bw_efficiency", "interconnect_efficiency"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ConfigError(f"RooflineParams.{name} must be in (0, 1]", value=value)
        if self.load_efficiency <= 0.0 or self.load_efficiency > 1.0:
            raise ConfigError("RooflineParams.load_efficiency must be in (0, 1]")
        if self.pp_microbatches < 1:
            raise ConfigError("RooflineParams.pp_microbatches must be >= 1")
        if min(self.overhead_s, self.allreduce_latency_s, self.load_overhead_s) < 0.0:
            raise ConfigError("RooflineParams times must be >= 0")


@dataclass(frozen=True, slots=True)
class _Terms:
    """One iteration as ``fixed_s + scale * (max(compute_s, memory_s) + comm_s)``."""

    fixed_s: float
    scale: float
    compute_s: float
    memory_s: float
    comm_s: float


@dataclass(frozen=True, slots=True)
class _Coef:
    """The roofline folded into per-unit times of one GPU (before PP micro-batching)."""

    overhead_s: float  # fixed cost per iteration
    pp: int  # pipeline stages
    pp_microbatches: int  # micro-batches an iteration is cut into under PP
    token_s: float  # matmul compute time per token
    pair_s: float  # attention compute time per causal query-key pair
    weights_s: float  # time to read the weights once
    kv_token_s: float  # time to move one token's KV bytes
    comm_fixed_s: float  # collective latency per micro-batch (0 without TP / PP)
    comm_token_s: float  # collective time per token of a micro-batch


class Roofline(StepTimeBase):
    """Roofline step time of a :class:`Deployment`; see the module docstring."""

    def __init__(self, deployment: Deployment, params: RooflineParams | None = None) -> None:
        self.deployment = deployment
        self.params = params or RooflineParams()
        if deployment.precision not in PRECISION_BYTES:
            raise ConfigError(
                "unknown weight precision", value=deployment.precision, allowed=PRECISION_BYTES
            )
        if deployment.kv_precision not in PRECISION_BYTES:
            raise ConfigError(
                "unknown KV precision", value=deployment.kv_precision, allowed=PRECISION_BYTES
            )
        super().__init__(self._load_time(), SwapTime(self.params.unload_s))
        self._coef = self._coefficients()

    # --- per-GPU figures -------------------------------------------------------------
    @property
    def weight_bytes_per_gpu(self) -> float:
        """Weight bytes one GPU holds (weights split evenly over TP and PP)."""
        dep = self.deployment
        return dep.model.weight_bytes(dep.precision) / dep.num_gpus

    @property
    def kv_share(self) -> float:
        """Share of one token's KV bytes (all layers) one TP rank stores."""
        dep = self.deployment
        heads = dep.model.num_kv_heads
        return math.ceil(heads / dep.tp) / heads

    def _load_time(self) -> SwapTime:
        p, acc = self.params, self.deployment.accelerator
        rate = acc.host_link_gbps * p.load_efficiency
        if p.disk_read_gbps is not None:
            rate = min(rate, p.disk_read_gbps)
        return SwapTime(self.weight_bytes_per_gpu / (rate * 1e9) + p.load_overhead_s)

    # --- the roofline ----------------------------------------------------------------
    def _coefficients(self) -> _Coef:
        """The roofline's constants, folded once (the hot path is then plain float math)."""
        dep, p = self.deployment, self.params
        model = dep.model
        peak = dep.accelerator.peak_tflops(dep.precision) * 1e12 * p.mfu_efficiency
        hbm = dep.accelerator.hbm_bandwidth_gbps * 1e9 * p.bw_efficiency
        kv_token_bytes = model.kv_bytes_per_token(dep.kv_precision) * self.kv_share / dep.pp
        comm_fixed = self._comm_s(0.0)
        return _Coef(
            overhead_s=p.overhead_s,
            pp=dep.pp,
            pp_microbatches=p.pp_microbatches,
            token_s=model.flops_per_token() / dep.num_gpus / peak,
            pair_s=model.attention_flops_per_pair() / dep.num_gpus / peak,
            weights_s=self.weight_bytes_per_gpu / hbm,
            kv_token_s=kv_token_bytes / hbm,
            comm_fixed_s=comm_fixed,
            comm_token_s=self._comm_s(1.0) - comm_fixed,
        )

    def iteration_s_fast(
        self,
        num_prefill_seqs: int,
        prefill_tokens: int,
        prefill_ctx_tokens: int,
        prefill_attn_pairs: float,
        num_decode_seqs: int,
        decode_ctx_tokens: int,
    ) -> Seconds:
        """:meth:`iteration_s` of the batch with these fields, without building it."""
        c = self._coef
        tokens = prefill_tokens + num_decode_seqs
        if tokens == 0:
            return 0.0
        kv_tokens = decode_ctx_tokens + prefill_ctx_tokens + tokens
        compute = c.token_s * tokens + c.pair_s * (prefill_attn_pairs + decode_ctx_tokens)
        if c.pp == 1:
            memory = c.weights_s + c.kv_token_s * kv_tokens
            bound = compute if compute > memory else memory
            return c.overhead_s + bound + c.comm_fixed_s + c.comm_token_s * tokens
        num_mb = max(1, min(c.pp_microbatches, num_prefill_seqs + num_decode_seqs))
        share = 1.0 / num_mb
        memory = c.weights_s + share * c.kv_token_s * kv_tokens
        bound = max(share * compute, memory)
        comm = c.comm_fixed_s + c.comm_token_s * share * tokens
        return c.overhead_s + (num_mb + c.pp - 1.0) * (bound + comm)

    def _terms(self, batch: Batch) -> _Terms:
        dep, p = self.deployment, self.params
        model = dep.model
        num_mb = max(1, min(p.pp_microbatches, batch.num_seqs)) if dep.pp > 1 else 1
        share = 1.0 / num_mb  # of the batch in one micro-batch
        gpus = dep.num_gpus
        pairs = batch.prefill_attn_pairs + batch.decode_ctx_tokens
        flops = model.flops_per_token() * batch.num_tokens
        flops += model.attention_flops_per_pair() * pairs
        peak = dep.accelerator.peak_tflops(dep.precision) * 1e12 * p.mfu_efficiency
        compute_s = share * flops / gpus / peak
        kv_tokens = batch.decode_ctx_tokens + batch.prefill_ctx_tokens + batch.num_tokens
        kv_bytes = kv_tokens * model.kv_bytes_per_token(dep.kv_precision) * self.kv_share / dep.pp
        hbm = dep.accelerator.hbm_bandwidth_gbps * 1e9 * p.bw_efficiency
        memory_s = (self.weight_bytes_per_gpu + share * kv_bytes) / hbm
        comm_s = self._comm_s(share * batch.num_tokens)
        return _Terms(p.overhead_s, num_mb + dep.pp - 1.0, compute_s, memory_s, comm_s)

    def _comm_s(self, tokens: float) -> float:
        """All-reduce and pipeline-send time of one micro-batch on one stage."""
        dep, p = self.deployment, self.params
        message = tokens * dep.model.hidden_size * p.activation_bytes
        link = dep.accelerator.interconnect_gbps_per_direction * 1e9 * p.interconnect_efficiency
        total = 0.0
        if dep.tp > 1:
            per_allreduce = p.allreduce_latency_s + 2.0 * (dep.tp - 1) / dep.tp * message / link
            total += 2.0 * dep.model.num_layers / dep.pp * per_allreduce
        if dep.pp > 1:
            total += p.p2p_latency_s + message / link
        return total

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
        """Exact sum of decode iterations, splitting the run at the roofline's ridge."""
        if num_steps <= 0 or num_seqs <= 0:
            return 0.0
        c = self._coef
        num_mb = 1 if c.pp == 1 else max(1, min(c.pp_microbatches, num_seqs))
        share = 1.0 / num_mb
        kv_s = share * c.kv_token_s
        bound = sum_max_affine(
            share * (c.token_s * num_seqs + c.pair_s * ctx_tokens),
            share * c.pair_s * num_seqs,
            c.weights_s + kv_s * (ctx_tokens + num_seqs),
            kv_s * num_seqs,
            num_steps,
        )
        scale = num_mb + c.pp - 1.0
        comm = c.comm_fixed_s + c.comm_token_s * share * num_seqs
        return num_steps * (c.overhead_s + scale * comm) + scale * bound

    # --- utilisation -----------------------------------------------------------------
    def utilization(self, batch: Batch) -> tuple[float, float]:
        """Model-FLOPs and memory-bandwidth utilisation (0..1) of one iteration, per GPU."""
        duration = self.iteration_s(batch)
        if duration <= 0.0:
            return 0.0, 0.0
        t = self._terms(batch)
        num_mb = t.scale - self.deployment.pp + 1.0  # micro-batches each GPU runs
        mfu = num_mb * t.compute_s * self.params.mfu_efficiency / duration
        mbu = num_mb * t.memory_s * self.params.bw_efficiency / duration
        return min(mfu, 1.0), min(mbu, 1.0)
