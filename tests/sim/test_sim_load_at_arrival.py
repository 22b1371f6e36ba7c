"""The records keep each request's instance load as the router saw it at arrival."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sincere.sim import simulate
from sincere.sim.frontend import front_end_of

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _hetero(router: str, num_requests: int) -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load((EXAMPLES / "hetero.yaml").read_text())
    raw["workload"]["num_requests"] = num_requests
    raw["router"] = {"name": router}
    return raw


def test_routed_run_records_outstanding_requests_at_arrival() -> None:
    """Recorded outstanding = earlier arrivals on that instance not finished yet when the
    request reached the router (after the front end's intake; client times in the table)."""
    result = simulate(_hetero("random", 1200))
    front = front_end_of(result.config)
    table = result.requests.to_pydict()
    prompts = np.array(table["prompt_tokens"], dtype=np.float64)
    intake = front.request_s + front.prompt_token_s * prompts
    arrival = np.maximum.accumulate(np.array(table["arrival_at"]) + intake)
    finished = np.array(table["finished_at"]) - front.output_s
    instance = np.array(table["instance"])
    outstanding = np.array(table["arrival_num_outstanding"], dtype=np.float64)
    assert not np.isnan(outstanding).any()
    expected = np.array(
        [
            np.sum((instance[:i] == instance[i]) & (finished[:i] >= arrival[i]))
            for i in range(len(arrival))
        ]
    )
    np.testing.assert_array_equal(outstanding, expected)
    assert outstanding.max() > 3  # the load did vary


def test_recorded_load_is_consistent() -> None:
    """Running and waiting never exceed outstanding; queued tokens only with a queue."""
    table = simulate(_hetero("round-robin", 800)).requests.to_pydict()
    running = np.array(table["arrival_num_running"])
    waiting = np.array(table["arrival_num_waiting"])
    queued = np.array(table["arrival_waiting_prefill_tokens"])
    outstanding = np.array(table["arrival_num_outstanding"])
    assert np.all(running + waiting <= outstanding)
    assert np.all((queued > 0) <= (waiting > 0))
    assert waiting.max() > 0


def test_single_instance_run_leaves_load_null() -> None:
    """With one instance nobody looks at loads: the columns are null, not zero."""
    raw = _hetero("random", 50)
    raw["instances"] = raw["instances"][:1]
    raw["instances"][0]["count"] = 1
    raw["workload"]["models"] = {"llama-3-8b": 1.0}
    table = simulate(raw).requests
    for name in ("arrival_num_running", "arrival_num_outstanding"):
        assert table.column(name).null_count == table.num_rows
