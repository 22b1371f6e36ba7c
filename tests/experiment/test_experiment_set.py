"""`sincere experiment --set PATH=VALUE`: overrides of the base config in every cell."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from sincere.cli.app import _register, app
from sincere.core.errors import ConfigError
from sincere.experiment.grid import apply_sets, expand
from sincere.experiment.spec import load_spec

_register()


def _one_axis(tiny_spec: dict[str, Any]) -> dict[str, Any]:
    tiny_spec["seeds"] = [1]
    tiny_spec["axes"] = {"rate": {"values": [2]}}
    return tiny_spec


def test_set_reaches_every_cell_with_yaml_values(tiny_spec: dict[str, Any]) -> None:
    """A number stays a number, a bool a bool; every cell's config has them; the description
    names the overrides."""
    spec = apply_sets(
        load_spec(tiny_spec), [("workload.num_requests", 12), ("instances.0.engine.dispatch", "x")]
    )
    cells = expand(spec, validate=False)
    assert len(cells) == 16
    assert {c.config["workload"]["num_requests"] for c in cells} == {12}
    assert "Overrides: workload.num_requests = 12" in spec.description


def test_set_refuses_a_swept_field_and_a_missing_parent(tiny_spec: dict[str, Any]) -> None:
    """A field an axis sweeps, or a path through a section that does not exist, is refused
    naming the path."""
    spec = load_spec(tiny_spec)
    with pytest.raises(ConfigError, match="axis 'env' sweeps this field"):
        apply_sets(spec, [("instances.0.cc", True)])
    with pytest.raises(ConfigError, match=r"no field 'workloda' in the base config.*workload"):
        apply_sets(spec, [("workloda.num_requests", 5)])


def test_cli_set_runs_with_the_override(tiny_spec: dict[str, Any], tmp_path: Path) -> None:
    """--set workload.num_requests=7 runs the cell with 7 requests (parsed as an integer)."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(_one_axis(tiny_spec)))
    out = tmp_path / "out"
    args = ["experiment", str(spec), "--out", str(out), "--serial", "--quiet", "--no-report"]
    result = CliRunner().invoke(app, [*args, "--set", "workload.num_requests=7"])
    assert result.exit_code == 0, result.output
    (cell,) = (out / "cells").iterdir()
    config = yaml.safe_load((cell / "config.yaml").read_text())
    assert config["workload"]["num_requests"] == 7
    assert json.loads((cell / "summary.json").read_text())["num_requests"] == 7


def test_cli_set_with_a_misspelt_key_fails_before_running(
    tiny_spec: dict[str, Any], tmp_path: Path
) -> None:
    """A misspelt last key is reported with a suggestion and nothing runs."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(_one_axis(tiny_spec)))
    out = tmp_path / "out"
    args = ["experiment", str(spec), "--out", str(out), "--serial", "--quiet"]
    result = CliRunner().invoke(app, [*args, "--set", "workload.num_request=7"])
    assert isinstance(result.exception, ConfigError)
    assert "did you mean 'num_requests'?" in str(result.exception)
    assert not (out / "cells").exists()
