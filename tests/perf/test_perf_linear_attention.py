"""Hybrid linear-attention models (Gated DeltaNet beside full attention, Qwen3.5): the
catalog's shapes, the memory their fixed state takes, and how a step prices them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from sincere.catalog.loader import default_catalog
from sincere.catalog.schema import validate_model
from sincere.core.errors import ConfigError, DataError
from sincere.perf.arch_step import ArchStep
from sincere.perf.base import Batch, Deployment
from sincere.perf.calibration import roofline_defaults
from sincere.perf.kernel_choice import delta_rule_kernel
from sincere.perf.linear_attention import CHUNK, GdnCost, padded_tokens
from sincere.perf.memory import linear_state_bytes_per_gpu, plan_memory
from sincere.perf.roofline import RooflineParams

QWEN = "qwen3.5-397b-a17b"


def _dep(acc: str = "B200", tp: int = 4, precision: str = "fp8") -> Deployment:
    catalog = default_catalog()
    return Deployment(catalog.model(QWEN), catalog.accelerator(acc), precision=precision, tp=tp)


def test_the_catalog_entry_counts_what_the_model_card_says() -> None:
    """397B parameters, 17B active (the card), from the shapes within 1 %; 15 of the 60
    layers cache KV, 45 keep a fixed state."""
    model = default_catalog().model("Qwen/Qwen3.5-397B-A17B")
    assert model.estimated_params_b() == pytest.approx(397.0, rel=0.01)
    assert model.active_params_b() == pytest.approx(17.0, rel=0.03)
    assert model.num_full_attention_layers == 15
    # 15 layers x 2 KV heads x 256 x (K, V) x 2 bytes
    assert model.kv_bytes_per_token("bf16") == 15 * 2 * 256 * 2 * 2
    # 45 layers x (64 heads x 128 x 128 fp32 state + 3 conv inputs x 12288 channels bf16)
    assert model.linear_state_bytes_per_seq() == 45 * (64 * 128 * 128 * 4 + 3 * 12288 * 2)


def _entry(**changes: object) -> dict[str, object]:
    raw: dict[str, object] = {
        "num_params_b": 80.0, "num_layers": 48, "hidden_size": 2048, "intermediate_size": 512,
        "num_heads": 16, "num_kv_heads": 2, "head_dim": 256, "vocab_size": 151936,
        "max_context": 262144, "num_linear_layers": 36, "linear_num_key_heads": 16,
        "linear_num_value_heads": 32, "linear_key_head_dim": 128, "linear_value_head_dim": 128,
        "linear_conv_kernel": 4,
    }  # fmt: skip
    raw.update(changes)
    return raw


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"linear_conv_kernel": 0}, "linear_conv_kernel"),
        ({"num_linear_layers": 0}, "linear_num_key_heads"),
        ({"num_linear_layers": 48}, "num_linear_layers"),
        ({"linear_num_value_heads": 24, "linear_num_key_heads": 16}, "linear_num_value_heads"),
    ],
)
def test_a_catalog_entry_with_inconsistent_linear_layers_is_refused(
    changes: dict[str, object], field: str
) -> None:
    with pytest.raises((ConfigError, DataError)) as caught:
        validate_model("hybrid", _entry(**changes), Path("models.yaml"))
    assert field in str(caught.value)


def test_a_consistent_hybrid_entry_is_taken() -> None:
    spec = validate_model("hybrid", _entry(), Path("models.yaml"))
    assert spec.num_full_attention_layers == 12 and spec.linear_state_bytes_per_seq() > 0


def test_the_kv_pool_leaves_room_for_every_sequence_state() -> None:
    """The state of max_num_seqs sequences (value heads split over TP) comes out of the KV
    pool, as a sliding window's does."""
    dep = _dep(tp=8)
    few = plan_memory(dep, max_num_seqs=16)
    many = plan_memory(dep, max_num_seqs=128)
    state = linear_state_bytes_per_gpu(dep, 128) - linear_state_bytes_per_gpu(dep, 16)
    assert state == pytest.approx(112 * 192.06144e6 / 8, rel=1e-6)
    freed = (few.num_kv_blocks - many.num_kv_blocks) * few.block_size
    activations = many.activation_bytes - few.activation_bytes
    assert freed * few.kv_bytes_per_token_per_gpu == pytest.approx(state + activations, rel=0.01)


