"""Gated DeltaNet (linear attention) layers, as Qwen3-Next and Qwen3.5 interleave them.

A linear-attention layer keeps no KV cache: each sequence carries a fixed ``dk x dv``
state per value head, and a short causal convolution's last inputs. vLLM runs such a
layer as two kernels a phase, and the forms here are fitted on its measured rows
(AIConfigurator's ``linear_attention/gdn_perf``, :func:`sincere.fit.kernels.fit_gdn`):

* **prefill**: the causal convolution over the layer's query, key and value channels
  (memory-bound: every channel read and written once in bf16, ``gdn_bw_efficiency`` of
  HBM) and the chunked gated delta rule, whose work is ``8 · dk · dv`` FLOPs per token and
  value head with each sequence padded to whole chunks of 64 tokens, at
  ``gdn_mfu_efficiency`` of the bf16 peak. The kernel runs one block per (sequence, value
  head); fewer than ``gdn_parallel_units`` of them leave the GPU partly idle, and the rate
  falls in proportion. Plus ``gdn_kernel_s`` and each sequence's final state written.
  Where the delta rule is vLLM's Triton kernel (L40S, RTX PRO 6000: GPUs without
  FlashInfer's fused one) it also writes and reads back per-chunk intermediates,
  ``gdn_spill_bytes`` per padded token and value head: as long as a call's intermediates
  stay within ``gdn_onchip_share`` of the GPU's L2 cache (the catalog's ``l2_cache_mb``;
  none where it is not stated) they come back from L2, and what exceeds it goes through
  HBM at ``gdn_spill_bw_efficiency``. FlashInfer's fused kernel keeps them on chip
  (``gdn_spill_bytes`` 0, the default).
* **decode**: every sequence's state read and written once and its convolution window
  updated: bytes at ``gdn_decode_bw_efficiency`` of HBM, plus ``gdn_decode_kernel_s``.

The state is kept in the deployment's ``state_precision``: fp32 by default (the measured
kernels', SGLang's default), 16 bits where the engine is told so (SGLang's
``--mamba-ssm-dtype bfloat16``, vLLM's ``--mamba-ssm-cache-dtype``), which halves its bytes
in memory, in decode and in a disaggregated transfer.

The per-GPU heads are the model's over TP (value heads, and key heads with them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sincere.catalog.specs import PRECISION_BYTES
from sincere.perf.moe import FArray

if TYPE_CHECKING:
    from sincere.catalog.specs import Accelerator
    from sincere.perf.base import Deployment
    from sincere.perf.roofline import RooflineParams

CHUNK = 64  # tokens of one chunk of the chunked delta rule (each sequence padded to whole)
STATE_BYTES = 4.0  # the recurrent state's element by default: fp32 (the measured kernels)
CONV_BYTES = 2.0  # the convolution's inputs and outputs: bf16


@dataclass(frozen=True, slots=True)
class GdnShape:
    """One Gated DeltaNet layer's heads on one GPU."""

    key_heads: int
    value_heads: int
    key_dim: int
    value_dim: int
    conv_kernel: int
    state_element_bytes: float = STATE_BYTES  # the state's precision (fp32 unless set)

    @property
    def channels(self) -> int:
        """Convolution channels: queries and keys (``key_heads · dk`` each) and values."""
        return 2 * self.key_heads * self.key_dim + self.value_heads * self.value_dim

    @property
    def state_bytes(self) -> float:
        """One sequence's recurrent state in this layer."""
        return self.value_heads * self.key_dim * self.value_dim * self.state_element_bytes


@dataclass(frozen=True, slots=True)
class GdnRates:
    """The fitted constants with the GPU's peaks folded in (FLOP/s and bytes/s)."""

    flops: float  # bf16 peak x gdn_mfu_efficiency
    parallel_units: float  # (sequence, value head) blocks that fill the GPU
    prefill_bytes: float  # HBM x gdn_bw_efficiency
    prefill_kernel_s: float
    decode_bytes: float  # HBM x gdn_decode_bw_efficiency
    decode_kernel_s: float
    spill_bytes: float = 0.0  # prefill intermediates per padded token and value head
    onchip_bytes: float = 0.0  # intermediates a call keeps in L2 (L2 x gdn_onchip_share)
    spill_rate: float = 1.0  # HBM x gdn_spill_bw_efficiency, bytes/s


