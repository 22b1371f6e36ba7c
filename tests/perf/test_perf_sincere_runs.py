"""The step-time model calibrated on SINCERE's runs: the shipped file and its answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sincere.catalog import get_accelerator, get_model
from sincere.core.errors import ConfigError
from sincere.perf import make_step_model
from sincere.perf.base import Deployment
from sincere.perf.sincere_runs import (
    SHIPPED_CALIBRATION,
    RequestLevelCosts,
    RunCalibratedModel,
    calibrated_model,
    load_calibration,
    parse_calibration,
)
from sincere.perf.table import sincere_profile


def shipped() -> dict[str, Any]:
    path = Path(__file__).resolve().parents[2] / "src/sincere/data/perf" / SHIPPED_CALIBRATION
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def test_the_shipped_calibration_carries_its_provenance() -> None:
    """The file says what it was fitted on and by which command."""
    data = shipped()
    assert data["command"].startswith("sincere fit sincere-runs")
    assert data["fitted_on"]["num_cells"] == 144 and data["fitted_on"]["cells"] == "all"
    assert set(data["envs"]) == {"cc", "non-cc"}


def test_calibrated_model_answers_from_the_fitted_forms() -> None:
    """Batch = fixed + per-request x n; swaps, cold load and after-batch work as fitted."""
    data = shipped()["envs"]["cc"]
    model = calibrated_model(load_calibration(), "llama-3-8b", cc=True)
    batch = data["batch"]["llama3-8b"]
    assert model.request_batch_s([10] * 64, 50) == pytest.approx(
        batch["fixed_s"] + 64 * batch["per_request_s"]
    )
    assert model.request_batch_s([], 50) == 0.0
    assert model.load_time().mean_s == data["load"]["llama3-8b"]
    assert model.unload_time().mean_s == data["release"]["llama3-8b"]
    assert model.cold_load_s() == data["cold_load_s"]
    after = data["after_batch"]
    assert model.after_batch_s(10) == pytest.approx(after["fixed_s"] + 10 * after["per_request_s"])
    assert isinstance(model, RequestLevelCosts)


def test_the_scheduler_plans_with_the_non_cc_standalone_profile() -> None:
    """What the runs show: planning swaps from the non-CC profile, even in CC mode."""
    plan = calibrated_model(load_calibration(), "gemma-7b", cc=True).planning()
    profile = sincere_profile("gemma-7b", cc=False)
    assert plan.load == profile.load_time() and plan.unload == profile.unload_time()
    assert plan.select_horizon == "swap-and-batch" and plan.poll_period_s == 0.1


def test_the_factory_builds_it_per_environment() -> None:
    """kind sincere-runs: CC figures when cc, the catalog's model names accepted."""
    dep = Deployment(get_model("llama-3-8b"), get_accelerator("H100-SXM"))
    cc = make_step_model("sincere-runs", dep, cc=True)
    plain = make_step_model("sincere-runs", dep)
    assert isinstance(cc, RunCalibratedModel) and isinstance(plain, RunCalibratedModel)
    assert cc.load_time().mean_s > 1.5 * plain.load_time().mean_s  # CC loads are slower
    with pytest.raises(ConfigError, match="unknown parameter"):
        make_step_model("sincere-runs", dep, {"speed": 2})
    other = Deployment(get_model("llama-2-7b"), get_accelerator("H100-SXM"))
    with pytest.raises(ConfigError, match="no calibrated timing for model"):
        make_step_model("sincere-runs", other)


def test_a_calibration_file_can_be_given(tmp_path: Path) -> None:
    """params.calibration points at another file; its figures are used."""
    data = shipped()
    data["envs"]["non-cc"]["batch"]["gemma-7b"] = {"fixed_s": 1.0, "per_request_s": 0.5}
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(data))
    dep = Deployment(get_model("gemma-7b"), get_accelerator("H100-SXM"))
    model = make_step_model("sincere-runs", dep, {"calibration": str(path)})
    assert model.request_batch_s([1, 1], 50) == pytest.approx(2.0)
    with pytest.raises(ConfigError, match="cannot read calibration file"):
        load_calibration(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d.update(kind="other"), "not a sincere-runs calibration"),
        (lambda d: d["envs"].update(tdx=d["envs"]["cc"]), "envs must map"),
        (lambda d: d["envs"]["cc"].pop("after_batch"), "missing key"),
        (lambda d: d["envs"]["cc"]["batch"].update(x={"fixed_s": "a"}), "fixed_s, per_request_s"),
        (lambda d: d["scheduler"].update(planning_profile="tpu"), "unknown planning_profile"),
        (lambda d: d["scheduler"].update(select_horizon="soon"), "unknown select_horizon"),
        (lambda d: d["scheduler"].update(poll_period_s=0), "poll_period_s must be > 0"),
    ],
)
def test_a_malformed_calibration_is_refused(edit: Any, match: str) -> None:
    """Each part of the document is checked, with what was wrong."""
    data = shipped()
    edit(data)
    with pytest.raises(ConfigError, match=match):
        parse_calibration(data, "test.yaml")
