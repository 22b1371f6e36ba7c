"""An approximate, bounded index of the prompt prefixes each instance has seen.

Prefix-aware routers cannot ask an engine which KV blocks it holds (live engines do not
say, and asking would cost a round trip per request). Like llm-d's approximate prefix
cache scorer and Dynamo's KV router without engine events, they remember instead what
they sent where: per instance, the chained keys (:func:`sincere.core.prefix.chain_keys`)
of the full blocks of every prompt routed there, in an LRU of at most ``max_tokens``
prompt tokens (each key weighs its block's tokens, so one setting means the same for
Mooncake's 512-token blocks in simulation and the gateway's 16-token blocks live). The
longest matched prefix of a new prompt on an instance is then the number of its leading
keys present there -- because keys are chained, key ``i`` present means
blocks ``0..i`` were all sent there together.

A prompt's keys are touched from its last block to its first, so the first blocks are
the most recently used and eviction takes the tails of old prompts first (as vLLM frees
a finished sequence's blocks tail first): a shared system prompt stays while the
conversations behind it go. The index is an estimate: the engine may have evicted what
the index still holds, or kept what the index dropped.

**A lower KV tier.** An engine with KV offload (``engine.kv_offload``) writes the blocks it
evicts to CPU memory and loads them back on a hit, slower than a GPU hit and faster than a
recompute. The router cannot see which blocks an engine moved, so it extends its window by
the instance's declared tier capacity instead: with ``tier_tokens`` the keys the LRU evicts
move to a second LRU of that many prompt tokens (a key routed again moves back), and a
matched prefix counts its leading keys in the first window fully and those continuing it in
the second at ``tier_weight`` (:meth:`PrefixIndex.score_blocks`). This approximates the
engine's tiers as far as the index's first window approximates its GPU cache (set
``max_tokens_per_instance`` to what that cache holds for the tier to mean the CPU tier).
"""

from __future__ import annotations

import warnings
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from itertools import repeat
from operator import itemgetter, or_

from pydantic import Field, model_validator

from sincere.core.params import Params
from sincere.core.prefix import chain_keys
from sincere.core.request import Request
from sincere.core.types import InstanceId


def _held_prefix(
    held: Mapping[int, int], keys: tuple[int, ...], lo: int = 0, hi: int | None = None
) -> int:
    """How many leading ``keys`` ``held`` holds, by bisection (``keys[:lo]`` known held,
    ``keys[hi:]`` known not): the keys an index holds are closed under prefixes (see
    :class:`PrefixIndex`), so key ``j`` held means keys ``0..j`` are."""
    if hi is None:
        hi = len(keys)
    while lo < hi:
        mid = (lo + hi) // 2
        if keys[mid] in held:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _held_prefix_of(holders: Mapping[int, int], bit: int, keys: tuple[int, ...]) -> int:
    """:func:`_held_prefix` of the instance whose bit is ``bit`` in the shared map of
    holders (key -> bitmask of the instances holding it)."""
    lo, hi = 0, len(keys)
    get = holders.get
    while lo < hi:
        mid = (lo + hi) // 2
        if get(keys[mid], 0) & bit:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _breaks(holders: Mapping[int, int], keys: tuple[int, ...], top: int) -> list[tuple[int, int]]:
    """Every instance's matched prefix of ``keys`` at once, as (instances' bitmask, length)
    pairs: ``holders`` maps a key to the bitmask of the instances holding it, and ``top`` is
    that of ``keys[0]``. Each instance's keys are closed under prefixes, so the mask of key
    ``j`` contains that of key ``j + 1``: an instance's match is the last key whose mask has
    its bit, and bisection between two keys with different masks finds each change."""
    out: list[tuple[int, int]] = []
    get = holders.get
    todo = [(0, len(keys), top, 0)]  # (lo, hi, mask of key lo, mask of key hi; past the end: 0)
    while todo:
        lo, hi, at_lo, at_hi = todo.pop()
        if hi - lo == 1:
            out.append((at_lo & ~at_hi, hi))  # held key lo, not key hi: matched lo + 1
            continue
        mid = (lo + hi) // 2
        at_mid = get(keys[mid], 0)
        if at_mid != at_hi:
            todo.append((mid, hi, at_mid, at_hi))
        if at_mid != at_lo:
            todo.append((lo, mid, at_lo, at_mid))
    return out