def padded_tokens(tokens: float, seqs: float) -> float:
    """Tokens of ``seqs`` prefill pieces summing to ``tokens``, each padded to whole chunks,
    when only the sums are known: half a chunk of padding a piece on average, and never
    less than one chunk a piece."""
    return max(tokens + seqs * (CHUNK / 2.0), seqs * CHUNK)


def prefill_s(
    shape: GdnShape, rates: GdnRates, tokens: FArray, seqs: FArray, padded: FArray
) -> FArray:
    """One layer's prefill of ``tokens`` in ``seqs`` sequences (``padded``: the tokens with
    each sequence padded to whole chunks), element-wise over arrays."""
    work = 8.0 * shape.key_dim * shape.value_dim * shape.value_heads * padded
    blocks = np.maximum(seqs * shape.value_heads, 1.0)
    idle = np.maximum(1.0, rates.parallel_units / blocks)
    moved = 2.0 * CONV_BYTES * shape.channels * tokens + seqs * shape.state_bytes
    out: FArray = rates.prefill_kernel_s + work * idle / rates.flops + moved / rates.prefill_bytes
    if rates.spill_bytes > 0.0:
        spilled = rates.spill_bytes * padded * shape.value_heads - rates.onchip_bytes
        out = out + np.maximum(spilled, 0.0) / rates.spill_rate
    return out


def onchip_bytes(acc: Accelerator, share: float) -> float:
    """Bytes of a prefill call's intermediates that ``acc``'s L2 keeps: ``share`` of the
    catalog's ``l2_cache_mb``, none where the catalog does not state it."""
    return share * (acc.l2_cache_mb or 0.0) * 1e6


def decode_bytes_per_seq(shape: GdnShape) -> float:
    """Bytes one sequence's decode step moves in the layer: its state read and written,
    its convolution window read and written."""
    return 2.0 * shape.state_bytes + 2.0 * CONV_BYTES * shape.conv_kernel * shape.channels


def decode_s(shape: GdnShape, rates: GdnRates, seqs: FArray) -> FArray:
    """One layer's decode step of ``seqs`` sequences, element-wise over arrays."""
    out: FArray = rates.decode_kernel_s + seqs * decode_bytes_per_seq(shape) / rates.decode_bytes
    return out


def shape_on_gpu(deployment: Deployment) -> GdnShape:
    """A Gated DeltaNet layer of ``deployment``'s model on one of its TP GPUs (at least one
    head of each kind), its state in the deployment's ``state_precision``."""
    model, tp = deployment.model, deployment.tp
    return GdnShape(
        max(1, math.ceil(model.linear_num_key_heads / tp)),
        max(1, math.ceil(model.linear_num_value_heads / tp)),
        model.linear_key_head_dim,
        model.linear_value_head_dim,
        model.linear_conv_kernel,
        PRECISION_BYTES[deployment.state_precision],
    )


class GdnCost:
    """One Gated DeltaNet layer of a deployment on one GPU, priced by the roofline's
    constants (``gdn_*``)."""

    def __init__(self, deployment: Deployment, params: RooflineParams) -> None:
        acc = deployment.accelerator
        self.shape = shape_on_gpu(deployment)
        hbm = acc.hbm_bandwidth_gbps * 1e9
        self.rates = GdnRates(
            acc.peak_tflops("bf16")
            * 1e12
            * params.gdn_mfu_efficiency
            * params.sustained_compute_ratio,
            params.gdn_parallel_units,
            hbm * params.gdn_bw_efficiency,
            params.gdn_kernel_s,
            hbm * params.gdn_decode_bw_efficiency,
            params.gdn_decode_kernel_s,
            params.gdn_spill_bytes,
            onchip_bytes(acc, params.gdn_onchip_share),
            hbm * params.gdn_spill_bw_efficiency,
        )

    def iteration_s(self, prefill_tokens: float, prefill_seqs: float, decode_seqs: float) -> float:
        """The layer's kernels in one iteration: the prefill pieces' and the decodes' (they
        run apart, so both are paid)."""
        total = 0.0
        if prefill_seqs > 0:
            padded = padded_tokens(prefill_tokens, prefill_seqs)
            one = prefill_s(
                self.shape, self.rates, np.array([prefill_tokens]), np.array([prefill_seqs]),
                np.array([padded]),
            )  # fmt: skip
            total += float(one[0])
        if decode_seqs > 0:
            total += self.decode_step_s(decode_seqs)
        return total

    def decode_step_s(self, seqs: float) -> float:
        """The layer's decode step over ``seqs`` sequences."""
        return float(decode_s(self.shape, self.rates, np.array([seqs]))[0])
