"""The predictive policy's seasonal forecast: a known profile scaled to the observed level, by hand.

The scaled group is that of ``test_sim_autoscale`` (1 s per iteration, readings every 10 s,
20 s to provision and 5 s to load: a forecast 25 s ahead).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.sim.test_sim_autoscale import (
    LOAD_S,
    PROVISIONING_S,
    _burst,
    _config,
    _requests,
    _rows,
)

from sincere.core.errors import ConfigError
from sincere.core.request import RequestArrays
from sincere.serve.control.sim_scaling import live_actuation, live_autoscaling
from sincere.sim.api import simulate
from sincere.sim.autoscale_config import AutoscalingConfig
from sincere.sim.autoscale_season import (
    SeasonalForecast,
    SeasonalProfile,
    load_profiles,
    profile_of_arrivals,
)
from sincere.workload.traces import write_trace

RAMP = [[0.0, 0.1], [30.0, 0.1], [60.0, 0.5], [90.0, 0.1]]  # req/s, a period of 100 s
PREDICTIVE = {"policy": "predictive", "rate_per_instance": 0.25, "forecast_alpha": 1.0}


def test_profile_is_linear_between_points_and_wraps_the_period() -> None:
    """Points (0, 1) and (50, 3) over 100 s: 2 at 25, 2 at 75 (back towards 1 at 100),
    the same a period later, and a single point is a constant."""
    profile = SeasonalProfile((0.0, 50.0), (1.0, 3.0), 100.0)
    assert [profile.rate_at(t) for t in (0.0, 25.0, 50.0, 75.0, 125.0)] == [1, 2, 3, 2, 2]
    assert SeasonalProfile((10.0,), (4.0,), 100.0).rate_at(3.0) == 4.0


def test_forecast_is_the_profile_ahead_times_the_smoothed_level() -> None:
    """alpha 0.5, interval 10 s, profile (0, 1), (50, 3): at 10 s a rate of 2 against the
    profile's 1.2 at 5 s sets the level to 5/3; at 20 s a rate of 1.4 against 1.6 at 15 s
    gives 0.5 * 0.875 + 0.5 * 5/3; the forecast 25 s on is that times the profile at 45 s
    (2.8). Before any reading the profile is read as is."""
    forecast = SeasonalForecast(SeasonalProfile((0.0, 50.0), (1.0, 3.0), 100.0), 0.5, 10.0)
    assert forecast.ahead(25.0) == pytest.approx(2.0)
    forecast.observe(2.0, 10.0)
    assert forecast.scale == pytest.approx(2.0 / 1.2)
    forecast.observe(1.4, 20.0)
    level = 0.5 * (1.4 / 1.6) + 0.5 * (2.0 / 1.2)
    assert forecast.ahead(25.0) == pytest.approx(level * 2.8)


def test_level_is_bounded_and_kept_where_the_profile_is_zero() -> None:
    """A rate 100 times the profile's is read as 4 times; a reading where the profile
    expects nothing leaves the level."""
    forecast = SeasonalForecast(SeasonalProfile((0.0, 50.0), (1.0, 0.0), 100.0), 1.0, 10.0)
    forecast.observe(100.0, 10.0)
    assert forecast.scale == 4.0
    forecast.observe(7.0, 55.0)  # the profile is 0 at 50 s
    assert forecast.scale == 4.0


def test_seasonal_starts_the_ramps_instance_before_the_trend_does() -> None:
    """One arrival every 10 s, then two in [30, 40). The profile RAMP rises from 30 s:
    read at 20 s (level 0.1 / 0.1 = 1) it forecasts 0.3 req/s for 45 s, two instances at
    0.25 each: the second is asked for at 20 s and serves at 45 s. Holt's trend (alpha =
    beta = 1) reads 0.1, 0.1, 0.1, then 0.2 at 40 s: 0.2 + 0.1 * 2.5 = 0.45, two
    instances asked for 20 s later."""
    requests = _requests([5.0, 15.0, 25.0, 32.0, 38.0, 42.0, 46.0, 50.0], [4] * 8)
    seasonal = _config(**PREDICTIVE, forecast_profile=RAMP, forecast_period_s=100.0)
    result = simulate(seasonal, requests=requests)
    assert result.summary["autoscaling"]["forecast_period_s"] == 100.0
    rows = _rows(result)
    assert rows[10.0] == (1, 0, 1)  # P(35) = 0.1 + 0.4 * 5 / 30: one instance
    assert rows[20.0] == (1, 1, 2)
    assert rows[20.0 + PROVISIONING_S + LOAD_S][0] == 2
    trend = _config(**PREDICTIVE, forecast_beta=1.0)
    rows = _rows(simulate(trend, requests=requests))
    assert (rows[20.0], rows[30.0], rows[40.0]) == ((1, 0, 1), (1, 0, 1), (1, 1, 2))


def test_trace_profile_counts_each_models_arrivals_per_bin(tmp_path: Path) -> None:
    """A previous period's arrivals folded onto 100 s in bins of 50 s: model a's 1, 2 and
    101 s (= 1) make 3 / 50 req/s in the first bin, its 60 s 1 / 50 in the second; in a
    pool each model gets its own, and a model the trace lacks is named."""
    assert profile_of_arrivals([1.0, 2.0, 101.0, 60.0], 100.0, 50.0) == SeasonalProfile(
        (25.0, 75.0), (0.06, 0.02), 100.0
    )
    trace = RequestArrays.build(
        [1.0, 2.0, 60.0, 70.0, 101.0], [10] * 5, [4] * 5, models=("a", "b"),
        model=[0, 0, 0, 1, 0],
    )  # fmt: skip
    write_trace(trace, tmp_path / "yesterday.csv")
    cfg = AutoscalingConfig.model_validate(
        {**PREDICTIVE, "max_instances": 2, "forecast_profile": "yesterday.csv",
         "forecast_period_s": 100.0, "forecast_bin_s": 50.0}
    )  # fmt: skip
    a, b = load_profiles(cfg, [["a"], ["b"]], str(tmp_path), "x") or []
    assert (a.rates, b.rates) == ((0.06, 0.02), (0.0, 0.02))
    (everything,) = load_profiles(cfg, None, str(tmp_path), "x") or []
    assert everything.rates == (0.06, 0.04)
    with pytest.raises(ConfigError, match=r"x\.forecast_profile.*no arrival of this model"):
        load_profiles(cfg, [["c"]], str(tmp_path), "x")


def test_a_missing_profile_trace_is_named_when_the_run_is_built(tmp_path: Path) -> None:
    """A trace profile that is not there fails the run's build, naming the key and path."""
    cfg = _config(**PREDICTIVE, forecast_profile=str(tmp_path / "nope.csv"),
                  forecast_period_s=100.0)  # fmt: skip
    with pytest.raises(ConfigError, match=r"autoscaling\.forecast_profile.*nope\.csv"):
        simulate(cfg, requests=_requests([1.0], [1]))


