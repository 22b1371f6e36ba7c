"""KV block accounting: the residue-class counter equals per-sequence arithmetic."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sincere.engine.kv import DecodeBlocks, blocks_for

offsets = st.lists(st.integers(-50, 300), min_size=0, max_size=12)


@given(offsets, st.integers(1, 32), st.integers(50, 120))
@settings(max_examples=150, deadline=None)
def test_total_equals_sum_of_sequence_blocks(offs: list[int], block: int, step: int) -> None:
    """total(step) is the sum over sequences of ceil((offset + step) / block_size)."""
    dec = DecodeBlocks(block)
    for o in offs:
        dec.add(o)
    for s in range(step, step + 2 * block):
        assert dec.total(s) == sum(blocks_for(o + s, block) for o in offs)


@given(offsets, st.integers(1, 32), st.integers(50, 120), st.integers(0, 40))
@settings(max_examples=150, deadline=None)
def test_max_steps_is_the_longest_run_that_fits(
    offs: list[int], block: int, step: int, free: int
) -> None:
    """max_steps gives the most decode steps whose new blocks fit in the free ones."""
    dec = DecodeBlocks(block)
    for o in offs:
        dec.add(o)
    if not offs:
        assert dec.max_steps(step, free) > 10**9
        return
    k = dec.max_steps(step, free)
    base = dec.total(step)
    assert dec.total(step + k) - base <= free
    assert dec.total(step + k + 1) - base > free


def test_remove_undoes_add() -> None:
    """Removing a sequence restores the previous totals."""
    dec = DecodeBlocks(16)
    dec.add(5)
    before = dec.total(40)
    dec.add(17)
    dec.remove(17)
    assert dec.total(40) == before and dec.num_seqs == 1
