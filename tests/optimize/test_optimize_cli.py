"""``sincere plan``: the four worked examples, the solution layout, load traces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import sincere.cli.plan  # noqa: F401  (registers the command)
from sincere.cli.app import app
from sincere.core.errors import DataError
from sincere.optimize.loadtrace import read_load_trace

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "plan"
CASES = ["unlimited", "unlimited-load-change", "limited", "limited-load-change"]
KEYS = {"accelerator", "numReplicas", "maxBatch", "cost", "itlAverage", "ttftAverage", "load"}


@pytest.mark.parametrize("case", CASES)
def test_plan_runs_on_every_example(case: str, tmp_path: Path) -> None:
    """Each example plans, prints the table and writes Inferno's solution layout."""
    out = tmp_path / "solution.json"
    res = CliRunner().invoke(app, ["plan", str(EXAMPLES / case), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "Premium-granite_13b" in res.output
    sol = json.loads(out.read_text())
    servers = json.loads((EXAMPLES / case / "server-data.json").read_text())["servers"]
    assert set(sol) == {s["name"] for s in servers}
    for entry in sol.values():
        assert set(entry) >= KEYS
        assert set(entry["load"]) == {"arrivalRate", "avgInTokens", "avgOutTokens"}
        assert entry["numReplicas"] >= 0 and entry["cost"] >= 0


def test_load_trace_replans_and_plots(tmp_path: Path) -> None:
    """--load-trace re-plans at each time; --plot writes a PNG; a CSV row per step."""
    out, png = tmp_path / "s.json", tmp_path / "p.png"
    trace = EXAMPLES / "limited" / "trace.csv"
    res = CliRunner().invoke(
        app,
        [
            "plan",
            str(EXAMPLES / "limited"),
            "--out",
            str(out),
            "--load-trace",
            str(trace),
            "--plot",
            str(png),
        ],
    )
    assert res.exit_code == 0, res.output
    assert png.read_bytes()[:4] == b"\x89PNG"
    rows = (tmp_path / "s-trace.csv").read_text().splitlines()
    num_times = len({c.time for c in read_load_trace(trace)})
    assert len(rows) == 1 + 6 * num_times


def test_bad_trace_row_is_located(tmp_path: Path) -> None:
    """A malformed trace row is reported with its file, line and column."""
    bad = tmp_path / "t.csv"
    bad.write_text("time,server,arrivalRate\n0,Premium-granite_13b,12\n1,Premium-granite_13b,x\n")
    with pytest.raises(DataError, match=r"t.csv:3 column 'arrivalRate'"):
        read_load_trace(bad)


def test_missing_directory_fails_cleanly(tmp_path: Path) -> None:
    """A directory that is not there ends with a non-zero exit and a reason."""
    res = CliRunner().invoke(app, ["plan", str(tmp_path / "nope")])
    assert res.exit_code != 0
    assert "not a directory" in str(res.exception)
