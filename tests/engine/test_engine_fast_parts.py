"""The engine's hot-path helpers agree with their plain definitions."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from sincere.engine.gaps import GapHistogram
from sincere.engine.kv import DecodeBlocks
from sincere.engine.waiting import WaitQueue


@given(
    st.lists(st.integers(0, 300), max_size=30),
    st.integers(1, 32),
    st.integers(0, 500),
    st.integers(0, 200),
)
def test_fits_agrees_with_total(offsets: list[int], block: int, step: int, free: int) -> None:
    """The cheap bound never changes the answer of ``total(step) <= free``."""
    dec = DecodeBlocks(block)
    for off in offsets:
        dec.add(off)
    assert dec.fits(step, free) == (dec.total(step) <= free)


@given(st.lists(st.floats(1e-4, 10.0), min_size=1, max_size=50), st.integers(1, 5))
def test_add_each_equals_one_gap_at_a_time(gaps: list[float], weight: int) -> None:
    """Bulk single gaps bin, count and average like ``add`` called per gap."""
    bulk, one = GapHistogram(), GapHistogram()
    bulk.add_each(gaps, weight, sum(gaps))
    for g in gaps:
        one.add(g, weight)
    bulk.flush()
    one.flush()
    np.testing.assert_array_equal(bulk.counts, one.counts)
    assert bulk.count == one.count
    assert np.isclose(bulk.mean_s, one.mean_s, rtol=1e-12)


@given(
    st.lists(st.tuples(st.integers(0, 5), st.floats(0, 10)), min_size=1, max_size=40),
    st.sets(st.integers(0, 39)),
)
def test_waiting_order_is_key_order(keys: list[tuple[int, float]], removed: set[int]) -> None:
    """``ordered`` yields the remaining requests by key, ties by push order."""
    queue = WaitQueue()
    for i, (a, b) in enumerate(keys):
        queue.push(i, (float(a), b))
    for i in removed & set(range(len(keys))):
        queue.remove(i)
    left = [i for i in range(len(keys)) if i not in removed]
    expected = sorted(left, key=lambda i: (float(keys[i][0]), keys[i][1], i))
    assert list(queue.ordered()) == expected
