"""SINCERE's metrics over a finite horizon, on a hand-made run."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sincere.core.errors import ConfigError
from sincere.sim import simulate
from sincere.sim.sincere_metrics import SINCERE_METRICS, RunTimeline, sincere_metrics


def run() -> RunTimeline:
    """Four requests: two served by a batch ending at 12, one at 25 (after a 20 s horizon)."""
    return RunTimeline(
        arrival_s=np.array([0.0, 1.0, 2.0, 3.0]),
        finished_s=np.array([12.0, 12.0, 25.0, np.nan]),
        batch_start_s=np.array([10.0, 22.0]),
        batch_end_s=np.array([12.0, 25.0]),
        load_start_s=np.array([1.0, 18.0]),
        load_end_s=np.array([10.0, 22.0]),
    )


def test_metrics_count_only_what_finished_by_the_horizon() -> None:
    """Horizon 20 s: two processed, one batch of 2 s, one load done, shares over 40 s."""
    m = sincere_metrics(run(), sla_s=11.5, duration_s=40.0, horizon_s=20.0)
    assert m["received"] == 4 and m["processed"] == 2
    assert m["throughput_rps"] == pytest.approx(2 / 40)
    assert m["inference_throughput_rps"] == pytest.approx(2 / 2.0)
    assert m["latency_mean_s"] == pytest.approx(11.5) and m["latency_p99_s"] == pytest.approx(11.99)
    assert m["slo_attainment"] == pytest.approx(0.5)  # 12 - 1 = 11 <= 11.5; 12 - 0 misses
    assert m["slo_attainment_received"] == pytest.approx(0.25)
    assert m["model_switches"] == 1
    assert m["load_time_share"] == pytest.approx((9.0 + 2.0) / 40)  # the second load, cut at 20
    assert m["gpu_busy_share"] == pytest.approx(2.0 / 40)
    assert set(SINCERE_METRICS) <= set(m)


def test_without_a_horizon_the_duration_is_the_horizon() -> None:
    """horizon_s defaults to duration_s; nothing processed gives None statistics."""
    m = sincere_metrics(run(), sla_s=60.0, duration_s=30.0)
    assert m["processed"] == 3 and m["model_switches"] == 2
    empty = sincere_metrics(run(), sla_s=60.0, duration_s=5.0)
    assert empty["processed"] == 0 and empty["latency_mean_s"] is None
    assert empty["slo_attainment"] is None and empty["inference_throughput_rps"] is None


def test_bad_arguments_are_refused() -> None:
    """Non-positive durations or SLA raise ConfigError; mismatched arrays too."""
    with pytest.raises(ConfigError, match="must be > 0"):
        sincere_metrics(run(), sla_s=0.0, duration_s=10.0)
    with pytest.raises(ConfigError, match="differ in length"):
        RunTimeline(np.zeros(2), np.zeros(1), np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0))


def test_a_request_level_simulation_reports_sincere_metrics() -> None:
    """The summary of a request-level run carries SINCERE's block over the duration."""
    config = {
        "seed": 3,
        "workload": {
            "duration_s": 120,
            "arrival": {"kind": "gamma", "cv": 1.0, "rate": 4},
            "lengths": {"prompt": {"kind": "fixed", "tokens": 128},
                        "output": {"kind": "fixed", "tokens": 50}},
            "models": "sincere",
            "tiers": {"preset": "sincere-60"},
            "max_tokens": 50,
        },
        "instances": [{"models": ["granite-7b", "gemma-7b", "llama3-8b"],
                       "step_model": {"kind": "sincere-runs"},
                       "engine": {"kind": "request-level", "strategy": "best-batch+timer"}}],
    }  # fmt: skip
    block = simulate(config).summary["sincere"]
    assert block["horizon_s"] == 120 and 0 < block["processed"] <= block["received"]
    assert 0.0 < block["gpu_busy_share"] < 1.0 and block["model_switches"] >= 1
    assert math.isclose(block["throughput_rps"], block["processed"] / 120)
