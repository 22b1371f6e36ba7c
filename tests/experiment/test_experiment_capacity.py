"""The capacity search: bracket, bisection, seed spread, and the CLI verb."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from sincere.cli.app import _register, app
from sincere.core.errors import ConfigError
from sincere.experiment.capacity import policy_paths, search_capacity, with_policy

BASE: dict[str, Any] = {
    "workload": {"arrival": {"kind": "poisson", "rate": 1.0}},
    "instances": [{"model": "llama-3-8b", "engine": {"kind": "continuous"}}],
}


def _threshold_evaluator(capacity: float, noise: float = 0.0) -> Any:
    """Violation 0 below ``capacity`` and 0.2 above; ``noise`` shifts seed 1 by that much."""

    def evaluate(configs: list[dict[str, Any]]) -> list[float]:
        out = []
        for c in configs:
            rate = c["workload"]["arrival"]["rate"] + (noise if c["seed"] == 1 else 0.0)
            out.append(0.0 if rate <= capacity else 0.2)
        return out

    return evaluate


@settings(max_examples=30, deadline=None)
@given(st.floats(0.05, 500.0), st.floats(0.1, 50.0))
def test_bracket_contains_the_true_capacity_and_is_narrow(capacity: float, start: float) -> None:
    """Whatever the start, the final bracket holds the threshold and meets rel_tol."""
    res = search_capacity(
        BASE,
        _threshold_evaluator(capacity),
        start_rate=start,
        rel_tol=0.05,
        seeds=[0],
        max_points=40,
    )
    lo, hi = res.last_pass, res.first_fail
    assert lo is not None and hi is not None
    assert lo.rate <= capacity < hi.rate
    assert hi.rate - lo.rate <= 0.05 * hi.rate
    assert res.estimate is not None and lo.rate <= res.estimate <= hi.rate


def test_seed_spread_is_reported_at_the_bracket_ends() -> None:
    """A seed that disagrees shows up as 1 of 2 seeds passing near the capacity."""
    res = search_capacity(
        BASE, _threshold_evaluator(10.0, noise=3.0), start_rate=8.0, seeds=[0, 1], rel_tol=0.01
    )
    hi = res.first_fail
    assert hi is not None and hi.rate <= 10.0 + 0.2
    assert res.last_pass is not None
    assert all(len(p.violations) == 2 for p in res.points)
    assert any(p.num_passing(0.01) == 1 for p in res.points)
    assert res.as_json()["bracket_rps"] == [res.last_pass.rate, hi.rate]


def test_policy_override_targets_each_instance_scheduler_or_strategy() -> None:
    """Continuous engines get engine.scheduler, request-level ones engine.strategy."""
    config = {"instances": [{"engine": {"kind": "request-level"}}, {"model": "x"}]}
    assert policy_paths(config) == ["instances.0.engine.strategy", "instances.1.engine.scheduler"]
    out = with_policy(config, "edf", ["instances.1.engine.scheduler"])
    assert out["instances"][1]["engine"] == {"scheduler": "edf"}
    with pytest.raises(ConfigError, match="no instances"):
        policy_paths({"instances": []})


def test_capacity_cli_runs_a_real_search_and_writes_json_and_plot(tmp_path: Path) -> None:
    """sincere capacity on a small config: a bracket per policy; JSON (naming the config,
    the trace and num_requests) and PNG written."""
    import yaml

    config = {
        "workload": {
            "num_requests": 150,
            "arrival": {"kind": "poisson", "rate": 1.0},
            "lengths": {
                "prompt": {"kind": "fixed", "tokens": 64},
                "output": {"kind": "fixed", "tokens": 20},
            },
            "models": "sincere",
            "tiers": {"preset": "sincere-40"},
        },
        "instances": [
            {
                "models": ["granite-7b", "gemma-7b", "llama3-8b"],
                "step_model": {"kind": "sincere-table"},
                "engine": {"kind": "request-level", "sla_s": 40, "max_batch_size": 64},
            }
        ],
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    _register()
    result = CliRunner().invoke(
        app,
        [
            "capacity",
            str(path),
            "--policies",
            "best-batch+timer",
            "--seeds",
            "1,2",
            "--start-rate",
            "2",
            "--rel-tol",
            "0.25",
            "--workers",
            "1",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "o" / "capacity.json").read_text())
    (res,) = data["results"]
    lo, hi = res["bracket_rps"]
    assert lo is not None and hi is not None and lo < hi
    assert (tmp_path / "o" / "capacity.png").stat().st_size > 1000
    assert res["policy"] == "best-batch+timer" and "capacity" in result.output
    assert data["config"] == str(path)
    assert data["num_requests"] == config["workload"]["num_requests"]
    assert data["trace"]["arrival"] == config["workload"]["arrival"]
    assert data["trace"]["lengths"] == config["workload"]["lengths"]
    assert data["base_config"]["instances"] == config["instances"]
