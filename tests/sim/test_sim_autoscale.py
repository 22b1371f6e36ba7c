"""Autoscaling in the loop: scale-up and scale-down moments, queueing and GPU-hours by hand.

Every engine runs one sequence at a time and every iteration takes 1 s (a prefill or a
decode step: the ``inferno`` model with only fixed parts), so a request with ``n`` output
tokens is served in ``n`` seconds and the queue is a FIFO of known service times.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from sincere.catalog import default_catalog
from sincere.core.errors import ConfigError
from sincere.core.request import RequestArrays
from sincere.serve.control.sim_scaling import live_autoscaling
from sincere.sim.api import SimulationResult, simulate
from sincere.sim.autoscale import Cooldown, RateForecast

INTERVAL_S, PROVISIONING_S, LOAD_S = 10.0, 20.0, 5.0


def _config(**autoscaling: Any) -> dict[str, Any]:
    """One group of 1 s-per-iteration instances (``count`` serving at 0), scaled as given."""
    count = autoscaling.pop("count", 1)
    scaling = {
        "policy": "threshold", "interval_s": INTERVAL_S, "min_instances": 1,
        "max_instances": 3, "scale_up_threshold": 1.5, "scale_down_threshold": 0.5,
        "cooldown_s": 30.0, "provisioning_s": PROVISIONING_S, "load_s": LOAD_S,
        **autoscaling,
    }  # fmt: skip
    second = {"alpha_ms": 1000.0, "beta_ms": 0.0, "gamma_ms": 1000.0, "delta_ms": 0.0}
    group = {
        "name": "g", "model": "llama-3-8b", "accelerator": "A100-80GB", "count": count,
        "step_model": {"kind": "inferno", "params": second},
        "engine": {"kind": "continuous", "scheduler": "fcfs", "max_num_seqs": 1},
    }  # fmt: skip
    return {
        "seed": 0,
        "workload": {
            "num_requests": 1,
            "models": {"llama-3-8b": 1.0},
            "arrival": {"kind": "poisson", "rate": 1.0},
            "lengths": {
                "prompt": {"kind": "fixed", "tokens": 10},
                "output": {"kind": "fixed", "tokens": 4},
            },
        },
        "router": {"name": "least-outstanding"},
        "instances": [group],
        **({"autoscaling": scaling} if scaling.get("max_instances") else {}),
    }


def _requests(arrivals: list[float], outputs: list[int]) -> RequestArrays:
    n = len(arrivals)
    return RequestArrays.build(arrivals, [10] * n, outputs, models=("llama-3-8b",))


def _burst() -> RequestArrays:
    """12 requests at 1 s, 3 at 36 s (after the first scale-up), then one every 10 s."""
    trailing = [55.0 + 10 * k for k in range(9)]  # 55 .. 135, each served by 4 s later
    arrivals = [1.0] * 12 + [36.0] * 3 + trailing
    return _requests(arrivals, [4] * len(arrivals))


def _rows(result: SimulationResult) -> dict[float, tuple[int, int, int]]:
    """The time series as ``{at: (up, provisioning, desired)}``."""
    tl = result.summary["autoscaling"]["timeline"]
    return {
        at: (up, prov, want)
        for at, up, prov, want in zip(
            tl["at_s"], tl["up"], tl["provisioning"], tl["desired"], strict=True
        )
    }


def test_scale_up_moment_is_reading_plus_provisioning_plus_load() -> None:
    """The burst is read at 10 s; the second instance serves at 10 + 20 + 5 = 35 s, the
    third (asked for at 20 s) at 45 s; until then the burst queues on the first."""
    result = simulate(_config(), requests=_burst())
    rows = _rows(result)
    assert rows[0.0] == (1, 0, 1)
    assert rows[10.0] == (1, 1, 2)
    assert rows[20.0] == (1, 2, 3)
    assert rows[10.0 + PROVISIONING_S + LOAD_S] == (2, 1, 3)
    assert rows[20.0 + PROVISIONING_S + LOAD_S] == (3, 0, 3)
    assert max(up for up, _, _ in rows.values()) == 3  # max_instances respected
    rec = result.records
    # the burst stays on the instance it was routed to: FIFO, 4 s each, from 1 s
    assert rec.instance[:12].tolist() == [0] * 12
    waits = rec.first_scheduled_at[:12] - 1.0
    assert waits.tolist() == pytest.approx([4.0 * k for k in range(12)])
    # the requests at 36 s go to the instance that joined at 35 s
    assert rec.instance[12:15].tolist() == [1, 1, 1]
    assert (rec.first_scheduled_at[12:15] - 36.0).tolist() == pytest.approx([0.0, 4.0, 8.0])
    recover = result.summary["autoscaling"]["time_to_recover_s"]
    assert (recover["count"], recover["max"]) == (1, pytest.approx(45.0 - 10.0))


def test_scale_down_after_cooldown_and_gpu_hours() -> None:
    """The load is gone from 50 s: the newest instance stops at 50 + 30 = 80 s, the next at
    90 + 30 = 120 s, never below min_instances; GPU-seconds 140 + (120 - 10) + (80 - 20)."""
    result = simulate(_config(), requests=_burst())
    rows = _rows(result)
    assert rows[50.0] == (3, 0, 2)
    assert rows[70.0] == (3, 0, 2)  # inside the cool-down: still three
    assert rows[80.0] == (2, 0, 2)
    assert rows[110.0] == (2, 0, 1)
    assert rows[120.0] == (1, 0, 1)
    assert min(up for up, _, _ in rows.values()) == 1  # min_instances respected
    block = result.summary["autoscaling"]
    assert result.log.end_at == 140.0  # the last reading, after the last request ends
    assert block["gpu_hours"] == pytest.approx((140.0 + 110.0 + 60.0) / 3600.0)
    assert (block["num_scale_ups"], block["num_scale_downs"]) == (2, 2)
    assert (block["num_instances_started"], block["num_instances_stopped"]) == (2, 2)
    assert int(result.summary["num_completed"]) == len(_burst())
    # each instance costs its paid time at its accelerator's catalog price, not the run's
    per_hour = default_catalog().accelerator("A100-80GB").price_per_hour_usd
    costs = [v["cost_usd"] for v in result.summary["instances"].values()]
    assert costs == pytest.approx([t * per_hour / 3600 for t in (140.0, 110.0, 60.0)])
    assert result.summary["cost_usd"] == pytest.approx(310.0 * per_hour / 3600)


def test_warm_pool_starts_in_load_time_only() -> None:
    """A warm instance serves load_s after the reading (15 s, not 35 s); the pool refills
    from a down instance, warm provisioning_s later (30 s), which the reading at 30 s
    starts (up at 35 s). Scaled down, an instance refills the pool (paid) before any
    goes down: GPU-seconds 140 + (120 - 0) + (140 - 10)."""
    result = simulate(_config(warm_pool=1), requests=_burst())
    rows = _rows(result)
    assert rows[10.0 + LOAD_S] == (2, 0, 2)
    tl = result.summary["autoscaling"]["timeline"]
    assert tl["warm"][tl["at_s"].index(20.0)] == 1  # warming since 10 s
    assert rows[30.0] == (2, 1, 3)
    assert rows[30.0 + LOAD_S][0] == 3
    assert _instances(result)[12:15] == [1, 2, 1]
    assert rows[80.0] == (2, 0, 2)
    assert tl["warm"][tl["at_s"].index(80.0)] == 1  # the stopped one is the warm pool
    gpu_hours = result.summary["autoscaling"]["gpu_hours"]
    assert gpu_hours == pytest.approx((140.0 + 120.0 + 130.0) / 3600.0)


def _instances(result: SimulationResult) -> list[int]:
    return [int(e) for e in result.records.instance]


def test_stopped_instance_leaves_the_view_and_finishes_its_work() -> None:
    """Two serve from 0; at 10 s the load per instance (1 / 2) is under 0.6: the newer one
    leaves the router's view (cool-down 0) but finishes its 15 s request first (down at
    16 s). A request at 12 s then queues on the other though this one held fewer."""
    requests = _requests([1.0, 1.0, 11.0, 11.5, 12.0], [2, 15, 10, 10, 10])
    cfg = _config(
        count=2, max_instances=2, cooldown_s=0.0, scale_down_threshold=0.6,
        scale_up_threshold=100.0,
    )  # fmt: skip
    result = simulate(cfg, requests=requests)
    rec = result.records
    assert _instances(result) == [0, 1, 0, 0, 0]
    assert rec.first_scheduled_at[4] == pytest.approx(31.0)  # after 11-21 and 21-31
    assert result.log.end_at == 50.0  # the work ends at 41 s; the reading at 50 s sees it
    assert result.summary["autoscaling"]["gpu_hours"] == pytest.approx((50.0 + 16.0) / 3600)


def test_target_utilisation_asks_for_load_over_target() -> None:
    """HPA's rule: 10 in flight at 10 s over a target of 4 per instance wants ceil(2.5) = 3."""
    cfg = _config(policy="target-utilisation", target_per_instance=4.0)
    result = simulate(cfg, requests=_burst())
    assert _rows(result)[10.0] == (1, 2, 3)


