"""The roofline's folded scalar path equals its written-out definition."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sincere.catalog import Accelerator, get_accelerator, get_model
from sincere.perf.base import Batch, Deployment, StepTimeBase
from sincere.perf.calibration import default_roofline_params, shipped_fits
from sincere.perf.roofline import Roofline, RooflineParams

SETUPS = [(1, 1, 1), (2, 1, 1), (8, 1, 1), (1, 2, 1), (2, 4, 3), (4, 2, 8)]  # tp, pp, mbs
VIDUR_COMM = {k: shipped_fits()["A100-80GB"]["params"][k]
              for k in ("allreduce_latency_s", "interconnect_efficiency")}  # fmt: skip
FITTED = dataclasses.replace(
    default_roofline_params(get_accelerator("A100-80GB"), VIDUR_COMM),
    allreduce_gpus=(), allreduce_latencies_s=(), allreduce_efficiencies=(),
    allreduce_eager_s=0.0, allreduce_eager_floor_s=0.0, allreduce_grid=None,
)  # fmt: skip
"""A100's fitted constants with the all-reduce the written-out formula states (one latency,
one share of the link: its Vidur fit's kind); the default's per-count all-reduce and its
factor by message size are checked in tests/fit/test_fit_kernels.py."""
DATASHEET = RooflineParams()  # max() per GEMM, no tile, no fixed kernel costs
MODELS = [
    Roofline(
        Deployment(get_model("llama-3-8b"), get_accelerator("A100-80GB"), tp=tp, pp=pp),
        dataclasses.replace(params, pp_microbatches=mbs),
    )
    for tp, pp, mbs in SETUPS
    for params in (FITTED, DATASHEET)
]


def gemm_s(p: RooflineParams, acc: Accelerator, k: int, n: int, tokens: int) -> float:
    """One GEMM as the module docstring states it."""
    tiled = tokens if tokens <= p.token_tile else p.token_tile * math.ceil(tokens / p.token_tile)
    compute = 2 * k * n * tiled / (acc.bf16_tflops * 1e12 * p.mfu_efficiency)
    memory = (2 * k * n + 2 * (k + n) * tokens) / (acc.hbm_bandwidth_gbps * 1e9 * p.bw_efficiency)
    if math.isinf(p.overlap_exponent):
        return max(compute, memory)
    return float(
        (compute**p.overlap_exponent + memory**p.overlap_exponent) ** (1 / p.overlap_exponent)
    )


def reference_s(model: Roofline, batch: Batch) -> float:
    """The module docstring's formula, written out for Llama-3-8B (bf16, fp16 KV)."""
    if batch.num_tokens == 0:
        return 0.0
    dep, p, acc = model.deployment, model.params, model.deployment.accelerator
    tp, pp = dep.tp, dep.pp
    h, inter, hd, vocab = 4096, 14336, 128, 128256
    q, kv = 32 // tp * hd, max(1, math.ceil(8 / tp)) * hd
    shapes = [(h, q + 2 * kv), (q, h), (h, 2 * inter // tp), (inter // tp, h)]
    seqs = batch.num_seqs
    mb = 1 if pp == 1 else max(1, min(p.pp_microbatches, seqs))
    tokens = batch.num_tokens if mb == 1 else math.ceil(batch.num_tokens / mb)
    hbm, peak = acc.hbm_bandwidth_gbps * 1e9, acc.bf16_tflops * 1e12
    linear = sum(gemm_s(p, acc, k, n, tokens) for k, n in shapes) + p.layer_overhead_s
    linear += (
        (2 * 2 * h + 2 * (q + kv) + 3 * inter // tp + 3 * h)
        * 2
        * tokens
        / (hbm * p.elementwise_bw_efficiency)
    )
    pair_s = 4 * (32 // tp) * hd / (peak * p.attn_mfu_efficiency)
    kv_s = 2 * kv * 2 / (hbm * p.attn_bw_efficiency)
    attn = 0.0
    if batch.num_prefill_seqs:
        ctx_pairs = min(
            batch.prefill_tokens * batch.prefill_ctx_tokens / batch.num_prefill_seqs,
            batch.prefill_attn_pairs,
        )
        work = ctx_pairs + p.attn_diag_factor * (batch.prefill_attn_pairs - ctx_pairs)
        kv_moved = batch.prefill_tokens + batch.prefill_ctx_tokens
        attn += p.attn_kernel_s + max(work * pair_s, kv_moved * kv_s) / mb
    if batch.num_decode_seqs:
        kv_moved = batch.decode_ctx_tokens + batch.num_decode_seqs
        attn += p.attn_kernel_s + max(batch.decode_ctx_tokens * pair_s, kv_moved * kv_s) / mb
    link = acc.interconnect_gbps / 2 * 1e9 * p.interconnect_efficiency
    comm = 0.0
    if tp > 1:
        comm = 2 * (p.allreduce_latency_s + 2 * (tp - 1) / tp * tokens * h * 2 / link)
    head = gemm_s(p, acc, h, vocab // tp, seqs if mb == 1 else math.ceil(seqs / mb))
    stage = 32 / pp * (linear + attn + comm) + head
    cpu = p.overhead_s + p.overhead_per_seq_s * seqs
    if pp == 1:
        return cpu + stage
    return cpu + (mb + pp - 1) * (stage + p.p2p_latency_s + tokens * h * 2 / link)


batches = st.builds(
    Batch.of,
    st.lists(st.tuples(st.integers(1, 4096), st.integers(0, 8192)), max_size=6),
    st.lists(st.integers(1, 8192), max_size=64),
)


@given(st.sampled_from(range(len(MODELS))), batches)
def test_iteration_time_matches_the_formula(k: int, batch: Batch) -> None:
    """``iteration_s`` (the folded, memoised path) is the written-out formula to round-off."""
    model = MODELS[k]
    assert model.iteration_s(batch) == pytest.approx(reference_s(model, batch), rel=1e-9)


@given(st.sampled_from(range(len(MODELS))), batches)
def test_parts_sum_to_the_iteration(k: int, batch: Batch) -> None:
    """The breakdown ``sincere step`` prints adds up to the iteration time."""
    model = MODELS[k]
    assert model.parts(batch).total_s == pytest.approx(model.iteration_s(batch), rel=1e-12)


@given(st.sampled_from(range(len(MODELS))), st.integers(1, 256), st.integers(1, 400))
@settings(max_examples=50)
def test_decode_runs_sum_the_iterations(k: int, n: int, steps: int) -> None:
    """``decode_steps_s`` equals the sum of the decode iterations it stands for."""
    model, ctx = MODELS[k], 300 * n
    one_by_one = sum(
        reference_s(model, Batch(num_decode_seqs=n, decode_ctx_tokens=ctx + j * n))
        for j in range(steps)
    )
    assert model.decode_steps_s(n, ctx, steps) == pytest.approx(one_by_one, rel=1e-9)


class Flat(StepTimeBase):
    """2 ms plus 1 us per token."""

    def iteration_s(self, batch: Batch) -> float:
        return 0.002 + 1e-6 * batch.num_tokens


def test_base_fast_path_builds_the_batch() -> None:
    """Without an override, ``iteration_s_fast`` is ``iteration_s`` of the same batch."""
    batch = Batch(2, 700, 300, 5e5, 10, 4000)
    assert Flat().iteration_s_fast(2, 700, 300, 5e5, 10, 4000) == Flat().iteration_s(batch)
