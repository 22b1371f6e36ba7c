"""Per-cell metrics rebuilt from requests.parquet: switches, busy intervals, worst tier."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sincere.experiment.metrics import (
    busy_until,
    merge_intervals,
    num_model_switches,
    tier_columns,
    utilization_timeline,
)


def _table(rows: list[tuple[str, str, float, float]]) -> pa.Table:
    inst, model, start, end = zip(*rows, strict=True)
    return pa.table(
        {
            "instance": list(inst),
            "model": list(model),
            "first_scheduled_at": list(start),
            "finished_at": list(end),
        }
    )


def test_model_switches_count_batch_changes_per_instance() -> None:
    """Batches a,a,b,a on one instance = 2 switches; another instance counts on its own."""
    table = _table(
        [
            ("g0", "a", 0.0, 1.0),
            ("g0", "a", 0.0, 1.0),  # one batch of two
            ("g0", "a", 1.0, 2.0),
            ("g0", "b", 2.0, 3.0),
            ("g0", "a", 3.0, 4.0),
            ("g1", "b", 0.0, 1.0),
            ("g1", "c", 1.0, 2.0),
            ("g1", "c", float("nan"), float("nan")),  # never served
        ]
    )
    assert num_model_switches(table) == 3


def test_worst_tier_is_the_one_with_most_violations() -> None:
    """worst_tier_violation = 1 - the lowest attainment among tiers with requests."""
    summary = {
        "tiers": {
            "t0": {"slo_attainment": 0.97, "num_requests": 10},
            "t1": {"slo_attainment": 0.5, "num_requests": 0},
            "t2": {"slo_attainment": 0.9, "num_requests": 5},
        }
    }
    row = tier_columns(summary)
    assert row["worst_tier"] == "t2"
    assert row["worst_tier_violation"] == pytest.approx(0.1)


intervals = st.lists(st.tuples(st.floats(0, 100), st.floats(0, 20)), min_size=0, max_size=30)


@given(intervals)
def test_busy_time_equals_the_length_of_the_union(pairs: list[tuple[float, float]]) -> None:
    """Merged intervals are disjoint and their busy time matches a fine-grid count."""
    start = np.array([s for s, _ in pairs])
    end = start + np.array([d for _, d in pairs])
    s, e = merge_intervals(start, end)
    assert np.all(s[1:] > e[:-1])
    grid = np.linspace(0, 120, 24001)[:-1] + 0.0025
    covered = np.zeros(len(grid), dtype=bool)
    for a, b in zip(start, end, strict=True):
        covered |= (grid >= a) & (grid < b)
    total = busy_until(s, e, np.array([120.0]))[0]
    assert total == pytest.approx(covered.sum() * 0.005, abs=0.005 * (2 * len(pairs) + 1))


def test_utilization_timeline_is_a_share_per_bin() -> None:
    """Busy 0-5 s and 10-20 s in 10 s bins: shares 0.5 and 1.0."""
    table = _table([("g0", "a", 0.0, 5.0), ("g0", "a", 10.0, 20.0)])
    t, share = utilization_timeline(table, 10.0, end_at=20.0)
    assert t.tolist() == [0.0, 10.0]
    assert share.tolist() == pytest.approx([0.5, 1.0])
