"""``sincere plan``: the four worked examples, the solution layout, load traces."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import sincere.cli.plan  # noqa: F401  (registers the command)
from sincere.cli.app import app
from sincere.core.errors import DataError
from sincere.optimize.data import load_problem
from sincere.optimize.loadtrace import read_load_trace
from sincere.optimize.queueing import DecodePrefillParams

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "plan"
CASES = ["unlimited", "unlimited-load-change", "limited", "limited-load-change"]
KEYS = {"accelerator", "numReplicas", "maxBatch", "cost", "itlAverage", "ttftAverage", "load"}


@pytest.mark.parametrize("case", CASES)
def test_plan_runs_on_every_example(case: str, tmp_path: Path) -> None:
    """Each example plans, prints the table and writes Inferno's solution layout."""
    out = tmp_path / "solution.json"
    res = CliRunner().invoke(app, ["plan", str(EXAMPLES / case), "--out", str(out), "--no-verify"])
    assert res.exit_code == 0, res.output
    assert "Premium-granite_13b" in res.output
    assert "verify" not in res.output
    sol = json.loads(out.read_text())
    servers = json.loads((EXAMPLES / case / "server-data.json").read_text())["servers"]
    assert set(sol) == {s["name"] for s in servers}
    for entry in sol.values():
        assert set(entry) >= KEYS
        assert set(entry["load"]) == {"arrivalRate", "avgInTokens", "avgOutTokens"}
        assert entry["numReplicas"] >= 0 and entry["cost"] >= 0


VERIFY_CASES = [*CASES, "inferno-sample", "l4-llama8b"]


def _verify_lines(output: str) -> list[str]:
    return [line.strip() for line in output.splitlines() if " replicas; TTFT analyzer " in line]