def test_decode_of_the_linear_layers_does_not_grow_with_the_context() -> None:
    """Only the 15 full-attention layers read the context: a step's attention at 4x the
    context grows by the full layers' share alone."""
    step = ArchStep(_dep(), RooflineParams())
    short = step.attention_s(Batch(num_decode_seqs=64, decode_ctx_tokens=64 * 1000), 1.0)
    long = step.attention_s(Batch(num_decode_seqs=64, decode_ctx_tokens=64 * 4000), 1.0)
    gdn = GdnCost(_dep(), RooflineParams()).decode_step_s(64)
    linear_part = 0.75 * gdn
    assert long - linear_part == pytest.approx(
        0.25 * step._attention_of(Batch(num_decode_seqs=64, decode_ctx_tokens=64 * 4000), 1.0, 0),
        rel=1e-9,
    )
    assert short - linear_part < long - linear_part


def test_the_gated_delta_rule_pads_sequences_to_chunks_and_fills_the_gpu() -> None:
    """One short sequence costs as much as a full chunk; at equal tokens, more sequences
    (more blocks of work) are not slower per token than one."""
    assert padded_tokens(1, 1) == CHUNK and padded_tokens(4096, 2) == 4096 + CHUNK
    cost = GdnCost(_dep(tp=1), RooflineParams())
    assert cost.iteration_s(1, 1, 0) == pytest.approx(cost.iteration_s(CHUNK / 2, 1, 0), rel=0.05)
    one = cost.iteration_s(8192, 1, 0)
    eight = cost.iteration_s(8192, 8, 0)
    assert eight < one


def test_intermediates_past_the_l2_go_through_hbm() -> None:
    """With the Triton kernel's spill a prefill pays nothing extra while its intermediates
    fit the GPU's L2 and their bytes beyond it at the spill rate; a GPU whose L2 the
    catalog does not state keeps none of them on chip."""
    catalog = default_catalog()
    params = dataclasses.replace(
        RooflineParams(), gdn_spill_bytes=4000.0, gdn_onchip_share=1.0, gdn_spill_bw_efficiency=0.5
    )
    dep = _dep("L40S", tp=1, precision="bf16")
    plain = GdnCost(dep, RooflineParams())
    spilling = GdnCost(dep, params)
    heads = spilling.shape.value_heads
    fits = 96e6 / (4000.0 * heads)  # tokens whose intermediates fill the 96 MB L2
    small = 0.5 * fits // CHUNK * CHUNK
    assert spilling.iteration_s(small, 1, 0) == pytest.approx(plain.iteration_s(small, 1, 0))
    big = 4 * fits // CHUNK * CHUNK
    extra = spilling.iteration_s(big, 1, 0) - plain.iteration_s(big, 1, 0)
    beyond = 4000.0 * heads * padded_tokens(big, 1) - 96e6
    assert extra == pytest.approx(beyond / (0.5 * 864e9), rel=1e-9)
    b300 = Deployment(dep.model, catalog.accelerator("B300"), precision="bf16", tp=1)
    assert catalog.accelerator("B300").l2_cache_mb is None
    nothing_kept = GdnCost(b300, params).iteration_s(small, 1, 0)
    assert nothing_kept > GdnCost(b300, RooflineParams()).iteration_s(small, 1, 0)


