"""The experiment and report verbs through the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from sincere.cli.app import _register, app

_register()


def test_list_shows_the_builtin_studies() -> None:
    """--list names sincere-study and niyama-study with their cell counts."""
    result = CliRunner().invoke(app, ["experiment", "--list"])
    assert result.exit_code == 0
    assert "sincere-study" in result.output and "niyama-study" in result.output
    assert "810" in result.output


def test_experiment_runs_reports_and_resumes(tiny_spec: dict[str, Any], tmp_path: Path) -> None:
    """A spec file runs, writes the report and says where; a re-run skips every cell."""
    tiny_spec["seeds"] = [1]
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec))
    out = tmp_path / "out"
    args = ["experiment", str(spec), "--out", str(out), "--workers", "2", "--quiet"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert (out / "report" / "report.md").exists() and (out / "report" / "report.html").exists()
    assert "report:" in first.output and "8 run" in first.output
    again = CliRunner().invoke(app, [*args, "--no-report"])
    assert again.exit_code == 0 and "0 run, 8 already done" in again.output


def test_experiment_exits_non_zero_when_a_cell_fails(
    tiny_spec: dict[str, Any], tmp_path: Path
) -> None:
    """A cell failing at run time (a malformed trace) makes the command exit 1 after
    printing its error."""
    bad_trace = tmp_path / "bad.csv"
    bad_trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\nnot-a-time,5,5\n")
    tiny_spec["seeds"] = [1]
    tiny_spec["base"]["workload"]["lengths"] = {"source": str(bad_trace)}
    tiny_spec["axes"] = {"rate": {"values": [2]}}
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec))
    result = CliRunner().invoke(
        app,
        [
            "experiment",
            str(spec),
            "--out",
            str(tmp_path / "o"),
            "--serial",
            "--no-report",
            "--quiet",
        ],
    )
    assert result.exit_code == 1
    assert "1 failed" in result.output and "not-a-time" in result.output


def test_invalid_cells_are_all_named_before_anything_runs(
    tiny_spec: dict[str, Any], tmp_path: Path
) -> None:
    """Two bad values on two axes: one error lists both problems and runs no cell."""
    tiny_spec["seeds"] = [1]
    tiny_spec["axes"] = {
        "gpu": {"path": "instances.0.accelerator", "values": ["H100-SXM", "no-such-gpu"]},
        "tp": {"path": "instances.0.tp", "values": [1, 3]},
        "rate": {"values": [2]},
    }
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec))
    out = tmp_path / "o"
    result = CliRunner().invoke(app, ["experiment", str(spec), "--out", str(out), "--quiet"])
    assert result.exit_code != 0
    message = str(result.exception)
    assert message.startswith("3 of 4 cells are invalid; nothing was run")
    assert "unknown accelerator; got 'no-such-gpu'" in message
    assert "tp=3 does not split" in message
    assert not (out / "cells").exists() or not any((out / "cells").iterdir())


def test_report_verb_rewrites_the_report(tiny_spec: dict[str, Any], tmp_path: Path) -> None:
    """sincere report DIR writes report.md without figures when asked."""
    tiny_spec["seeds"] = [1]
    tiny_spec["axes"].pop("rate")
    tiny_spec["base"]["workload"]["arrival"]["rate"] = 2
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec))
    out = tmp_path / "o"
    assert (
        CliRunner()
        .invoke(app, ["experiment", str(spec), "--out", str(out), "--serial", "--no-report", "-q"])
        .exit_code
        == 0
    )
    result = CliRunner().invoke(app, ["report", str(out), "--no-figures"])
    assert result.exit_code == 0, result.output
    assert "cc vs non-cc" in (out / "report" / "report.md").read_text()
