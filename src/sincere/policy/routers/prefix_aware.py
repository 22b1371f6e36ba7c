"""Prefix-aware routing: send a prompt where its longest prefix was already sent.

Serving engines keep the KV cache of prompt prefixes they computed (vLLM's automatic
prefix caching, SGLang's radix cache), so a request whose prefix an instance already
holds skips that part of its prefill. The routers in front of them route on it: llm-d's
endpoint picker with its approximate prefix-cache scorer, Dynamo's KV router, SGLang's
cache-aware router. This is that policy on sincere's block ids
(:mod:`sincere.core.prefix`):

* **Index.** Per instance, an LRU of the chained keys of the full blocks of every prompt
  routed there, at most ``max_blocks_per_instance`` keys
  (:class:`~sincere.policy.routers._prefix_index.PrefixIndex`; approximate, like llm-d's
  ``lruCapacityPerServer`` index: what was sent, not what the engine still holds).
* **Score.** The longest matched prefix on each candidate, in tokens (matched blocks times
  the request's ``block_tokens``); at most ``max_prefix_blocks`` leading blocks are keyed.
  With ``tier_tokens_per_instance`` and ``tier_hit_weight`` blocks the index evicted into
  its lower-tier window count at that weight (a CPU-offloaded hit, module
  :mod:`~sincere.policy.routers._prefix_index`).
* **Load.** Prefix affinity only among candidates within ``max_load_gap`` of the least
  loaded by ``metric`` (SGLang's router balances the same way once loads diverge past an
  absolute threshold): an overloaded instance yields its prefix to a less loaded one,
  which then builds the cache. A best match below ``min_match_tokens`` counts as none.
  Ties (no match anywhere, or equal matches) go to the least loaded, then the earlier
  candidate.

Requests without block ids match nothing and go to the least loaded instance. The
decision's ``estimates`` hold every candidate's matched tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat
from operator import attrgetter, mul
from typing import Any

import numpy as np
from pydantic import Field

from sincere.core.params import params_from
from sincere.core.request import Request
from sincere.core.types import InstanceId, Seconds
from sincere.policy.router_base import (
    ROUTERS,
    CountKey,
    InstanceView,
    RouteDecision,
    choose_first_least,
)
from sincere.policy.routers._common import LoadMetric, LoadMetricRouter
from sincere.policy.routers._prefix_index import PrefixIndexParams, full_blocks, prompt_keys

_ID = attrgetter("id")
_OUTSTANDING = attrgetter("num_outstanding")


class PrefixAwareParams(PrefixIndexParams):
    """Parameters of ``prefix-aware``."""

    metric: LoadMetric = Field("outstanding", description="load measure compared")
    max_load_gap: float = Field(
        4.0,
        ge=0.0,
        description="prefix affinity only on candidates loaded at most this much above the "
        "least loaded (in the metric's unit); beyond it the prefix yields to load",
    )
    min_match_tokens: int = Field(
        0, ge=0, description="a best match shorter than this counts as no match"
    )


@ROUTERS.register("prefix-aware", params=PrefixAwareParams)
class PrefixAwareRouter(LoadMetricRouter):
    """Longest matched prefix among the not-overloaded candidates; least loaded on ties."""

    def __init__(
        self, rng: np.random.Generator, params: PrefixAwareParams | None = None, **values: Any
    ) -> None:
        p = params_from(PrefixAwareParams, params, values, "router 'prefix-aware'")
        super().__init__(rng, p.metric)
        self.index = p.index("prefix-aware")
        self.max_prefix_blocks = p.max_prefix_blocks
        self.max_load_gap = p.max_load_gap
        self.min_match_tokens = p.min_match_tokens
        self._ids_seen: list[InstanceId] = []  # the candidates :meth:`_positions` last saw
        self._where: dict[InstanceId, int] = {}

    @property
    def count_key_without_content(self) -> CountKey | None:
        """By outstanding, a request without block ids matches nowhere and goes to the least
        outstanding, the earliest of equals: its count alone decides."""
        return "outstanding" if self.metric == "outstanding" else None

    # :meth:`choose` for a request without block ids, by outstanding counts (no key
    # touches the index): the first of the fewest
    choose_by_count = choose_first_least

    @property
    def count_key_with_prompt(self) -> CountKey | None:
        """By outstanding, a request's prompt keys, the candidates' ids and their
        outstanding counts decide (:meth:`choose_by_prompt`)."""
        return "outstanding" if self.metric == "outstanding" else None

    def choose(
        self, request: Request, candidates: Sequence[InstanceView], now: Seconds
    ) -> RouteDecision:
        """The candidate with the longest matched prefix within the load gap; see the module."""
        keys = prompt_keys(request, self.max_prefix_blocks)
        if self.metric == "outstanding":  # always known: no fallback, no call per view
            used, note = "outstanding", ""
            loads: list[float] = list(map(_OUTSTANDING, candidates))
        else:
            used, load, note = self.load_measure(candidates)
            loads = list(map(load, candidates))
        ids = list(map(_ID, candidates))
        best, matched, top = self._place(keys, request.block_tokens, loads, ids)
        reason = f"prefix {matched[best]}/{len(keys) * request.block_tokens} tokens, "
        reason += f"{used}={loads[best]:g}"
        if top >= self.min_match_tokens and top > matched[best]:  # yielded to load
            overloaded = sum(x > min(loads) + self.max_load_gap for x in loads)
            reason += f"; {overloaded} candidate(s) with a longer prefix over the load gap"
        estimates = tuple(zip(ids, map(float, matched), strict=True))
        return RouteDecision(ids[best], reason=reason + note, estimates=estimates)

    def choose_by_prompt(
        self,
        counts: Sequence[int],
        ids: Sequence[InstanceId],
        keys: Sequence[int],
        prompt_tokens: int,
        block_tokens: int,
    ) -> int:
        """:meth:`choose`'s position from the outstanding ``counts`` and the prompt's chained
        block ``keys``: the same placement and index update, without the decision's reason
        and estimates (nobody reads them on this path)."""
        lead: tuple[int, ...] = ()
        if keys and block_tokens >= 1:
            full = full_blocks(len(keys), prompt_tokens, block_tokens, self.max_prefix_blocks)
            lead = tuple(keys[:full])
        if self.index.tier_capacity:
            return self._place(lead, block_tokens, counts, ids)[0]
        return self._place_by_groups(lead, block_tokens, counts, ids)

    def _place_by_groups(
        self,
        keys: tuple[int, ...],
        block_tokens: int,
        loads: Sequence[float],
        ids: Sequence[InstanceId],
    ) -> int:
        """:meth:`_place`'s position without a tier, from the index's groups of instances
        that match equally far (``PrefixIndex.holder_groups``) instead of a score per
        candidate. The first group, longest first, with a candidate within the load gap
        holds the answer: its least loaded such candidate, then the earliest. With none
        (or a best match under ``min_match_tokens``), the least loaded candidate, the
        earliest of equals: it is within the gap, so with no group holding such a
        candidate it matches nothing. The same answer and index update as :meth:`_place`
        (tests hold ``choose_by_prompt`` to ``choose``)."""
        index = self.index
        least = min(loads)
        groups, longest = index.holder_groups(keys)
        where = self._positions(ids)
        of_bit = index.instance_of_bit
        limit = least + self.max_load_gap
        best, best_load, matched, top = -1, 0.0, 0, -1
        for mask, length in groups:
            while mask:
                low = mask & -mask
                mask ^= low
                k = where.get(of_bit[low.bit_length() - 1])
                if k is None:  # not a candidate
                    continue
                if top < 0:
                    top = length
                load = loads[k]
                if load > limit:
                    continue
                if best < 0 or load < best_load or (load == best_load and k < best):
                    best, best_load = k, load
            if best >= 0:
                matched = length
                break
        if top < 0 or top * block_tokens < self.min_match_tokens or best < 0:
            best = loads.index(least)
            matched = index.matched_blocks(ids[best], keys)
        index.add(ids[best], keys, block_tokens, (matched, longest))
        return best

    def _positions(self, ids: Sequence[InstanceId]) -> dict[InstanceId, int]:
        """Each candidate's position in ``ids``, kept while the candidates stay the same
        (the cluster passes one list for the whole fleet; another kind of sequence is
        read afresh each time)."""
        if ids != self._ids_seen:
            self._ids_seen = list(ids)
            self._where = {instance: k for k, instance in enumerate(ids)}
        return self._where

    def _place(
        self,
        keys: tuple[int, ...],
        block_tokens: int,
        loads: Sequence[float],
        ids: Sequence[InstanceId],
    ) -> tuple[int, Sequence[float], float]:
        """The chosen position among candidates ``ids`` with ``loads`` for a prompt whose
        keyed blocks are ``keys``, noted in the index: (position, every candidate's matched
        tokens, the longest match)."""
        least = min(loads)
        index = self.index
        longest = -1  # with a tier: not known
        if index.tier_capacity:
            scores: list[int] | list[float] = index.score_each(ids, keys)
        else:
            scores, longest = index.scores_and_longest(ids, keys)
        top = max(scores) * block_tokens  # the longest match (max of the products below)
        if not top or top < self.min_match_tokens:  # no match: the least loaded, the earliest
            best = loads.index(least)
            matched: Sequence[float] = [0] * len(ids)
        else:
            matched = list(map(mul, scores, repeat(block_tokens)))
            limit = least + self.max_load_gap
            if max(loads) > limit:
                eligible = [k for k, x in enumerate(loads) if x <= limit]
                best = _longest_then_least(eligible, matched, loads)
            elif matched.count(top) == 1:  # every candidate within the gap, one longest
                best = matched.index(top)
            else:
                best = _longest_then_least(range(len(matched)), matched, loads)
        scored = None if longest < 0 else (int(scores[best]), longest)
        index.add(ids[best], keys, block_tokens, scored)
        return best, matched, top


def _longest_then_least(
    eligible: Sequence[int], matched: Sequence[float], loads: Sequence[float]
) -> int:
    """Of the ``eligible`` positions, the longest match; among equal ones the least load,
    then the earliest."""
    top = max([matched[k] for k in eligible])
    return min([k for k in eligible if matched[k] == top], key=loads.__getitem__)