def prompt_keys(request: Request, max_blocks: int | None = None) -> tuple[int, ...]:
    """Chained keys of the request's *full* content blocks (a partial last block has none).

    ``max_blocks`` caps how many leading blocks are keyed (llm-d's
    ``maxPrefixBlocksToMatch``); ``None``: all of them.
    """
    if not request.block_ids or request.block_tokens < 1:
        return ()
    full = full_blocks(
        len(request.block_ids), request.prompt_tokens, request.block_tokens, max_blocks
    )
    if len(request.block_keys) >= full:  # chained already by the request's source
        return request.block_keys[:full]
    return chain_keys(request.block_ids[:full])


def full_blocks(
    num_blocks: int, prompt_tokens: int, block_tokens: int, max_blocks: int | None
) -> int:
    """How many leading blocks of a prompt of ``prompt_tokens`` in ``num_blocks`` blocks of
    ``block_tokens`` are keyed: the full ones (a partial last block has no key), at most
    ``max_blocks`` (``None``: all)."""
    full = min(num_blocks, prompt_tokens // block_tokens)
    return full if max_blocks is None else min(full, max_blocks)


class _Run:
    """Keys of consecutive blocks of one prompt held by one instance, shallowest first,
    one weight each; a node of :class:`_RunLru`'s list."""

    __slots__ = ("keys", "next", "prev", "weight")

    def __init__(self, keys: list[int], weight: int) -> None:
        self.keys = keys
        self.weight = weight
        self.prev: _Run = self
        self.next: _Run = self


class _RunLru:
    """One instance's keys, least recently used first, kept as runs.

    A prompt's keys are touched tail first (see :class:`PrefixIndex`), so within a run
    the deepest key is the least recent; the runs are a doubly linked list, oldest first.
    Touching a prompt's held keys is a walk over the runs its path crosses and a move of
    each to the end, deepest first -- a run covered only in part is split, the touched
    part moved and the rest left in place -- instead of a move per key. A path enters
    every run it crosses at the run's first key (a key lives in one run, and the key
    before it on the path, chained, would otherwise be in that run too), so runs are
    found by their first keys alone (:attr:`head_of`); whether a key is held at all the
    index's shared map of holders says. Eviction takes the oldest run's deepest key, the
    key an LRU of single keys would take."""

    def __init__(self) -> None:
        self.end = _Run([], 0)  # sentinel: end.next is the oldest run, end.prev the newest
        self.head_of: dict[int, _Run] = {}  # each run's first key -> the run
        self.num_keys = 0
        self.total = 0  # what the keys weigh

    def touch(self, keys: tuple[int, ...], known: int, weight: int) -> None:
        """``keys[:known]`` are held (the prompt's path); the rest are new, of ``weight``:
        touched tail first, as one run each."""
        path: list[_Run] = []
        head_of, pos = self.head_of, 0
        while pos < known:
            run = head_of[keys[pos]]
            held = run.keys
            span = min(len(held), known - pos)
            if held[span - 1] != keys[pos + span - 1]:  # the path leaves the run inside it
                lo, hi = 1, span - 1  # held[lo - 1] matches, held[hi] does not
                while lo < hi:
                    mid = (lo + hi + 1) // 2
                    if held[mid - 1] == keys[pos + mid - 1]:
                        lo = mid
                    else:
                        hi = mid - 1
                span = lo
            if span < len(held):
                self._split(run, span)
            path.append(run)
            pos += span
        if known < len(keys):
            new = _Run(list(keys[known:]), weight)
            head_of[keys[known]] = new
            self.num_keys += len(new.keys)
            self.total += weight * len(new.keys)
            self._append(new)
        for run in reversed(path):
            self._unlink(run)
            self._append(run)

    def _split(self, run: _Run, span: int) -> None:
        """Cut ``run`` after its first ``span`` keys: it keeps those, and the rest become a
        run of their own in its place."""
        rest = _Run(run.keys[span:], run.weight)
        del run.keys[span:]
        self.head_of[rest.keys[0]] = rest
        rest.prev, rest.next = run.prev, run
        run.prev.next = rest
        run.prev = rest

    def _append(self, run: _Run) -> None:
        end = self.end
        run.prev, run.next = end.prev, end
        end.prev.next = run
        end.prev = run

    @staticmethod
    def _unlink(run: _Run) -> None:
        run.prev.next = run.next
        run.next.prev = run.prev

    def pop_oldest(self) -> int:
        """Evict the least recently used key, and say which."""
        run = self.end.next
        key = run.keys.pop()
        self.num_keys -= 1
        self.total -= run.weight
        if not run.keys:  # (its first key, the last to go)
            del self.head_of[key]
            self._unlink(run)
        return key

    def items(self) -> list[tuple[int, int]]:
        """(key, weight) of every key held, least recently used first."""
        out: list[tuple[int, int]] = []
        run = self.end.next
        while run is not self.end:
            out.extend((key, run.weight) for key in reversed(run.keys))
            run = run.next
        return out


DEFAULT_INDEX_TOKENS = 1 << 25
"""Prompt tokens a router's index remembers per instance by default (33,554,432: 65,536
blocks of Mooncake's 512 tokens, 2,097,152 of the gateway's 16)."""


class PrefixIndex:
    """Per instance, an LRU of the chained block keys routed there, bounded in prompt
    tokens (each key weighs its block's tokens), so one capacity means the same at any
    block size; with ``max_blocks`` instead, bounded in keys (the deprecated unit).

    The keys held are closed under prefixes: a prompt's keys are touched tail first, so
    the key of block ``j - 1`` is always more recent than that of block ``j`` and evicted
    after it, and a key comes back only with the whole prompt before it (chained keys:
    equal key, equal prefix; with the lower tier's window as well). So a match is found by
    bisection, and a prompt's keys held are one leading run and the rest new. Without a
    lower tier an instance's keys are kept as runs (:class:`_RunLru`): a prompt is touched
    run by run, and whether a key is held is read from the shared map of holders; with a
    tier, key by key in an ordered dict per instance, as the tier's window needs.
    """

    def __init__(
        self,
        max_tokens: int | None = None,
        *,
        max_blocks: int | None = None,
        tier_tokens: int = 0,
        tier_weight: float = 0.0,
    ) -> None:
        if (max_tokens is None) == (max_blocks is None):
            raise ValueError("give the index's capacity in max_tokens or max_blocks, not both")
        self.in_tokens = max_tokens is not None
        self.capacity: int = max_tokens if max_tokens is not None else max_blocks or 0
        # without a tier, each instance's keys as runs (the common case)
        self._runs: dict[InstanceId, _RunLru] = {}
        # with a tier, each instance's first window key by key, and what it weighs
        self._by_instance: dict[InstanceId, OrderedDict[int, int]] = {}
        self._held: dict[InstanceId, int] = {}  # tokens (or keys) held per instance
        self.tier_capacity = tier_tokens  # the lower tier's window (module docstring)
        self.tier_weight = tier_weight
        self._tier: dict[InstanceId, OrderedDict[int, int]] = {}
        self._tier_held: dict[InstanceId, int] = {}
        # without a tier, every instance's first window at once: key -> bitmask of the
        # instances holding it (bit b: ``_order[b]``), for :meth:`score_each`'s one walk
        self._holders: dict[int, int] = {}
        self._bit: dict[InstanceId, int] = {}
        self._order: list[InstanceId] = []

    def matched_blocks(self, instance: InstanceId, keys: tuple[int, ...]) -> int:
        """Leading keys of ``keys`` the instance's index holds (stops at the first miss)."""
        if not self.tier_capacity:  # the shared map says (no bit: never routed to)
            bit = self._bit.get(instance)
            return 0 if bit is None else _held_prefix_of(self._holders, bit, keys)
        held = self._by_instance.get(instance)
        if not held:
            return 0
        return _held_prefix(held, keys)

    def add(
        self,
        instance: InstanceId,
        keys: tuple[int, ...],
        block_tokens: int,
        scored: tuple[int, int] | None = None,
    ) -> None:
        """Note that a prompt with ``keys`` (blocks of ``block_tokens``) went to
        ``instance``; its tail is evicted first. ``scored``: (``instance``'s matched blocks,
        the longest match of any instance), as :meth:`score_each` just found them without
        a tier, which spares finding them again."""
        if not keys:
            return
        weight = block_tokens if self.in_tokens else 1
        if not self.tier_capacity:
            self._add_runs(instance, keys, weight, scored)
            return
        held = self._by_instance.setdefault(instance, OrderedDict())
        total = self._held.get(instance, 0)
        tier = self._tier.get(instance)
        if tier:
            total = self._add_each(instance, held, tier, keys, weight, total)
        else:  # the keys held are a leading run, the rest are new: one run each
            known = _held_prefix(held, keys)
            held.update(zip(reversed(keys[known:]), repeat(weight)))
            total += weight * (len(keys) - known)
            deque(map(held.move_to_end, reversed(keys[:known])), maxlen=0)
        while total > self.capacity and held:
            key, w = held.popitem(last=False)
            total -= w
            self._demote(instance, key, w)
        self._held[instance] = total

    def _add_runs(
        self,
        instance: InstanceId,
        keys: tuple[int, ...],
        weight: int,
        scored: tuple[int, int] | None,
    ) -> None:
        """Without a tier: touch the prompt's keys run by run (:class:`_RunLru`), mark the
        new ones as held by ``instance`` in the shared map, evict its oldest keys over
        capacity (unmarking them). The keys past the longest match of any instance are
        held by none (every instance's keys are closed under prefixes): their mask is the
        bit alone, with no look-up first."""
        runs = self._runs.get(instance)
        if runs is None:
            runs = self._runs[instance] = _RunLru()
            self._bit[instance] = 1 << len(self._order)
            self._order.append(instance)
        bit = self._bit[instance]
        holders = self._holders
        if scored is None:
            known = _held_prefix_of(holders, bit, keys)
            longest = len(keys)
        else:
            known, longest = scored
        runs.touch(keys, known, weight)
        shared = keys[known:longest]  # held elsewhere, maybe: each mask gains the bit
        masks = map(or_, map(holders.get, shared, repeat(0)), repeat(bit))
        holders.update(zip(shared, masks, strict=True))
        holders.update(zip(keys[longest:], repeat(bit)))  # held nowhere
        capacity = self.capacity
        while runs.total > capacity and runs.num_keys:
            key = runs.pop_oldest()
            mask = holders[key] ^ bit
            if mask:
                holders[key] = mask
            else:
                del holders[key]

    def _add_each(
        self,
        instance: InstanceId,
        held: OrderedDict[int, int],
        tier: OrderedDict[int, int],
        keys: tuple[int, ...],
        weight: int,
        total: int,
    ) -> int:
        """:meth:`add`'s touch, key by key, taking keys back from the lower tier; the new
        total."""
        for key in reversed(keys):
            if key in held:
                held.move_to_end(key)
            else:
                held[key] = weight
                total += weight
                if key in tier:  # back from the lower tier
                    self._tier_held[instance] -= tier.pop(key)
        return total

    def _demote(self, instance: InstanceId, key: int, weight: int) -> None:
        """``key``, evicted from the first window, into the lower tier's (its oldest out)."""
        tier = self._tier.setdefault(instance, OrderedDict())
        tier[key] = weight
        total = self._tier_held.get(instance, 0) + weight
        while total > self.tier_capacity and tier:
            total -= tier.popitem(last=False)[1]
        self._tier_held[instance] = total

    def score_blocks(self, instance: InstanceId, keys: tuple[int, ...]) -> float:
        """The matched prefix in blocks: leading keys in the first window count 1, those
        continuing it in the lower tier's ``tier_weight`` (without a tier: the matched
        blocks, :meth:`matched_blocks`)."""
        if not self.tier_capacity:
            return self.matched_blocks(instance, keys)
        held: Mapping[int, int] = self._by_instance.get(instance) or {}
        tier: Mapping[int, int] = self._tier.get(instance) or {}
        full = low = 0
        for key in keys:
            if key in held:
                full += 1
            elif key in tier:
                low += 1
            else:
                break
        return full + self.tier_weight * low if low else full

    def score_each(
        self, instances: Sequence[InstanceId], keys: tuple[int, ...]
    ) -> list[int] | list[float]:
        """:meth:`score_blocks` on each instance, in order. Without a tier, one walk for all
        instances at once: the shared map of key -> instances holding it, bisected where the
        holders change (:func:`_breaks`; only the instances holding the first key are
        visited), instead of a match per instance."""
        if self.tier_capacity:
            return [self.score_blocks(instance, keys) for instance in instances]
        return self.scores_and_longest(instances, keys)[0]

    def scores_and_longest(
        self, instances: Sequence[InstanceId], keys: tuple[int, ...]
    ) -> tuple[list[int], int]:
        """Without a tier: :meth:`score_each`, and the longest match of any instance the
        index holds keys for, among ``instances`` or not (the keys past it are held by
        none), for :meth:`add`'s ``scored``."""
        top = self._holders.get(keys[0], 0) if keys else 0
        if not top:
            return [0] * len(instances), 0
        found: dict[InstanceId, int] = {}
        order = self._order
        longest = 0
        for mask, length in _breaks(self._holders, keys, top):
            if length > longest:
                longest = length
            while mask:
                low = mask & -mask
                found[order[low.bit_length() - 1]] = length
                mask ^= low
        return list(map(found.get, instances, repeat(0))), longest

    def holder_groups(self, keys: tuple[int, ...]) -> tuple[list[tuple[int, int]], int]:
        """Without a tier: who matches ``keys`` how far, as (bitmask of instances, matched
        blocks) pairs, longest first (each length once; an instance in none matched
        nothing), and the longest match of any instance. Bit ``b`` is
        :meth:`instance_of_bit`'s ``b``. :meth:`scores_and_longest` without a list per
        candidate."""
        top = self._holders.get(keys[0], 0) if keys else 0
        if not top:
            return [], 0
        groups = _breaks(self._holders, keys, top)
        groups.sort(key=itemgetter(1), reverse=True)
        return groups, groups[0][1]

    @property
    def instance_of_bit(self) -> Sequence[InstanceId]:
        """The instance of each bit of :meth:`holder_groups`' masks, by bit position."""
        return self._order

    def size(self, instance: InstanceId) -> int:
        """Keys held for ``instance``."""
        runs = self._runs.get(instance)
        return runs.num_keys if runs is not None else len(self._by_instance.get(instance, ()))

    def held_tokens(self, instance: InstanceId) -> int:
        """What ``instance``'s keys weigh: prompt tokens (keys with ``max_blocks``)."""
        runs = self._runs.get(instance)
        return runs.total if runs is not None else self._held.get(instance, 0)

    def held_keys(self, instance: InstanceId) -> list[tuple[int, int]]:
        """(key, weight) of every key held for ``instance`` in its first window, least
        recently used first."""
        runs = self._runs.get(instance)
        if runs is not None:
            return runs.items()
        return list(self._by_instance.get(instance, {}).items())


class PrefixIndexParams(Params):
    """The prefix index's parameters, shared by the routers that keep one."""

    max_tokens_per_instance: int = Field(
        DEFAULT_INDEX_TOKENS,
        ge=1,
        description="prompt tokens the prefix index remembers per instance (LRU beyond), "
        "the same at any block size",
    )
    max_blocks_per_instance: int | None = Field(
        None, ge=1, description="deprecated: block keys per instance; use max_tokens_per_instance"
    )
    max_prefix_blocks: int | None = Field(
        None, ge=1, description="leading blocks of a prompt keyed and matched; null: all"
    )
    tier_tokens_per_instance: int = Field(
        0,
        ge=0,
        description="prompt tokens of an instance's lower KV tier (its CPU offload capacity): "
        "keys the index evicts stay matchable there at tier_hit_weight; 0: no tier",
    )
    tier_hit_weight: float = Field(
        0.0, ge=0.0, le=1.0, description="what a block matched in the lower tier counts, 0..1"
    )

    @model_validator(mode="after")
    def _tier_given_whole(self) -> PrefixIndexParams:
        if (self.tier_hit_weight > 0) != (self.tier_tokens_per_instance > 0):
            raise ValueError(
                "tier_hit_weight and tier_tokens_per_instance go together: a tier's hits count "
                "at the weight, within its capacity; got tier_hit_weight="
                f"{self.tier_hit_weight}, tier_tokens_per_instance={self.tier_tokens_per_instance}"
                "; allowed: both > 0, or both 0 (no tier)"
            )
        if self.tier_tokens_per_instance and self.max_blocks_per_instance is not None:
            raise ValueError(
                "a tier (tier_tokens_per_instance) needs the index in tokens: give "
                "max_tokens_per_instance, not the deprecated max_blocks_per_instance"
            )
        return self

    def index(self, router: str) -> PrefixIndex:
        """The index: ``max_tokens_per_instance`` per instance, unless the deprecated
        ``max_blocks_per_instance`` is given (keys, whose tokens depend on the block size:
        512 in Mooncake's trace, 16 at the gateway), which warns and keeps its old meaning."""
        max_blocks = self.max_blocks_per_instance
        if max_blocks is None:
            return PrefixIndex(
                self.max_tokens_per_instance,
                tier_tokens=self.tier_tokens_per_instance,
                tier_weight=self.tier_hit_weight,
            )
        warnings.warn(
            f"router {router!r}: max_blocks_per_instance is deprecated: it counts block keys, "
            "whose size differs between traces (Mooncake: 512 tokens) and the gateway (16), so "
            "one setting forgets 32 times sooner live; give max_tokens_per_instance (tokens, "
            f"e.g. {max_blocks} x the block tokens) instead",
            FutureWarning,
            stacklevel=3,
        )
        return PrefixIndex(max_blocks=max_blocks)
