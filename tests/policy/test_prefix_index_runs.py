"""The prefix index's run-wise match and touch against a key-by-key reference index."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

from sincere.core import Request
from sincere.core.prefix import chain_keys
from sincere.policy.router_base import InstanceView
from sincere.policy.routers import make_router
from sincere.policy.routers._prefix_index import PrefixIndex


class _KeyByKey:
    """The index's semantics one key at a time: an LRU of weighted keys per instance, a
    prompt touched tail first, keys evicted into a lower window and back."""

    def __init__(self, capacity: int, tier_capacity: int) -> None:
        self.capacity, self.tier_capacity = capacity, tier_capacity
        self.held: dict[str, OrderedDict[int, int]] = {}
        self.tier: dict[str, OrderedDict[int, int]] = {}

    def matched(self, instance: str, keys: tuple[int, ...]) -> int:
        held = self.held.get(instance, {})
        count = 0
        for key in keys:
            if key not in held:
                break
            count += 1
        return count

    def scored(self, instance: str, keys: tuple[int, ...], weight: float) -> float:
        held, tier = self.held.get(instance, {}), self.tier.get(instance, {})
        full = low = 0
        for key in keys:
            if key in held:
                full += 1
            elif key in tier:
                low += 1
            else:
                break
        return full + weight * low if low else full

    def add(self, instance: str, keys: tuple[int, ...], weight: int) -> None:
        held = self.held.setdefault(instance, OrderedDict())
        tier = self.tier.setdefault(instance, OrderedDict())
        for key in reversed(keys):
            if key in held:
                held.move_to_end(key)
            else:
                held[key] = weight
                tier.pop(key, None)
        while sum(held.values()) > self.capacity and held:
            key, w = held.popitem(last=False)
            if self.tier_capacity:
                tier[key] = w
                while sum(tier.values()) > self.tier_capacity and tier:
                    tier.popitem(last=False)


def _prompts(rng: np.random.Generator, num: int) -> list[tuple[int, ...]]:
    """Prompts that share prefixes: a few roots, each grown turn by turn or branched."""
    prompts: list[list[int]] = [[int(x) for x in rng.integers(0, 5, size=3)] for _ in range(4)]
    for _ in range(num):
        base = prompts[int(rng.integers(len(prompts)))]
        cut = int(rng.integers(0, len(base) + 1))
        prompts.append(base[:cut] + [int(x) for x in rng.integers(0, 6, size=rng.integers(0, 9))])
    return [chain_keys(p) for p in prompts if p]


def _check_runs(index: PrefixIndex, name: str) -> None:
    """Without a tier: every run is found by its first key, and only runs are."""
    runs = index._runs.get(name)
    if runs is None:
        return
    heads, run = {}, runs.end.next
    while run is not runs.end:
        assert run.keys and run.next.prev is run
        heads[run.keys[0]] = run
        run = run.next
    assert runs.head_of == heads
    assert runs.num_keys == index.size(name) == sum(map(len, (r.keys for r in heads.values())))


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("tier", [False, True])
def test_run_wise_index_answers_as_key_by_key(seed: int, tier: bool) -> None:
    """On random prompts with shared prefixes under a small capacity (many evictions), the
    index's matches, scores (one instance or many) and LRU order equal the key-by-key
    reference after every add."""
    rng = np.random.default_rng(seed)
    prompts = _prompts(rng, 60)
    block = int(rng.choice([16, 512]))
    capacity = int(rng.integers(4, 40)) * block
    tier_tokens = int(rng.integers(2, 30)) * block if tier else 0
    index = PrefixIndex(capacity, tier_tokens=tier_tokens, tier_weight=0.5 if tier else 0.0)
    model = _KeyByKey(capacity, tier_tokens)
    for _ in range(400):
        keys = prompts[int(rng.integers(len(prompts)))]
        for name in ("a", "b"):
            assert index.matched_blocks(name, keys) == model.matched(name, keys)
            assert index.score_blocks(name, keys) == model.scored(name, keys, 0.5)
        scores = index.score_each(["a", "b", "c"], keys)
        assert scores == [model.scored(name, keys, 0.5) for name in "abc"]
        assert tier or all(type(x) is int for x in scores)
        name = "ab"[int(rng.integers(2))]
        index.add(name, keys, block)
        model.add(name, keys, block)
        assert index.held_keys(name) == list(model.held[name].items())
        assert index.held_tokens(name) == sum(model.held[name].values())
        _check_runs(index, name)
        if tier:
            assert list(index._tier.get(name, {}).items()) == list(model.tier[name].items())


@pytest.mark.parametrize("seed", range(8))
def test_one_walk_scores_every_instance_as_key_by_key(seed: int) -> None:
    """Many instances (past 64, so the holders' bitmasks exceed a machine word), candidates
    in any order and any subset, some never routed to: the one-walk scores of all
    instances equal each instance's key-by-key match after every add, the longest match
    reported with them is the longest of any instance, and an instance's held keys equal
    the shared map's, whether ``add`` is told the scores (every other add) or not."""
    rng = np.random.default_rng(100 + seed)
    prompts = _prompts(rng, 80)
    block = 16
    capacity = int(rng.integers(4, 40)) * block
    index = PrefixIndex(capacity)
    model = _KeyByKey(capacity, 0)
    names = [f"i{k}" for k in range(70)]
    for _ in range(500):
        keys = prompts[int(rng.integers(len(prompts)))]
        subset = [names[k] for k in rng.permutation(len(names))[: int(rng.integers(1, 71))]]
        scores = index.score_each(subset, keys)
        assert scores == [model.matched(name, keys) for name in subset]
        name = names[int(rng.integers(0, 12)) * 5]  # a sixth of them ever routed to
        (own,), longest = index.scores_and_longest([name], keys)
        assert longest == max(model.matched(other, keys) for other in names)
        index.add(name, keys, block, (own, longest) if rng.integers(2) else None)
        model.add(name, keys, block)
        assert index.held_keys(name) == list(model.held[name].items())
    for name, bit in index._bit.items():
        held = {key for key, _ in index.held_keys(name)}
        assert {k for k, mask in index._holders.items() if mask & bit} == held
        assert index.size(name) == len(held)


def _reference_choice(
    model: _KeyByKey, names: list[str], loads: list[int], keys: tuple[int, ...], gap: float
) -> int:
    """The documented policy on the key-by-key index: among candidates within ``gap`` of
    the least load, the longest matched prefix, then the least loaded, then the earliest."""
    matched = [model.matched(name, keys) for name in names]
    eligible = [k for k, x in enumerate(loads) if x <= min(loads) + gap]
    return min(eligible, key=lambda k: (-matched[k], loads[k], k))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("gaps", [(2,), (2, 10)])  # 10: every load (0-4) within the gap
def test_prefix_aware_chooses_as_the_key_by_key_reference(seed: int, gaps: tuple[int, ...]) -> None:
    """Routing random prompts with shared prefixes over 70 candidates of random loads (in
    a random order each time), the router picks the reference's instance at every arrival,
    reports every candidate's key-by-key match in its estimates and says why (the match
    and load chosen; how many candidates with a longer match it passed over the gap)."""
    rng = np.random.default_rng(200 + seed)
    ids = [[int(x) for x in rng.integers(0, 4, size=int(rng.integers(1, 12)))] for _ in range(60)]
    names = [f"i{k}" for k in range(70)]
    capacity = 30 * 16
    router = make_router("prefix-aware", rng, max_tokens_per_instance=capacity, max_load_gap=2.0)
    model = _KeyByKey(capacity, 0)
    for n in range(400):
        gap = gaps[n % len(gaps)]  # (a prefix spread by the small gap, then all within)
        router.max_load_gap = float(gap)
        blocks = tuple(ids[int(rng.integers(len(ids)))])
        request = Request(n, 0.0, "m", len(blocks) * 16, 8, block_ids=blocks, block_tokens=16)
        order = [names[k] for k in rng.permutation(len(names))]
        loads = [int(x) for x in rng.integers(0, 5, size=len(order))]
        views = [
            InstanceView(name, "m", "H100", num_outstanding=x)
            for name, x in zip(order, loads, strict=True)
        ]
        keys = chain_keys(blocks)
        best = _reference_choice(model, order, loads, keys, float(gap))
        expected = order[best]
        decision = router.choose(request, views, 0.0)
        assert decision.instance == expected
        assert decision.estimates == tuple((m, 16.0 * model.matched(m, keys)) for m in order)
        matched = [16 * model.matched(m, keys) for m in order]
        reason = f"prefix {matched[best]}/{16 * len(keys)} tokens, outstanding={loads[best]}"
        if max(matched) > matched[best]:
            over = sum(x > min(loads) + gap for x in loads)
            reason += f"; {over} candidate(s) with a longer prefix over the load gap"
        assert decision.reason == reason
        model.add(expected, keys, 16)
