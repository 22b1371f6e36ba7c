"""Inferno model data derived from the step model, and `sincere plan` on fleets of the new
models (MoE ones included)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import NEW_MODELS
from typer.testing import CliRunner

from sincere.catalog import get_accelerator, get_model
from sincere.cli.app import _register, app
from sincere.core.errors import ConfigError
from sincere.optimize.derive import derive_model_data, fit_line
from sincere.perf import Deployment, Roofline

_register()
runner = CliRunner()
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "plan" / "gpt-oss"


def test_fit_line_reports_its_errors() -> None:
    """An exact line fits with no error; a bent curve reports where it misses most."""
    xs = np.arange(1.0, 9.0)
    exact = fit_line(xs, 2.0 + 0.5 * xs)
    assert exact.intercept_ms == pytest.approx(2.0) and exact.slope_ms == pytest.approx(0.5)
    assert exact.max_rel_error == pytest.approx(0.0, abs=1e-9)
    bent = fit_line(xs, np.minimum(xs, 4.0) + 1.0)
    assert bent.max_rel_error > bent.mean_rel_error > 0


def test_moe_decode_line_is_fitted_over_the_batch_range_with_its_error() -> None:
    """Qwen3-30B-A3B's decode is far from linear at small batches: the error says so, and
    the line stays within a few % on average over 1..max_batch."""
    dep = Deployment(get_model("qwen3-30b-a3b"), get_accelerator("H100-SXM"))
    derived = derive_model_data(dep, Roofline(dep), in_tokens=512, out_tokens=256, max_batch=64)
    assert derived.decode.x_range == (1, 64)
    assert derived.decode.low_max_rel_error > 0.2
    assert derived.decode.mean_rel_error < 0.15
    entry = derived.entry
    assert entry["maxBatchSize"] == 64 and entry["atTokens"] == 768 and entry["accCount"] == 1
    assert entry["decodeParms"]["beta"] > 0


def test_a_model_that_does_not_fit_is_refused() -> None:
    """DeepSeek-V3 on one H100 has no room: refused naming the precision and the options."""
    dep = Deployment(get_model("deepseek-v3"), get_accelerator("H100-SXM"), precision="fp8")
    with pytest.raises(ConfigError, match="does not fit"):
        derive_model_data(dep, Roofline(dep), in_tokens=512, out_tokens=256)


@pytest.mark.parametrize("model", NEW_MODELS)
def test_plan_runs_on_a_fleet_of_each_new_model(model: str, tmp_path: Path) -> None:
    """`sincere fit model-data` derives the entry on eight H200s, `sincere plan` plans it."""
    fleet = tmp_path / "fleet"
    shutil.copytree(EXAMPLE, fleet)
    name = model.replace("-", "_").replace(".", "_")
    for file, key in (("model-data.json", "models"), ("server-data.json", "servers")):
        (fleet / file).write_text(json.dumps({key: []}))
    accelerators = {
        "accelerators": [
            {
                "name": "8xH200",
                "type": "H200",
                "multiplicity": 8,
                "memSize": 1128,
                "memBW": 38400,
                "power": {"idle": 1280, "full": 5600, "midPower": 4400, "midUtil": 0.6},
                "cost": 800.0,
            }
        ]
    }
    (fleet / "accelerator-data.json").write_text(json.dumps(accelerators))
    classes = {"serviceClasses": [{"name": "Chat", "priority": 1, "modelTargets": [
        {"model": name, "slo-itl": 200, "slo-ttft": 5000}]}]}  # fmt: skip
    (fleet / "serviceclass-data.json").write_text(json.dumps(classes))
    load = {"arrivalRate": 60, "avgInTokens": 512, "avgOutTokens": 256}
    servers = {"servers": [{"name": f"Chat-{name}", "class": "Chat", "model": name,
        "keepAccelerator": False, "minNumReplicas": 1, "maxBatchSize": 0,
        "currentAlloc": {"load": load}}]}  # fmt: skip
    (fleet / "server-data.json").write_text(json.dumps(servers))
    precision = get_model(model).native_precision
    derive = [
        "fit", "model-data", model, "--accelerator", "H200", "--tp", "8",
        "--precision", precision, "--max-batch", "32", "--name", name, "--acc-name", "8xH200",
        "--out", str(fleet / "model-data.json"), "--json",
    ]  # fmt: skip
    res = runner.invoke(app, derive)
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["fit_error"]["decode"]["range"] == [1, 32]
    out = tmp_path / "solution.json"
    res = runner.invoke(app, ["plan", str(fleet), "--batch-rule", "kv", "--out", str(out)])
    assert res.exit_code == 0, res.output
    solution = json.loads(out.read_text())
    assert solution[f"Chat-{name}"]["numReplicas"] >= 1


def test_the_gpt_oss_example_plans() -> None:
    """The shipped GPT-OSS / Qwen3 fleet plans every server with at least one replica."""
    res = runner.invoke(app, ["plan", str(EXAMPLE), "--batch-rule", "kv", "--out", "/dev/null"])
    assert res.exit_code == 0, res.output
    assert "Chat-gpt_oss_120b" in res.output
