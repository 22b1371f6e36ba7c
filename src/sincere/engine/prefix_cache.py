"""Content-addressed KV blocks of one engine: vLLM V1's automatic prefix caching.

A request whose prompt carries block ids (:mod:`sincere.core.prefix`) has one key per
*full* engine block its ids cover (:func:`block_keys`, equal to
:func:`~sincere.core.prefix.engine_block_keys`). Blocks are tracked by key:

* ``ref[key]`` -- how many running sequences hold the block (0: cached but free);
* ``free`` -- the blocks no running sequence holds, least recently freed first: they
  still count as free memory and are evicted, oldest first, only when a new block needs
  their room (:meth:`PrefixCache.evict`); a block with ``ref > 0`` is never evicted;
* ``held[i]`` -- the keys running request ``i`` holds a reference on (its cache hits,
  then the blocks it computed itself that no other sequence had cached).

A request admitted for prefill *hits* the longest prefix of its keys present in the cache
(:meth:`PrefixCache.match`), at most all but its last prompt token (vLLM always computes
one token to produce logits); its prefill starts after the hit. Blocks become cached as
its prefill chunks complete (:meth:`PrefixCache.register`). When it finishes, is
preempted or aborted, its references are dropped (:meth:`PrefixCache.release`) in reverse
order, so that a prompt's tail is evicted before its head, as vLLM frees them.

Memory. The engine counts every running sequence's blocks on its own (the sum over
sequences); a block held by ``r`` sequences is counted ``r`` times, so ``shared`` (the sum
of ``r - 1`` over held blocks) is what the sum over-counts. Free memory is the pool less
the distinct blocks in use; cached free blocks are part of it until evicted.

Only prompt blocks are cached (generated tokens carry no content ids); there is no CPU or
disk tier (docs/prefix_caching.md).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from itertools import islice, repeat

import numpy as np

from sincere.core.prefix import chain_keys, check_block_sizes

_C1 = np.uint64(0x9E3779B97F4A7C15)
_C2 = np.uint64(0x632BE59BD9B4E019)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_MASK63 = np.uint64((1 << 63) - 1)


def block_keys(
    block_ids: list[int], block_tokens: int, engine_block_tokens: int, prompt_tokens: int
) -> list[int]:
    """Keys of the full engine blocks of a prompt: :func:`~sincere.core.prefix.engine_block_keys`,
    vectorised (numpy's wrapping ``uint64`` arithmetic is the mixing function's ``mod 2**64``).
    """
    check_block_sizes(block_tokens, engine_block_tokens)
    covered = min(prompt_tokens, len(block_ids) * block_tokens)
    num_full = covered // engine_block_tokens
    if num_full == 0:
        return []
    chained = np.array(chain_keys(block_ids), dtype=np.uint64)
    ends = np.arange(1, num_full + 1, dtype=np.int64) * engine_block_tokens
    source = (ends - 1) // block_tokens
    if engine_block_tokens >= block_tokens:
        out: list[int] = chained[source].tolist()
        return out
    parent = chained[source]
    value = (ends - source * block_tokens).astype(np.uint64)
    with np.errstate(over="ignore"):
        z = parent * _C1 + value + _C2
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        z = (z ^ (z >> np.uint64(31))) & _MASK63
    keys: list[int] = z.tolist()
    return keys


class PrefixCache:
    """Cached KV blocks of one engine by key, with reference counts and an LRU free list."""

    def __init__(self, block_size: int) -> None:
        self.block = block_size
        self.ref: dict[int, int] = {}  # key -> running sequences holding the block
        # keys with ref 0, least recently freed first (an OrderedDict: popping its front is
        # O(1), where a dict's first key gets slower to find after many front deletions)
        self.free: OrderedDict[int, bool] = OrderedDict()
        self.held: dict[int, list[int]] = {}  # request -> keys it references
        self.keys_of: dict[int, list[int]] = {}  # request -> keys of its full prompt blocks
        self.progress: dict[int, int] = {}  # running request -> its keys handled so far
        self.shared = 0  # sum over held blocks of (holders - 1)
        self.num_queries = 0  # prompt tokens looked up (every admission, recomputes too)
        self.num_hits = 0  # of those, tokens found cached
        self.num_evictions = 0  # cached blocks evicted
        self.epoch = 0  # bumped whenever a lookup's answer may change
        self._memo_i = -1
        self._memo_epoch = -1
        self._memo_len = -1
        self._memo = (0, 0)

    def match(self, i: int, prefill_len: int) -> tuple[int, int]:
        """(blocks hit, of which held by a running sequence) for ``i`` prefilling ``prefill_len``.

        The hit is the longest cached prefix of ``i``'s keys, at most all but its last
        token. Blocks held by another sequence cost no new memory; free cached ones do
        (they leave the free list).
        """
        if i == self._memo_i and self.epoch == self._memo_epoch and prefill_len == self._memo_len:
            return self._memo
        keys = self.keys_of.get(i)
        hit = shared = 0
        if keys is not None:
            most = (prefill_len - 1) // self.block
            ref = self.ref
            for key in keys:
                if hit >= most:
                    break
                r = ref.get(key)
                if r is None:
                    break
                hit += 1
                if r > 0:
                    shared += 1
        self._memo_i, self._memo_epoch, self._memo_len = i, self.epoch, prefill_len
        self._memo = (hit, shared)
        return self._memo

    def acquire(self, i: int, hit: int, prefill_len: int) -> int:
        """``i`` is admitted with ``hit`` blocks cached: reference them; return shared ones."""
        self.num_queries += prefill_len
        self.num_hits += hit * self.block
        keys = self.keys_of.get(i)
        if keys is None:
            return 0
        ref, free = self.ref, self.free
        held = keys[:hit]
        newly_shared = 0
        for key in held:
            r = ref[key]
            if r == 0:
                del free[key]
            else:
                newly_shared += 1
            ref[key] = r + 1
        self.held[i] = held
        self.progress[i] = hit
        self.shared += newly_shared
        self.epoch += 1
        return newly_shared

    def register(self, i: int, computed_tokens: int) -> None:
        """``i`` has computed ``computed_tokens`` prompt tokens: cache its full blocks."""
        keys = self.keys_of.get(i)
        if keys is None:
            return
        upto = computed_tokens // self.block
        if upto > len(keys):
            upto = len(keys)
        start = self.progress[i]
        if upto <= start:
            return
        self.progress[i] = upto
        held, ref = self.held[i], self.ref
        new = keys[start:upto]
        if any(map(ref.__contains__, new)):
            for key in new:
                if key not in ref:  # cached by another sequence meanwhile: this copy stays private
                    ref[key] = 1
                    held.append(key)
        else:  # the common case, in bulk
            ref.update(zip(new, repeat(1)))
            held.extend(new)
        self.epoch += 1

    def release(self, i: int) -> int:
        """``i`` stops running: drop its references, tail first; return blocks unshared."""
        held = self.held.pop(i, None)
        if held is None:
            return 0
        del self.progress[i]
        ref, free = self.ref, self.free
        unshared = 0
        held.reverse()
        if max(map(ref.__getitem__, held), default=1) == 1:  # no one else holds any: in bulk
            ref.update(zip(held, repeat(0)))
            free.update(zip(held, repeat(True)))
        else:
            for key in held:
                r = ref[key]
                if r == 1:
                    ref[key] = 0
                    free[key] = True
                else:
                    ref[key] = r - 1
                    unshared += 1
        self.shared -= unshared
        self.epoch += 1
        return unshared

    def forget(self, i: int) -> None:
        """``i`` left the engine for good: drop its keys."""
        self.keys_of.pop(i, None)

    def evict(self, room: int) -> None:
        """Evict free cached blocks, least recently freed first, until at most ``room`` remain."""
        free = self.free
        over = len(free) - (room if room > 0 else 0)
        if over <= 0:
            return
        gone = list(islice(free, over))
        deque(map(free.__delitem__, gone), maxlen=0)  # in bulk, oldest first
        deque(map(self.ref.__delitem__, gone), maxlen=0)
        self.num_evictions += over
        self.epoch += 1
