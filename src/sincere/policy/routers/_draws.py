"""Integers below ``n`` as NumPy's ``Generator.integers(n)`` draws them, read ahead in blocks.

``power-of-two`` draws two positions per request. Asking the generator for each costs a
call into NumPy (about a microsecond); :class:`WordDraws` reads the generator's 32-bit
words :data:`WORDS_AHEAD` at a time and makes the same draws from them, and
:meth:`WordDraws.two_choices` is the router's whole answer over one count per instance.
This module is compiled with the simulator's loop (:mod:`sincere.native`): the router
calls it once per request from interpreted code.

NumPy draws an integer below ``n`` (``1 <= n <= 2**32``) by Lemire's method: the
generator's next 32-bit word ``w``, then ``(w * n) >> 32`` unless the low 32 bits of
``w * n`` fall below ``(2**32 - n) % n`` (then the next word; ``n == 1`` draws none). The
words are the ones ``integers(0, 2**32, size=m, dtype=uint32)`` returns; as long as the
generator is read through this object alone, reading ahead changes no draw
(``tests/policy/test_router_basic.py`` compares it with ``integers``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

WORDS_AHEAD = 1024
"""32-bit words read from the generator at a time."""

_WORD = 1 << 32
_LOW = _WORD - 1


class WordDraws:
    """Draws below ``n`` from ``rng``'s 32-bit words, in the generator's own sequence."""

    def __init__(self, rng: Any = None) -> None:
        # a numpy.random.Generator (None only in a copy or unpickling, which then sets it:
        # the compiled class is built bare first, then given its fields)
        self.rng = rng
        self.words: list[int] = []
        self.next_word = 0

    def below(self, n: int) -> int:
        """What ``rng.integers(n)`` would draw next (``1 <= n <= 2**32``)."""
        if n == 1:
            return 0
        while True:
            if self.next_word == len(self.words):
                block = self.rng.integers(0, _WORD, size=WORDS_AHEAD, dtype="uint32")
                self.words = block.tolist()
                self.next_word = 0
            scaled = self.words[self.next_word] * n
            self.next_word += 1
            low = scaled & _LOW
            if low >= n or low >= (_WORD - n) % n:
                return scaled >> 32

    def two_choices(self, counts: Sequence[int]) -> int:
        """Two distinct positions of ``counts`` (two or more) drawn as ``power-of-two``
        samples them (the first below ``n``, the second below ``n - 1``, past the first
        when not below it), and the one with the smaller count: the first drawn on ties."""
        n = len(counts)
        first = self.below(n)
        second = self.below(n - 1)
        if second >= first:
            second += 1
        return second if counts[second] < counts[first] else first
