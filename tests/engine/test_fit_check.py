"""Before timing an iteration: the precision must be the model's and the batch must fit."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import sincere.cli.step  # noqa: F401  (registers the command)
from sincere.catalog import get_accelerator, get_model
from sincere.cli.app import app
from sincere.core.errors import ConfigError
from sincere.engine.fit_check import check_step_fits, fitting_layouts
from sincere.perf import Batch, Deployment

runner = CliRunner()
DECODE = Batch.of(decode=[1000] * 32)


def _dep(model: str, precision: str, tp: int = 1, accelerator: str = "H100-SXM") -> Deployment:
    return Deployment(get_model(model), get_accelerator(accelerator), precision, tp=tp)


def test_deepseek_v3_in_bf16_does_not_fit_one_h100() -> None:
    """671B parameters in bf16 (1342 GB) on one 80 GB GPU: refused with the figures and the
    smallest TP per precision that would hold them."""
    with pytest.raises(ConfigError) as caught:
        check_step_fits(_dep("deepseek-v3", "bf16"), DECODE)
    text = str(caught.value)
    assert "deepseek-v3 (bf16, tp 1) does not fit on H100-SXM" in text
    assert "weights 1342.1 GB" in text
    assert "75.8 GB usable (90 % of the 84.2 GB the device reports, nominally 80 GB)" in text
    assert "bf16 at tp 32, fp8 at tp 16, int4 at tp 8" in text


def test_a_layout_it_suggests_does_fit() -> None:
    """Every suggested (precision, TP) passes the same check."""
    layouts = fitting_layouts(_dep("deepseek-v3", "bf16"), DECODE)
    assert layouts
    for layout in layouts:
        precision, tp = layout.split(" at tp ")
        check_step_fits(_dep("deepseek-v3", precision, int(tp)), DECODE)


def test_a_precision_the_model_does_not_list_is_refused() -> None:
    """gpt-oss-120b ships bf16 and MXFP4 weights only: fp8 names both."""
    with pytest.raises(ConfigError, match=r"no fp8 weights in the catalog.*allowed: bf16, mxfp4"):
        check_step_fits(_dep("gpt-oss-120b", "fp8"), DECODE)
    check_step_fits(_dep("gpt-oss-120b", "mxfp4"), DECODE)


def test_the_kv_of_a_large_batch_counts() -> None:
    """llama-3-8b fits one H100, but not with 4M tokens of context in one batch."""
    check_step_fits(_dep("llama-3-8b", "bf16"), DECODE)
    with pytest.raises(ConfigError, match="this batch's KV cache"):
        check_step_fits(_dep("llama-3-8b", "bf16"), Batch.of(decode=[8192] * 512))


def test_step_refuses_instead_of_timing() -> None:
    """`sincere step deepseek-v3 --accelerator H100` answers with the error, not a time."""
    args = ["step", "deepseek-v3", "--accelerator", "H100", "--decode", "32@1000", "--json"]
    result = runner.invoke(app, args)
    assert isinstance(result.exception, ConfigError)
    assert "does not fit on H100-SXM" in str(result.exception)
    assert "iteration_s" not in result.output
