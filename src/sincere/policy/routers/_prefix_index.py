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
    full = min(len(request.block_ids), request.prompt_tokens // request.block_tokens)
    if max_blocks is not None:
        full = min(full, max_blocks)
    if len(request.block_keys) >= full:  # chained already by the request's source
        return request.block_keys[:full]
    return chain_keys(request.block_ids[:full])


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
    bisection, and a prompt's keys held are one leading run (touched in one pass) and the
    rest one new run (inserted in one pass).
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
        held = self._by_instance.get(instance)
        if not held:
            return 0
        return _held_prefix(held, keys)

    def add(self, instance: InstanceId, keys: tuple[int, ...], block_tokens: int) -> None:
        """Note that a prompt with ``keys`` (blocks of ``block_tokens``) went to
        ``instance``; its tail is evicted first."""
        if not keys:
            return
        weight = block_tokens if self.in_tokens else 1
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
            if not self.tier_capacity:
                self._held[instance] = self._share(instance, held, keys[known:], total)
                return
        while total > self.capacity and held:
            key, w = held.popitem(last=False)
            total -= w
            if self.tier_capacity:
                self._demote(instance, key, w)
        self._held[instance] = total

    def _share(
        self, instance: InstanceId, held: OrderedDict[int, int], new: tuple[int, ...], total: int
    ) -> int:
        """Without a tier: mark the ``new`` keys as held by ``instance`` in the shared map,
        evict its oldest keys over capacity (unmarking them); the new total."""
        bit = self._bit.get(instance)
        if bit is None:
            bit = self._bit[instance] = 1 << len(self._order)
            self._order.append(instance)
        holders = self._holders
        get = holders.get
        for key in new:
            holders[key] = get(key, 0) | bit
        capacity = self.capacity
        while total > capacity and held:
            key, w = held.popitem(last=False)
            total -= w
            mask = holders[key] ^ bit
            if mask:
                holders[key] = mask
            else:
                del holders[key]
        return total

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
        top = self._holders.get(keys[0], 0) if keys else 0
        if not top:
            return [0] * len(instances)
        found: dict[InstanceId, int] = {}
        order = self._order
        for mask, length in _breaks(self._holders, keys, top):
            while mask:
                low = mask & -mask
                found[order[low.bit_length() - 1]] = length
                mask ^= low
        return list(map(found.get, instances, repeat(0)))

    def size(self, instance: InstanceId) -> int:
        """Keys held for ``instance``."""
        return len(self._by_instance.get(instance, ()))

    def held_tokens(self, instance: InstanceId) -> int:
        """What ``instance``'s keys weigh: prompt tokens (keys with ``max_blocks``)."""
        return self._held.get(instance, 0)


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