@pytest.mark.parametrize("case", VERIFY_CASES)
def test_verify_runs_on_every_shipped_example(case: str, tmp_path: Path) -> None:
    """`plan` verifies by default on every shipped example: one line per allocated server
    with analyzer and simulated TTFT / ITL, attainment and an agree / DISAGREE flag."""
    out = tmp_path / "solution.json"
    args = ["plan", str(EXAMPLES / case), "--out", str(out), "--sim-requests", "40"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    sol = json.loads(out.read_text())
    allocated = {name for name, a in sol.items() if a["numReplicas"] > 0}
    lines = _verify_lines(res.output)
    assert {line.split(":")[0] for line in lines} == allocated
    assert all(line.endswith(("[agree]", "[DISAGREE]")) for line in lines)
    if any(line.endswith("[DISAGREE]") for line in lines):
        assert "recommended: the simulated sizing" in " ".join(res.output.split())


def test_verify_runs_on_inferno_current_sample(shared_data: Path, tmp_path: Path) -> None:
    """`plan --verify` on Inferno's current sample: a line per server (15), the simulator
    on the perfParms iteration model; it finds the analyzer's TTFT pessimistic there."""
    out = tmp_path / "solution.json"
    case = shared_data / "inferno" / "small"
    args = ["plan", str(case), "--out", str(out), "--verify", "--sim-requests", "40"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    lines = _verify_lines(res.output)
    assert len(lines) == 15
    ana = [float(line.split("TTFT analyzer ")[1].split(" ms")[0]) for line in lines]
    sim = [float(line.split(" vs sim ")[1].split(" ms")[0]) for line in lines]
    assert sum(a > s for a, s in zip(ana, sim, strict=True)) >= 12


def test_worked_case_simulated_sizing_needs_at_most_three_l4(tmp_path: Path) -> None:
    """llama-3-8b on L4, 3.5 req/s, Azure conv lengths (≤ 2048 / ≤ 256), TTFT 2 s / ITL
    150 ms: the simulated sizing recommends ≤ 3 replicas and its simulated SLO attainment
    is met; the analyzer's larger answer is printed beside it."""
    out = tmp_path / "solution.json"
    args = ["plan", str(EXAMPLES / "l4-llama8b"), "--out", str(out), "--sizing", "simulate"]
    args += ["--lengths", "azure-conv-2023", "--max-prompt-tokens", "2048"]
    args += ["--max-output-tokens", "256", "--sim-requests", "150"]
    args += ["--sim-cache", str(tmp_path / "cache")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    sim_reps = json.loads(out.read_text())["Chat-llama-3-8b"]["numReplicas"]
    assert 1 <= sim_reps <= 3
    ana_reps = int(text.split("analyzer sizing (Inferno's model): ")[1].split(" replicas")[0])
    assert ana_reps > sim_reps
    (line,) = _verify_lines(res.output)
    assert "meets SLO" in line and "MISSES" not in line
    assert any((tmp_path / "cache").glob("*.json"))  # the capacity search was cached


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
            "--no-verify",
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
    res = CliRunner().invoke(
        app, ["plan", str(EXAMPLES / "inferno-sample"), "--out", str(out), "--no-verify"]
    )
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


def test_plan_reproduces_inferno_current_sample_solution(shared_data: Path, tmp_path: Path) -> None:
    """On Inferno's current published sample (perfParms alpha/beta/gamma) `sincere plan` gives
    Inferno's solution-data.json: every server's accelerator, replicas, batch and cost equal,
    its TTFT and ITL within 1 % (in fact within 0.01 %)."""
    case = shared_data / "inferno" / "small"
    out = tmp_path / "solution.json"
    res = CliRunner().invoke(app, ["plan", str(case), "--out", str(out), "--no-verify"])
    assert res.exit_code == 0, res.output
    ours = json.loads(out.read_text())
    ref = json.loads((case / "solution-data.json").read_text())["allocations"]
    assert set(ours) == set(ref)
    for name, want in ref.items():
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
    res = CliRunner().invoke(app, ["plan", str(EXAMPLES / case), "--out", str(out), "--no-verify"])
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
    args = [
        "plan",
        str(EXAMPLES / "unlimited"),
        "--out",
        str(out),
        "--no-verify",
        "--batch-rule",
        "kv",
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["Bronze-mistral_7b"]["maxBatch"] == 57
    bad = CliRunner().invoke(app, [*args[:-1], "memory"])
    assert bad.exit_code != 0 and "unknown batch rule" in str(bad.exception)


def test_zero_load_servers_follow_inferno(tmp_path: Path) -> None:
    """An idle server with no minimum gets no accelerator (batch 0, cost 0); with
    minNumReplicas it gets the cheapest accelerator, the unscaled maxBatchSize and Inferno's
    lone-request figures TTFT = γ + δ, ITL = α + β."""
    case = tmp_path / "case"
    shutil.copytree(EXAMPLES / "inferno-sample", case)
    doc = json.loads((case / "server-data.json").read_text())
    doc["servers"][0]["currentAlloc"]["load"]["arrivalRate"] = 0
    doc["servers"][1]["currentAlloc"]["load"]["arrivalRate"] = 0
    doc["servers"][1]["minNumReplicas"] = 2
    (case / "server-data.json").write_text(json.dumps(doc))
    out = tmp_path / "solution.json"
    res = CliRunner().invoke(app, ["plan", str(case), "--out", str(out), "--no-verify"])
    assert res.exit_code == 0, res.output
    sol = json.loads(out.read_text())
    idle, kept = (sol[doc["servers"][i]["name"]] for i in (0, 1))
    assert (idle["accelerator"], idle["numReplicas"], idle["maxBatch"], idle["cost"]) == (
        "",
        0,
        0,
        0,
    )
    problem = load_problem(case)
    perf = problem.models[(doc["servers"][1]["model"], kept["accelerator"])]
    assert kept["numReplicas"] == 2 and kept["maxBatch"] == perf.max_batch
    p = perf.params
    assert isinstance(p, DecodePrefillParams)
    assert kept["ttftAverage"] == pytest.approx(p.gamma + p.delta, rel=1e-4)
    assert kept["itlAverage"] == pytest.approx(p.alpha + p.beta, rel=1e-4)
