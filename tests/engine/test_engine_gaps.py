"""The ITL gap histogram: exact mean, percentiles within one bin of the exact ones."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sincere.engine.gaps import GapHistogram
from sincere.engine.state import TimeAccount

runs = st.lists(
    st.tuples(st.floats(1e-4, 2.0), st.floats(0.0, 1e-3), st.integers(1, 50), st.integers(1, 8)),
    min_size=1,
    max_size=40,
)


@given(runs)
@settings(max_examples=80, deadline=None)
def test_percentiles_are_within_one_bin(items: list[tuple[float, float, int, int]]) -> None:
    """Affine runs expanded exactly agree with the histogram's mean and percentiles."""
    hist = GapHistogram()
    exact = []
    for first, slope, steps, weight in items:
        gaps = first + slope * np.arange(steps)
        hist.add_run(first, slope, steps, weight, float(gaps.sum()))
        exact.append(np.repeat(gaps, weight))
    values = np.concatenate(exact)
    assert hist.count == len(values)
    assert hist.mean_s == pytest.approx(values.mean(), rel=1e-9)
    width = 10 ** (1 / hist.bins_per_decade)  # ratio between adjacent bin edges
    for q in (0.5, 0.9, 0.99):
        lo = np.quantile(values, q, method="inverted_cdf")
        hi = np.quantile(values, q, method="higher")
        got = hist.quantile(q)
        assert min(lo, hi) / width <= got <= max(lo, hi) * width


def test_merge_adds_counts() -> None:
    """Merging histograms adds their gaps."""
    a, b = GapHistogram(), GapHistogram()
    a.add(0.01, 3)
    b.add(0.02, 1)
    a.merge(b)
    assert a.count == 4 and a.mean_s == pytest.approx(0.0125)


def test_empty_histogram_has_no_statistics() -> None:
    """An empty histogram reports NaN rather than a made-up number."""
    hist = GapHistogram()
    assert np.isnan(hist.mean_s) and np.isnan(hist.quantile(0.5))


@given(
    st.floats(0.0, 1e5),
    st.lists(st.floats(1e-5, 3.0), min_size=1, max_size=30),
    st.integers(1, 128),
)
def test_iterations_added_apart_sum_as_one_call_per_iteration(
    start: float, durations: list[float], weight: int
) -> None:
    """add_each_apart gives the very count, total and bins of one add_each per iteration."""
    apart, each = GapHistogram(), GapHistogram()
    apart.add_each_apart(durations, weight, start)
    at = start
    for d in durations:  # what an event per iteration adds: its end minus its start
        stop = at + d
        each.add_each((d,), weight, stop - at)
        at = stop
    apart.flush()
    each.flush()
    assert (apart.count, apart.total_s) == (each.count, each.total_s)
    np.testing.assert_array_equal(apart.counts, each.counts)


def test_time_account_counts_busy_time_and_gives_gaps_to_decoding_tiers_only() -> None:
    """An engine's account adds every run's time as busy, and one gap per iteration per
    decoding sequence to that sequence's tier; a run with no decode tokens adds no gaps."""
    account = TimeAccount(3)
    account.add_run(0.02, 0.001, 3, 0.063, [2, 0, 1])
    account.add_each((0.5, 0.25), 1.0, 1.75, [0, 4, 0], split=False)
    account.add_run(1.0, 0.0, 1, 1.0, None)
    assert account.busy_s == pytest.approx(0.063 + 0.75 + 1.0)
    assert [h.count for h in account.gaps] == [6, 8, 3]
    assert account.gaps[1].mean_s == pytest.approx(0.375)
    assert account.gaps[2].mean_s == pytest.approx(0.021)
