"""Arrival processes: rates, burstiness, shapes, limits and determinism."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sincere.core.errors import ConfigError
from sincere.workload.arrivals import (
    ARRIVALS,
    Constant,
    Diurnal,
    Gamma,
    Poisson,
    SincereBursty,
    SincereRamp,
    Steps,
    TraceReplay,
    make_arrival,
)


def _rate_cv(t: np.ndarray) -> tuple[float, float]:
    gaps = np.diff(t)
    return 1.0 / gaps.mean(), gaps.std() / gaps.mean()


def test_poisson_rate_and_cv() -> None:
    """Poisson arrivals have the asked mean rate and an inter-arrival CV of 1."""
    t = Poisson(rate=6.45).times(np.random.default_rng(1), num_requests=200_000)
    rate, cv = _rate_cv(t)
    assert rate == pytest.approx(6.45, rel=0.01)
    assert cv == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("cv", [0.5, 2.0, 4.0])
def test_gamma_cv_matches(cv: float) -> None:
    """Gamma arrivals hit the requested CV within a few percent, at the requested rate."""
    t = Gamma(rate=3.0, cv=cv).times(np.random.default_rng(2), num_requests=200_000)
    rate, got = _rate_cv(t)
    assert rate == pytest.approx(3.0, rel=0.03)
    assert got == pytest.approx(cv, rel=0.04)


def test_constant_is_evenly_spaced() -> None:
    """Constant arrivals are exactly 1/rate apart, starting at 1/rate."""
    t = Constant(rate=4.0).times(np.random.default_rng(0), duration_s=10.0)
    assert len(t) == 39  # 0.25 .. 9.75; 10.0 is not before the end
    np.testing.assert_allclose(np.diff(t), 0.25)
    assert t[0] == pytest.approx(0.25)


@pytest.mark.parametrize("mean", [4, 8, 12])
def test_sincere_bursty_presets_match_their_mean(mean: int) -> None:
    """SINCERE's bursty presets give about their nominal mean rate and are bursty (CV > 1.5)."""
    proc = SincereBursty.preset(mean=mean)
    t = proc.times(np.random.default_rng(mean), duration_s=20_000.0)
    rate = len(t) / 20_000.0
    assert rate == pytest.approx(proc.mean_rate, rel=0.05)
    assert rate == pytest.approx(mean, rel=0.1)
    assert _rate_cv(t)[1] > 1.5


def test_sincere_bursty_preset_parameters() -> None:
    """The mean-8 preset carries SINCERE's published burst and idle ranges."""
    p = SincereBursty.preset(mean=8)
    assert (p.burst_s, p.burst_rate, p.idle_s) == ((1, 4), (30, 45), (8, 12))
    with pytest.raises(ConfigError, match=r"no preset.*got 5"):
        SincereBursty.preset(mean=5)


@pytest.mark.parametrize(("mean", "peak"), [(4, 7.0), (8, 15.0), (12, 24.0)])
def test_sincere_ramp_shape(mean: int, peak: float) -> None:
    """The ramp rises 1 -> peak over 20 s and falls back over 20 s, averaging (1 + peak) / 2."""
    proc = SincereRamp.preset(mean=mean)
    assert proc.max_rate == peak
    t = proc.times(np.random.default_rng(3), duration_s=40_000.0)
    assert len(t) / 40_000.0 == pytest.approx((1 + peak) / 2, rel=0.03)
    phase = np.mod(t, 40.0)
    counts, _ = np.histogram(phase, bins=8, range=(0, 40))
    rate = counts / (1000 * 5.0)  # 1000 cycles, 5 s bins
    expected = proc.rate_at(np.arange(2.5, 40, 5.0))
    np.testing.assert_allclose(rate, expected, rtol=0.08)
    assert np.argmax(rate) in (3, 4)  # peak at 20 s


def test_steps_follow_each_rate() -> None:
    """A step process keeps each segment's rate."""
    proc = Steps(steps=((0, 2.0), (1000, 10.0), (2000, 0.0), (2500, 5.0)))
    t = proc.times(np.random.default_rng(4), duration_s=4000.0)
    seg = np.histogram(t, bins=[0, 1000, 2000, 2500, 4000])[0] / [1000, 1000, 500, 1500]
    np.testing.assert_allclose(seg, [2.0, 10.0, 0.0, 5.0], atol=0.4)


