"""SINCERE's batch-size ladder."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sincere.core.errors import ConfigError
from sincere.profile.sizes import _is_prime, batch_size_ladder


def test_ladder_reproduces_sincere_prefix() -> None:
    """The first sizes are those SINCERE profiled (docs/references.md, SINCERE)."""
    assert batch_size_ladder(32) == [1, 2, 3, 4, 5, 7, 8, 11, 13, 16, 19, 23, 29, 32]


@given(st.integers(1, 5000))
def test_ladder_is_powers_of_two_and_primes(max_size: int) -> None:
    """Sorted, unique, within the limit, every power of two, at most 3 primes per octave."""
    ladder = batch_size_ladder(max_size)
    assert ladder == sorted(set(ladder)) and ladder[-1] <= max_size
    powers = [2**k for k in range(13) if 2**k <= max_size]
    assert set(powers) <= set(ladder)
    others = [s for s in ladder if s not in powers]
    assert all(_is_prime(s) for s in others)
    for k in range(13):
        assert sum(1 for s in others if 2**k < s < 2 ** (k + 1)) <= 3


def test_ladder_rejects_zero() -> None:
    """A limit below 1 is a ConfigError."""
    with pytest.raises(ConfigError, match="max batch size"):
        batch_size_ladder(0)
