"""The prefix cache's runs of one-block groups against a per-block reference, on prompts
that share long prefixes (system prompts, growing conversations) under eviction."""

from __future__ import annotations

import numpy as np
import pytest
from tests.engine.test_prefix_cache import _PerBlock

from sincere.core.prefix import chain_keys
from sincere.engine.kv_tiers import Name
from sincere.engine.prefix_cache import PrefixCache


class _Evicted(_PerBlock):
    """The per-block reference, also naming what it evicts, in order."""

    def __init__(self, block: int) -> None:
        super().__init__(block)
        self.evicted: list[tuple[int, int, int]] = []

    def evict(self, room: int) -> None:
        while len(self.free) > max(room, 0):
            key = next(iter(self.free))
            del self.free[key], self.ref[key]
            self.evictions += 1
            self.evicted.append(key)


def _conversations(rng: np.random.Generator, num: int) -> list[list[int]]:
    """Prompts as block ids: a few system prompts, conversations growing turn by turn, and
    branches cut anywhere."""
    prompts = [[int(x) for x in rng.integers(0, 1 << 40, size=12)] for _ in range(3)]
    while len(prompts) < num:
        base = prompts[int(rng.integers(len(prompts)))]
        cut = len(base) if rng.random() < 0.6 else int(rng.integers(0, len(base) + 1))
        grow = [int(x) for x in rng.integers(0, 1 << 40, size=int(rng.integers(1, 8)))]
        prompts.append(base[:cut] + grow)
    return prompts


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("block_tokens", [16, 8, 64, 512])
def test_runs_of_blocks_match_a_per_block_model(seed: int, block_tokens: int) -> None:
    """Hits, shared blocks, refcounts, holdings, the LRU free order, evictions and the
    names evicted (what a lower tier receives) equal one dict entry per engine block after
    every admission, prefill chunk, release and eviction; admissions take their match's
    slots, or look them up when another prompt was matched in between."""
    rng = np.random.default_rng(seed)
    prompts = _conversations(rng, 40)
    cache, model = PrefixCache(16), _Evicted(16)
    lengths = []
    for i, ids in enumerate(prompts):
        length = len(ids) * block_tokens - int(rng.integers(0, block_tokens))
        lengths.append(length)
        cache.add(i, list(chain_keys(ids)), block_tokens, length)
        model.add(i, cache)
    running: set[int] = set()
    unchecked = unmemoised = 0
    for _ in range(600):
        op, i = "arrffe"[int(rng.integers(6))], int(rng.integers(len(prompts)))
        length = lengths[i]
        if op == "a" and i not in running:
            hit, shared = cache.match(i, length)
            assert (hit, shared) == model.match(i, length)
            if rng.random() < 0.3:  # another prompt matched in between: the admission
                other = int(rng.integers(len(prompts)))  # looks its hit up again
                if other != i:
                    cache.match(other, lengths[other])
                    unmemoised += 1
            assert cache.acquire(i, hit, length) == model.acquire(i, hit)
            running.add(i)
        elif op == "r" and i in running:
            done = min(length, cache.progress[i] * 16 + int(rng.integers(0, 8 * block_tokens)))
            cache.register(i, done)
            model.register(i, done)
        elif op == "f" and i in running:
            assert cache.release(i) == model.release(i)
            running.discard(i)
        elif op == "e":
            room = int(rng.integers(0, 12))
            names: list[Name] = []
            over = cache.num_free - room
            if over > 0:
                cache.num_free -= over
                cache.num_evictions += over
                cache.free.evict(over, cache.slots, names)
            model.evict(room)
            assert names == model.evicted[len(model.evicted) - len(names) :]
        assert cache.cached() == model.ref
        assert cache.free_order() == list(model.free)
        assert cache.holdings() == model.held
        assert cache.shared == model.shared and cache.num_evictions == model.evictions
        unchecked += _whole_unless_broken(cache)
    assert len(model.evicted) > 5
    assert unmemoised > 0  # admissions both with their match's slots and without
    assert unchecked > 0  # eviction had runs it takes without looking at their blocks


def _whole_unless_broken(cache: PrefixCache) -> int:
    """Check that every queued run of a release none of whose blocks was taken again is
    whole (all its blocks free, freed by it), as eviction assumes, and that only queued
    releases are noted as not; return how many runs are whole unchecked."""
    ref, stamp = cache.slots.ref, cache.slots.stamp
    assert cache.free.broken <= {run[3] for run in cache.free.runs}  # none kept for long
    whole = 0
    for base, hi, lo, when, _ in cache.free.runs:
        if when not in cache.free.broken:
            slots = range(base + lo, base + hi + 1)
            assert [(ref[s], stamp[s]) for s in slots] == [(0, when)] * len(slots)
            whole += 1
    return whole
