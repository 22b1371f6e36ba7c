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
from itertools import compress, repeat
from operator import add, not_, sub

from sincere.core.prefix import check_block_sizes, engine_keys_of_chain
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


FIT_SCAN = 16
"""Spare ranges (the most recently given back first) :meth:`BlockSlots.take` reads for one
that holds all of a prompt's new groups before taking new slots."""


class BlockSlots:
    """Where cached engine blocks live: each content group owns consecutive slots.

    A content group (one content block's ``group`` engine blocks, or one engine block when
    content blocks are not larger than engine blocks) owns ``group`` consecutive slots of
    the flat lists ``ref`` (-1: not cached, 0: cached and free, r > 0: held by r sequences)
    and ``stamp`` (the release that last freed the block). A group takes its slots when its
    first block is cached (:meth:`take`: a prompt's new groups together, as ranges) and
    gives them back, for a group of its size to reuse, when its last cached block is
    evicted (:meth:`drop`, :meth:`drop_range`, :meth:`drop_singles`). Spare slots are kept
    as ranges merged with their neighbours, per group size, so that a prompt's new groups
    get consecutive slots and its runs span groups (a later prompt's match, hold and
    release then work a run at a time); which slots a group gets never shows in results.
    A group's own entries (its cached blocks, key and size) sit at its first slot of three
    more flat lists, a list access each rather than a dict entry.
    """

    def __init__(self) -> None:
        self.ref: list[int] = []
        self.stamp: list[int] = []
        self.bases: dict[int, dict[int, int]] = {}  # group size -> group key -> first slot
        # at a group's first slot: its cached blocks, its key and its size (0: no group's)
        self.present: list[int] = []
        self.key: list[int] = []
        self.size: list[int] = []
        # spare slots as ranges, merged with their neighbours when given back (group
        # size -> first slot -> end, and end -> first slot), so that a prompt's new groups
        # get one range of slots and its runs span groups
        self._spare_from: dict[int, dict[int, int]] = {}
        self._spare_to: dict[int, dict[int, int]] = {}

    def take(self, keys: list[int], group: int, after: int = -1) -> list[tuple[int, int]]:
        """Slots for the new groups ``keys`` (none has slots yet) of ``group`` blocks, as
        ranges ``(first slot, groups)`` in order, consecutive where the spare ranges allow:
        the range starting at slot ``after`` if there is one (where the prompt's run ends,
        which it then extends), else the most recently given back range first, then new
        slots. New groups (two or more) that do not extend the held run take one range for
        them all: the first of the :data:`FIT_SCAN` most recently given back that holds
        them, else new slots."""
        starts = self._spare_from.get(group)
        ends = self._spare_to.get(group)
        if starts is None or ends is None:
            starts = self._spare_from[group] = {}
            ends = self._spare_to[group] = {}
        out: list[tuple[int, int]] = []
        n = len(keys)
        if n > 1 and after not in starts:
            # one range for all of them: a spare one that fits, else new slots (spare
            # ranges too small stay until their neighbours are given back); a prompt's
            # blocks in scattered slots would cost its every match, hold and release a
            # run of slots per piece
            fit = -1
            need = n * group
            for lo, _ in zip(reversed(starts), range(FIT_SCAN), strict=False):
                if starts[lo] - lo >= need:
                    fit = lo
                    break
            if fit >= 0:
                after = fit
            else:
                out.append((len(self.ref), n))
                self._grow(need)
                n = 0
        while n and starts:
            lo = after if after in starts else next(reversed(starts))
            after = -1
            hi = starts.pop(lo)
            del ends[hi]
            k = min(n, (hi - lo) // group)
            out.append((lo, k))
            if lo + k * group < hi:
                starts[lo + k * group] = hi
                ends[hi] = lo + k * group
            n -= k
        if n:
            start = len(self.ref)
            self._grow(n * group)
            out.append((start, n))
        bases = self.bases.get(group)
        if bases is None:
            bases = self.bases[group] = {}
        present, key, size = self.present, self.key, self.size
        j = 0
        for lo, k in out:  # each range's groups at once: slices, not a slot at a time
            hi = lo + k * group
            named = keys[j : j + k]
            bases.update(zip(named, range(lo, hi, group), strict=True))
            present[lo:hi:group] = [0] * k
            key[lo:hi:group] = named
            size[lo:hi:group] = [group] * k
            j += k
        return out

    def _grow(self, n: int) -> None:
        """``n`` new slots at the end, not cached."""
        self.ref.extend([-1] * n)
        self.stamp.extend([0] * n)
        self.present.extend([0] * n)
        self.key.extend([0] * n)
        self.size.extend([0] * n)

    def base(self, key: int, group: int) -> int:
        """First slot of the group ``key`` (of ``group`` blocks), taken if it has none yet."""
        base = self.bases.get(group, {}).get(key)
        return self.take([key], group)[0][0] if base is None else base

    def cached_many(self, ranges: list[tuple[int, int]], group: int, k0: int, k1: int) -> None:
        """The new groups of ``ranges`` (:meth:`take`'s) are cached from block ``k0`` of the
        first to block ``k1 - 1`` of the last."""
        present = self.present
        for lo, k in ranges:
            present[lo : lo + k * group : group] = [group] * k
        present[ranges[0][0]] -= k0
        present[ranges[-1][0] + (ranges[-1][1] - 1) * group] -= group - k1

    def cached(self, base: int, added: int) -> None:
        """``added`` more blocks of the group at ``base`` are cached."""
        self.present[base] += added

    def drop(self, base: int, gone: int) -> None:
        """``gone`` blocks of the group at ``base`` were evicted; free its slots once empty."""
        left = self.present[base] - gone
        self.present[base] = left
        if left > 0:
            return
        group = self.size[base]
        self.size[base] = 0
        del self.bases[group][self.key[base]]
        self._give(base, base + group, group)

    def _give(self, lo: int, hi: int, group: int) -> None:
        """Slots ``lo`` to ``hi - 1`` (whole groups of ``group``) are spare: one range with
        its neighbours."""
        starts, ends = self._spare_from[group], self._spare_to[group]
        before = ends.pop(lo, None)
        if before is not None:
            del starts[before]
            lo = before
        after = starts.pop(hi, None)
        if after is not None:
            del ends[after]
            hi = after
        starts[lo] = hi
        ends[hi] = lo

    def cache_singles(self, keys: list[int], after: int = -1) -> list[tuple[int, int]]:
        """Cache new one-block groups ``keys`` (none cached yet), each held once; return
        their slots as :meth:`take`'s ranges (a prompt's new blocks get consecutive slots
        where the spare ranges allow, so its runs stay runs; ``after``: the slot after the
        prompt's held run, extended first if spare)."""
        ranges = self.take(keys, 1, after)
        ref, present = self.ref, self.present
        for lo, k in ranges:
            ref[lo : lo + k] = [1] * k
            present[lo : lo + k] = [1] * k
        return ranges

    def drop_singles(self, slots: Iterable[int], out: list[Name] | None) -> None:
        """One-block groups at ``slots`` (descending) were evicted; their slots join the
        spare ranges; their names go to ``out`` if given."""
        if isinstance(slots, range) and slots.step == -1 and len(slots) > 0:
            # a run's top, evicted whole (the common case): slices, not a slot at a time
            lo, hi = slots.stop + 1, slots.start + 1
            keys = self.key[lo:hi]
            keys.reverse()
            self.size[lo:hi] = [0] * (hi - lo)
            bases = self.bases[1]
            for key in keys:
                del bases[key]
            self._give(lo, hi, 1)
            if out is not None:
                out.extend((1, key, 0) for key in keys)
            return
        slots = list(slots)
        if not slots:
            return
        keys = list(map(self.key.__getitem__, slots))
        size = self.size
        for slot in slots:
            size[slot] = 0
        deque(map(self.bases[1].pop, keys), maxlen=0)
        top = slots[0] + 1  # the spare range being gathered: ``low`` to ``top - 1``
        low = slots[0]
        for slot in slots[1:]:
            if slot != low - 1:
                self._give(low, top, 1)
                top = slot + 1
            low = slot
        self._give(low, top, 1)
        if out is not None:
            out.extend((1, key, 0) for key in keys)

    def drop_slots(self, base: int, group: int, gone: list[int], out: list[Name] | None) -> None:
        """Blocks at slots ``gone`` (in eviction order) of consecutive groups of ``group``
        blocks, the first at ``base``, were evicted: one :meth:`drop` per group; their names
        go to ``out`` if given."""
        if out is not None:
            out.extend(self._name_of(base + (s - base) // group * group, s) for s in gone)
        counts: dict[int, int] = {}
        for s in gone:
            at = base + (s - base) // group * group
            counts[at] = counts.get(at, 0) + 1
        for at, n in counts.items():
            self.drop(at, n)

    def drop_range(self, base: int, group: int, low: int, top: int, out: list[Name] | None) -> None:
        """:meth:`drop_slots` of the slots ``top`` down to ``low``, a group at a time."""
        if out is not None:
            gone = range(top, low - 1, -1)
            out.extend(self._name_of(base + (s - base) // group * group, s) for s in gone)
        present, key, size, bases = self.present, self.key, self.size, self.bases[group]
        at = base + (top - base) // group * group
        spare = -1  # the groups emptied since, down to ``at + group``, are spare
        while at + group > low:
            # blocks gone from this group: from ``low`` or its first to ``top`` or its last
            left = present[at] - ((top if top < at + group else at + group - 1) + 1)
            left += low if low > at else at
            present[at] = left
            if left > 0:
                if spare >= 0:
                    self._give(at + group, spare, group)
                    spare = -1
            else:  # the group's last cached blocks went: its slots join the spare range
                size[at] = 0
                del bases[key[at]]
                if spare < 0:
                    spare = at + group
            at -= group
        if spare >= 0:
            self._give(at + group, spare, group)

    def _name_of(self, base: int, slot: int) -> Name:
        return (self.size[base], self.key[base], slot - base)

    def names_of(self, base: int, blocks: Iterable[int]) -> list[Name]:
        """Names (group size, group key, block) of ``blocks`` of the group at ``base``."""
        group, key = self.size[base], self.key[base]
        return [(group, key, k) for k in blocks]

    def names(self) -> dict[int, tuple[int, int, int]]:
        """Slot -> (group size, group key, block within the group) of every group's slots."""
        names: dict[int, tuple[int, int, int]] = {}
        for base, group in enumerate(self.size):
            for k in range(group):  # none where no group starts
                names[base + k] = (group, self.key[base], k)
        return names


class FreeRuns:
    """The free cached blocks in the order they were freed: a queue of runs of slots.

    A run ``(base, hi, lo, stamp, group)`` is slots ``base + hi`` down to ``base + lo``,
    freed by the release numbered ``stamp``: blocks of consecutive groups of ``group``
    blocks each, the first at ``base`` (a prompt's run of engine blocks); a release queues
    only blocks it freed, so every run is whole when queued. A
    block in a run is still free there only while its ``ref`` is 0 and its ``stamp`` is
    the run's (a block taken again leaves its old run lazily and joins a new one when
    freed again), so :meth:`evict` walks the queue exactly in least-recently-freed order.
    Only a hit takes a free block again (:meth:`PrefixCache.acquire`), and it notes the
    release that freed the block in ``broken``: a run of any other release is still whole
    (eviction takes the front run's blocks from its top and shortens it), unchecked.
    """

    def __init__(self) -> None:
        self.runs: deque[tuple[int, int, int, int, int]] = deque()
        self.num_releases = 0  # stamps handed out so far
        self.broken: set[int] = set()  # releases some of whose free blocks were taken again

    def next_stamp(self) -> int:
        """The stamp of a new release (its blocks freed after every earlier one's)."""
        self.num_releases += 1
        return self.num_releases

    def evict(self, over: int, slots: BlockSlots, out: list[Name] | None = None) -> None:
        """Evict the ``over`` least recently freed blocks (there are at least that many);
        their names go to ``out``, in eviction order, when given."""
        ref, stamp, runs = slots.ref, slots.stamp, self.runs
        while over > 0:
            base, hi, lo, when, group = runs[0]
            a, b = base + lo, base + hi + 1
            # all free and none freed since: sure if no block the release freed was taken
            # again; else a block free now was freed at ``when`` or later (stamps only
            # grow), so the largest stamp tells
            if when not in self.broken or (ref[a:b].count(0) == b - a and max(stamp[a:b]) == when):
                n = min(over, b - a)  # the whole run is still free: its top, in bulk
                ref[b - n : b] = [-1] * n
                over -= n
                k = hi - n
                if group == 1:
                    slots.drop_singles(range(b - 1, b - n - 1, -1), out)
                else:
                    slots.drop_range(base, group, b - n, b - 1, out)
            else:  # some of it was taken again: block by block
                k = hi
                gone: list[int] = []
                while k >= lo and over > 0:
                    s = base + k
                    if ref[s] == 0 and stamp[s] == when:
                        ref[s] = -1
                        gone.append(s)
                        over -= 1
                    k -= 1
                if gone and group == 1:
                    slots.drop_singles(gone, out)
                elif gone:
                    slots.drop_slots(base, group, gone, out)
            if k < lo:
                runs.popleft()
                if not runs or runs[0][3] != when:  # the release's last run (they queue
                    self.broken.discard(when)  # together): none of its blocks is free now
            else:
                runs[0] = (base, k, lo, when, group)

    def order(self, slots: BlockSlots) -> list[int]:
        """The slots of the free cached blocks, least recently freed (next evicted) first."""
        ref, stamp = slots.ref, slots.stamp
        return [
            s
            for base, hi, lo, when, _ in self.runs
            for s in range(base + hi, base + lo - 1, -1)
            if ref[s] == 0 and stamp[s] == when
        ]


def _match_singles(
    bases: dict[int, int], ref: list[int], key: list[int], keys: tuple[int, ...]
) -> tuple[int, int, list[int]]:
    """(leading ``keys`` cached, of which held, their slots as runs: flat ``first slot,
    count`` pairs of consecutive slots) for one-block groups: a key has a slot exactly while
    its block is cached.

    A prompt's blocks that one earlier prompt cached sit in consecutive slots
    (:meth:`BlockSlots.cache_singles`), so after a key's slot the next slots are read
    first: slot ``s + m`` holds key ``keys[j + m]`` exactly when ``key[s + m]`` names it and
    the slot is cached (``ref >= 0``; a key has one slot at most, and an evicted slot keeps
    its old name with ``ref`` -1). The map is looked up once per run of slots, not once per
    key; the answer is the one a lookup per key gives."""
    hit = shared = 0
    runs: list[int] = []
    n, end = len(keys), len(key)
    while hit < n:
        first = bases.get(keys[hit])
        if first is None:
            break
        s, j = first + 1, hit + 1
        while j < n and s < end and key[s] == keys[j] and ref[s] >= 0:
            s += 1
            j += 1
        shared += s - first - ref[first:s].count(0)
        runs.append(first)
        runs.append(s - first)
        hit = j
    return hit, shared, runs


def _hold_singles(
    held: list[int],
    slots: BlockSlots,
    broken: set[int],
    keys: tuple[int, ...],
    runs: list[int] | None = None,
) -> tuple[int, int]:
    """Reference the cached one-block groups ``keys`` into ``held``'s runs; return (those
    that were free, those another sequence held); the releases that had freed the free
    ones join ``broken``. A run of consecutive slots at a time. ``runs``: the keys' slots as
    :func:`_match_singles` gives them when the caller has them (the admission's own match),
    else looked up."""
    ref, stamp = slots.ref, slots.stamp
    if runs is None:
        runs = _match_singles(slots.bases[1], ref, slots.key, keys)[2]
    freed = 0
    for at in range(0, len(runs), 2):
        lo, count = runs[at], runs[at + 1]
        hi = lo + count
        counts = ref[lo:hi]
        free = counts.count(0)
        if free:
            broken.update(compress(stamp[lo:hi], map(not_, counts)))
        freed += free
        ref[lo:hi] = list(map(add, counts, repeat(1)))
        _hold_run(held, lo, count)
    return freed, len(keys) - freed


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
        # the memo's GPU hit's one-block slots as runs (first, count; None: not kept), for
        # the admission that follows the match to take without a second lookup
        self._memo_slots: list[int] | None = None

    def add(self, i: int, chained: list[int], block_tokens: int, prompt_tokens: int) -> None:
        """Request ``i``'s prompt carries block ids of ``block_tokens`` tokens each, whose
        chained keys (:func:`~sincere.core.prefix.chain_keys`) are ``chained``."""
        engine = self.block
        check_block_sizes(block_tokens, engine)
        if block_tokens > engine:
            group = block_tokens // engine
            covered = min(prompt_tokens, len(chained) * block_tokens)
            num_blocks = covered // engine
            num_groups = -(-num_blocks // group)
            keys = tuple(chained[:num_groups])
        else:
            group = 1
            keys = engine_keys_of_chain(
                chained,
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
        self._memo_slots = None
        if prompt is not None:
            most = min((prefill_len - 1) // self.block, prompt.num_blocks)
            group = prompt.group
            bases = self.slots.bases.get(group)
            ref = self.slots.ref
            if bases is not None and group == 1:
                hit, shared, self._memo_slots = _match_singles(
                    bases, ref, self.slots.key, prompt.keys[:most]
                )
            elif bases is not None:
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
        broken = self.free.broken  # the releases whose free blocks are taken again
        if hit > 0 and prompt.group == 1:
            memo = self._memo_slots  # the slots of this admission's own match, if kept
            if memo is not None and not (
                i == self._memo_i
                and self.epoch == self._memo_epoch
                and prefill_len == self._memo_len
                and self._memo[0] - self._memo_tier == hit
            ):
                memo = None
            freed, newly_shared = _hold_singles(held, self.slots, broken, prompt.keys[:hit], memo)
        elif hit > 0:
            group = prompt.group
            bases = self.slots.bases[group]
            ref, stamp = self.slots.ref, self.slots.stamp
            last = -1  # the release last marked
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
                        if stamp[s] != last:
                            last = stamp[s]
                            broken.add(last)
                    else:
                        newly_shared += 1
                    ref[s] = r + 1
                _hold_run(held, base, n)  # the next group's slots
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
        self.tiers.load(block_names(prompt.keys, prompt.group, hit, hit + tier), i)
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
        held = self.held[i]
        if group == 1:
            _register_singles(slots, held, list(keys[start:upto]))
            self.epoch += 1
            return
        j0, j1 = start // group, (upto - 1) // group + 1
        chunk = keys[j0:j1]
        got = list(map(slots.bases.setdefault(group, {}).get, chunk))
        known = got.index(None) if None in got else len(got)
        new = got.count(None)
        tail_new = new > 0 and new == len(got) - known  # groups with slots, then new ones
        for j in range(j0, j0 + known if tail_new else j1):
            base = got[j - j0]  # None: a new group among ones with slots (rare), one at a time
            base = slots.base(chunk[j - j0], group) if base is None else base
            _register_group(slots, held, base, group, start - j * group, upto - j * group)
        if tail_new:  # the new groups in as few slot ranges as the spare ones allow
            after = _held_end(held)
            ranges = slots.take(list(chunk[known:]), group, after)
            k0 = max(start - (j0 + known) * group, 0)
            _register_new(slots, held, ranges, group, k0, upto - (j1 - 1) * group)
        self.epoch += 1

    def release(self, i: int) -> int:
        """``i`` stops running: drop its references, tail first; return blocks unshared."""
        held = self.held.pop(i, None)
        if held is None:
            return 0
        del self.progress[i]
        now = self.free.next_stamp()
        ref, stamp, free = self.slots.ref, self.slots.stamp, self.free.runs
        group = self.prompts[i].group
        unshared = freed = 0
        at = len(held) - 3
        while at >= 0:
            base, lo, hi = held[at], held[at + 1], held[at + 2]
            at -= 3
            s = base + hi
            end = base + lo
            alone = (counts := ref[end : s + 1]).count(1)
            if alone == s + 1 - end:  # no one else holds any: in bulk
                ref[end : s + 1] = [0] * (s + 1 - end)
                stamp[end : s + 1] = [now] * (s + 1 - end)
                freed += s + 1 - end
                free.append((base, hi, lo, now, group))
                continue
            if alone == 0:  # others hold every one (a shared prefix): in bulk, none freed
                ref[end : s + 1] = list(map(sub, counts, repeat(1)))
                unshared += s + 1 - end
                continue
            top = -1  # the first slot of the stretch being freed, if any
            while s >= end:
                r = ref[s]
                if r == 1:
                    ref[s] = 0
                    stamp[s] = now
                    freed += 1
                    if top < 0:
                        top = s
                else:
                    ref[s] = r - 1
                    unshared += 1
                    if top >= 0:  # the stretch freed ends: one run of its own
                        free.append((base, top - base, s + 1 - base, now, group))
                        top = -1
                s -= 1
            if top >= 0:
                free.append((base, top - base, lo, now, group))
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


def _register_group(
    slots: BlockSlots, held: list[int], base: int, group: int, k0: int, k1: int
) -> None:
    """Take blocks ``max(k0, 0)`` to ``min(k1, group) - 1`` of the group at ``base``."""
    k0, k1 = max(k0, 0), min(k1, group)
    ref = slots.ref
    if max(ref[base + k0 : base + k1]) < 0:  # the common case: none cached, in bulk
        ref[base + k0 : base + k1] = [1] * (k1 - k0)
        added = k1 - k0
        if _held_end(held) == base + k0:  # the run goes on
            held[-1] = base + k1 - 1 - held[-3]
        else:
            held.extend((base, k0, k1 - 1))
    else:
        added = _register_each(slots, held, base, k0, k1)
    if added:
        slots.cached(base, added)


def _register_new(
    slots: BlockSlots, held: list[int], ranges: list[tuple[int, int]], group: int, k0: int, k1: int
) -> None:
    """Cache a prompt's run of new groups of ``group`` blocks, in the slot ``ranges``
    (:meth:`BlockSlots.take`'s): from block ``k0`` of the first to block ``k1 - 1`` of the
    last, held as one run per range (a range continuing the held run extends it)."""
    ref = slots.ref
    last = len(ranges) - 1
    for r, (lo, n) in enumerate(ranges):
        a = lo + (k0 if r == 0 else 0)
        b = lo + (n - 1) * group + (k1 if r == last else group)
        ref[a:b] = [1] * (b - a)
        if _held_end(held) == a:  # the run goes on
            held[-1] = b - 1 - held[-3]
        else:
            held.extend((lo, a - lo, b - 1 - lo))
    slots.cached_many(ranges, group, k0, k1)


def _register_each(slots: BlockSlots, held: list[int], base: int, k0: int, k1: int) -> int:
    """Take blocks ``k0..k1-1`` of the group at ``base`` one by one; return how many."""
    ref = slots.ref
    added = 0
    for k in range(k0, k1):
        s = base + k
        if ref[s] >= 0:  # cached by another sequence meanwhile: this copy stays private
            continue
        ref[s] = 1
        added += 1
        if _held_end(held) == s:
            held[-1] = s - held[-3]
        else:
            held.extend((base, k, k))
    return added


def _register_singles(slots: BlockSlots, held: list[int], keys: list[int]) -> None:
    """Cache the one-block groups ``keys`` (a run of the prompt) that no other sequence
    cached meanwhile, held in runs of consecutive slots."""
    bases = slots.bases.get(1)
    if bases is None or bases.keys().isdisjoint(keys):  # the common case: all new
        _hold_ranges(held, slots.cache_singles(keys, _held_end(held)))
        return
    known = list(map(bases.get, keys))
    for key, slot in zip(keys, known, strict=True):
        if slot is None:  # else cached by another sequence meanwhile: this copy stays private
            _hold_ranges(held, slots.cache_singles([key], _held_end(held)))


def _hold_ranges(held: list[int], ranges: list[tuple[int, int]]) -> None:
    """Append one-block groups' slot ``ranges`` (first slot, count; in prompt order) to
    ``held``'s runs (:func:`_hold_run`)."""
    for lo, k in ranges:
        _hold_run(held, lo, k)


def _hold_run(held: list[int], lo: int, count: int) -> None:
    """Append slots ``lo`` to ``lo + count - 1`` to ``held``'s runs (``base, 0, last`` for
    a new one): slots right after the last run's last slot extend it."""
    if _held_end(held) == lo:
        held[-1] += count
    else:
        held.extend((lo, 0, count - 1))


def _held_end(held: list[int]) -> int:
    """The slot after the last held run's last (-1: nothing held), where a prompt's run
    goes on."""
    return held[-3] + held[-1] + 1 if held else -1
