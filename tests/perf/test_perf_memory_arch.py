"""Memory plans of MoE, MLA and sliding-window models: all experts resident, their KV."""

from __future__ import annotations

import pytest

from sincere.catalog import get_accelerator, get_model
from sincere.core.errors import ConfigError
from sincere.perf import Deployment
from sincere.perf.memory import kv_bytes_per_token_per_gpu, plan_memory


def _dep(model: str, acc: str = "H100-SXM", **kw: object) -> Deployment:
    return Deployment(get_model(model), get_accelerator(acc), **kw)  # type: ignore[arg-type]


def test_gpt_oss_120b_fits_one_h100_in_mxfp4_not_in_bf16() -> None:
    """60.7 GiB of MXFP4 weights fit an 80 GB H100 (as OpenAI states); 233 GB of bf16 do not."""
    assert plan_memory(_dep("gpt-oss-120b", precision="mxfp4")).fits
    assert not plan_memory(_dep("gpt-oss-120b", precision="bf16")).fits
    assert plan_memory(_dep("gpt-oss-120b", precision="bf16", tp=4)).fits


def test_deepseek_v3_needs_more_than_eight_h100s() -> None:
    """673 GB of fp8 weights leave eight H100s no KV room; eight H200s hold them."""
    assert not plan_memory(_dep("deepseek-v3", precision="fp8", tp=8)).fits
    assert plan_memory(_dep("deepseek-v3", "H200", precision="fp8", tp=8)).fits


def test_mla_kv_is_kept_whole_on_every_rank() -> None:
    """DeepSeek-V3's latent does not split over TP; GQA KV heads do."""
    ds1 = kv_bytes_per_token_per_gpu(_dep("deepseek-v3", "H200", precision="fp8"))
    ds8 = kv_bytes_per_token_per_gpu(_dep("deepseek-v3", "H200", precision="fp8", tp=8))
    assert ds1 == ds8 == 61 * 576 * 2
    qwen1 = kv_bytes_per_token_per_gpu(_dep("qwen3-30b-a3b"))
    qwen4 = kv_bytes_per_token_per_gpu(_dep("qwen3-30b-a3b", tp=4))
    assert qwen4 == pytest.approx(qwen1 / 4)


def test_sliding_windows_reserve_a_window_per_sequence() -> None:
    """GPT-OSS's window layers take 128 tokens for each of max_num_seqs sequences up front,
    so more sequences leave fewer full-layer KV blocks."""
    dep = _dep("gpt-oss-20b", precision="mxfp4")
    few, many = plan_memory(dep, max_num_seqs=16), plan_memory(dep, max_num_seqs=256)
    reserved = 12 * 128 * 2048 * (256 - 16)
    per_block = 24_576 * 16  # 12 full layers of 2 * 8 * 64 * 2 bytes a token, 16-token blocks
    assert few.num_kv_blocks - many.num_kv_blocks == pytest.approx(
        (reserved + many.activation_bytes - few.activation_bytes) / per_block, abs=2
    )


def test_window_reservations_take_at_most_half_the_room_left_for_kv() -> None:
    """Llama-4-Scout's 36 chunked-attention layers on 8 H200s: 1,024 sequences of 8,192-token
    windows would take more than the GPUs hold (vLLM's pool reserves none); the plan
    reserves half the room left for KV for them and gives the other half to full layers."""
    dep = _dep("llama-4-scout", "H200", tp=8)
    plan = plan_memory(dep, max_num_seqs=1024)
    room = plan.budget_bytes - plan.weight_bytes_per_gpu - plan.activation_bytes
    room -= plan.overhead_bytes
    assert plan.fits
    assert plan.num_kv_blocks == pytest.approx(
        room / 2 / (plan.kv_bytes_per_token_per_gpu * plan.block_size), abs=1
    )
    assert plan_memory(dep, max_num_seqs=64).num_kv_blocks > plan.num_kv_blocks  # uncapped


def test_a_precision_the_accelerator_cannot_run_is_refused() -> None:
    """MXFP4 on the CPU host is refused naming the precision."""
    with pytest.raises(ConfigError, match="mxfp4"):
        plan_memory(_dep("gpt-oss-20b", "cpu", precision="mxfp4"))