def test_a_group_that_cannot_scale_serves_as_without_the_section() -> None:
    """min = max = count: every request is served exactly as without autoscaling."""
    requests = _burst()
    plain = simulate(_config(count=2, max_instances=None), requests=requests)
    fixed = simulate(_config(count=2, min_instances=2, max_instances=2), requests=requests)
    for name in ("instance", "first_scheduled_at", "first_token_at", "finished_at"):
        assert np.array_equal(getattr(plain.records, name), getattr(fixed.records, name))
    assert "autoscaling" not in plain.summary
    assert plain.config.to_yaml().count("autoscaling") == 0


def test_same_config_same_results() -> None:
    """Determinism: two runs give the same summary, time series included."""
    a = simulate(_config(warm_pool=1), requests=_burst())
    b = simulate(_config(warm_pool=1), requests=_burst())
    assert a.summary == b.summary


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"min_instances": 4}, r"min_instances must be <= max_instances.*got 4"),
        ({"scale_up_threshold": None}, r"threshold policy needs scale_up_threshold"),
        ({"scale_down_threshold": 2.0}, r"scale_down_threshold must be below.*got 2.0"),
        ({"policy": "target-utilisation"}, r"needs target_per_instance"),
        ({"group": "nope"}, r"autoscaling.group: no instances entry.*'nope'.*allowed: g"),
        ({"count": 4, "max_instances": 3}, r"instances\[0\].count.*got 4.*1\.\.3"),
        ({"warm_pool": 3}, r"warm_pool.*got 3.*0\.\.2"),
        ({"policy": "predictive"}, r"predictive policy needs rate_per_instance"),
        (
            {"policy": "predictive", "rate_per_instance": 1.0, "forecast_alpha": 0},
            r"autoscaling.forecast_alpha",
        ),
        ({"policy": "burst"}, r"autoscaling.policy"),
        ({"interval_s": 0}, r"autoscaling.interval_s"),
    ],
)
def test_bad_settings_are_named(changes: dict[str, Any], match: str) -> None:
    """Each bad setting is reported with its path, its value and what is allowed."""
    with pytest.raises(ConfigError, match=match):
        simulate(_config(**changes), requests=_burst())


