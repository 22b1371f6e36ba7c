"""Roofline step-time model: physical bounds, parallelism, load time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sincere.core.errors import ConfigError
from sincere.perf.base import Batch, Deployment
from sincere.perf.calibration import default_roofline_params
from sincere.perf.roofline import Roofline, RooflineParams

MakeDeployment = Callable[..., Deployment]
IDEAL = RooflineParams(
    mfu_efficiency=1.0,
    bw_efficiency=1.0,
    elementwise_bw_efficiency=1.0,
    attn_mfu_efficiency=1.0,
    attn_bw_efficiency=1.0,
    overhead_s=0.0,
)


def streamed_weight_bytes(dep: Deployment) -> float:
    """Bytes a decode step must read: every layer's matrices and the LM head (the input
    embedding is only gathered row by row)."""
    model = dep.model
    embedding = model.vocab_size * model.hidden_size
    return (model.estimated_params_b() * 1e9 - embedding) * 2.0


def test_decode_never_faster_than_reading_the_weights(llama8b_h100: Deployment) -> None:
    """A decode step cannot beat its weight bytes over peak HBM bandwidth, even ideally."""
    dep = llama8b_h100
    floor = streamed_weight_bytes(dep) / (dep.accelerator.hbm_bandwidth_gbps * 1e9)
    for params in (IDEAL, RooflineParams(), None):
        model = Roofline(dep, params)
        for n in (1, 8, 64, 256):
            assert model.decode_step_s(n, n * 512) >= floor


def test_prefill_never_faster_than_flops_over_peak(llama8b_h100: Deployment) -> None:
    """A prefill cannot beat its layers' FLOPs over the accelerator's dense bf16 peak."""
    dep = llama8b_h100
    model = Roofline(dep, IDEAL)
    layer_flops = 2 * (
        streamed_weight_bytes(dep) / 2 - dep.model.vocab_size * dep.model.hidden_size
    )
    for tokens in (128, 512, 2048, 8192):
        assert model.iteration_s(Batch.of(prefill=[(tokens, 0)])) >= layer_flops * tokens / 989.4e12


def test_small_decode_is_memory_bound_and_long_prefill_compute_bound(
    llama8b_h100: Deployment,
) -> None:
    """Batch-1 decode is bandwidth-bound, a 4k prefill compute-bound; at ideal efficiency and
    no fixed costs they reach the peaks, and the default constants keep them under their
    fitted efficiencies (the rest of the time goes to fixed kernel and CPU costs)."""
    decode, prefill = Batch(num_decode_seqs=1, decode_ctx_tokens=512), Batch.of(prefill=[(4096, 0)])
    ideal = Roofline(llama8b_h100, IDEAL)
    assert ideal.utilization(decode)[1] > 0.95 and ideal.utilization(prefill)[0] > 0.85
    model = Roofline(llama8b_h100)
    mfu, mbu = model.utilization(decode)
    assert model.params.bw_efficiency > mbu > 0.4 and mfu < 0.01
    mfu, mbu = model.utilization(prefill)
    assert model.params.mfu_efficiency > mfu > 0.4 and mbu < 0.2


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 512),
    ctx=st.integers(1, 4096),
    extra_n=st.integers(0, 64),
    extra_ctx=st.integers(0, 8192),
)
def test_iteration_monotone_in_batch_and_context(
    n: int, ctx: int, extra_n: int, extra_ctx: int
) -> None:
    """More sequences or more context never makes a decode step faster (TP=2 too)."""
    from sincere.catalog import get_accelerator, get_model

    for tp in (1, 2):
        model = Roofline(Deployment(get_model("llama-3-8b"), get_accelerator("H100-SXM"), tp=tp))
        base = model.decode_step_s(n, n * ctx)
        assert model.decode_step_s(n + extra_n, (n + extra_n) * ctx) >= base
        assert model.decode_step_s(n, n * ctx + extra_ctx) >= base


def test_tp2_faster_per_token_but_less_than_twice(make_deployment: MakeDeployment) -> None:
    """TP=2 cuts decode and prefill time, but all-reduces keep the speed-up under 2x."""
    one = Roofline(make_deployment(tp=1))
    two = Roofline(make_deployment(tp=2))
    for batch in (
        Batch(num_decode_seqs=1, decode_ctx_tokens=512),
        Batch(num_decode_seqs=64, decode_ctx_tokens=64 * 512),
        Batch.of(prefill=[(2048, 0)]),
    ):
        t1, t2 = one.iteration_s(batch), two.iteration_s(batch)
        assert t2 < t1 < 2.0 * t2


def test_pp_microbatches_shrink_the_bubble(make_deployment: MakeDeployment) -> None:
    """With PP=2 one micro-batch has no overlap; four micro-batches make a long prefill faster."""
    batch = Batch.of(prefill=[(1024, 0)] * 8)
    single = Roofline(make_deployment(pp=2))
    four = Roofline(make_deployment(pp=2), RooflineParams(pp_microbatches=4))
    flat = Roofline(make_deployment())
    assert four.iteration_s(batch) < single.iteration_s(batch)
    assert single.iteration_s(batch) >= flat.iteration_s(batch)


def test_fp8_weights_speed_up_decode(make_deployment: MakeDeployment) -> None:
    """Halving weight bytes (fp8) brings a batch-1 decode's GEMM time (layers and LM head)
    close to half in the roofline's form; fixed kernel and CPU costs stay. H100's measured
    fp8 GEMMs at one token are slower than the form says (their factor by shape), so with
    it fp8 still saves time, less than half."""
    batch = Batch(num_decode_seqs=1, decode_ctx_tokens=512)
    dense, quant = make_deployment(), make_deployment(precision="fp8")
    fixed = Roofline(dense).params.layer_overhead_s * 32
    for corrected, low, high in ((False, 0.45, 0.6), (True, 0.45, 0.75)):
        params = replace(default_roofline_params(dense.accelerator), shape_corrections=corrected)
        bf16 = Roofline(dense, params).parts(batch)
        fp8 = Roofline(quant, params).parts(batch)
        gemms_bf16 = bf16.linear_s + bf16.lm_head_s - fixed
        gemms_fp8 = fp8.linear_s + fp8.lm_head_s - fixed
        assert low * gemms_bf16 < gemms_fp8 < high * gemms_bf16, corrected
        assert fp8.overhead_s == bf16.overhead_s and fp8.attention_s == bf16.attention_s


def test_load_time_is_weights_over_host_link(llama8b_h100: Deployment) -> None:
    """Load = weight bytes / (host link * efficiency) + constant; TP shards the bytes."""
    params = RooflineParams(load_efficiency=1.0, load_overhead_s=0.5)
    model = Roofline(llama8b_h100, params)
    expected = 8.03e9 * 2 / 64e9 + 0.5
    assert model.load_time().mean_s == pytest.approx(expected)
    slow_disk = Roofline(llama8b_h100, RooflineParams(disk_read_gbps=2.0, load_overhead_s=0.0))
    assert slow_disk.load_time().mean_s == pytest.approx(8.03e9 * 2 / 2e9)


def test_bad_params_are_rejected() -> None:
    """Efficiencies outside (0, 1] raise a ConfigError naming the field."""
    with pytest.raises(ConfigError, match="mfu_efficiency"):
        RooflineParams(mfu_efficiency=1.5)
    with pytest.raises(ConfigError, match="pp_microbatches"):
        RooflineParams(pp_microbatches=0)


@settings(max_examples=60, deadline=None)
@given(tokens=st.integers(1, 20_000), tp=st.sampled_from([1, 2, 8]))
def test_layer_is_the_sum_of_its_kernel_terms(tokens: int, tp: int) -> None:
    """One layer's linear work is exactly fixed + elementwise, QKV, O, then the FFN's kernels."""
    from sincere.catalog import get_accelerator, get_model

    dep = Deployment(get_model("llama-3-8b"), get_accelerator("H100-SXM"), tp=tp)
    kernels = Roofline(dep).kernels
    total = kernels.fixed_and_elementwise_s(tokens)
    for term in (*kernels.projections_s(tokens), *kernels.ffn_s(tokens)):
        assert term > 0
        total += term
    assert kernels.linear_layer_s(tokens) == total
    assert Roofline(dep).parts(Batch.of(prefill=[(tokens, 0)])).linear_s == 32 * total


def test_attention_pair_work_takes_the_head_offset_and_kv_heads() -> None:
    """A pair's work is 4·(q_heads·(head_dim + offset) + kv_work·kv_heads·head_dim): Llama-3-8B
    at TP 1 (32 query / 8 KV heads of 128), offset 64 and KV work 2 give 4·(32·192 + 2·8·128)
    FLOPs, so a compute-bound prefill's attention grows by that over 4·32·128."""
    from sincere.catalog import get_accelerator, get_model
    from sincere.perf.roofline import attention_pair_flops

    params = RooflineParams(attn_head_dim_offset=64.0, attn_kv_head_work=2.0)
    assert attention_pair_flops(params, 32, 8, 128) == 4.0 * (32 * 192 + 2 * 8 * 128)
    dep = Deployment(get_model("llama-3-8b"), get_accelerator("H100-SXM"))
    plain = Roofline(dep, IDEAL).kernels.coef.pair_s
    wider = Roofline(dep, replace(IDEAL, attn_head_dim_offset=64.0, attn_kv_head_work=2.0))
    assert wider.kernels.coef.pair_s == pytest.approx(plain * (32 * 192 + 2 * 8 * 128) / 4096)
    with pytest.raises(ConfigError, match="attn_head_dim_offset"):
        RooflineParams(attn_head_dim_offset=-1.0)


