"""A seasonal forecast of the arrival rate: a known pattern of the period, scaled to the level seen.

The predictive policy's trend forecast (:class:`~sincere.sim.autoscale.RateForecast`)
extrapolates the last readings, so it starts instances late at a ramp it has not yet seen
and keeps them too long when the load falls. Given the rate's pattern over a period (a
day: ``forecast_profile`` as ``(time_s, rate)`` points, or a previous period's arrivals)
the forecast reads the pattern ahead instead. It is Holt-Winters' multiplicative
seasonality with a known season and no trend: with ``P(t)`` the profile's rate at
``t mod period_s`` (linear between its points, wrapping from the last to the first) and
``y_k`` the arrival rate read over the interval ``[t_k - dt, t_k]``,

    s_k = clip(alpha * y_k / P(t_k - dt / 2) + (1 - alpha) * s_(k-1), 1/4, 4)
    forecast(t_k + h) = s_k * P(t_k + h)

``s`` is the level of the load against the profile (1: as the profile; the first reading
sets it; a reading where the profile's rate is 0 leaves it). ``alpha`` is
``forecast_alpha``; the bound keeps a day that differs wildly from the profile from
forecasting without limit (the profile then mostly gives the shape).

A profile from a trace: the arrivals (of the model scaled, in a pool; all of them for one
autoscaled group) are folded onto the period (``t mod period_s``), counted per bin of
``forecast_bin_s`` (default ``period_s / 48``), and each bin's rate is a point at the
bin's middle.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sincere.core.errors import ConfigError
from sincere.core.types import Seconds
from sincere.sim.autoscale_config import AutoscalingConfig
from sincere.workload.traces import read_trace

MIN_SCALE, MAX_SCALE = 0.25, 4.0  # the bounds of the observed level against the profile
DEFAULT_BINS = 48  # bins of a period, when a trace profile gives no forecast_bin_s


@dataclass(frozen=True, slots=True)
class SeasonalProfile:
    """The arrival rate over one period: points ``(times[i], rates[i])``, times increasing
    in ``[0, period_s)``, rates (requests/s) >= 0; linear between points, periodic."""

    times: tuple[float, ...]
    rates: tuple[float, ...]
    period_s: Seconds

    def rate_at(self, at: Seconds) -> float:
        """The profile's rate at ``at mod period_s`` (a single point: a constant rate)."""
        u = at % self.period_s
        i = bisect.bisect_right(self.times, u)  # times[i - 1] <= u < times[i]
        n = len(self.times)
        t0, r0 = (self.times[i - 1], self.rates[i - 1]) if i > 0 else (
            self.times[-1] - self.period_s, self.rates[-1])  # fmt: skip
        t1, r1 = (self.times[i], self.rates[i]) if i < n else (
            self.times[0] + self.period_s, self.rates[0])  # fmt: skip
        return r0 + (r1 - r0) * (u - t0) / (t1 - t0)


class SeasonalForecast:
    """The forecast of the module docstring; the same calls as ``RateForecast``."""

    def __init__(self, profile: SeasonalProfile, alpha: float, interval_s: Seconds) -> None:
        self.profile, self.alpha, self.interval_s = profile, alpha, interval_s
        self.scale: float | None = None  # the level against the profile (None: no reading)
        self.read_at: Seconds = 0.0

    def observe(self, rate: float, at: Seconds) -> None:
        """Fold in the rate of the interval that ended at ``at``."""
        self.read_at = at
        expected = self.profile.rate_at(at - self.interval_s / 2)
        if expected <= 0:
            return
        ratio = rate / expected
        raw = ratio if self.scale is None else self.alpha * ratio + (1 - self.alpha) * self.scale
        self.scale = min(max(raw, MIN_SCALE), MAX_SCALE)

    def ahead(self, h: Seconds) -> float:
        """The rate forecast ``h`` seconds after the last reading."""
        scale = 1.0 if self.scale is None else self.scale
        return scale * self.profile.rate_at(self.read_at + h)


def profile_points(points: Sequence[tuple[float, float]], period_s: Seconds) -> SeasonalProfile:
    """The profile of ``(time_s, rate)`` points (checked by the config)."""
    return SeasonalProfile(
        tuple(float(t) for t, _ in points), tuple(float(r) for _, r in points), period_s
    )


def profile_of_arrivals(
    arrival_at: Sequence[float] | np.ndarray, period_s: Seconds, bin_s: Seconds
) -> SeasonalProfile:
    """The profile of a previous period's arrivals, folded onto the period and counted per
    bin of ``bin_s`` (the last bin may be shorter)."""
    num_bins = math.ceil(period_s / bin_s - 1e-9)
    edges = np.minimum(np.arange(num_bins + 1) * bin_s, period_s)
    counts, _ = np.histogram(np.mod(np.asarray(arrival_at, dtype=np.float64), period_s), edges)
    widths = np.diff(edges)
    mids = edges[:-1] + widths / 2
    rates = counts / widths
    return SeasonalProfile(tuple(map(float, mids)), tuple(map(float, rates)), period_s)


def load_profiles(
    cfg: AutoscalingConfig, models: Sequence[Sequence[str]] | None, base_dir: str | None,
    where: str,
) -> list[SeasonalProfile] | None:  # fmt: skip
    """The profile per scaled group (``models``: each group's model names, None: one group
    counting every arrival), or None without ``forecast_profile``. Raises
    :class:`ConfigError` when a trace profile is missing or has no arrival for a group."""
    spec, period = cfg.forecast_profile, cfg.forecast_period_s
    if spec is None:
        return None
    assert period is not None, "checked by AutoscalingConfig.check"
    num = 1 if models is None else len(models)
    if not isinstance(spec, str):
        return [profile_points(spec, period)] * num
    path = Path(spec) if base_dir is None else Path(base_dir) / spec
    if not path.exists():
        raise ConfigError(
            "no trace file for the forecast profile", where=f"{where}.forecast_profile",
            value=str(path), allowed="a trace of a previous period's arrivals",
        )  # fmt: skip
    trace = read_trace(path)
    bin_s = cfg.forecast_bin_s or period / DEFAULT_BINS
    if models is None:
        return [profile_of_arrivals(trace.arrival_at, period, bin_s)]
    out = []
    for names in models:
        ids = [k for k, name in enumerate(trace.models) if name in names]
        at = trace.arrival_at[np.isin(trace.model, ids)]
        if len(at) == 0:
            raise ConfigError(
                "the forecast profile's trace has no arrival of this model",
                where=f"{where}.forecast_profile", value=list(names),
                allowed=list(trace.models),
            )  # fmt: skip
        out.append(profile_of_arrivals(at, period, bin_s))
    return out