def test_plot_writes_the_autoscaling_figure_beside_the_run_figure(tmp_path: Path) -> None:
    """With autoscaling, ``plot`` also writes the instances-over-time PNG."""
    result = simulate(_config(), requests=_burst())
    result.plot(tmp_path / "simulation.png")
    assert (tmp_path / "simulation_autoscaling.png").read_bytes()[:4] == b"\x89PNG"


def test_load_time_derived_from_weights_and_load_rate() -> None:
    """Without load_s, a model loads its weights per GPU at load_gbps."""
    from sincere.catalog import get_model

    result = simulate(_config(load_s=None, load_gbps=4.0), requests=_burst())
    weights = get_model("llama-3-8b").weight_bytes("bf16")
    assert result.summary["autoscaling"]["load_s"] == pytest.approx(weights / 4e9)


def test_waiting_signal_counts_queued_requests_only() -> None:
    """At 10 s the burst has 2 done, 1 running and 9 queued: over a target of 4.5 per
    instance, ``waiting`` wants ceil(9 / 4.5) = 2 and ``in_flight`` ceil(10 / 4.5) = 3."""
    scaling = {"policy": "target-utilisation", "target_per_instance": 4.5, "max_instances": 4}
    waiting = simulate(_config(signal="waiting", **scaling), requests=_burst())
    assert _rows(waiting)[10.0] == (1, 1, 2)
    in_flight = simulate(_config(**scaling), requests=_burst())
    assert _rows(in_flight)[10.0] == (1, 2, 3)


def test_kv_usage_signal_reads_the_engines_kv_use() -> None:
    """KV in use at 10 s (a request running) is above a tiny threshold: one more instance;
    from 50 s no request holds KV: fewer wanted, and 30 s later one stops."""
    cfg = _config(signal="kv_usage", scale_up_threshold=1e-6, scale_down_threshold=5e-7)
    rows = _rows(simulate(cfg, requests=_burst()))
    assert rows[10.0] == (1, 1, 2)
    assert rows[50.0] == (3, 0, 2)
    assert rows[80.0] == (2, 0, 2)


def test_kv_usage_needs_engines_that_report_it() -> None:
    """A request-level group reports no KV use: kv_usage is refused, naming the engine kind."""
    cfg = _config(signal="kv_usage")
    cfg["instances"][0]["engine"] = {"kind": "request-level"}
    with pytest.raises(ConfigError, match=r"engine.kind.*kv_usage.*got 'request-level'"):
        simulate(cfg, requests=_burst())


