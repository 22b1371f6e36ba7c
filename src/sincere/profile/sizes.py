"""SINCERE's batch-size ladder: powers of two with a few primes between.

SINCERE profiled batch sizes 1, 2, 3, 4, 5, 7, 8, 11, 13, 16, 19, 23, 29, 32, … up to
out-of-memory (SINCERE, docs/references.md): every power of two plus primes in between. Our rule
reproduces that prefix exactly: between ``2**k`` and ``2**(k+1)`` take the primes
nearest to the three geometric quarter points ``2**(k + j/4)`` (j = 1, 2, 3), keeping
only primes strictly inside the octave, without repeats. So each octave has at most
five sizes and the ladder is evenly spread on a log scale.
"""

from __future__ import annotations

import math

from sincere.core.errors import ConfigError


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    return all(n % d for d in range(2, math.isqrt(n) + 1))


def _nearest_prime_inside(x: float, low: int, high: int) -> int | None:
    """The prime closest to ``x`` strictly between ``low`` and ``high`` (ties: the smaller).

    Searches outwards from ``x`` (prime gaps are small), so the cost does not grow with
    the octave.
    """
    center = math.floor(x)
    for d in range(high - low):
        for n in sorted((center - d, center + 1 + d), key=lambda n: (abs(n - x), n)):
            if low < n < high and _is_prime(n):
                return n
    return None


def batch_size_ladder(max_size: int) -> list[int]:
    """SINCERE-style batch sizes from 1 up to ``max_size`` inclusive.

    Raises ``ConfigError`` when ``max_size`` < 1.
    """
    if max_size < 1:
        raise ConfigError("max batch size must be >= 1", value=max_size)
    sizes = {1}
    k = 0
    while 2**k <= max_size:
        low, high = 2**k, 2 ** (k + 1)
        for j in (1, 2, 3):
            prime = _nearest_prime_inside(2 ** (k + j / 4), low, high)
            if prime is not None:
                sizes.add(prime)
        sizes.add(high)
        k += 1
    return sorted(s for s in sizes if s <= max_size)
