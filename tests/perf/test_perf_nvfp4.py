"""NVFP4 weights: 4.5 bits a weight, GEMMs at the fp4 rate with their own fitted constants,
refused on GPUs without fp4 tensor cores."""

from __future__ import annotations

from dataclasses import replace

import pytest
from typer.testing import CliRunner

import sincere.cli.step  # noqa: F401  (registers the command)
from sincere.catalog import get_accelerator, get_model
from sincere.catalog.specs import PRECISION_BYTES
from sincere.cli.app import app
from sincere.core.errors import ConfigError
from sincere.perf import Batch, Deployment, Roofline
from sincere.perf.arch_step import ArchStep
from sincere.perf.calibration import default_roofline_params
from sincere.perf.memory import plan_memory

B200 = get_accelerator("B200")


def test_nvfp4_is_four_and_a_half_bits_a_weight() -> None:
    """16 weights of 4 bits and one 8-bit (E4M3) scale: 72 bits per 16, 0.5625 bytes each."""
    assert PRECISION_BYTES["nvfp4"] == (16 * 4 + 8) / 16 / 8 == 0.5625


def test_nvfp4_weight_bytes_by_hand() -> None:
    """Llama-3.1-70B: 70.55e9 weights x 0.5625 B = 39.68 GB, 9.92 GB a GPU at TP 4 (the load
    reads that); DeepSeek-R1: every matmul of the layers at 0.5625 B, embeddings and LM head
    at bf16's 2 B."""
    llama = Deployment(get_model("llama-3.1-70b"), B200, precision="nvfp4", tp=4)
    assert llama.model.weight_bytes("nvfp4") == pytest.approx(70.55e9 * 0.5625)
    assert llama.weight_bytes_per_gpu == pytest.approx(70.55e9 * 0.5625 / 4)
    roof = Roofline(llama)
    link_bytes_s = B200.host_link_gbps * 1e9 * roof.params.load_efficiency
    expected = 70.55e9 * 0.5625 / 4 / link_bytes_s + roof.params.load_overhead_s
    assert roof.load_time().mean_s == pytest.approx(expected)
    r1 = get_model("deepseek-r1")
    routed, other, emb = r1.param_groups()
    assert r1.weight_bytes("nvfp4") == pytest.approx((routed + other) * 0.5625 + emb * 2.0)


def test_blackwell_runs_nvfp4_at_its_fp4_rate() -> None:
    """B200's fp4 peak is 9 PFLOPS dense (twice its fp8); NVFP4 GEMMs compute in NVFP4."""
    assert B200.compute_precision("nvfp4") == "nvfp4"
    assert B200.peak_tflops("nvfp4") == 9000 == 2 * B200.peak_tflops("fp8")
    assert "nvfp4" in B200.runnable_precisions()


@pytest.mark.parametrize("name", ["H100-SXM", "H200", "A100-80GB", "L40S"])
def test_gpus_without_fp4_tensor_cores_refuse_nvfp4(name: str) -> None:
    """Hopper, Ampere and Ada have no fp4 tensor cores: NVFP4 is refused naming the GPU, the
    value and the precisions it runs (fp8 among them where it has fp8)."""
    acc = get_accelerator(name)
    dep = Deployment(get_model("llama-3.1-70b"), acc, precision="nvfp4", tp=8)
    pattern = rf"{name} has no fp4 tensor cores.*got 'nvfp4'.*allowed: .*bf16"
    with pytest.raises(ConfigError, match=pattern) as raised:
        Roofline(dep)
    assert "nvfp4" not in str(raised.value).split("allowed:")[1]
    with pytest.raises(ConfigError, match="no fp4 tensor cores"):
        plan_memory(dep)


def test_nvfp4_gemms_take_their_own_fitted_constants() -> None:
    """Llama-3.1-70B in NVFP4 on B200: one more µs of nvfp4_gemm_kernel_s adds 4 GEMMs x 80
    layers of it to the linear part and one to the LM head; an fp8 deployment is untouched."""
    # the form alone: the measured GEMMs' factor by shape would scale the fixed cost too
    params = replace(default_roofline_params(B200), shape_corrections=False)
    assert params.nvfp4_mfu_efficiency is not None and params.nvfp4_act_s > 0
    model, batch = get_model("llama-3.1-70b"), Batch.of(decode=[1024] * 32)
    dep = Deployment(model, B200, precision="nvfp4", tp=4)
    moved = replace(params, nvfp4_gemm_kernel_s=params.nvfp4_gemm_kernel_s + 1e-6)
    base, more = Roofline(dep, params).parts(batch), Roofline(dep, moved).parts(batch)
    assert more.linear_s - base.linear_s == pytest.approx(4 * 80 * 1e-6)
    assert more.lm_head_s - base.lm_head_s == pytest.approx(1e-6)
    fp8 = Deployment(model, B200, precision="fp8", tp=4)
    assert Roofline(fp8, moved).parts(batch) == Roofline(fp8, params).parts(batch)


def test_nvfp4_decode_reads_fewer_weight_bytes_than_fp8() -> None:
    """A small decode batch is bound by reading the weights: NVFP4's 0.5625 B a weight make
    its linear part faster than fp8's 1 B on the same B200s (the layers' fixed costs, the same
    for both, keep the gain below the bytes' ratio)."""
    model, batch = get_model("llama-3.1-70b"), Batch.of(decode=[1024] * 4)
    nvfp4 = Roofline(Deployment(model, B200, precision="nvfp4", tp=4)).parts(batch)
    fp8 = Roofline(Deployment(model, B200, precision="fp8", tp=4)).parts(batch)
    assert nvfp4.linear_s < fp8.linear_s


def test_nvfp4_experts_take_their_own_kernel_constants() -> None:
    """DeepSeek-R1 in NVFP4 on 8 B200s prices its experts with moe_nvfp4_* (a change of the
    kernel cost moves the experts part by it on each of its 58 MoE layers)."""
    params = default_roofline_params(B200)
    assert params.moe_nvfp4_mfu_efficiency is not None
    model, batch = get_model("deepseek-r1"), Batch.of(decode=[1024] * 16)
    dep = Deployment(model, B200, precision="nvfp4", tp=8, ep=8)
    base = ArchStep(dep, params).parts(batch).experts_s
    moved = replace(params, moe_nvfp4_kernel_s=(params.moe_nvfp4_kernel_s or 0.0) + 1e-5)
    assert ArchStep(dep, moved).parts(batch).experts_s == pytest.approx(
        base + model.num_moe_layers * 1e-5
    )
    assert model.num_moe_layers == 58


def test_sincere_step_prices_nvfp4_on_b200_and_refuses_it_on_h100() -> None:
    """`sincere step --precision nvfp4`: B200 names the fitted NVFP4 GEMM constants among
    its parts' origins; H100 stops with the one-line refusal."""
    args = ["step", "llama-3.1-70b", "--tp", "4", "--precision", "nvfp4", "--decode", "8@1000"]
    ok = CliRunner().invoke(app, [*args, "--accelerator", "B200", "--json"])
    assert ok.exit_code == 0, ok.output
    assert "linear_nvfp4" in ok.output and "kernels/B200.yaml" in ok.output
    bad = CliRunner().invoke(app, [*args, "--accelerator", "H100"])
    assert isinstance(bad.exception, ConfigError)
    assert "H100-SXM has no fp4 tensor cores for nvfp4 weights" in str(bad.exception)
