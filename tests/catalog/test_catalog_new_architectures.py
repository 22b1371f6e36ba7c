"""Catalog entries with experts, MLA, sliding windows and native weight formats: their
validation, their parameter counts and the published sizes of their checkpoints."""

from __future__ import annotations

from typing import Any

import pytest

from sincere.catalog import get_model
from sincere.catalog.schema import CatalogEntryError, validate_model

GIB = 2**30
MOE = {
    "num_params_b": 46.7,
    "num_layers": 32,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_heads": 32,
    "num_kv_heads": 8,
    "vocab_size": 32000,
    "max_context": 32768,
    "num_experts": 8,
    "experts_per_token": 2,
    "expert_intermediate_size": 14336,
}


def _bad(**changes: Any) -> CatalogEntryError:
    with pytest.raises(CatalogEntryError) as err:
        validate_model("toy-moe", {**MOE, **changes}, "toy.yaml")
    return err.value


def test_a_valid_moe_entry_loads() -> None:
    """The Mixtral-shaped entry validates into a ModelArch with its experts."""
    arch = validate_model("toy-moe", MOE, "toy.yaml")
    assert arch.is_moe and arch.num_moe_layers == 32


@pytest.mark.parametrize(
    ("changes", "field", "value"),
    [
        ({"experts_per_token": 9}, "experts_per_token", 9),
        ({"experts_per_token": 0}, "experts_per_token", 0),
        ({"expert_intermediate_size": 0}, "expert_intermediate_size", 0),
        ({"num_dense_layers": 32}, "num_dense_layers", 32),
        ({"num_experts": 0}, "experts_per_token", 2),
        ({"kv_lora_rank": 512}, "qk_rope_head_dim", 0),
        ({"num_sliding_layers": 40, "sliding_window": 128}, "num_sliding_layers", 40),
        ({"sliding_window": 128}, "sliding_window", 128),
        ({"native_precision": "fp8"}, None, None),
        ({"native_precision": "fp6"}, "native_precision", "fp6"),
    ],
)
def test_bad_architecture_fields_are_refused_naming_field_and_value(
    changes: dict[str, Any], field: str | None, value: Any
) -> None:
    """Top-k above the experts, missing widths, half-set MLA or window fields, an unknown or
    unlisted native precision: refused with the field and the value."""
    err = _bad(**changes)
    assert "toy-moe" in str(err)
    if field is not None:
        assert err.field == field
        assert err.value == value
        assert field in str(err)


NEW = {
    # name: (published total parameters, billions; source in models.yaml)
    "mixtral-8x7b": 46.7,
    "qwen3-30b-a3b": 30.5,
    "qwen3-235b-a22b": 235.0,
    "deepseek-v3": 671.0,
    "deepseek-r1": 671.0,
    "gpt-oss-20b": 20.91,
    "gpt-oss-120b": 116.83,
    "llama-4-scout": 107.8,
    "qwen3-8b": 8.19,
    "qwen3-32b": 32.8,
    "llama-3.3-70b": 70.55,
    "minimax-m2.5": 230.0,  # the model card's total
}


@pytest.mark.parametrize(("name", "published_b"), sorted(NEW.items()))
def test_architecture_implies_the_published_parameter_count(name: str, published_b: float) -> None:
    """Parameters derived from the fields land within 1 % of the published count."""
    assert get_model(name).estimated_params_b() == pytest.approx(published_b, rel=0.01)


@pytest.mark.parametrize(
    ("name", "active_b"),
    [("qwen3-30b-a3b", 3.3), ("qwen3-235b-a22b", 22.0), ("deepseek-v3", 37.0)],
)
def test_active_parameters_match_the_model_cards(name: str, active_b: float) -> None:
    """Active parameters (top-k experts, shared ones, attention, embeddings) within 3 %."""
    assert get_model(name).active_params_b() == pytest.approx(active_b, rel=0.03)


def test_gpt_oss_mxfp4_weights_match_the_checkpoint_sizes() -> None:
    """MXFP4 experts (4.25 bits) plus bf16 attention and embeddings: 60.69 GiB and 12.80 GiB
    against the model card's 60.8 and 12.8 GiB checkpoints. Hand count for 120b: routed
    36 * 128 * 3 * 2880^2 = 114,661,785,600 at 0.53125 B; other matmuls 968,785,920 and
    embeddings 1,158,266,880 at 2 B: 65,168,179,200 bytes."""
    big = get_model("gpt-oss-120b")
    assert big.weight_bytes("mxfp4") == pytest.approx(65_168_179_200)
    assert big.weight_bytes("mxfp4") / GIB == pytest.approx(60.8, rel=0.01)
    assert get_model("gpt-oss-20b").weight_bytes("mxfp4") / GIB == pytest.approx(12.8, rel=0.01)
    assert big.weight_bytes("bf16") / 1e9 == pytest.approx(2 * 116.83, rel=0.01)


def test_deepseek_fp8_weights_match_the_checkpoint() -> None:
    """DeepSeek-V3's fp8 checkpoint holds 685B parameters (671B + a 14B MTP module, which is
    left out here) at one byte, embeddings in bf16: ours plus 14 GB lands within 2 %."""
    weights = get_model("deepseek-v3").weight_bytes("fp8")
    assert (weights + 14e9) / 1e9 == pytest.approx(685, rel=0.02)


@pytest.mark.parametrize(
    ("name", "published_b"),
    [("mixtral-8x7b", 46.7), ("qwen3-30b-a3b", 30.5), ("qwen3-235b-a22b", 235.0)],
)
def test_bf16_moe_weights_are_two_bytes_a_published_parameter(
    name: str, published_b: float
) -> None:
    """All experts are resident: bf16 checkpoints weigh 2 bytes per published parameter."""
    assert get_model(name).weight_bytes("bf16") / 1e9 == pytest.approx(2 * published_b, rel=0.01)


def test_kv_bytes_per_token_of_mla_gqa_and_windows() -> None:
    """DeepSeek-V3 caches 61 * (512 + 64) * 2 = 70,272 bytes a token in bf16; GPT-OSS-120B
    counts its 18 full layers (18 * 2 * 8 * 64 * 2 = 36,864) and holds at most 128 tokens
    a sequence in the 18 window layers (18 * 128 * 2,048 = 4,718,592 bytes)."""
    assert get_model("deepseek-v3").kv_bytes_per_token("bf16") == 70_272
    oss = get_model("gpt-oss-120b")
    assert oss.kv_bytes_per_token("bf16") == 36_864
    assert oss.window_kv_bytes_per_seq("bf16") == 4_718_592
    assert get_model("qwen3-30b-a3b").kv_bytes_per_token("bf16") == 48 * 2 * 4 * 128 * 2
