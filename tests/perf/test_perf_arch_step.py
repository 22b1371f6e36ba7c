"""Step time of MoE, MLA and sliding-window models through the roofline."""

from __future__ import annotations

from dataclasses import replace

import pytest
from tests.conftest import NEW_MODELS

from sincere.catalog import get_accelerator, get_model
from sincere.core.errors import ConfigError
from sincere.perf import Batch, Deployment, Roofline
from sincere.perf.arch_step import ArchStep, MoEParams
from sincere.perf.calibration import default_roofline_params
from sincere.perf.moe import busiest_rank_load, expected_distinct_experts
from sincere.perf.roofline import allreduce_terms
from sincere.perf.shape_grid import allreduce_factor

BATCHES = (
    Batch.of(decode=[512]),
    Batch.of(decode=[512] * 64),
    Batch.of(prefill=[(480, 500)], decode=[1200] * 32),
    Batch.of(prefill=[(2048, 0)]),
)


def _dep(model: str, acc: str = "H100-SXM", **kw: object) -> Deployment:
    return Deployment(get_model(model), get_accelerator(acc), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("model", ["llama-3-8b", "llama-2-70b", "falcon-7b", "gemma-7b"])
@pytest.mark.parametrize(("tp", "pp"), [(1, 1), (2, 1), (2, 2)])
def test_dense_models_price_the_same_through_arch_step(model: str, tp: int, pp: int) -> None:
    """ArchStep composes the roofline's kernels: on a dense model it gives the roofline's times."""
    dep = _dep(model, tp=tp, pp=pp)
    roofline = Roofline(dep)
    arch = ArchStep(dep, roofline.params)
    for batch in BATCHES:
        assert arch.iteration_s(batch) == pytest.approx(roofline.iteration_s(batch), rel=1e-12)
        ours, theirs = arch.parts(batch).as_dict(), roofline.parts(batch).as_dict()
        assert ours == pytest.approx(theirs, rel=1e-12)


@pytest.mark.parametrize("model", NEW_MODELS)
def test_parts_sum_and_fast_path_agree(model: str) -> None:
    """Parts sum to the iteration, the engines' fast path gives the same, decode runs add up."""
    dep = _dep(model, tp=8, precision="bf16")
    roofline = Roofline(dep)
    for batch in BATCHES:
        parts = roofline.parts(batch)
        assert parts.total_s == pytest.approx(roofline.iteration_s(batch))
        fast = roofline.iteration_s_fast(
            batch.num_prefill_seqs,
            batch.prefill_tokens,
            batch.prefill_ctx_tokens,
            batch.prefill_attn_pairs,
            batch.num_decode_seqs,
            batch.decode_ctx_tokens,
        )
        assert fast == roofline.iteration_s(batch)
        assert parts.has_experts == dep.model.is_moe
    steps = sum(roofline.decode_step_s(4, 400 + 4 * i) for i in range(5))
    assert roofline.decode_steps_s(4, 400, 5) == pytest.approx(steps)


def test_decode_experts_scale_with_the_distinct_expert_count() -> None:
    """Qwen3-30B-A3B decode at batch 1 reads 8 experts a layer, at 64 about 125.9: the experts
    part's weight traffic grows by that ratio (memory-bound), not by 64 and not flat as a dense
    model's GEMMs (the fused kernel's fixed cost, which dilutes it, is left out here)."""
    dep = _dep("qwen3-30b-a3b")
    roofline = Roofline(dep, replace(default_roofline_params(dep.accelerator), moe_kernel_s=0.0))
    one = roofline.parts(Batch.of(decode=[512]))
    many = roofline.parts(Batch.of(decode=[512] * 64))
    ratio = expected_distinct_experts(64, 128, 8) / expected_distinct_experts(1, 128, 8)
    assert many.experts_s / one.experts_s == pytest.approx(ratio, rel=0.03)
    assert 15.0 < ratio < 16.0
    dense = Roofline(_dep("qwen3-32b"))
    dense_ratio = dense.iteration_s(Batch.of(decode=[512] * 64)) / dense.iteration_s(
        Batch.of(decode=[512])
    )
    assert dense_ratio < 2.0 < many.total_s / one.total_s


def test_expert_parallelism_adds_all_to_all_and_splits_experts() -> None:
    """EP8 on TP8: each GPU reads 1/8 of the activated experts whole, and exchanges no tokens
    (every GPU of the TP group holds them all; the TP all-reduce sums the experts' outputs);
    EP8 over eight attention-DP ranks: two exchanges a layer, more with skewed routing."""
    tp8 = Roofline(_dep("qwen3-235b-a22b", tp=8))
    ep8 = Roofline(_dep("qwen3-235b-a22b", tp=8, ep=8))
    batch = Batch.of(decode=[1024] * 128)
    assert tp8.parts(batch).all_to_all_s == 0.0
    assert ep8.parts(batch).all_to_all_s == 0.0
    assert ep8.parts(batch).communication_s == pytest.approx(tp8.parts(batch).communication_s)
    assert ep8.parts(batch).experts_s != tp8.parts(batch).experts_s
    dp8 = Roofline(_dep("qwen3-235b-a22b", tp=1, ep=8, attention_dp=8))
    rank = Batch.of(decode=[1024] * 16)
    assert dp8.parts(rank).all_to_all_s > 0.0
    moe = MoEParams(ep_imbalance=1.5)
    skewed = ArchStep(_dep("qwen3-235b-a22b", tp=1, ep=8, attention_dp=8), dp8.params, moe)
    assert skewed.parts(rank).all_to_all_s > dp8.parts(rank).all_to_all_s
    assert skewed.parts(rank).experts_s > dp8.parts(rank).experts_s


def test_bad_ep_and_precision_are_refused() -> None:
    """An EP degree that does not divide the experts or TP, EP on a dense model and fp8 on the
    CPU host are refused naming the value."""
    with pytest.raises(ConfigError, match="num_experts") as err:
        _dep("mixtral-8x7b", tp=3, ep=3)
    assert err.value.value == 3 if hasattr(err.value, "value") else True
    with pytest.raises(ConfigError, match="divide tp"):
        _dep("qwen3-30b-a3b", tp=2, ep=4)
    with pytest.raises(ConfigError, match="no experts"):
        _dep("llama-3-8b", tp=2, ep=2)
    with pytest.raises(ConfigError, match="cannot run fp8"):
        Roofline(_dep("qwen3-8b", "cpu", precision="fp8"))


def test_fp8_computes_at_fp8_on_h100_and_dequantised_on_a100() -> None:
    """H100 has an fp8 rate, A100 does not (bf16 after dequantisation); MXFP4 runs at bf16.
    H100's fp8 experts take the fitted fp8-expert kernel: as measured (Qwen3-30B-A3B's shape,
    block-scaled fp8 vs bf16: 0.83 vs 0.84 ms at 4,096 tokens, 0.24 vs 0.42 ms at 16) they
    gain little where compute-bound and most where the weight reads dominate."""
    assert get_accelerator("H100-SXM").compute_precision("fp8") == "fp8"
    assert get_accelerator("A100-80GB").compute_precision("fp8") == "bf16"
    assert get_accelerator("H100-SXM").compute_precision("mxfp4") == "bf16"
    prefill = Batch.of(prefill=[(4096, 0)])
    fp8 = Roofline(_dep("qwen3-30b-a3b", "A100-80GB", precision="fp8")).parts(prefill)
    bf16 = Roofline(_dep("qwen3-30b-a3b", "A100-80GB", precision="bf16")).parts(prefill)
    assert fp8.experts_s > 0.85 * bf16.experts_s  # compute at bf16: only weight reads shrink
    h100 = Roofline(_dep("qwen3-30b-a3b", precision="fp8")).parts(prefill)
    h100_bf16 = Roofline(_dep("qwen3-30b-a3b", precision="bf16")).parts(prefill)
    assert 0.75 * h100_bf16.experts_s < h100.experts_s < h100_bf16.experts_s
    decode = Batch.of(decode=[512] * 16)
    small = Roofline(_dep("qwen3-30b-a3b", precision="fp8")).parts(decode).experts_s
    small_bf16 = Roofline(_dep("qwen3-30b-a3b", precision="bf16")).parts(decode).experts_s
    assert small < 0.75 * small_bf16


def test_mxfp4_reads_a_quarter_of_the_expert_bytes() -> None:
    """GPT-OSS-120B decode at batch 1 is memory-bound: with the bf16 kernel's bandwidth share
    and no fixed cost (the bytes alone), MXFP4 experts take ~0.53/2 of bf16's. With the fitted
    MXFP4 kernel (its own fixed cost and bandwidth share) a layer's experts come within 25 %
    of H100's measured fused MXFP4 MoE of that shape at TP 2 (48 us a token)."""
    batch = Batch.of(decode=[1024])
    mx_dep = _dep("gpt-oss-120b", tp=2, precision="mxfp4")
    fitted = default_roofline_params(mx_dep.accelerator)
    layer = Roofline(mx_dep, fitted).parts(batch).experts_s / mx_dep.model.num_moe_layers
    assert layer == pytest.approx(48.3e-6, rel=0.25)
    params = replace(
        fitted,
        moe_kernel_s=0.0,
        moe_mxfp4_kernel_s=0.0,
        moe_mxfp4_bw_efficiency=fitted.moe_bw_efficiency,
        moe_mxfp4_mfu_efficiency=fitted.moe_mfu_efficiency,
    )
    mx = Roofline(mx_dep, params).parts(batch)  # the bytes alone: no fused-kernel fixed cost
    bf = Roofline(_dep("gpt-oss-120b", tp=2, precision="bf16"), params).parts(batch)
    assert mx.experts_s / bf.experts_s == pytest.approx(0.53125 / 2, rel=0.1)


def test_mla_latent_is_read_whole_on_every_rank_and_windows_cap_reads() -> None:
    """DeepSeek-V3's KV share is 1 at any TP; GPT-OSS's window layers stop growing past 128."""
    assert Roofline(_dep("deepseek-v3", tp=8, precision="fp8")).kv_share == 1.0
    roofline = Roofline(_dep("gpt-oss-20b", precision="mxfp4"))
    short = roofline.parts(Batch.of(decode=[128] * 8)).attention_s
    long = roofline.parts(Batch.of(decode=[8192] * 8)).attention_s
    full_only = Roofline(_dep("qwen3-8b")).parts(Batch.of(decode=[8192] * 8)).attention_s
    assert short < long
    assert full_only > 0


# Hand-checkable constants: no fixed kernel cost, all-to-all at a measured-style form.
A2A = dict(
    alltoall_gpus=(2, 8),
    alltoall_latencies_s=(6e-6, 8e-6),
    alltoall_efficiencies=(0.5, 0.6),
    alltoall_protocol_s=4e-6,
    alltoall_knee_bytes=2.0**15,
)


def test_ep_halves_the_experts_per_gpu_and_adds_the_priced_all_to_all() -> None:
    """Qwen3-30B-A3B (48 MoE layers, hidden 2048, top-8 of 128) at TP 2: EP 2 gives each GPU
    64 whole experts instead of 128 halves (same bytes: the experts' weight traffic is
    unchanged) and no exchange. Over two attention-DP ranks of 32 decodes each (the same 64
    tokens at the experts), EP 2 adds two exchanges a layer of the group's 64 tokens' 8
    copies, half of them bound to the other GPU: 64/2·8·2048·2·1/2 = 524,288 bytes, each
    costing 6 us + 4 us · size / (size + 32 KiB) + size / (450 GB/s · 0.5). These are the
    mean rank's figures (the default); the busiest rank's are the next test's."""
    params = replace(default_roofline_params(get_accelerator("H100-SXM")), **A2A)
    mean = MoEParams(busiest_rank=False)
    batch = Batch.of(decode=[512] * 64)
    tp2 = ArchStep(_dep("qwen3-30b-a3b", tp=2), params, mean)
    ep2 = ArchStep(_dep("qwen3-30b-a3b", tp=2, ep=2), params, mean)
    assert tp2.parts(batch).all_to_all_s == ep2.parts(batch).all_to_all_s == 0.0
    dp2 = ArchStep(_dep("qwen3-30b-a3b", tp=1, ep=2, attention_dp=2), params, mean)
    size = 64 / 2 * 8 * 2048 * 2.0 * (2 - 1) / 2
    assert size == 524_288
    link = get_accelerator("H100-SXM").interconnect_gbps_per_direction * 1e9
    one = 6e-6 + 4e-6 * size / (size + 2.0**15) + size / (link * 0.5)
    assert dp2.parts(Batch.of(decode=[512] * 32)).all_to_all_s == pytest.approx(48 * 2 * one)
    # the experts part: same rows and weight bytes per GPU, a quarter of the permutation,
    # before what an EP call pays on top (its pass over the other GPU's pairs, its fixed cost)
    own = replace(params, moe_ep_foreign_factor=0.0, moe_ep_kernel_s=0.0, moe_ep_onchip_share=0.0)
    ep2_own = ArchStep(_dep("qwen3-30b-a3b", tp=2, ep=2), own, mean)
    assert ep2_own.parts(batch).experts_s < tp2.parts(batch).experts_s
    per_call = replace(own, moe_ep_kernel_s=20e-6)
    with_cost = ArchStep(_dep("qwen3-30b-a3b", tp=2, ep=2), per_call, mean)
    assert with_cost.parts(batch).experts_s == pytest.approx(
        ep2_own.parts(batch).experts_s + 48 * 20e-6
    )


def test_the_busiest_expert_parallel_rank_sets_the_layer() -> None:
    """Under EP a layer waits for the rank the batch loads most. Qwen3.5-397B (512 experts,
    top 10) at TP 4: a decode batch of 4 activates ~38.8 experts, 9.7 per rank on average
    but ~12.4 on the busiest of 4, whose weight reads then cost about 1.3x the mean rank's
    (its experts' part, fixed costs and activations included, ~1.09x); at 256 tokens nearly
    every expert is active and the ranks are within a few percent.
    Over attention-DP ranks the exchange carries the busiest rank's routed copies. Priced
    so with ``MoEParams.busiest_rank``; the default is the mean rank."""
    params = default_roofline_params(get_accelerator("B200"))
    dep = _dep("qwen3.5-397b-a17b", "B200", tp=4, ep=4, precision="fp8")
    busiest = ArchStep(dep, params, MoEParams(busiest_rank=True))
    mean = ArchStep(dep, params)
    assert mean.parts(Batch.of(decode=[64])).total_s == (
        ArchStep(dep, params, MoEParams(busiest_rank=False)).parts(Batch.of(decode=[64])).total_s
    )
    distinct, routed = busiest_rank_load(4, 512, 10, 0.0, 4)
    assert distinct == pytest.approx(12.4, abs=0.1)
    assert routed > 4 * 10 / 4
    small = Batch.of(decode=[1024] * 4)
    ratio = busiest.parts(small).experts_s / mean.parts(small).experts_s
    assert 1.05 < ratio < distinct / (expected_distinct_experts(4, 512, 10) / 4)
    large = Batch.of(decode=[1024] * 256)
    assert 1.0 < busiest.parts(large).experts_s / mean.parts(large).experts_s < 1.06
    assert busiest.parts(small).communication_s == mean.parts(small).communication_s
    dp = _dep("qwen3-30b-a3b", tp=1, ep=4, attention_dp=4)
    rank = Batch.of(decode=[512] * 8)
    a2a = ArchStep(dp, params, MoEParams(busiest_rank=True)).parts(rank).all_to_all_s
    a2a_mean = ArchStep(dp, params).parts(rank).all_to_all_s
    assert a2a > a2a_mean > 0.0


def test_all_to_all_takes_the_fitted_terms_at_the_nearest_gpu_count() -> None:
    """With the accelerator's measured all-to-all the exchange uses its latency and link share
    at the nearest count (EP 8 -> the 8-GPU terms); without them, MoEParams' assumptions."""
    from sincere.perf.roofline import alltoall_terms

    params = replace(default_roofline_params(get_accelerator("H100-SXM")), **A2A)
    assert alltoall_terms(params, MoEParams(), 8) == (8e-6, 0.6)
    assert alltoall_terms(params, MoEParams(), 4) == (6e-6, 0.5)  # a tie: the first
    bare = replace(params, alltoall_gpus=(), alltoall_latencies_s=(), alltoall_efficiencies=())
    assert alltoall_terms(bare, MoEParams(), 8) == (25e-6, 0.75)
    with pytest.raises(ConfigError, match="one entry per GPU count"):
        replace(params, alltoall_gpus=(2,))


def test_attention_dp_prices_the_group_tokens_at_the_experts() -> None:
    """Attention DP 2 x TP 1 with EP 2 (Qwen3-30B-A3B): each rank runs its own attention on its
    own batch, while its GPU computes the experts for both ranks' tokens (symmetric load) --
    the same expert work as one TP-2 EP-2 deployment running both batches at once -- and it
    exchanges the group's tokens over the 2-GPU group, where the TP-2 deployment, whose GPUs
    both hold every token, exchanges none -- and whose fused MoE passes over the other GPU's
    routed pairs too (``moe_ep_foreign_factor``) and pays the EP call's fixed cost
    (``moe_ep_kernel_s``), which the exchange spares the rank."""
    params = replace(default_roofline_params(get_accelerator("H100-SXM")), **A2A)
    assert params.moe_ep_foreign_factor > 0.0 and params.moe_ep_kernel_s > 0.0
    rank = ArchStep(_dep("qwen3-30b-a3b", tp=1, ep=2, attention_dp=2), params)
    alone = ArchStep(_dep("qwen3-30b-a3b", tp=1), params)
    joint = ArchStep(_dep("qwen3-30b-a3b", tp=2, ep=2), params)
    no_pass = replace(params, moe_ep_foreign_factor=0.0, moe_ep_kernel_s=0.0)
    joint_alone = ArchStep(_dep("qwen3-30b-a3b", tp=2, ep=2), no_pass)
    batch = Batch.of(decode=[512] * 32)
    both = Batch.of(decode=[512] * 64)
    ours = rank.parts(batch)
    assert ours.experts_s == pytest.approx(joint_alone.parts(both).experts_s)
    assert ours.experts_s < joint.parts(both).experts_s
    assert ours.experts_s == ArchStep(rank.deployment, no_pass).parts(batch).experts_s
    assert ours.all_to_all_s > 0.0 == joint.parts(both).all_to_all_s
    assert ours.attention_s == pytest.approx(alone.parts(batch).attention_s)
    assert ours.router_s == pytest.approx(alone.parts(batch).router_s)


def test_bad_attention_dp_is_refused() -> None:
    """attention_dp on a dense model, or with an EP that does not divide attention_dp x tp
    (or the experts) is refused naming the value and what is allowed."""
    with pytest.raises(ConfigError, match="no experts to share"):
        _dep("llama-3-8b", tp=1, attention_dp=2)
    with pytest.raises(ConfigError, match="ep must divide tp 2 x attention_dp 2 = 4") as err:
        _dep("qwen3-30b-a3b", tp=2, ep=8, attention_dp=2)
    assert "got 8; allowed: 1, 2, 4" in str(err.value)
    with pytest.raises(ConfigError, match="does not divide num_experts"):
        _dep("mixtral-8x7b", tp=1, ep=3, attention_dp=3)
    with pytest.raises(ConfigError, match="attention_dp must be >= 1"):
        _dep("qwen3-30b-a3b", tp=1, ep=1, attention_dp=0)


def test_attention_dp_without_ep_reduces_the_group_tokens_over_the_group() -> None:
    """Attention DP 4 x TP 2 with EP 1 (SGLang's DP attention without EP): every expert is
    split over the 8 GPUs, which compute all four ranks' tokens -- the expert work of one
    TP-8 deployment running the four batches -- and the exchange is two all-reduces of the
    group's tokens over the 8 GPUs (by hand from the all-reduce terms at 8 GPUs), in place
    of the rank's own MLP all-reduce in the expert layers."""
    params = replace(default_roofline_params(get_accelerator("H100-SXM")), **A2A)
    rank = ArchStep(_dep("qwen3-30b-a3b", tp=2, attention_dp=4), params)
    alone = ArchStep(_dep("qwen3-30b-a3b", tp=2), params)
    joint = ArchStep(_dep("qwen3-30b-a3b", tp=8), params)
    batch, group = Batch.of(decode=[512] * 16), Batch.of(decode=[512] * 64)
    ours, plain = rank.parts(batch), alone.parts(batch)
    assert ours.experts_s == pytest.approx(joint.parts(group).experts_s)
    latency, efficiency = allreduce_terms(params, 8)
    model = get_model("qwen3-30b-a3b")
    size = 64 * model.hidden_size * params.activation_bytes
    link = get_accelerator("H100-SXM").interconnect_gbps_per_direction * 1e9 * efficiency
    byte_s = 2 * 7 / 8 / link
    one = (latency + byte_s * size) * allreduce_factor(
        params.allreduce_grid, size, 8, False, (latency, byte_s)
    )
    assert ours.all_to_all_s == pytest.approx(model.num_layers * 2 * one)
    # the rank's TP all-reduces: one per expert layer fewer (every layer has experts here)
    assert ours.communication_s == pytest.approx(plain.communication_s / 2)
    assert ours.attention_s == pytest.approx(plain.attention_s)
    weights = _dep("qwen3-30b-a3b", tp=2, attention_dp=4).weight_bytes_per_gpu
    assert weights == pytest.approx(
        _dep("qwen3-30b-a3b", tp=2, ep=8, attention_dp=4).weight_bytes_per_gpu
    )


def test_attention_dp_spreads_the_routed_experts_over_the_group() -> None:
    """Under attention DP 4 x TP 2 a GPU holds its rank's share of the other weights (1/2) and
    1/8 of the routed experts: routed bytes / 8 + the rest / 2."""
    model = get_model("qwen3-30b-a3b")
    routed = model.param_groups()[0] * 2.0
    rest = model.weight_bytes("bf16") - routed
    dep = _dep("qwen3-30b-a3b", tp=2, ep=8, attention_dp=4)
    assert dep.weight_bytes_per_gpu == pytest.approx(rest / 2 + routed / 8)
    assert _dep("qwen3-30b-a3b", tp=2).weight_bytes_per_gpu == model.weight_bytes("bf16") / 2
    # a load reads this GPU's share, not the whole model over TP
    roof = Roofline(dep)
    rate = dep.accelerator.host_link_gbps * 1e9 * roof.params.load_efficiency
    load = (rest / 2 + routed / 8) / rate + roof.params.load_overhead_s
    assert roof.load_time().mean_s == pytest.approx(load)


def test_a_deployment_block_declares_attention_dp() -> None:
    """An instance's deployment block takes attention_dp beside ep; a bad pairing is refused
    naming the block, the value and the allowed degrees."""
    from sincere.engine.build import deployment_of
    from sincere.engine.spec import DeploymentSpec

    spec = DeploymentSpec(model="qwen3-30b-a3b", tp=2, ep=4, attention_dp=2)
    dep = deployment_of(spec, "qwen3-30b-a3b", "instances[0]")
    assert (dep.attention_dp, dep.moe_group_gpus, dep.num_gpus) == (2, 4, 2)
    bad = DeploymentSpec(model="qwen3-30b-a3b", tp=2, ep=3, attention_dp=2)
    with pytest.raises(ConfigError, match="instances\\[0\\]") as err:
        deployment_of(bad, "qwen3-30b-a3b", "instances[0]")
    assert "allowed: 1, 2, 4" in str(err.value)