def test_eager_allreduce_takes_its_floor_then_the_added_latency() -> None:
    """Outside a CUDA graph each all-reduce takes max(floor, graph time) + eager_s: with a
    100 us floor the small ring (5 us + 513 tokens · 4 KiB over the link) sits on it, so a
    layer's two all-reduces take 2·(100 + 1) us; in a graph (512 tokens) the ring's own time."""
    from sincere.catalog import get_accelerator, get_model
    from sincere.perf.roofline import comm_layer_s

    params = RooflineParams(
        allreduce_latency_s=5e-6, allreduce_eager_s=1e-6, allreduce_eager_floor_s=100e-6
    )
    acc = get_accelerator("H100-SXM")
    dep = Deployment(get_model("llama-3-8b"), acc, tp=2)
    coef = Roofline(dep, params).kernels.coef
    link = acc.interconnect_gbps_per_direction * 1e9 * params.interconnect_efficiency
    graph = 2 * (5e-6 + 2 * (2 - 1) / 2 * 512 * 4096 * 2.0 / link)
    assert comm_layer_s(coef, 512, 512) == pytest.approx(graph)
    assert comm_layer_s(coef, 513, 513) == pytest.approx(2 * (100e-6 + 1e-6))
    without = Roofline(dep, RooflineParams(allreduce_latency_s=5e-6, allreduce_eager_s=1e-6))
    assert comm_layer_s(without.kernels.coef, 513, 513) == pytest.approx(
        2 * (5e-6 + 513 * 4096 * 2.0 / link + 1e-6)
    )
