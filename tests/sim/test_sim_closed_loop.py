"""Closed-loop workloads in the simulator: clients whose next request arrives when their
last one ends (plus a think time), requests numbered in arrival order, warm-up left out."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from sincere.core.errors import ConfigError
from sincere.sim import simulate
from sincere.sim.api import SimulationWarning
from sincere.workload.config import generate


def closed_config(concurrency: int, num: int = 60, **arrival: Any) -> dict[str, Any]:
    """One A100 serving fixed-length requests from ``concurrency`` clients."""
    return {
        "seed": 5,
        "workload": {
            "num_requests": num,
            "arrival": {"kind": "closed", "concurrency": concurrency, **arrival},
            "lengths": {
                "prompt": {"kind": "uniform", "low": 50, "high": 800},
                "output": {"kind": "uniform", "low": 5, "high": 120},
            },
            "models": {"llama-3-8b": 1.0},
        },
        "instances": [{"model": "llama-3-8b", "accelerator": "A100-80GB"}],
    }


def _times(result: Any) -> tuple[Any, Any, Any]:
    table = result.requests
    arrival = table.column("arrival_at").to_numpy()
    finished = table.column("finished_at").to_numpy(zero_copy_only=False)
    rejected = table.column("rejected").to_numpy(zero_copy_only=False)
    return arrival, finished, rejected


def test_one_client_sends_each_request_when_the_last_ended() -> None:
    arrival, finished, _ = _times(simulate(closed_config(1)))
    assert arrival[0] == 0.0
    assert np.array_equal(arrival[1:], finished[:-1])  # exactly, no think time


def test_think_time_shifts_each_arrival_exactly() -> None:
    """Each send is the last answer's end plus the think time (to float rounding: the engine
    sees it after the front end's intake, which the client's times take back out)."""
    arrival, finished, _ = _times(simulate(closed_config(1, think_time_s=0.25)))
    assert np.allclose(arrival[1:], finished[:-1] + 0.25, rtol=0.0, atol=1e-12)


def test_exponential_think_times_are_seeded() -> None:
    spec = {"kind": "exponential", "mean": 0.5}
    first = simulate(closed_config(3, think_time_s=spec))
    again = simulate(closed_config(3, think_time_s=spec))
    assert first.summary == again.summary
    arrival, _, _ = _times(first)
    assert np.all(np.diff(arrival) >= 0)  # numbered in arrival order


@pytest.mark.parametrize("concurrency", [1, 4, 16])
def test_never_more_requests_in_the_system_than_clients(concurrency: int) -> None:
    result = simulate(closed_config(concurrency, num=80))
    arrival, finished, rejected = _times(result)
    assert not rejected.any() and np.isfinite(finished).all()
    assert np.all(np.diff(arrival) >= 0)
    # the number in the system after each arrival (ends at the same instant count first)
    ends = np.sort(finished)
    in_system = np.arange(1, len(arrival) + 1) - np.searchsorted(ends, arrival, side="right")
    assert in_system.max() == concurrency  # every client busy at 0, never one more
    assert result.summary["closed_loop"]["concurrency"] == concurrency
    assert result.log.num_in_system_area / result.log.end_at <= concurrency


def test_many_engines_take_the_loop_where_completions_feed_arrivals() -> None:
    config = closed_config(6, num=90)
    config["instances"][0]["count"] = 3
    config["router"] = {"name": "round-robin"}  # oblivious: open loops run apart
    arrival, finished, _ = _times(simulate(config))
    ends = np.sort(finished)
    in_system = np.arange(1, len(arrival) + 1) - np.searchsorted(ends, arrival, side="right")
    assert in_system.max() == 6
    assert arrival[6] == ends[0]  # the 7th request waited for the first to end


def test_rejected_requests_free_their_client() -> None:
    config = closed_config(2, num=20)
    config["workload"]["lengths"]["prompt"] = {"kind": "fixed", "tokens": 200_000}
    with pytest.warns(SimulationWarning, match="every request was rejected"):
        result = simulate(config)
    _, _, rejected = _times(result)
    assert rejected.all()
    assert result.summary["num_rejected"] == 20  # all arrived: none left waiting


def test_warmup_is_left_out_of_the_summary() -> None:
    whole = simulate(closed_config(4, num=80))
    warm = simulate(closed_config(4, num=80, warmup_share=0.25))
    assert warm.summary["num_requests"] == 60
    assert warm.summary["closed_loop"]["num_warmup"] == 20
    assert warm.requests.num_rows == 80  # the records keep every request
    arrival, _, _ = _times(warm)
    assert warm.summary["closed_loop"]["measured_from_s"] == arrival[20]
    assert whole.summary["num_requests"] == 80
    assert warm.summary["ttft_s"] != whole.summary["ttft_s"]


def test_closed_loop_needs_a_request_count() -> None:
    config = closed_config(2)
    config["workload"]["duration_s"] = 10.0
    with pytest.raises(ConfigError, match="closed needs num_requests"):
        simulate(config)
    config = closed_config(0)
    with pytest.raises(ConfigError, match="concurrency must be >= 1"):
        simulate(config)


def test_the_generated_table_waits_for_the_run_to_time_it() -> None:
    requests = generate(closed_config(3)["workload"], seed=1)
    assert len(requests) == 60 and not requests.arrival_at.any()


def test_a_given_request_table_is_timed_in_a_copy() -> None:
    config = closed_config(2, num=10)
    requests = generate(config["workload"], seed=1)
    requests.arrival_at[:] = np.arange(10.0)  # times a closed loop ignores
    result = simulate(config, requests=requests)
    assert np.array_equal(requests.arrival_at, np.arange(10.0))
    arrival, _, _ = _times(result)
    assert arrival[0] == arrival[1] == 0.0
    assert np.array_equal(result.requests_in.arrival_at, arrival)
