"""An approximate, bounded index of the prompt prefixes each instance has seen.

Prefix-aware routers cannot ask an engine which KV blocks it holds (live engines do not
say, and asking would cost a round trip per request). Like llm-d's approximate prefix
cache scorer and Dynamo's KV router without engine events, they remember instead what
they sent where: per instance, the chained keys (:func:`sincere.core.prefix.chain_keys`)
of the full blocks of every prompt routed there, in an LRU of at most ``max_blocks``
keys. The longest matched prefix of a new prompt on an instance is then the number of
its leading keys present there -- because keys are chained, key ``i`` present means
blocks ``0..i`` were all sent there together.

A prompt's keys are touched from its last block to its first, so the first blocks are
the most recently used and eviction takes the tails of old prompts first (as vLLM frees
a finished sequence's blocks tail first): a shared system prompt stays while the
conversations behind it go. The index is an estimate: the engine may have evicted what
the index still holds, or kept what the index dropped.
"""

from __future__ import annotations

from collections import OrderedDict

from sincere.core.prefix import chain_keys
from sincere.core.request import Request
from sincere.core.types import InstanceId


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
    return chain_keys(request.block_ids[:full])


class PrefixIndex:
    """Per instance, an LRU of the chained block keys routed there (at most ``max_blocks``)."""

    def __init__(self, max_blocks: int) -> None:
        self.max_blocks = max_blocks
        self._by_instance: dict[InstanceId, OrderedDict[int, None]] = {}

    def matched_blocks(self, instance: InstanceId, keys: tuple[int, ...]) -> int:
        """Leading keys of ``keys`` the instance's index holds (stops at the first miss)."""
        held = self._by_instance.get(instance)
        if not held:
            return 0
        count = 0
        for key in keys:
            if key not in held:
                break
            count += 1
        return count

    def add(self, instance: InstanceId, keys: tuple[int, ...]) -> None:
        """Note that a prompt with ``keys`` went to ``instance`` (its tail is evicted first)."""
        if not keys:
            return
        held = self._by_instance.setdefault(instance, OrderedDict())
        for key in reversed(keys):
            if key in held:
                held.move_to_end(key)
            else:
                held[key] = None
        while len(held) > self.max_blocks:
            held.popitem(last=False)

    def size(self, instance: InstanceId) -> int:
        """Keys held for ``instance``."""
        return len(self._by_instance.get(instance, ()))
