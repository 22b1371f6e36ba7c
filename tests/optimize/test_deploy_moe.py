"""`sincere deploy` on the new models: TP x EP x precision for MoE ones, every model placed."""

from __future__ import annotations

import json

import pytest
from tests.conftest import NEW_MODELS
from typer.testing import CliRunner

from sincere.catalog import get_model
from sincere.cli.app import _register, app
from sincere.optimize.deploy import DeployRequest, enumerate_configs

_register()
runner = CliRunner()


def test_moe_configurations_span_tp_ep_and_precision() -> None:
    """GPT-OSS-120B on 8 GPUs: EP degrees dividing both TP and the 128 experts, in MXFP4 and
    fp16; a dense model only ever gets EP 1."""
    req = DeployRequest("gpt-oss-120b", 128, max_pp=1)
    keys = [k for k, _ in enumerate_configs(get_model("gpt-oss-120b"), req, 8)]
    assert {(k.tp, k.ep) for k in keys} == {
        (1, 1), (2, 1), (2, 2), (4, 1), (4, 2), (4, 4), (8, 1), (8, 2), (8, 4), (8, 8)
    }  # fmt: skip
    assert {k.precision for k in keys} == {"fp16", "mxfp4"}
    dense = enumerate_configs(get_model("qwen3-8b"), DeployRequest("qwen3-8b", 128), 8)
    assert {k.ep for k, _ in dense} == {1}
    mixtral = enumerate_configs(get_model("mixtral-8x7b"), DeployRequest("mixtral-8x7b", 8), 8)
    assert max(k.ep for k, _ in mixtral) == 8


@pytest.mark.parametrize("model", NEW_MODELS)
def test_every_new_model_deploys_on_eight_h200s(model: str) -> None:
    """Each new model gets a configuration on 8 x H200 (min_gpu_cost), with its EP printed."""
    args = ["deploy", model, "--output-len", "64", "--gpus", "8xH200", "--json"]
    res = runner.invoke(app, [*args, "--cost-type", "min_gpu_cost"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["chosen"] is not None
    assert out["chosen"]["ep"] >= 1
    if not get_model(model).is_moe:
        assert all(c["ep"] == 1 for c in [out["chosen"], *out["runners_up"]])


def test_a_model_that_does_not_fit_says_so_with_options() -> None:
    """DeepSeek-V3 on four H100s: nothing fits, and the output names what would."""
    res = runner.invoke(app, ["deploy", "deepseek-v3", "--output-len", "64", "--gpus", "4xH100"])
    assert res.exit_code == 1
    assert "no configuration fits" in res.output
    assert "lower precision" in res.output and "more GPUs" in res.output
