"""Roofline step-time model: physical bounds, parallelism, load time."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sincere.core.errors import ConfigError
from sincere.perf.base import Batch, Deployment
from sincere.perf.roofline import Roofline, RooflineParams

MakeDeployment = Callable[..., Deployment]
IDEAL = RooflineParams(mfu_efficiency=1.0, bw_efficiency=1.0, overhead_s=0.0)


def test_decode_never_faster_than_reading_the_weights(llama8b_h100: Deployment) -> None:
    """A decode step cannot beat weight bytes over peak HBM bandwidth, even at ideal efficiency."""
    dep = llama8b_h100
    floor = dep.model.weight_bytes("bf16") / (dep.accelerator.hbm_bandwidth_gbps * 1e9)
    for params in (IDEAL, RooflineParams()):
        model = Roofline(dep, params)
        for n in (1, 8, 64, 256):
            assert model.decode_step_s(n, n * 512) >= floor


def test_prefill_never_faster_than_flops_over_peak(llama8b_h100: Deployment) -> None:
    """A prefill cannot beat its FLOPs over the accelerator's dense bf16 peak."""
    dep = llama8b_h100
    model = Roofline(dep, IDEAL)
    for tokens in (128, 512, 2048, 8192):
        flops = dep.model.flops_per_token() * tokens
        assert model.iteration_s(Batch.of(prefill=[(tokens, 0)])) >= flops / 989.4e12


def test_small_decode_is_memory_bound_and_long_prefill_compute_bound(
    llama8b_h100: Deployment,
) -> None:
    """Batch-1 decode moves bytes at near-peak bandwidth; a 4k prefill runs near peak FLOPs."""
    model = Roofline(llama8b_h100)
    mfu, mbu = model.utilization(Batch(num_decode_seqs=1, decode_ctx_tokens=512))
    assert mbu > 0.6 > 0.01 > mfu
    mfu, mbu = model.utilization(Batch.of(prefill=[(4096, 0)]))
    assert mfu > 0.4 and mbu < 0.2


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
    """Halving weight bytes (fp8) brings a batch-1 decode step close to half the time."""
    bf16 = Roofline(make_deployment()).decode_step_s(1, 512)
    fp8 = Roofline(make_deployment(precision="fp8")).decode_step_s(1, 512)
    assert 0.45 * bf16 < fp8 < 0.65 * bf16


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
