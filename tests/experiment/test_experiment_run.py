"""End to end: a tiny spec runs in worker processes, resumes, survives a broken cell."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from sincere.experiment import load_spec, run_experiment


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, tiny_spec_session: dict[str, Any]) -> Path:
    """The tiny spec run once with 2 worker processes."""
    out = tmp_path_factory.mktemp("tiny")
    report = run_experiment(load_spec(tiny_spec_session), out, backend="process", workers=2)
    assert report.num_run == 16 and not report.failed
    return out


def test_results_table_has_one_row_per_cell_with_axes_and_flat_metrics(tiny_run: Path) -> None:
    """results.parquet: 16 rows, axis columns, seed, status and ttft_s.p99-style metrics."""
    table = pq.read_table(tiny_run / "results.parquet")
    assert table.num_rows == 16
    for name in (
        "cell_id",
        "rate",
        "strategy",
        "env",
        "seed",
        "status",
        "ttft_s.p99",
        "slo_attainment",
        "worst_tier_violation",
        "num_model_switches",
    ):
        assert name in table.column_names
    rows = table.to_pylist()
    assert {r["status"] for r in rows} == {"ok"}
    assert all(r["num_completed"] == 40 for r in rows)
    for row in rows:
        folder = tiny_run / "cells" / row["cell_id"]
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["e2e_s"]["p99"] == pytest.approx(row["e2e_s.p99"])
        assert pq.read_table(folder / "requests.parquet").num_rows == 40
        assert (folder / "config.yaml").exists() and (folder / "cell.json").exists()


def test_busy_fraction_matches_the_engines_utilisation(tiny_run: Path) -> None:
    """Rebuilt from requests.parquet, the busy share equals the engine's own utilisation."""
    for row in pq.read_table(tiny_run / "results.parquet").to_pylist():
        assert row["busy_fraction"] == pytest.approx(row["utilization"], rel=1e-9)


def test_cc_is_slower_than_non_cc_for_the_same_cell(tiny_run: Path) -> None:
    """The CC performance model makes every strategy's median latency longer."""
    rows = pq.read_table(tiny_run / "results.parquet").to_pylist()
    by = {(r["rate"], r["strategy"], r["seed"], r["env"]): r["e2e_s.p50"] for r in rows}
    for (rate, strategy, seed, env), value in by.items():
        if env == "cc":
            assert value > by[(rate, strategy, seed, "non-cc")]


def test_serial_and_process_runs_give_identical_metrics(
    tiny_run: Path, tiny_spec: dict[str, Any], tmp_path: Path
) -> None:
    """Same spec and seeds: the serial run reproduces the parallel run's numbers."""
    spec = dict(tiny_spec, seeds=[2])
    serial = run_experiment(load_spec(spec), tmp_path, backend="serial").rows
    parallel = {r["cell_id"]: r for r in pq.read_table(tiny_run / "results.parquet").to_pylist()}
    for row in serial:
        other = parallel[row["cell_id"]]
        for key in ("e2e_s.p99", "throughput_rps", "slo_attainment", "num_model_switches"):
            assert row[key] == other[key]


def test_rerun_skips_finished_cells_and_reruns_changed_ones(
    tiny_spec: dict[str, Any], tmp_path: Path
) -> None:
    """A second run does nothing; a cell whose config changed runs again."""
    tiny_spec["seeds"] = [1]
    first = run_experiment(load_spec(tiny_spec), tmp_path, backend="serial")
    assert (first.num_run, first.num_skipped) == (8, 0)
    marker = next((tmp_path / "cells").glob("*/cell.json"))
    stamp = marker.stat().st_mtime_ns
    again = run_experiment(load_spec(tiny_spec), tmp_path, backend="serial")
    assert (again.num_run, again.num_skipped) == (0, 8)
    assert marker.stat().st_mtime_ns == stamp
    assert pq.read_table(tmp_path / "results.parquet").num_rows == 8
    tiny_spec["base"]["workload"]["num_requests"] = 30
    changed = run_experiment(load_spec(tiny_spec), tmp_path, backend="serial")
    assert changed.num_run == 8


def test_a_broken_cell_is_reported_and_the_others_finish(
    tiny_spec: dict[str, Any], tmp_path: Path
) -> None:
    """A cell failing at run time (a malformed trace) fails alone, with a saved traceback."""
    bad = tmp_path / "bad.csv"
    bad.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\nnot-a-time,5,5\n")
    good = {"prompt": {"kind": "fixed", "tokens": 64}, "output": {"kind": "fixed", "tokens": 20}}
    tiny_spec["seeds"] = [1]
    tiny_spec["axes"] = {
        "lengths": {
            "path": "workload.lengths",
            "values": {"fixed": good, "bad": {"source": str(bad)}},
        },
        "rate": {"values": [3]},
    }
    report = run_experiment(load_spec(tiny_spec), tmp_path, backend="process", workers=2)
    assert [r["lengths"] for r in report.failed] == ["bad"]
    failed = report.failed[0]
    assert "not-a-time" in str(failed["error"])
    trace = (tmp_path / "cells" / str(failed["cell_id"]) / "error.txt").read_text()
    assert "Traceback" in trace
    rows = pq.read_table(tmp_path / "results.parquet").to_pylist()
    assert [r["status"] for r in rows] == ["ok", "failed"]
    assert rows[0]["num_completed"] == 40
    rerun = run_experiment(load_spec(tiny_spec), tmp_path, backend="serial")
    assert (rerun.num_run, rerun.num_skipped) == (1, 1)


def test_cells_with_identical_configs_are_simulated_once(
    tiny_spec: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An axis no config field reads makes twin cells: one simulation, every twin's folder
    and row filled with its own coordinates and the same metrics."""
    tiny_spec["seeds"] = [1]
    tiny_spec["axes"] = {"rate": {"values": [2]}, "unused": {"values": ["a", "b", "c"]}}
    from sincere.experiment import runner

    simulated: list[str] = []

    def counted(cell: Any) -> Any:
        simulated.append(cell.id)
        return execute(cell)

    execute = runner.execute_cell
    monkeypatch.setattr(runner, "execute_cell", counted)
    report = run_experiment(load_spec(tiny_spec), tmp_path, backend="serial")
    assert len(simulated) == 1 and report.num_run == 3 and not report.failed
    assert {str(r["unused"]) for r in report.rows} == {"a", "b", "c"}
    assert len({r["cell_id"] for r in report.rows}) == 3
    assert len({r["e2e_s.p99"] for r in report.rows}) == 1
    for row in report.rows:
        marker = json.loads((tmp_path / "cells" / str(row["cell_id"]) / "cell.json").read_text())
        assert marker["row"]["unused"] == row["unused"]
        assert (tmp_path / "cells" / str(row["cell_id"]) / "requests.parquet").exists()
