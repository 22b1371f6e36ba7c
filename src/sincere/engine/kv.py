"""KV-cache block accounting of a paged engine (vLLM's block manager, in aggregate).

The cache holds ``num_blocks`` blocks of ``block_size`` tokens. A sequence admitted
for prefill reserves the blocks of its whole prefill at once (vLLM v0); a decoding
sequence with ``L`` cached tokens holds ``ceil(L / block_size)`` blocks and needs a
new block each time it crosses a block boundary.

Decoding sequences are not tracked one by one: every decode step adds one cached
token to each of them, so sequence ``i`` holds ``ceil((offset_i + step) / B)`` blocks
at the engine's decode-step counter ``step``. :class:`DecodeBlocks` keeps, per
residue of ``offset_i + B - 1`` modulo ``B``, how many sequences there are; the
total over all sequences at any step, and the longest run of decode steps that
fits in a number of free blocks, then cost O(B) instead of O(sequences).
"""

from __future__ import annotations

from sincere.core.errors import ConfigError


def blocks_for(tokens: int, block_size: int) -> int:
    """Blocks holding ``tokens`` tokens."""
    return -(-tokens // block_size)


class DecodeBlocks:
    """Blocks held by all decoding sequences, as a function of the decode step."""

    def __init__(self, block_size: int) -> None:
        if block_size < 1:
            raise ConfigError("block_size must be >= 1", value=block_size)
        self.block_size = block_size
        self.num_seqs = 0
        self._quot = 0  # sum of (offset + B - 1) // B
        self._count = [0] * block_size  # sequences per residue (offset + B - 1) % B

    def add(self, offset: int) -> None:
        """Track a sequence holding ``offset + step`` cached tokens at decode step ``step``."""
        v = offset + self.block_size - 1
        self._quot += v // self.block_size
        self._count[v % self.block_size] += 1
        self.num_seqs += 1

    def remove(self, offset: int) -> None:
        """Stop tracking a sequence added with ``offset``."""
        v = offset + self.block_size - 1
        self._quot -= v // self.block_size
        self._count[v % self.block_size] -= 1
        self.num_seqs -= 1

    def total(self, step: int) -> int:
        """Blocks held by all tracked sequences at decode step ``step``."""
        b = self.block_size
        rho = step % b
        extra = sum(self._count[b - rho :]) if rho else 0
        return self._quot + self.num_seqs * (step // b) + extra

    def upper(self, step: int) -> int:
        """A cheap upper bound of :meth:`total` (each sequence holds at most one more block)."""
        return self._quot + self.num_seqs * (step // self.block_size + 1)

    def fits(self, step: int, free: int) -> bool:
        """Whether the blocks held at decode step ``step`` are at most ``free``.

        Every sequence holds at most one block above its quotient share, so a cheap
        upper bound settles the common case before the exact :meth:`total`.
        """
        if self._quot + self.num_seqs * (step // self.block_size + 1) <= free:
            return True
        return self.total(step) <= free

    def max_steps(self, step: int, free: int) -> int:
        """Most decode steps from ``step`` whose new blocks fit in ``free`` blocks."""
        n = self.num_seqs
        if n == 0:
            return 1 << 62
        cycles = free // n  # every block_size steps add exactly n blocks
        k = cycles * self.block_size
        left = free - cycles * n
        base = self.total(step + k)
        for j in range(1, self.block_size + 1):
            if self.total(step + k + j) - base > left:
                return k + j - 1
        return k + self.block_size  # unreachable: a full cycle adds n > left
