"""``sincere plan``: the four worked examples, the solution layout, load traces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import sincere.cli.plan  # noqa: F401  (registers the command)
from sincere.cli.app import app
from sincere.core.errors import DataError
from sincere.optimize.data import load_problem
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
    """--load-trace re-plans at each time; --plot writes a PNG; a CSV row per step; the
    table printed says it is the last step's allocation, not the plain run's."""
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
    last = max(c.time for c in read_load_trace(trace))
    heading = " ".join(res.output.split())
    assert f"at t={last:g}, the last step of" in heading


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


def test_plan_reproduces_inferno_published_sample_solution(tmp_path: Path) -> None:
    """On Inferno's published small sample (15 servers, limited counts, greedy) `sincere plan`
    gives Inferno's own solution by default: accelerator, replicas, batch and cost of every
    server, and its predicted TTFT / ITL within 0.01 %."""
    out = tmp_path / "solution.json"
    res = CliRunner().invoke(app, ["plan", str(EXAMPLES / "inferno-sample"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "batch rule inferno" in " ".join(res.output.split())
    ours = json.loads(out.read_text())
    ref = json.loads((EXAMPLES / "inferno-sample" / "inferno-solution.json").read_text())
    assert set(ours) == set(ref["allocations"])
    for name, want in ref["allocations"].items():
        got = ours[name]
        keys = ("accelerator", "numReplicas", "maxBatch", "cost")
        assert [got[k] for k in keys] == [want[k] for k in keys], name
        assert got["ttftAverage"] == pytest.approx(want["ttftAverage"], rel=1e-4), name
        assert got["itlAverage"] == pytest.approx(want["itlAverage"], rel=1e-4), name


@pytest.mark.parametrize("case", CASES)
def test_worked_examples_follow_inferno_batch_rule(case: str, tmp_path: Path) -> None:
    """Each worked case's stored solution is what `sincere plan` gives by default, and every
    batch is Inferno's: the server's maxBatchSize, else maxBatchSize*atTokens/avgOutTokens."""
    out = tmp_path / "solution.json"
    res = CliRunner().invoke(app, ["plan", str(EXAMPLES / case), "--out", str(out)])
    assert res.exit_code == 0, res.output
    got = json.loads(out.read_text())
    stored = json.loads((EXAMPLES / case / "solution.json").read_text())
    keys = ("accelerator", "numReplicas", "maxBatch")
    assert {n: [a[k] for k in keys] for n, a in got.items()} == {
        n: [a[k] for k in keys] for n, a in stored.items()
    }
    problem = load_problem(EXAMPLES / case)
    for srv in problem.servers:
        alloc = got[srv.name]
        if alloc["numReplicas"] == 0:
            continue
        perf = problem.models[(srv.model, alloc["accelerator"])]
        want = srv.max_batch or int(
            perf.max_batch * perf.at_tokens / srv.current.load.avg_out_tokens
        )
        assert alloc["maxBatch"] == want, srv.name


def test_batch_rule_option_selects_the_kv_rule(tmp_path: Path) -> None:
    """`--batch-rule kv` rescales by in + out tokens: Bronze-mistral_7b (512/128 tokens on
    G2, 57 sequences of 640 fit) gets batch 57 instead of Inferno's 288."""
    out = tmp_path / "solution.json"
    args = ["plan", str(EXAMPLES / "unlimited"), "--out", str(out), "--batch-rule", "kv"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["Bronze-mistral_7b"]["maxBatch"] == 57
    bad = CliRunner().invoke(app, [*args[:-1], "memory"])
    assert bad.exit_code != 0 and "unknown batch rule" in str(bad.exception)
