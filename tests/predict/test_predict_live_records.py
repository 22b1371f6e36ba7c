"""Decision logs read as record tables: live records train and score predictors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tests.predict.conftest import hetero_config

from sincere.core.errors import DataError
from sincere.predict.live_records import decision_table
from sincere.predict.records import read_lengths, read_served
from sincere.sim import simulate


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 400-request run of the hetero cluster with its decision log beside its records."""
    folder = tmp_path_factory.mktemp("logged")
    simulate(hetero_config(3, 400), decisions=folder / "decisions.jsonl").write(folder)
    return folder


def test_a_decision_log_gives_the_records_the_simulator_wrote(logged_run: Path) -> None:
    """Served requests, latencies and load at arrival from the log equal requests.parquet's."""
    from_log = read_served(logged_run / "decisions.jsonl")
    from_table = read_served(logged_run / "requests.parquet")
    assert len(from_log) == len(from_table) > 300
    assert from_log.instances == from_table.instances
    assert from_log.num_derived == 0
    for name in ("instance", "prompt_tokens", "output_tokens", "running", "waiting",
                 "waiting_tokens", "outstanding"):  # fmt: skip
        np.testing.assert_array_equal(getattr(from_log, name), getattr(from_table, name), name)
    for name in ("arrival_at", "finished_at", "ttft_s", "tpot_s"):
        np.testing.assert_allclose(getattr(from_log, name), getattr(from_table, name), rtol=1e-9)
    assert from_log.tier == from_table.tier


def test_unknown_engine_load_is_derived_from_timestamps(logged_run: Path, tmp_path: Path) -> None:
    """A log whose views lack the engine's queue (a live backend) still gives every load."""
    lines = (logged_run / "decisions.jsonl").read_text().splitlines()
    blind = []
    for line in lines:
        record = json.loads(line)
        for view in record.get("candidates", []):
            view.update(num_running=None, num_waiting=None, waiting_prefill_tokens=None)
        blind.append(json.dumps(record))
    path = tmp_path / "live.jsonl"
    path.write_text("\n".join(blind) + "\n")
    served = read_served(path)
    exact = read_served(logged_run / "requests.parquet")
    assert served.num_derived == len(served)
    np.testing.assert_array_equal(served.outstanding, exact.outstanding)
    assert (served.running + served.waiting == served.outstanding).all()
    assert len(read_lengths([path])) == len(served)


def test_a_broken_log_line_names_file_and_line(tmp_path: Path) -> None:
    """A line that is not a decision record is a DataError with its line number."""
    path = tmp_path / "bad.jsonl"
    path.write_text('{"event": "outcome", "request": 1}\nnot json\n')
    with pytest.raises(DataError, match=r"bad.jsonl.*line 1|line 1.*bad.jsonl"):
        decision_table(path)


def test_a_log_without_outcomes_is_a_clear_error(logged_run: Path, tmp_path: Path) -> None:
    """Routed requests that never finished give no record, and an error says so."""
    lines = (logged_run / "decisions.jsonl").read_text().splitlines()
    path = tmp_path / "cut.jsonl"
    path.write_text("\n".join(x for x in lines if '"event":"outcome"' not in x) + "\n")
    with pytest.raises(DataError, match=r"no served request in the decision log \(\d+ routed, 0"):
        decision_table(path)


def test_predict_cli_trains_and_scores_on_a_decision_log(logged_run: Path, tmp_path: Path) -> None:
    """`sincere predict train length` and `eval` take a decision log as they take a table."""
    from typer.testing import CliRunner

    from sincere.cli.app import _register, app

    _register()
    runner = CliRunner()
    log, model = str(logged_run / "decisions.jsonl"), str(tmp_path / "len.npz")
    res = runner.invoke(app, ["predict", "train", "length", log, "-o", model, "-q"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["predict", "eval", model, log, "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert rows[-1]["name"] == "quantile model" and rows[-1]["num_scored"] > 300


def test_online_predictors_warm_start_from_recorded_runs(logged_run: Path) -> None:
    """warm_start replays a run's records: a log and its table give the same predictions,
    and every instance of the run is predicted from the first request on."""
    from sincere.predict.latency import LATENCY_PREDICTORS, RouteContext

    ctx = RouteContext(800, 120.0, num_running=4, num_waiting=1, num_outstanding=5)
    for name in ("linear", "recent-window"):
        cold = LATENCY_PREDICTORS.build(name, {})
        from_log = LATENCY_PREDICTORS.build(
            name, {"warm_start": str(logged_run / "decisions.jsonl")}
        )
        from_table = LATENCY_PREDICTORS.build(
            name, {"warm_start": str(logged_run / "requests.parquet")}
        )
        for instance in read_served(logged_run / "requests.parquet").instances:
            assert cold.predict(instance, ctx) is None
            est = from_log.predict(instance, ctx)
            assert est is not None and est.e2e_s > est.ttft_s > 0
            other = from_table.predict(instance, ctx)
            assert other is not None
            assert est.e2e_s == pytest.approx(other.e2e_s, rel=1e-9)
