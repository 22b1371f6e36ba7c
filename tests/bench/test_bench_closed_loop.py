"""The load generator's closed loop against the fake server (tests/bench/conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from sincere.bench import BenchOptions, run_bench
from sincere.cli.app import main
from sincere.core.errors import ConfigError
from sincere.core.request import RequestArrays

FakeServer = Any  # tests/bench/conftest.py


def _requests(n: int, output: int = 5) -> RequestArrays:
    return RequestArrays.build([0.0] * n, [16] * n, [output] * n, models=("m",))


def _columns(result: Any) -> tuple[Any, Any]:
    table = result.requests
    arrival = table.column("arrival_at").to_numpy()
    finished = table.column("finished_at").to_numpy(zero_copy_only=False)
    return arrival, finished


def test_one_client_sends_each_request_after_the_last_ended(fake_server: FakeServer) -> None:
    result = run_bench(fake_server.url, _requests(6), BenchOptions(concurrency=1))
    arrival, finished = _columns(result)
    assert result.summary["num_completed"] == 6
    assert np.all(arrival[1:] >= finished[:-1])
    assert np.all(arrival[1:] - finished[:-1] < 0.02)  # at once, not on a schedule
    assert result.summary["closed_loop"]["concurrency"] == 1


def test_think_time_delays_each_next_request(fake_server: FakeServer) -> None:
    options = BenchOptions(concurrency=1, think_time_s=0.1)
    arrival, finished = _columns(run_bench(fake_server.url, _requests(4), options))
    assert np.all(arrival[1:] - finished[:-1] >= 0.1)


def test_never_more_calls_in_flight_than_clients(fake_server: FakeServer) -> None:
    result = run_bench(fake_server.url, _requests(12), BenchOptions(concurrency=3))
    arrival, finished = _columns(result)
    assert np.all(np.diff(arrival) >= 0)  # numbered in sending order
    ends = np.sort(finished)
    in_flight = np.arange(1, 13) - np.searchsorted(ends, arrival, side="right")
    assert in_flight.max() == 3


def test_bad_concurrency_is_refused() -> None:
    with pytest.raises(ConfigError, match="concurrency must be >= 1"):
        BenchOptions(concurrency=0)
    with pytest.raises(ConfigError, match="think_time_s"):
        BenchOptions(concurrency=1, think_time_s=-1.0)


def test_ignore_eos_asks_for_exact_output_lengths(fake_server: FakeServer) -> None:
    before = len(fake_server.bodies)
    run_bench(fake_server.url, _requests(2, output=7), BenchOptions(ignore_eos=True))
    sent = fake_server.bodies[before:]
    assert [(b["ignore_eos"], b["min_tokens"]) for b in sent] == [(True, 7), (True, 7)]
    run_bench(fake_server.url, _requests(1), BenchOptions())
    assert "ignore_eos" not in fake_server.bodies[-1]


def _run(args: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr("sys.argv", ["sincere", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    return exited.value.code if isinstance(exited.value.code, int) else 1


def test_cli_concurrency_runs_a_closed_loop(
    fake_server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "c2"
    args = ["bench", fake_server.url, "--out", str(out), "-q", "--model", "m"]
    code = _run([*args, "--concurrency", "2", "--num-requests", "6"], monkeypatch)
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["closed_loop"] == {"concurrency": 2, "think_time_s": 0.0}
    assert summary["num_completed"] == 6


def test_cli_takes_the_closed_loop_of_a_workload_file(
    fake_server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workload = {
        "num_requests": 4,
        "arrival": {"kind": "closed", "concurrency": 3, "think_time_s": 0.01},
        "lengths": {
            "prompt": {"kind": "fixed", "tokens": 4},
            "output": {"kind": "fixed", "tokens": 2},
        },
        "models": {"m": 1.0},
    }
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump({"workload": workload}), encoding="utf-8")
    out = tmp_path / "w"
    assert _run(["bench", fake_server.url, "-w", str(path), "-o", str(out), "-q"], monkeypatch) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["closed_loop"] == {"concurrency": 3, "think_time_s": 0.01}
