"""Simulation vs live (gateway + emulated engines on the wall clock) on one small trace."""

from __future__ import annotations

import numpy as np

from sincere.bench.parity import parity

_CONFIG = {
    "seed": 3,
    "workload": {
        "num_requests": 30,
        "arrival": {"kind": "poisson", "rate": 4.0},
        "lengths": {
            "prompt": {"kind": "uniform", "low": 1024, "high": 3072},
            "output": {"kind": "uniform", "low": 16, "high": 48},
        },
        "models": {"llama-3-8b": 1.0},
    },
    "instances": [{"model": "llama-3-8b", "accelerator": "A100-80GB", "count": 2}],
    "router": {"name": "round-robin"},
}


def test_live_replay_routes_and_times_like_the_simulator() -> None:
    """Round-robin sends every request to the same instance; median TTFT/E2E within 5 %."""
    result = parity(_CONFIG)
    summary = result.summary()
    assert summary["num_compared"] == 30
    assert summary["same_instance_share"] == 1.0
    assert abs(summary["rel_ttft"]["p50"]) <= 0.05
    assert abs(summary["rel_e2e"]["p50"]) <= 0.05
    assert np.all(
        result.live.requests.column("output_tokens").to_numpy()
        == result.sim.requests.column("output_tokens").to_numpy()
    )