def test_steps_validation() -> None:
    """Steps must start at 0 and increase."""
    with pytest.raises(ConfigError, match="first step must start at 0"):
        Steps(steps=((5, 1.0),))
    with pytest.raises(ConfigError, match="must increase"):
        Steps(steps=((0, 1.0), (10, 2.0), (10, 3.0)))


def test_diurnal_peak_and_trough() -> None:
    """Diurnal arrivals are denser around the sine's peak than its trough, mean preserved."""
    proc = Diurnal(mean=5.0, amplitude=0.8, period_s=1000.0)
    t = proc.times(np.random.default_rng(5), duration_s=50_000.0)
    phase = np.mod(t, 1000.0)
    peak = np.sum((phase > 125) & (phase < 375))  # around 250 s (sin = 1)
    trough = np.sum((phase > 625) & (phase < 875))
    assert len(t) / 50_000 == pytest.approx(5.0, rel=0.03)
    assert peak / trough > 4.0


def test_trace_replay_rescaling() -> None:
    """Trace replay shifts to 0, scales time, rescales to a target rate, and loops."""
    rec = np.array([10.0, 11.0, 13.0, 14.0, 20.0])
    rng = np.random.default_rng(0)
    np.testing.assert_allclose(TraceReplay(rec).times(rng, num_requests=5), [0, 1, 3, 4, 10])
    np.testing.assert_allclose(TraceReplay(rec, time_scale=2).times(rng, num_requests=3), [0, 2, 6])
    fast = TraceReplay(rec, rate=2.0).times(rng, num_requests=5)
    assert (len(fast) - 1) / fast[-1] == pytest.approx(2.0)
    looped = TraceReplay(rec, loop=True).times(rng, num_requests=12)
    assert len(looped) == 12 and np.all(np.diff(looped) >= 0)
    with pytest.raises(ConfigError, match="fewer than num_requests"):
        TraceReplay(rec).times(rng, num_requests=6)


def test_limits_and_errors() -> None:
    """Both limits stop generation at whichever comes first; neither is an error."""
    rng = np.random.default_rng(0)
    t = Poisson(10.0).times(rng, num_requests=50, duration_s=1000.0)
    assert len(t) == 50
    t = Poisson(10.0).times(rng, num_requests=10**6, duration_s=3.0)
    assert t.max() < 3.0 and 10 < len(t) < 60
    with pytest.raises(ConfigError, match="num_requests or duration_s"):
        Poisson(1.0).times(rng)
    with pytest.raises(ConfigError, match="cv must be a finite number > 0"):
        Gamma(rate=1.0, cv=0.0)


def test_registry_lists_kinds() -> None:
    """Every kind is registered; an unknown one names the valid kinds."""
    assert {"poisson", "gamma", "sincere-bursty", "sincere-ramp", "trace"} <= set(ARRIVALS)
    assert isinstance(make_arrival("gamma", rate=2.0, cv=3.0), Gamma)
    with pytest.raises(ConfigError, match=r"unknown arrival process.*allowed: closed, constant"):
        make_arrival("poison", rate=1.0)


PROCESSES = [
    Poisson(3.0),
    Gamma(3.0, 2.5),
    Constant(3.0),
    SincereBursty.preset(4),
    SincereRamp.preset(8),
    Diurnal(3.0, 0.5, 60.0),
    Steps(((0.0, 1.0), (5.0, 8.0))),
]


@settings(max_examples=40, deadline=None)
@given(
    ix=st.integers(0, len(PROCESSES) - 1),
    seed=st.integers(0, 2**32 - 1),
    num=st.one_of(st.none(), st.integers(0, 500)),
    duration=st.one_of(st.none(), st.floats(0.5, 200.0)),
)
def test_times_are_sorted_bounded_and_deterministic(
    ix: int, seed: int, num: int | None, duration: float | None
) -> None:
    """Any process gives sorted times >= 0 within both limits, identical for the same seed."""
    if num is None and duration is None:
        num = 10
    proc = PROCESSES[ix]
    a = proc.times(np.random.default_rng(seed), num_requests=num, duration_s=duration)
    b = proc.times(np.random.default_rng(seed), num_requests=num, duration_s=duration)
    np.testing.assert_array_equal(a, b)
    assert np.all(np.diff(a) >= 0) and (len(a) == 0 or a[0] >= 0)
    if num is not None:
        assert len(a) <= num
        if duration is None:
            assert len(a) == num
    if duration is not None:
        assert len(a) == 0 or a[-1] < duration
