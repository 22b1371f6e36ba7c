"""`sincere deploy` on the new models: TP x EP x precision for MoE ones (and attention ranks
sharing one expert group), every model placed."""

from __future__ import annotations

import json

import pytest
from tests.conftest import NEW_MODELS
from typer.testing import CliRunner

from sincere.catalog import get_model
from sincere.cli.app import _register, app
from sincere.estimate.estimator import key_deployment, replica_memory_gb, roofline_estimate
from sincere.estimate.fingerprint import ConfigKey
from sincere.optimize.deploy import (
    DeployRequest,
    RooflineCosts,
    choose_deployment,
    enumerate_configs,
    replica_shape,
)
from sincere.optimize.placement import GpuState
from sincere.perf.base import Batch
from sincere.perf.roofline import Roofline

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


def test_attention_ranks_are_enumerated_for_a_batch_they_can_share() -> None:
    """DeepSeek-V3 (256 experts) on 8 GPUs with a batch of 64: one stage of 2, 4 or 8
    attention ranks with EP over all their GPUs, at every TP that leaves room for them; a
    batch of one has no ranks to share it, a dense model none at all."""
    model = get_model("deepseek-v3")
    keys = [
        k for k, _ in enumerate_configs(model, DeployRequest("deepseek-v3", 64, batch_size=64), 8)
    ]
    ranks = {(k.tp, k.pp, k.attention_dp, k.ep) for k in keys if k.attention_dp > 1}
    assert ranks == {(1, 1, 2, 2), (1, 1, 4, 4), (1, 1, 8, 8), (2, 1, 2, 4), (2, 1, 4, 8),
                     (4, 1, 2, 8)}  # fmt: skip
    one = enumerate_configs(model, DeployRequest("deepseek-v3", 64, batch_size=1), 8)
    assert all(k.attention_dp == 1 for k, _ in one)
    dense = enumerate_configs(
        get_model("qwen3-8b"), DeployRequest("qwen3-8b", 64, batch_size=64), 8
    )
    assert all(k.attention_dp == 1 for k, _ in dense)


def test_attention_ranks_are_priced_as_one_rank_with_its_share() -> None:
    """A group of 8 one-GPU ranks serving 64 requests: TTFT and TPOT are one rank's with
    8 requests (the roofline's rank of the group), memory every rank's, 8 GPUs in one stage
    whose per-GPU memory is the estimate's even share."""
    key = ConfigKey("deepseek-v3", "fp8", "fp16", 1, 1, 64, 8, 8)
    est = roofline_estimate(key, 256, accelerator="H200", prompt_tokens=1000)
    dep = key_deployment(key, "H200")
    rank = Roofline(dep)
    assert est.ttft_s == pytest.approx(rank.iteration_s(Batch.of(prefill=[(1000, 0)] * 8)))
    ctx = 8 * (1000 + 128)
    assert est.tpot_s == pytest.approx(
        rank.iteration_s(Batch(num_decode_seqs=8, decode_ctx_tokens=ctx))
    )
    assert est.num_gpus == 8
    assert est.memory_gb == pytest.approx(replica_memory_gb(dep, 8, 1000, 256))
    shape = replica_shape(get_model("deepseek-v3"), est)
    assert (shape.tp, shape.pp) == (8, 1)
    assert shape.even_gb() == pytest.approx(est.memory_gb / 8, rel=0.02)


def test_wide_expert_parallelism_wins_latency_at_a_large_batch() -> None:
    """256 requests of DeepSeek-V3 on 8 x H200 by latency: eight ranks of one GPU (each
    reading only its own sequences' MLA cache) beat every TP-8 configuration; the CLI
    prints the ranks and writes them in its JSON."""
    pool = [GpuState(i, "H200", 141.0) for i in range(8)]
    req = DeployRequest("deepseek-v3", 256, cost_type="min_lat", batch_size=256, max_pp=1)
    decision = choose_deployment(req, pool, RooflineCosts("H200", 1000))
    assert decision.chosen is not None and decision.chosen.estimate.key.attention_dp == 8
    args = ["deploy", "deepseek-v3", "--output-len", "256", "--gpus", "8xH200", "--json"]
    res = runner.invoke(app, [*args, "--batch-size", "256", "--cost-type", "min_lat"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["chosen"]["attention_dp"] > 1
    table = runner.invoke(app, [*args[:-1], "--batch-size", "256", "--cost-type", "min_lat"])
    assert table.exit_code == 0 and " dp8 ep8" in table.output