def test_a_fitted_gpu_prices_linear_attention_from_its_kernels() -> None:
    """B200's default constants carry the gdn_* terms of its kernel fit, and say so; a GPU
    without such kernels takes the prefill of the GPUs running its delta-rule kernel: the
    A100 and the L4 (Triton's, by their compute capability) the mean of L40S's and RTX PRO
    6000's fits, spill included; a GPU without CUDA the documented default."""
    catalog = default_catalog()
    b200 = roofline_defaults(catalog.accelerator("B200"))
    assert b200.params["gdn_decode_bw_efficiency"] != RooflineParams().gdn_decode_bw_efficiency
    assert b200.parts["linear_attention"].startswith("fitted: measured vLLM")
    assert delta_rule_kernel(catalog.accelerator("B200")) == "flashinfer_sm100"
    assert delta_rule_kernel(catalog.accelerator("H100-SXM")) == "flashinfer_sm90"
    l40s = roofline_defaults(catalog.accelerator("L40S")).params
    rtx = roofline_defaults(catalog.accelerator("RTX-PRO-6000")).params
    for name in ("A100-80GB", "L4"):
        acc = catalog.accelerator(name)
        assert delta_rule_kernel(acc) == "triton"
        prior = roofline_defaults(acc)
        assert "gdn_decode_bw_efficiency" not in prior.params  # decode: the same kernel anywhere
        assert prior.params["gdn_spill_bytes"] == pytest.approx(
            (l40s["gdn_spill_bytes"] + rtx["gdn_spill_bytes"]) / 2
        )
        assert prior.parts["linear_attention"].startswith(
            "prior: linear attention's prefill of the L40S and RTX-PRO-6000 kernel fits"
        )
    mi300x = roofline_defaults(catalog.accelerator("MI300X"))
    assert delta_rule_kernel(catalog.accelerator("MI300X")) is None
    assert "gdn_spill_bytes" not in mi300x.params
    assert mi300x.parts["linear_attention"].startswith("prior: the mean of the H100")


def test_a_hopper_without_gdn_kernels_takes_the_hopper_delta_rule_alone() -> None:
    """FlashInfer's Hopper and data-centre Blackwell delta rules are different kernels: a
    Hopper GPU without its own prefill fit takes the mean of H100's and H200's (not B200's),
    their missing spill terms at none."""
    from sincere.perf.calibration import GDN_PREFILL, RooflineDefaults, _with_class_prior

    catalog = default_catalog()
    bare = RooflineDefaults({}, "prior", {})
    hopper = _with_class_prior(
        catalog.accelerator("H100-PCIe"), bare, "linear_attention", GDN_PREFILL, "gdn_prefill"
    )
    fits = [roofline_defaults(catalog.accelerator(n)).params for n in ("H100-SXM", "H200")]
    assert hopper.params["gdn_mfu_efficiency"] == pytest.approx(
        sum(p["gdn_mfu_efficiency"] for p in fits) / 2
    )
    assert hopper.params["gdn_spill_bytes"] == 0.0
    assert "H100-SXM and H200 kernel fits" in hopper.parts["linear_attention"]


def test_bad_gdn_constants_are_refused() -> None:
    with pytest.raises(ConfigError, match="gdn_parallel_units"):
        dataclasses.replace(RooflineParams(), gdn_parallel_units=0.5)
    with pytest.raises(ConfigError, match="gdn_mfu_efficiency"):
        dataclasses.replace(RooflineParams(), gdn_mfu_efficiency=1.5)
    with pytest.raises(ConfigError, match="gdn_spill_bytes"):
        dataclasses.replace(RooflineParams(), gdn_spill_bytes=-1.0)
    with pytest.raises(ConfigError, match="gdn_spill_bw_efficiency"):
        dataclasses.replace(RooflineParams(), gdn_spill_bw_efficiency=0.0)


def test_a_disaggregated_prompt_sends_its_state_with_its_kv() -> None:
    """Prefill/decode disaggregation moves the 15 full layers' KV of the prompt and the 45
    linear layers' fixed state; a model without such layers sends its KV alone."""
    from sincere.perf.kv_link import kv_bytes

    dep = _dep(tp=8)
    per_token = dep.model.kv_bytes_per_token(dep.kv_precision)
    state = dep.model.linear_state_bytes_per_seq()
    assert kv_bytes(dep, 1000) == 1000 * per_token + state
    assert kv_bytes(dep, 1000) - kv_bytes(dep, 10) == pytest.approx(990 * per_token)
    catalog = default_catalog()
    dense = Deployment(catalog.model("llama-3-8b"), catalog.accelerator("H100-SXM"))
    assert kv_bytes(dense, 1000) == 1000 * dense.model.kv_bytes_per_token(dense.kv_precision)


