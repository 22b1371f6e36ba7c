"""``sincere validate sincere-runs``: replaying runs cell by cell, the CSV, the report, errors."""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sincere.cli.app import _register, app, main
from sincere.core.errors import ConfigError
from sincere.experiment.validation import (
    replay_model,
    rules_of,
    validate_runs,
    validation_columns,
)
from sincere.experiment.validation_report import cell_error, error_summary, write_validation
from sincere.sim.sincere_metrics import SINCERE_METRICS


def test_sincere_strategy_names_map_to_rules() -> None:
    """BestBatch+PartialBatch+Timer -> best-batch+partial-batch+timer; unknown parts refused."""
    assert rules_of("BestBatch+PartialBatch+Timer") == "best-batch+partial-batch+timer"
    assert rules_of("FCFS") == "fcfs" and rules_of("Timer+SelectBatch") == "select-batch+timer"
    with pytest.raises(ConfigError, match=r"unknown SINCERE strategy component.*'Greedy'"):
        rules_of("Greedy+Timer")


def test_replay_models_are_named_and_checked(tmp_path: Path) -> None:
    """calibrated (default) and profile; a calibration file only for the calibrated one."""
    assert replay_model("calibrated").engine["dispatch"] == "server"
    custom = replay_model("calibrated", tmp_path / "c.yaml")
    assert custom.step_model["params"]["calibration"] == str(tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match="unknown replay model"):
        replay_model("exact")
    with pytest.raises(ConfigError, match="only applies to the calibrated model"):
        replay_model("profile", tmp_path / "c.yaml")


def test_runs_made_by_the_calibrated_model_replay_exactly(simulated_runs: Path) -> None:
    """The calibrated replay of its own logs matches them (up to ms rounding)."""
    results = validate_runs(simulated_runs, replay_model("calibrated"), workers=1)
    assert results[0].cell.name.startswith("non-cc_BestBatch+Timer")
    for r in results:
        assert r.sim["processed"] == r.real["processed"]
        assert r.sim["model_switches"] == r.real["model_switches"]
        assert r.sim["latency_mean_s"] == pytest.approx(r.real["latency_mean_s"], abs=2e-3)
    worse = validate_runs(simulated_runs, replay_model("profile"), cells="*SelectBatch*")
    assert worse[0].sim["processed"] != worse[0].real["processed"]


def test_parallel_and_serial_replays_agree(simulated_runs: Path) -> None:
    """Worker processes give the same results as one process, in cells.csv order."""
    serial = validate_runs(simulated_runs, replay_model("calibrated"), workers=1)
    progress: list[int] = []
    parallel = validate_runs(
        simulated_runs,
        replay_model("calibrated"),
        workers=2,
        on_cell=lambda done, total, name: progress.append(done),
    )
    assert [r.sim for r in serial] == [r.sim for r in parallel]
    assert sorted(progress) == [1, 2, 3, 4]


def test_the_csv_has_cell_then_real_and_simulated_per_metric(
    simulated_runs: Path, tmp_path: Path
) -> None:
    """validation.csv: cell, M_real, M_sim for each metric; report.md/html with figures."""
    results = validate_runs(simulated_runs, replay_model("calibrated"), workers=1)
    files = write_validation(results, tmp_path / "out", model="calibrated", source="runs")
    with files.csv.open() as f:
        header = next(csv.reader(f))
    assert header == validation_columns()
    assert header[:3] == ["cell", "processed_real", "processed_sim"]
    assert len(header) == 1 + 2 * len(SINCERE_METRICS)
    text = files.markdown.read_text()
    assert "Errors over the cells" in text and "figures/scatter.png" in text
    assert "data:image/png;base64," in files.html.read_text()
    assert all(p.exists() for p in files.figures) and len(files.figures) == 2


def test_errors_are_relative_or_in_points() -> None:
    """Attainments and shares in points; other metrics relative; missing values skipped."""
    assert cell_error("slo_attainment", 0.80, 0.75) == pytest.approx(5.0)
    assert cell_error("processed", 100.0, 90.0) == pytest.approx(10.0)
    assert cell_error("latency_mean_s", None, 3.0) is None
    rows = [
        {f"{m}_{s}": v for m in SINCERE_METRICS for s, v in (("real", 100.0), ("sim", sim))}
        for sim in (100.0, 110.0, 130.0)
    ]
    stats = {s.metric: s for s in error_summary(rows)}
    assert stats["processed"].median == pytest.approx(10.0)
    assert stats["processed"].target == 10.0 and stats["processed"].meets


def test_the_cli_replays_writes_and_prints_the_table(simulated_runs: Path, tmp_path: Path) -> None:
    """`sincere validate sincere-runs DIR --out OUT --cells P` runs and reports."""
    _register()
    out = tmp_path / "v"
    args = ["validate", "sincere-runs", str(simulated_runs), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--cells", "non-cc_*", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "2 cells, calibrated model" in result.output
    assert (out / "validation.csv").exists() and (out / "report.html").exists()


def test_a_malformed_cell_stops_the_cli_with_file_line_column_and_value(
    simulated_runs: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One bad value in one cell: exit 2 and one line naming where it is; nothing replayed."""
    root = tmp_path / "runs"
    shutil.copytree(simulated_runs, root)
    requests = root / "cc_BestBatch_gamma_mean6_sla40" / "requests.csv"
    lines = requests.read_text().splitlines()
    fields = lines[3].split(",")
    fields[2] = "12s"  # arrival_s of the request on line 4
    lines[3] = ",".join(fields)
    requests.write_text("\n".join(lines) + "\n")
    out = tmp_path / "o"
    monkeypatch.setattr(sys, "argv", ["sincere", "validate", "sincere-runs", str(root),
                                      "--out", str(out)])  # fmt: skip
    with pytest.raises(SystemExit) as stop:
        main()
    assert stop.value.code == 2
    message = " ".join(capsys.readouterr().err.split())
    assert "requests.csv:4 column 'arrival_s'" in message and "'12s'" in message
    assert not (out / "validation.csv").exists()


def test_published_cells_replay_within_the_targets(shared_data: Path) -> None:
    """Two published cells: the calibrated replay is within 10 % on processed and latency."""
    cells = "non-cc_BestBatch_gamma_mean8_sla60,non-cc_SelectBatch+Timer_gamma_mean4_sla40"
    results = validate_runs(shared_data / "sincere-runs", replay_model("calibrated"), cells=cells)
    for r in results:
        for metric in ("processed", "latency_mean_s", "model_switches"):
            assert cell_error(metric, r.real[metric], r.sim[metric]) < 10.0, (r.cell.name, metric)
