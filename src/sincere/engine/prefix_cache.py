"""Content-addressed KV blocks of one engine: vLLM V1's automatic prefix caching.

A request whose prompt carries block ids (:mod:`sincere.core.prefix`) has one key per
*full* engine block its ids cover (:func:`~sincere.core.prefix.engine_block_keys`). The
semantics are per engine block:

* each cached block has a count of the running sequences that hold it (0: cached but free);
* the free blocks, least recently freed first: they still count as free memory and are
  evicted, oldest first, only when a new block needs their room
  (:meth:`PrefixCache.evict`); a block held by a running sequence is never evicted;
* each running request holds a reference on its cache hits, then on the blocks it
  computed itself that no other sequence had cached.

The representation groups them: when content blocks are larger than engine blocks
(Mooncake's 512 tokens on 16-token blocks), the engine blocks of one content block are named
by the content block's chained key and their position in it, and live in consecutive slots
of flat lists (:class:`BlockSlots`, the block index); requests hold runs of slots
(:class:`PrefixCache`, with the counters) and the free list is a queue of runs
(:class:`FreeRuns`, the eviction order), so the work per engine block is a list access
rather than a dict entry. A
reference model with one dict entry per engine block pins the equivalence
(``tests/engine/test_prefix_cache.py``).

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

Only prompt blocks are cached (generated tokens carry no content ids). With KV offload
tiers (:mod:`.kv_tiers`) evicted blocks go down to CPU memory (and disk) rather than being
lost, a match runs on from the GPU hit through the blocks found there, and an admission
loads them back as blocks it holds (docs/prefix_caching.md).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from sincere.core.prefix import chain_keys, check_block_sizes, engine_block_keys
from sincere.engine.kv_tiers import KvTiers, Name, TierLimits, block_names


class _Prompt:
    """A prompt's full engine blocks as content groups of ``group`` engine blocks each.

    Engine block ``p`` is block ``p % group`` of group ``keys[p // group]``; every group
    is full but perhaps the last (``num_blocks`` engine blocks in all).
    """

    __slots__ = ("group", "keys", "num_blocks")

    def __init__(self, keys: tuple[int, ...], group: int, num_blocks: int) -> None:
        self.keys = keys
        self.group = group
        self.num_blocks = num_blocks


class BlockSlots:
    """Where cached engine blocks live: each content group owns consecutive slots.

    A content group (one content block's ``group`` engine blocks, or one engine block when
    content blocks are not larger than engine blocks) owns ``group`` consecutive slots of
    the flat lists ``ref`` (-1: not cached, 0: cached and free, r > 0: held by r sequences)
    and ``stamp`` (the release that last freed the block). A group takes its slots when its
    first block is cached (:meth:`base`) and gives them back, for a group of its size to
    reuse, when its last cached block is evicted (:meth:`drop`).
    """

    def __init__(self) -> None:
        self.ref: list[int] = []
        self.stamp: list[int] = []
        self.bases: dict[int, dict[int, int]] = {}  # group size -> group key -> first slot
        self._present: dict[int, int] = {}  # first slot -> cached blocks of its group
        self._owner: dict[int, tuple[int, int]] = {}  # first slot -> (group size, key)
        self._spare: dict[int, list[int]] = {}  # group size -> first slots to reuse

    def base(self, key: int, group: int) -> int:
        """First slot of the group ``key`` (of ``group`` blocks), taken if it has none yet."""
        bases = self.bases.get(group)
        if bases is None:
            bases = self.bases[group] = {}
        base = bases.get(key)
        if base is not None:
            return base
        spare = self._spare.get(group)
        if spare:
            base = spare.pop()
        else:
            base = len(self.ref)
            self.ref.extend([-1] * group)
            self.stamp.extend([0] * group)
        bases[key] = base
        self._present[base] = 0
        self._owner[base] = (group, key)
        return base

    def cached(self, base: int, added: int) -> None:
        """``added`` more blocks of the group at ``base`` are cached."""
        self._present[base] += added

    def drop(self, base: int, gone: int) -> None:
        """``gone`` blocks of the group at ``base`` were evicted; free its slots once empty."""
        left = self._present[base] - gone
        if left > 0:
            self._present[base] = left
            return
        del self._present[base]
        group, key = self._owner.pop(base)
        del self.bases[group][key]
        self._spare.setdefault(group, []).append(base)

    def names_of(self, base: int, blocks: Iterable[int]) -> list[Name]:
        """Names (group size, group key, block) of ``blocks`` of the group at ``base``."""
        group, key = self._owner[base]
        return [(group, key, k) for k in blocks]

    def names(self) -> dict[int, tuple[int, int, int]]:
        """Slot -> (group size, group key, block within the group) of every group's slots."""
        names: dict[int, tuple[int, int, int]] = {}
        for base, (group, key) in self._owner.items():
            for k in range(group):
                names[base + k] = (group, key, k)
        return names


class FreeRuns:
    """The free cached blocks in the order they were freed: a queue of runs of slots.

    A run ``(base, hi, lo, stamp)`` is blocks ``hi`` down to ``lo`` of the group at
    ``base``, freed by the release numbered ``stamp``. A block in a run is still free there
    only while its ``ref`` is 0 and its ``stamp`` is the run's (a block taken again leaves
    its old run lazily and joins a new one when freed again), so :meth:`evict` walks the
    queue exactly in least-recently-freed order.
    """

    def __init__(self) -> None:
        self.runs: deque[tuple[int, int, int, int]] = deque()
        self.num_releases = 0  # stamps handed out so far

    def next_stamp(self) -> int:
        """The stamp of a new release (its blocks freed after every earlier one's)."""
        self.num_releases += 1
        return self.num_releases

    def evict(self, over: int, slots: BlockSlots, out: list[Name] | None = None) -> None:
        """Evict the ``over`` least recently freed blocks (there are at least that many);
        their names go to ``out``, in eviction order, when given."""
        ref, stamp, runs = slots.ref, slots.stamp, self.runs
        while over > 0:
            base, hi, lo, when = runs[0]
            k = hi
            gone = 0
            a, b = base + lo, base + hi + 1
            if max(ref[a:b]) == 0 and min(stamp[a:b]) == when == max(stamp[a:b]):
                gone = min(over, b - a)  # the whole run is still free: its top, in bulk
                ref[b - gone : b] = [-1] * gone
                if out is not None:
                    out.extend(slots.names_of(base, range(hi, hi - gone, -1)))
                over -= gone
                k = hi - gone
            while k >= lo and over > 0:
                s = base + k
                if ref[s] == 0 and stamp[s] == when:
                    ref[s] = -1
                    gone += 1
                    over -= 1
                    if out is not None:
                        out.extend(slots.names_of(base, (k,)))
                k -= 1
            if gone:
                slots.drop(base, gone)
            if k < lo:
                runs.popleft()
            else:
                runs[0] = (base, k, lo, when)

    def order(self, slots: BlockSlots) -> list[int]:
        """The slots of the free cached blocks, least recently freed (next evicted) first."""
        ref, stamp = slots.ref, slots.stamp
        return [
            s
            for base, hi, lo, when in self.runs
            for s in range(base + hi, base + lo - 1, -1)
            if ref[s] == 0 and stamp[s] == when
        ]


class PrefixCache:
    """Cached KV blocks of one engine, with reference counts and an LRU free list.

    Representation (the semantics are per engine block, as the module says): the blocks
    live in the slots of :class:`BlockSlots`, their free ones queue in :class:`FreeRuns`,
    and a request holds *runs* of slots (``held[i]``: flat ``base, lo, hi`` triples, in
    prompt order). Work per block is a list access, not a dict entry.
    """

    def __init__(self, block_size: int, tiers: TierLimits | None = None) -> None:
        self.block = block_size
        # CPU (and disk) tiers evicted blocks go down to; None: evicted blocks are lost
        self.tiers = None if tiers is None else KvTiers(tiers, block_size)
        self._memo_tier = 0  # of the memo's hit, blocks found in a lower tier
        self.prompts: dict[int, _Prompt] = {}  # request -> its prompt's block groups
        self.held: dict[int, list[int]] = {}  # request -> runs it references (base, lo, hi)
        self.progress: dict[int, int] = {}  # running request -> its blocks handled so far
        self.shared = 0  # sum over held blocks of (holders - 1)
        self.num_free = 0  # cached blocks no running sequence holds
        self.num_queries = 0  # prompt tokens looked up (every admission, recomputes too)
        self.num_hits = 0  # of those, tokens found cached
        self.num_evictions = 0  # cached blocks evicted
        self.epoch = 0  # bumped whenever a lookup's answer may change
        self.slots = BlockSlots()
        self.free = FreeRuns()
        self._memo_i = -1
        self._memo_epoch = -1
        self._memo_len = -1
        self._memo = (0, 0)

    def add(self, i: int, block_ids: list[int], block_tokens: int, prompt_tokens: int) -> None:
        """Request ``i``'s prompt carries ``block_ids`` of ``block_tokens`` tokens each."""
        engine = self.block
        if block_tokens > engine:
            check_block_sizes(block_tokens, engine)
            group = block_tokens // engine
            covered = min(prompt_tokens, len(block_ids) * block_tokens)
            num_blocks = covered // engine
            num_groups = -(-num_blocks // group)
            keys = chain_keys(block_ids[:num_groups])
        else:
            group = 1
            keys = engine_block_keys(
                block_ids,
                block_tokens=block_tokens,
                engine_block_tokens=engine,
                prompt_tokens=prompt_tokens,
            )
            num_blocks = len(keys)
        self.prompts[i] = _Prompt(keys, group, num_blocks)

    def match(self, i: int, prefill_len: int) -> tuple[int, int]:
        """(blocks hit, of which held by a running sequence) for ``i`` prefilling ``prefill_len``.

        The hit is the longest cached prefix of ``i``'s blocks, at most all but its last
        token. Blocks held by another sequence cost no new memory; free cached ones do
        (they leave the free list). With tiers, the hit runs on through the blocks a lower
        tier holds, which an admission loads back (:meth:`acquire`).
        """
        if i == self._memo_i and self.epoch == self._memo_epoch and prefill_len == self._memo_len:
            return self._memo
        prompt = self.prompts.get(i)
        hit = shared = tier = 0
        if prompt is not None:
            most = min((prefill_len - 1) // self.block, prompt.num_blocks)
            group = prompt.group
            bases = self.slots.bases.get(group)
            ref = self.slots.ref
            if bases is not None:
                for key in prompt.keys:
                    if hit >= most:
                        break
                    base = bases.get(key)
                    if base is None:
                        break
                    end = base + min(group, most - hit)
                    s = base
                    while s < end:
                        r = ref[s]
                        if r < 0:
                            break
                        if r > 0:
                            shared += 1
                        s += 1
                    hit += s - base
                    if s < end:
                        break
            if self.tiers is not None and hit < most:
                tier = self.tiers.count(block_names(prompt.keys, group, hit, most))
        self._memo_i, self._memo_epoch, self._memo_len = i, self.epoch, prefill_len
        self._memo = (hit + tier, shared)
        self._memo_tier = tier
        return self._memo

    def acquire(self, i: int, hit: int, prefill_len: int) -> int:
        """``i`` is admitted with ``hit`` blocks cached (:meth:`match`'s): reference them,
        loading those a lower tier holds back to the GPU; return the shared ones."""
        tier = 0
        if self.tiers is not None:
            matched = self.match(i, prefill_len)[0]  # the admission's own match, memoised
            assert matched == hit
            tier = self._memo_tier
            hit -= tier
            self.tiers.queried(prefill_len - hit * self.block)
        self.num_queries += prefill_len
        self.num_hits += hit * self.block
        prompt = self.prompts.get(i)
        if prompt is None:
            return 0
        held: list[int] = []
        newly_shared = freed = 0
        if hit > 0:
            group = prompt.group
            bases = self.slots.bases[group]
            ref = self.slots.ref
            left = hit
            for key in prompt.keys:
                if left <= 0:
                    break
                n = min(group, left)
                base = bases[key]
                for s in range(base, base + n):
                    r = ref[s]
                    if r == 0:
                        freed += 1
                    else:
                        newly_shared += 1
                    ref[s] = r + 1
                held.extend((base, 0, n - 1))
                left -= n
        self.held[i] = held
        self.progress[i] = hit
        self.num_free -= freed
        self.shared += newly_shared
        self.epoch += 1
        if tier:
            self._load(i, prompt, hit, tier)
        return newly_shared

    def _load(self, i: int, prompt: _Prompt, hit: int, tier: int) -> None:
        """Blocks ``hit`` to ``hit + tier - 1`` of ``i``'s prompt come back from the tiers:
        cached on the GPU again, held by ``i`` as if it had computed them."""
        assert self.tiers is not None
        self.tiers.load(block_names(prompt.keys, prompt.group, hit, hit + tier))
        self.register(i, (hit + tier) * self.block)

    def register(self, i: int, computed_tokens: int) -> None:
        """``i`` has computed ``computed_tokens`` prompt tokens: cache its full blocks."""
        prompt = self.prompts.get(i)
        if prompt is None:
            return
        upto = min(computed_tokens // self.block, prompt.num_blocks)
        start = self.progress[i]
        if upto <= start:
            return
        self.progress[i] = upto
        group = prompt.group
        keys = prompt.keys
        slots = self.slots
        held, ref = self.held[i], slots.ref
        for j in range(start // group, (upto - 1) // group + 1):
            base = slots.base(keys[j], group)
            first = j * group
            k0, k1 = max(start - first, 0), min(upto - first, group)
            if max(ref[base + k0 : base + k1]) < 0:  # the common case: none cached, in bulk
                ref[base + k0 : base + k1] = [1] * (k1 - k0)
                added = k1 - k0
                if held and held[-3] == base and held[-1] == k0 - 1:
                    held[-1] = k1 - 1
                else:
                    held.extend((base, k0, k1 - 1))
            else:
                added = self._register_each(held, base, k0, k1)
            if added:
                slots.cached(base, added)
        self.epoch += 1

    def _register_each(self, held: list[int], base: int, k0: int, k1: int) -> int:
        """Take blocks ``k0..k1-1`` of the group at ``base`` one by one; return how many."""
        ref = self.slots.ref
        added = 0
        for k in range(k0, k1):
            s = base + k
            if ref[s] >= 0:  # cached by another sequence meanwhile: this copy stays private
                continue
            ref[s] = 1
            added += 1
            if held and held[-3] == base and held[-1] == k - 1:
                held[-1] = k
            else:
                held.extend((base, k, k))
        return added

    def release(self, i: int) -> int:
        """``i`` stops running: drop its references, tail first; return blocks unshared."""
        held = self.held.pop(i, None)
        if held is None:
            return 0
        del self.progress[i]
        now = self.free.next_stamp()
        ref, stamp, free = self.slots.ref, self.slots.stamp, self.free.runs
        unshared = freed = 0
        at = len(held) - 3
        while at >= 0:
            base, lo, hi = held[at], held[at + 1], held[at + 2]
            at -= 3
            before = freed
            s = base + hi
            end = base + lo
            if max(ref[end : s + 1]) == 1:  # no one else holds any: in bulk
                ref[end : s + 1] = [0] * (s + 1 - end)
                stamp[end : s + 1] = [now] * (s + 1 - end)
                freed += s + 1 - end
                s = end - 1
            while s >= end:
                r = ref[s]
                if r == 1:
                    ref[s] = 0
                    stamp[s] = now
                    freed += 1
                else:
                    ref[s] = r - 1
                    unshared += 1
                s -= 1
            if freed > before:
                free.append((base, hi, lo, now))
        self.num_free += freed
        self.shared -= unshared
        self.epoch += 1
        return unshared

    def forget(self, i: int) -> None:
        """``i`` left the engine for good: drop its prompt."""
        self.prompts.pop(i, None)

    def evict(self, room: int) -> None:
        """Evict free cached blocks, least recently freed first, until at most ``room`` remain."""
        over = self.num_free - (room if room > 0 else 0)
        if over <= 0:
            return
        self.num_free -= over
        self.num_evictions += over
        self.epoch += 1
        if self.tiers is None:
            self.free.evict(over, self.slots)
            return
        names: list[Name] = []
        self.free.evict(over, self.slots, names)
        self.tiers.offload(names)

    # ------------------------------------------------------------- inspection (tests, debugging)

    def cached(self) -> dict[tuple[int, int, int], int]:
        """Every cached block, named (group size, group key, block), with its holders."""
        ref = self.slots.ref
        return {name: ref[s] for s, name in self.slots.names().items() if ref[s] >= 0}

    def free_order(self) -> list[tuple[int, int, int]]:
        """The free cached blocks, least recently freed (next evicted) first."""
        names = self.slots.names()
        return [names[s] for s in self.free.order(self.slots)]

    def holdings(self) -> dict[int, list[tuple[int, int, int]]]:
        """Running request -> the blocks it holds a reference on, in prompt order."""
        names = self.slots.names()
        out: dict[int, list[tuple[int, int, int]]] = {}
        for i, runs in self.held.items():
            blocks: list[tuple[int, int, int]] = []
            for at in range(0, len(runs), 3):
                base, lo, hi = runs[at], runs[at + 1], runs[at + 2]
                blocks.extend(names[base + k] for k in range(lo, hi + 1))
            out[i] = blocks
        return out
