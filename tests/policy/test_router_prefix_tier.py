"""Prefix routers scoring a hit in an instance's lower KV tier (its CPU offload window)."""

from __future__ import annotations

import numpy as np
import pytest

from sincere.core import Request
from sincere.core.errors import ConfigError
from sincere.policy.router_base import InstanceView, Router
from sincere.policy.routers import make_router
from sincere.policy.routers._prefix_index import PrefixIndex, prompt_keys

_ids = iter(range(1_000_000))
TWO_BLOCKS = 2 * 16  # tokens of two 16-token blocks


def req(blocks: tuple[int, ...]) -> Request:
    return Request(next(_ids), 0.0, "m", len(blocks) * 16, 8, block_ids=blocks, block_tokens=16)


def view(name: str, outstanding: int = 0, **kw: object) -> InstanceView:
    return InstanceView(name, "m", "H100", num_outstanding=outstanding, **kw)  # type: ignore[arg-type]


def router(name: str, **params: object) -> Router:
    return make_router(name, np.random.default_rng(0), **params)


def keys(*blocks: int) -> tuple[int, ...]:
    return prompt_keys(req(blocks))


def test_evicted_keys_count_at_the_tier_weight_until_the_tier_drops_them() -> None:
    """Two blocks' window, two blocks' tier at 0.5: (1, 2) pushed out by (7, 8) scores
    2 x 0.5; pushed on by (9, 10) it is gone; routed again it is back whole."""
    index = PrefixIndex(TWO_BLOCKS, tier_tokens=TWO_BLOCKS, tier_weight=0.5)
    index.add("a", keys(1, 2), 16)
    index.add("a", keys(7, 8), 16)
    assert index.matched_blocks("a", keys(1, 2, 3)) == 0
    assert index.score_blocks("a", keys(1, 2, 3)) == 1.0
    index.add("a", keys(9, 10), 16)
    assert index.score_blocks("a", keys(1, 2)) == 0
    assert index.score_blocks("a", keys(7, 8)) == 1.0
    index.add("a", keys(7, 8), 16)  # a hit in the tier moves its keys back
    assert index.score_blocks("a", keys(7, 8)) == 2


def test_a_prefix_split_between_the_windows_adds_both_parts() -> None:
    """(1, 2, 3) in a two-block window: its tail block goes to the tier: 2 + 0.5."""
    index = PrefixIndex(TWO_BLOCKS, tier_tokens=TWO_BLOCKS, tier_weight=0.5)
    index.add("a", keys(1, 2, 3), 16)
    assert index.score_blocks("a", keys(1, 2, 3)) == 2.5


def test_without_a_tier_the_score_is_the_matched_blocks() -> None:
    index = PrefixIndex(TWO_BLOCKS)
    index.add("a", keys(1, 2, 3), 16)
    score = index.score_blocks("a", keys(1, 2, 3))
    assert score == index.matched_blocks("a", keys(1, 2, 3)) == 2 and isinstance(score, int)


def _prefix_aware_after_eviction(**tier: object) -> tuple[str, dict[str, float]]:
    r = router("prefix-aware", max_tokens_per_instance=TWO_BLOCKS, **tier)
    r.route(req((1, 2)), [view("a"), view("b", 1)], 0.0)
    r.route(req((7, 8)), [view("a"), view("b", 1)], 0.0)  # (1, 2) leaves a's window
    got = r.route(req((1, 2, 3)), [view("a", 1), view("b")], 0.0)
    return got.instance, dict(got.estimates)


def test_prefix_aware_follows_a_tiered_hit_and_ignores_it_by_default() -> None:
    assert _prefix_aware_after_eviction() == ("b", {"a": 0.0, "b": 0.0})
    tiered = _prefix_aware_after_eviction(tier_tokens_per_instance=TWO_BLOCKS, tier_hit_weight=0.5)
    assert tiered == ("a", {"a": 16.0, "b": 0.0})  # 2 blocks x 0.5 x 16 tokens


def test_weighted_score_scores_a_tiered_hit() -> None:
    r = router("weighted-score", max_tokens_per_instance=TWO_BLOCKS,
               tier_tokens_per_instance=TWO_BLOCKS, tier_hit_weight=0.5)  # fmt: skip
    r.route(req((1, 2)), [view("a"), view("b", 1)], 0.0)
    r.route(req((7, 8)), [view("a"), view("b", 1)], 0.0)
    values, _ = r.scores(req((1, 2, 3)), [view("a"), view("b")], keys(1, 2, 3))  # type: ignore[attr-defined]
    assert values["prefix"] == [pytest.approx(1 / 3), 0.0]


@pytest.mark.parametrize(
    "params",
    [
        {"tier_hit_weight": 0.5},
        {"tier_tokens_per_instance": 64},
        {"tier_hit_weight": 1.5, "tier_tokens_per_instance": 64},
        {"tier_hit_weight": 0.5, "tier_tokens_per_instance": 64, "max_blocks_per_instance": 4},
    ],
)
def test_incomplete_or_bad_tier_settings_are_refused(params: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="tier"):
        router("prefix-aware", **params)
