"""MXFP4 experts against MXFP8 activations (``mxfp4_activations: mxfp8``): Blackwell's
FlashInfer / TensorRT-LLM kernel, at the fp8 rate with its own fitted constants."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sincere.catalog import get_accelerator, get_model
from sincere.core.errors import ConfigError
from sincere.perf import Batch, Deployment
from sincere.perf.arch_step import ArchStep
from sincere.perf.calibration import default_roofline_params
from sincere.perf.roofline import RooflineParams

B200 = get_accelerator("B200")
GPT_OSS = get_model("gpt-oss-120b")


def _experts_s(params: RooflineParams, batch: Batch, activations: str) -> float:
    dep = Deployment(GPT_OSS, B200, precision="mxfp4")
    return ArchStep(dep, replace(params, mxfp4_activations=activations)).parts(batch).experts_s


def test_mxfp8_activations_take_their_own_kernel_constants() -> None:
    """GPT-OSS-120B's 36 MoE layers each pay moe_mxfp4_mxfp8_kernel_s: moving it by 10 us
    moves the experts part by 360 us; with bf16 activations it changes nothing."""
    params = default_roofline_params(B200)
    assert params.moe_mxfp4_mxfp8_mfu_efficiency is not None
    batch = Batch.of(decode=[1024] * 16)
    base = _experts_s(params, batch, "mxfp8")
    moved = replace(params, moe_mxfp4_mxfp8_kernel_s=(params.moe_mxfp4_mxfp8_kernel_s or 0) + 1e-5)
    assert GPT_OSS.num_moe_layers == 36
    assert _experts_s(moved, batch, "mxfp8") == pytest.approx(base + 36 * 1e-5)
    assert _experts_s(moved, batch, "bf16") == _experts_s(params, batch, "bf16")


def test_mxfp8_activations_compute_at_the_fp8_rate() -> None:
    """An 8,192-token prefill is compute-bound: at B200's fp8 rate the experts take a fraction
    of the bf16-activation kernel's time (the measured kernels differ ~3x at 8k tokens);
    with the fitted constants taken away the fp8 experts' stand in, still faster."""
    params = default_roofline_params(B200)
    prefill = Batch.of(prefill=[(8192, 0)])
    mxfp8, bf16 = _experts_s(params, prefill, "mxfp8"), _experts_s(params, prefill, "bf16")
    assert mxfp8 < 0.5 * bf16
    bare = replace(
        params,
        moe_mxfp4_mxfp8_mfu_efficiency=None,
        moe_mxfp4_mxfp8_bw_efficiency=None,
        moe_mxfp4_mxfp8_kernel_s=None,
    )
    fp8_kernel = replace(bare, moe_fp8_kernel_s=(bare.moe_fp8_kernel_s or 0.0) + 1e-5)
    assert _experts_s(fp8_kernel, prefill, "mxfp8") == pytest.approx(
        _experts_s(bare, prefill, "mxfp8") + 36 * 1e-5
    )
    assert _experts_s(bare, prefill, "mxfp8") < bf16


def test_bad_activation_formats_and_gpus_are_refused() -> None:
    """An unknown format names what is allowed; the kernel needs Blackwell (H100 refused)."""
    with pytest.raises(ConfigError, match="mxfp4_activations") as bad:
        RooflineParams(mxfp4_activations="fp8")
    assert "mxfp8" in str(bad.value) and "'fp8'" in str(bad.value)
    h100 = get_accelerator("H100-SXM")
    params = replace(default_roofline_params(h100), mxfp4_activations="mxfp8")
    with pytest.raises(ConfigError, match="no fp4 tensor cores"):
        ArchStep(Deployment(GPT_OSS, h100, precision="mxfp4", tp=2), params)