@pytest.mark.parametrize("seed", range(4))
def test_random_bursts_lose_no_request_and_keep_the_bounds(seed: int) -> None:
    """Random bursts: every request is served, the serving count stays within the bounds,
    and GPU-hours lie between min and max instances over the whole run."""
    rng = np.random.default_rng(seed)
    starts = np.sort(rng.uniform(0, 200, 4))
    arrivals = np.sort(np.concatenate([s + rng.exponential(0.5, 15).cumsum() for s in starts]))
    outputs = rng.integers(1, 8, len(arrivals)).tolist()
    cfg = _config(max_instances=4, warm_pool=1, cooldown_s=20.0, min_instances=1)
    result = simulate(cfg, requests=_requests(arrivals.tolist(), outputs))
    assert result.summary["num_completed"] == len(arrivals)
    block = result.summary["autoscaling"]
    ups = block["timeline"]["up"]
    assert min(ups) >= 1 and max(ups) <= 4
    assert block["num_scale_ups"] >= 1
    end_h = result.log.end_at / 3600.0
    assert end_h <= block["gpu_hours"] <= 4 * end_h


def test_the_written_config_repeats_the_run() -> None:
    """config.yaml holds the section: loading it back gives the same summary."""
    from sincere.sim.config import load_config

    first = simulate(_config(warm_pool=1), requests=_burst())
    again = load_config(yaml.safe_load(first.config.to_yaml()))
    assert again.autoscaling == first.config.autoscaling
    assert simulate(again, requests=_burst()).summary == first.summary


def test_rate_forecast_follows_holts_level_and_trend() -> None:
    """alpha = beta = 1: the level is the last rate and the trend the last step; with 0.5
    and 0.3 the level after 0 then 1 is 0.5 and the trend 0.15 (by hand)."""
    exact = RateForecast(1.0, 1.0, 10.0)
    for rate in (1.0, 2.0, 3.0):
        exact.observe(rate)
    assert exact.ahead(20.0) == pytest.approx(3.0 + 1.0 * 2)
    smooth = RateForecast(0.5, 0.3, 10.0)
    smooth.observe(0.0)
    smooth.observe(1.0)
    assert (smooth.level, smooth.trend) == pytest.approx((0.5, 0.15))
    assert smooth.ahead(10.0) == pytest.approx(0.65)
    smooth.observe(0.0)  # level 0.5*0 + 0.5*0.65 = 0.325, trend 0.3*-0.175 + 0.7*0.15
    assert smooth.ahead(100.0) == pytest.approx(max(0.325 + (0.105 - 0.0525) * 10, 0.0))


def test_predictive_starts_an_instance_for_the_forecast_ramp() -> None:
    """Rates 0.1 then 0.2 req/s read at 10 and 20 s (alpha = beta = 1): the forecast 25 s
    ahead (provisioning + load) is 0.2 + 0.1 * 2.5 = 0.45 req/s, two instances at 0.25
    each: the second is asked for at 20 s and serves at 45 s. The threshold policy never
    scales on these requests (one in flight at a time)."""
    requests = _requests([5.0, 12.0, 15.0], [4, 4, 4])
    predictive = _config(policy="predictive", rate_per_instance=0.25, forecast_alpha=1.0,
                         forecast_beta=1.0)  # fmt: skip
    rows = _rows(simulate(predictive, requests=requests))
    assert rows[10.0] == (1, 0, 1)
    assert rows[20.0] == (1, 1, 2)
    assert rows[20.0 + PROVISIONING_S + LOAD_S] == (2, 0, 2)
    reactive = simulate(_config(), requests=requests).summary["autoscaling"]
    assert reactive["num_scale_ups"] == 0


def test_predictive_is_refused_where_the_decision_reads_a_load() -> None:
    """Live (the reading is a load) and in a pool (per-model loads) it is refused by name."""
    raw = {"group": "m", "policy": "predictive", "rate_per_instance": 1.0, "max_instances": 2}
    with pytest.raises(ConfigError, match=r"controller.autoscaling.policy.*simulator only"):
        live_autoscaling(raw, 8)


def test_the_cooldown_window_keeps_the_most_wanted_over_its_length() -> None:
    """Readings every 10 s wanting 2, 3, 1 under a 20 s window: nothing stops until the
    window has lasted 20 s, then the largest count wanted in it (3) is kept; a reading
    wanting no fewer closes it, and the next window starts from scratch."""
    window = Cooldown(20.0)
    assert window.fewer(2, 10.0) is None
    assert window.fewer(3, 20.0) is None
    assert window.fewer(1, 30.0) == 3
    assert window.fewer(1, 40.0) is None  # a new window opened at 40 s
    window.close()
    assert window.fewer(2, 50.0) is None
    assert window.fewer(1, 70.0) == 2
