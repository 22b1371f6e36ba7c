"""Step-model registry, factory and the pydantic config block."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from sincere.core.errors import ConfigError
from sincere.perf.base import Batch, Deployment
from sincere.perf.cc import Confidential
from sincere.perf.execution_settings import PRESETS
from sincere.perf.factory import STEP_MODELS, StepModelConfig, make_step_model
from sincere.perf.linear import InfernoLinear
from sincere.perf.roofline import Roofline
from sincere.perf.table import BatchProfileTable

INFERNO: dict[str, object] = {
    "alpha_ms": 20.58,
    "beta_ms": 0.41,
    "gamma_ms": 164.64,
    "delta_ms": 0.0128125,
}


def test_every_kind_builds(llama8b_h100: Deployment) -> None:
    """Each registered kind builds from sample parameters and times a decode step."""
    samples: dict[str, dict[str, object]] = {
        "roofline": {"mfu_efficiency": 0.6},
        "inferno": INFERNO,
        "inferno-chunked": {"alpha_ms": 5, "beta_ms": 0.02, "gamma_ms": 0.001},
        "niyama-binned": {"bin_edges": [256], "coeffs": [[0.01, 0, 0, 1e-4, 0, 0]] * 2},
        "sincere-table": {},
        "iteration-table": {
            "token_grid": [1, 512],
            "seq_grid": [1, 64],
            "times_s": [[1, 2], [3, 4]],
        },
    }
    assert set(samples) <= set(STEP_MODELS.names())
    for kind, params in samples.items():
        model = make_step_model(kind, llama8b_h100, params)
        assert model.iteration_s(Batch(num_decode_seqs=4, decode_ctx_tokens=400)) > 0


def test_cc_wraps_unless_measured(llama8b_h100: Deployment) -> None:
    """cc=True wraps analytic models; the SINCERE table uses its CC measurements directly."""
    assert isinstance(make_step_model("roofline", llama8b_h100, cc=True), Confidential)
    table = make_step_model("sincere-table", llama8b_h100, cc=True)
    assert isinstance(table, BatchProfileTable)
    assert table.request_batch_s([10], 50) > 1.3  # CC batch-of-one ~1.5 s


def test_unknown_kind_and_params_are_named(llama8b_h100: Deployment) -> None:
    """Unknown kinds list the valid ones; unknown or missing parameters name them."""
    with pytest.raises(ConfigError, match=r"allowed: .*roofline"):
        make_step_model("magic", llama8b_h100)
    with pytest.raises(ConfigError, match="mfu_eff"):
        make_step_model("roofline", llama8b_h100, {"mfu_eff": 0.5})
    with pytest.raises(ConfigError, match=r"3 problems.*\n.*'inferno' needs parameter beta_ms"):
        make_step_model("inferno", llama8b_h100, {"alpha_ms": 1.0})
    with pytest.raises(ConfigError, match=r"'roofline' parameter mfu_efficiency should be <= 1"):
        make_step_model("roofline", llama8b_h100, {"mfu_efficiency": 1.5})


def test_config_reads_params_file(tmp_path: Path, llama8b_h100: Deployment) -> None:
    """A YAML or JSON params_file (plain or under 'params') feeds the model; params override."""
    plain = tmp_path / "fit.yaml"
    plain.write_text(yaml.safe_dump(INFERNO))
    nested = tmp_path / "fit.json"
    nested.write_text(json.dumps({"kind": "inferno", "params": INFERNO}))
    for path in (plain, nested):
        cfg = StepModelConfig(kind="inferno", params_file=path, params={"alpha_ms": 30.0})
        model = cfg.build(llama8b_h100)
        assert isinstance(model, InfernoLinear)
        assert model.alpha_ms == 30.0 and model.delta_ms == INFERNO["delta_ms"]
    with pytest.raises(ConfigError, match="another kind"):
        StepModelConfig(kind="inferno-chunked", params_file=nested).build(llama8b_h100)


def test_config_cc_params_and_validation(llama8b_h100: Deployment) -> None:
    """cc_params reach the wrapper; unknown config keys are rejected by pydantic."""
    cfg = StepModelConfig.model_validate(
        {"kind": "roofline", "cc": True, "cc_params": {"load_slowdown": 3.0}}
    )
    model = cfg.build(llama8b_h100)
    assert isinstance(model, Confidential)
    plain = Roofline(llama8b_h100)
    assert model.load_time().mean_s == pytest.approx(3.0 * plain.load_time().mean_s)
    with pytest.raises(ValidationError):
        StepModelConfig.model_validate({"kind": "roofline", "ccc": True})
    with pytest.raises(ConfigError, match="cc_params"):
        StepModelConfig(cc=True, cc_params={"nope": 1.0}).build(llama8b_h100)


def test_the_roofline_takes_its_per_count_terms_as_yaml_lists(
    make_deployment: Callable[..., Deployment],
) -> None:
    """A YAML file gives lists: the all-reduce and all-to-all terms per GPU count read them."""
    dep = make_deployment("llama-3-8b", "H100-SXM", tp=4)
    text = (
        "allreduce_gpus: [2, 4, 8]\n"
        "allreduce_latencies_s: [5.0e-6, 6.0e-6, 7.0e-6]\n"
        "allreduce_efficiencies: [0.5, 0.6, 0.7]\n"
        "alltoall_gpus: [2, 8]\n"
        "alltoall_latencies_s: [9.0e-6, 1.2e-5]\n"
        "alltoall_efficiencies: [0.4, 0.5]\n"
    )
    model = make_step_model("roofline", dep, yaml.safe_load(text))
    assert isinstance(model, Roofline)
    assert model.params.allreduce_latencies_s == (5.0e-6, 6.0e-6, 7.0e-6)
    assert model.params.alltoall_gpus == (2, 8)
    with pytest.raises(ConfigError, match="allreduce_gpus"):
        make_step_model("roofline", dep, {"allreduce_gpus": ["two"]})


def test_an_engine_with_its_own_all_reduce_prices_it_in_the_roofline(
    make_deployment: Callable[..., Deployment],
) -> None:
    """TensorRT-LLM's preset takes a share of the fitted all-reduce latency; a parameter
    given in the block wins, other kinds and one GPU are unchanged."""
    trt, vllm = PRESETS["trtllm"], PRESETS["vllm-v1"]
    assert 0.0 < trt.allreduce_latency_share < 1.0 and vllm.allreduce_latency_share == 1.0
    batch = Batch.of(decode=[1500] * 4)
    dep = make_deployment("llama-3.1-70b", "B200", tp=8, precision="fp8")
    plain = StepModelConfig().build(dep)
    fused = StepModelConfig().for_engine(trt).build(dep)
    assert isinstance(plain, Roofline) and isinstance(fused, Roofline)
    comm, fused_comm = plain.parts(batch).communication_s, fused.parts(batch).communication_s
    assert 0.0 < fused_comm < 0.5 * comm
    assert fused.iteration_s(batch) == pytest.approx(
        plain.iteration_s(batch) - (comm - fused_comm), rel=1e-9
    )
    assert StepModelConfig().for_engine(vllm) == StepModelConfig()
    pinned = StepModelConfig(params={"allreduce_latency_share": 1.0}).for_engine(trt)
    assert pinned.build(dep).iteration_s(batch) == plain.iteration_s(batch)
    inferno = StepModelConfig(kind="inferno", params=INFERNO)
    assert inferno.for_engine(trt) == inferno
    one = make_deployment("llama-3.1-70b", "B200", precision="fp8")
    assert StepModelConfig().for_engine(trt).build(one).iteration_s(batch) == (
        StepModelConfig().build(one).iteration_s(batch)
    )
    with pytest.raises(ConfigError, match="allreduce_latency_share"):
        make_step_model("roofline", dep, {"allreduce_latency_share": 1.5})
