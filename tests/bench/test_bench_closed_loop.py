"""The load generator's closed loop against the fake server (tests/bench/conftest.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from sincere.bench import BenchOptions, run_bench
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