def test_a_16_bit_state_halves_its_memory_decode_traffic_and_transfer() -> None:
    """SGLang's --mamba-ssm-dtype bfloat16 (vLLM's --mamba-ssm-cache-dtype): the state a
    sequence holds, moves in a decode step and sends to a decode instance is half the
    fp32 one (the convolution's window stays bf16); the full-attention KV is untouched."""
    from sincere.perf.kv_link import kv_bytes

    fp32 = _dep(tp=8)
    bf16 = dataclasses.replace(fp32, state_precision="bf16")
    model = fp32.model
    conv = 45 * 3 * 12288 * 2.0
    assert model.linear_state_bytes_per_seq("bf16") - conv == pytest.approx(
        (model.linear_state_bytes_per_seq("fp32") - conv) / 2
    )
    assert linear_state_bytes_per_gpu(bf16, 64) < linear_state_bytes_per_gpu(fp32, 64)
    assert (
        plan_memory(bf16, max_num_seqs=128).num_kv_blocks
        > plan_memory(fp32, max_num_seqs=128).num_kv_blocks
    )
    params = RooflineParams()
    kernel = params.gdn_decode_kernel_s
    fast, slow = GdnCost(bf16, params), GdnCost(fp32, params)
    window = 2 * 2.0 * 4 * fast.shape.channels  # the convolution's, read and written in bf16
    state = 2 * 8 * 128 * 128 * 4.0  # 8 value heads a GPU at TP 8, read and written in fp32
    assert (fast.decode_step_s(64) - kernel) / (slow.decode_step_s(64) - kernel) == (
        pytest.approx((state / 2 + window) / (state + window))
    )
    assert kv_bytes(bf16, 0) < kv_bytes(fp32, 0) and kv_bytes(bf16, 100) - kv_bytes(
        bf16, 0
    ) == pytest.approx(kv_bytes(fp32, 100) - kv_bytes(fp32, 0))


def test_an_unknown_state_precision_is_refused_with_what_is_allowed() -> None:
    with pytest.raises(ConfigError, match="state_precision") as caught:
        dataclasses.replace(_dep(), state_precision="fp8")
    assert "fp32" in str(caught.value) and "bf16" in str(caught.value)


def _config(state: str) -> dict[str, object]:
    return {
        "seed": 0,
        "workload": {
            "num_requests": 20,
            "arrival": {"kind": "poisson", "rate": 4.0},
            "lengths": {"prompt": {"kind": "fixed", "tokens": 2000},
                        "output": {"kind": "fixed", "tokens": 50}},
            "models": {"qwen3.5-35b-a3b": 1.0},
        },
        "instances": [{"name": "h100", "model": "qwen3.5-35b-a3b", "accelerator": "H100-SXM",
                       "precision": "fp8", "state_precision": state}],
    }  # fmt: skip


def test_a_config_sets_the_state_precision_of_its_instances() -> None:
    """``state_precision`` in an instance block reaches the engine (a 16-bit state decodes
    faster than the fp32 one, every request served); a precision it cannot be is refused
    naming the instance and what is allowed."""
    from sincere.sim import simulate

    fp32, bf16 = simulate(_config("fp32")), simulate(_config("bf16"))
    for result in (fp32, bf16):
        assert result.log.num_unfinished == 0 and not result.records.rejected.any()
    slow, fast = (r.requests.to_pydict()["tpot_s"] for r in (fp32, bf16))
    assert sum(fast) < sum(slow)
    with pytest.raises(ConfigError, match="state_precision") as caught:
        simulate(_config("int8"))
    assert "instances[0]" in str(caught.value) and "allowed: bf16, fp16, fp32" in str(caught.value)
