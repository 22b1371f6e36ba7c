"""MXFP4 experts against MXFP8 activations (``mxfp4_activations: mxfp8``): Blackwell's
FlashInfer / TensorRT-LLM kernel, at the fp8 rate with its own fitted constants."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from typer.testing import CliRunner

import sincere.cli.step  # noqa: F401  (registers the command)
from sincere.catalog import get_accelerator, get_model
from sincere.cli.app import app
from sincere.core.errors import ConfigError
from sincere.perf import Batch, Deployment
from sincere.perf.arch_step import ArchStep
from sincere.perf.calibration import default_roofline_params
from sincere.perf.roofline import MXFP4_ACTIVATIONS as MXFP4
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


def test_sincere_step_takes_the_activation_format() -> None:
    """`sincere step --mxfp4-activations mxfp8` prices GPT-OSS's 8k prefill experts at the fp8
    rate (below the bf16-activation kernel's, with a note saying so); a bad format names the
    allowed ones; another step model than the roofline is refused with the option named."""
    args = ["step", "gpt-oss-120b", "--accelerator", "B200", "--precision", "mxfp4"]
    args += ["--prefill", "8192", "--json"]
    runner = CliRunner()
    runs = {fmt: runner.invoke(app, [*args, "--mxfp4-activations", fmt]) for fmt in MXFP4}
    assert all(r.exit_code == 0 for r in runs.values()), [r.output for r in runs.values()]
    parts = {fmt: json.loads(r.output) for fmt, r in runs.items()}
    assert parts["mxfp8"]["parts"]["experts"] < 0.5 * parts["bf16"]["parts"]["experts"]
    assert any("MXFP8 activations" in n for n in parts["mxfp8"]["notes"])
    bad = runner.invoke(app, [*args, "--mxfp4-activations", "fp8"])
    assert isinstance(bad.exception, ConfigError)
    assert "mxfp8" in str(bad.exception) and "'fp8'" in str(bad.exception)
    other = runner.invoke(app, [*args, "--mxfp4-activations", "mxfp8", "--step-model", "inferno"])
    assert isinstance(other.exception, ConfigError)
    assert "--mxfp4-activations" in str(other.exception)