def test_dedicated_pool_forecasts_each_model_as_the_autoscaler() -> None:
    """A pool of one model under dedicated with the profile makes the autoscaler's decisions
    (the pool takes one more reading after the last request: its own way to end a run)."""
    rule = {**PREDICTIVE, "forecast_profile": RAMP, "forecast_period_s": 100.0}
    reference = simulate(_config(**rule), requests=_burst())
    config = _config(**rule)
    config["actuation"] = {"policy": "dedicated", "max_slots": 3,
                           "scaling": config.pop("autoscaling")}  # fmt: skip
    pooled = simulate(config, requests=_burst())
    ref, got = reference.summary["autoscaling"], pooled.summary["actuation"]
    assert ref["num_scale_ups"] >= 1
    assert got["forecast_period_s"] == ref["forecast_period_s"] == 100.0
    num = len(ref["timeline"]["at_s"])
    assert {k: v[:num] for k, v in got["timeline"].items()} == ref["timeline"]


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"forecast_profile": RAMP}, r"forecast_period_s.*needs both"),
        ({"forecast_period_s": 100.0}, r"forecast_profile.*needs both"),
        ({"forecast_profile": RAMP, "forecast_period_s": 0.0}, r"period_s.*positive.*0\.0"),
        ({"forecast_profile": [[0, 1], [50, 2], [50, 3]], "forecast_period_s": 100.0},
         r"forecast_profile\[2\].*must increase.*50"),
        ({"forecast_profile": [[0, 1], [50, -2]], "forecast_period_s": 100.0},
         r"forecast_profile\[1\].*>= 0.*-2"),
        ({"forecast_profile": [[0, 1], [150, 2]], "forecast_period_s": 100.0},
         r"forecast_profile\[1\].*within the period.*150"),
        ({"forecast_profile": [[0, 0]], "forecast_period_s": 100.0}, r"zero rates"),
        ({"forecast_profile": [], "forecast_period_s": 100.0}, r"has no point"),
        ({"forecast_profile": RAMP, "forecast_period_s": 100.0, "forecast_bin_s": 5.0},
         r"forecast_bin_s bins a trace"),
        ({"forecast_profile": "y.csv", "forecast_period_s": 100.0, "forecast_bin_s": 200.0},
         r"forecast_bin_s.*within the period"),
        ({"policy": "threshold", "forecast_profile": RAMP, "forecast_period_s": 100.0},
         r"forecast_profile.*predictive policy"),
    ],
)  # fmt: skip
def test_bad_profiles_are_named(changes: dict[str, Any], match: str) -> None:
    """Each contradiction in the profile raises a ConfigError naming the key and value."""
    with pytest.raises(ConfigError, match=match):
        simulate(_config(**{**PREDICTIVE, **changes}), requests=_requests([1.0], [1]))


def test_the_live_side_refuses_a_profile() -> None:
    """Live autoscaling and a live pool refuse the seasonal forecast by name, even beside a
    policy they run."""
    raw = {"group": "m", "policy": "threshold", "scale_up_threshold": 2,
           "scale_down_threshold": 1, "max_instances": 2, "forecast_period_s": 100.0}  # fmt: skip
    with pytest.raises(ConfigError, match=r"autoscaling\.forecast_period_s.*simulator only"):
        live_autoscaling(raw, 8)
    pool = {"policy": "dedicated", "groups": ["m"], "max_slots": 2,
            "scaling": {**raw, "forecast_profile": RAMP}}  # fmt: skip
    with pytest.raises(ConfigError, match=r"scaling\.forecast_profile.*simulator only"):
        live_actuation(pool, 8)
