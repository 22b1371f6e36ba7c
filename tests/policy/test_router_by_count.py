"""A router that chooses by one count per instance answers from the counts as from the views."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sincere.core import Request
from sincere.core.prefix import chain_keys
from sincere.core.types import Seconds
from sincere.policy.admission import Admission, LatencyHistory, PredictedMissShedder
from sincere.policy.front_door import FrontDoor
from sincere.policy.router_base import ROUTERS, InstanceView, RouteDecision, choose_first_least
from sincere.policy.routers import make_router
from sincere.policy.routers.basic import LeastOutstandingRouter
from sincere.policy.routers.prefix_aware import PrefixAwareRouter
from sincere.sim.counts import first_least

REQ = Request(0, 0.0, "m", 100, 10, max_tokens=64)
BY_COUNT = [
    ("least-outstanding", {}, "outstanding"),
    ("power-of-two", {}, "outstanding"),
    ("power-of-two", {"num_choices": 3}, "outstanding"),
    ("power-of-two", {"num_choices": 1}, "outstanding"),
    ("power-of-two", {"metric": "requests"}, "requests"),
    ("join-shortest-queue", {}, "requests"),
]


def _views(outstanding: list[int], waiting: list[int], running: list[int]) -> list[InstanceView]:
    return [
        InstanceView(f"i{k}", "m", "H100", num_running=r, num_waiting=w, num_outstanding=o)
        for k, (o, w, r) in enumerate(zip(outstanding, waiting, running, strict=True))
    ]


@settings(max_examples=80, deadline=None)
@given(
    counts=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 4), st.integers(0, 4)), min_size=2,
                    max_size=70),
    seed=st.integers(0, 2**16),
    calls=st.integers(1, 5),
)  # fmt: skip
def test_the_count_gives_the_position_choose_gives(
    counts: list[tuple[int, int, int]], seed: int, calls: int
) -> None:
    """Same position as ``choose`` over views with those counts (ties included: small
    counts over up to 70 instances tie often), call after call, and the same generator
    state after."""
    outstanding, waiting, running = (list(column) for column in zip(*counts, strict=True))
    views = _views(outstanding, waiting, running)
    for name, params, key in BY_COUNT:
        by_views = make_router(name, np.random.default_rng(seed), **params)
        by_count = make_router(name, np.random.default_rng(seed), **params)
        assert by_count.counts_by == key, name
        queued = [w + r for w, r in zip(waiting, running, strict=True)]
        keyed = outstanding if key == "outstanding" else queued
        for _ in range(calls):
            expected = by_views.choose(REQ, views, 0.0).instance
            assert views[by_count.choose_by_count(keyed)].id == expected, (name, params)
        assert by_views.rng.bit_generator.state == by_count.rng.bit_generator.state


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(0, 6), min_size=2, max_size=70),
    gap=st.sampled_from([0.0, 1.0, 4.0]),
    min_match=st.sampled_from([0, 32]),
)
def test_prefix_aware_by_count_for_requests_without_content(
    counts: list[int], gap: float, min_match: int
) -> None:
    """Requests without block ids: prefix-aware by outstanding answers from the counts as
    ``choose`` does over views (whatever its gap and minimum match), its index untouched;
    with content, or by another metric, it chooses by the views."""
    views = _views(counts, [0] * len(counts), [0] * len(counts))
    params = {"max_load_gap": gap, "min_match_tokens": min_match}
    by_views = make_router("prefix-aware", np.random.default_rng(0), **params)
    by_count = make_router("prefix-aware", np.random.default_rng(0), **params)
    assert by_count.counts_by is None and by_count.counts_by_without_content == "outstanding"
    for _ in range(3):
        assert (
            views[by_count.choose_by_count(counts)].id == by_views.choose(REQ, views, 0.0).instance
        )
    assert by_views.index.size(views[0].id) == 0
    rng = np.random.default_rng(0)
    assert make_router("prefix-aware", rng, metric="requests").counts_by_without_content is None


@settings(max_examples=60, deadline=None)
@given(
    prompts=st.lists(
        st.tuples(
            st.integers(0, 2),  # which shared head
            st.lists(st.integers(0, 3), max_size=6),  # the blocks after it
            st.integers(0, 15),  # tokens of a partial last block
            st.lists(st.integers(0, 5), min_size=6, max_size=6),  # the six counts
            st.sampled_from([None, (0, 1), (1, 3, 4), (5, 0, 2), (4, 5)]),  # candidates
        ),
        min_size=1,
        max_size=25,
    ),
    gap=st.sampled_from([0.0, 1.0, 4.0]),
    min_match=st.sampled_from([0, 32]),
    max_prefix_blocks=st.sampled_from([None, 3]),
    index_tokens=st.sampled_from([64, 1 << 20]),
)
def test_prefix_aware_by_prompt_answers_as_choose(
    prompts: list[tuple[int, list[int], int, list[int], tuple[int, ...] | None]],
    gap: float,
    min_match: int,
    max_prefix_blocks: int | None,
    index_tokens: int,
) -> None:
    """Requests with block ids: prefix-aware by outstanding answers from the counts, the
    ids and the prompt's chained keys as ``choose`` does over views, prompt after prompt
    (shared heads, partial last blocks, a prefix cap, an index small enough to evict, the
    whole fleet or some of it as candidates, in any order), and leaves its index as
    ``choose`` does."""
    params = {
        "max_load_gap": gap,
        "min_match_tokens": min_match,
        "max_prefix_blocks": max_prefix_blocks,
        "max_tokens_per_instance": index_tokens,
    }
    by_views = make_router("prefix-aware", np.random.default_rng(0), **params)
    by_prompt = make_router("prefix-aware", np.random.default_rng(0), **params)
    assert by_prompt.counts_by_with_prompt == "outstanding" and by_prompt.counts_by is None
    heads = [[100, 101], [100, 102, 103], [200]]
    for n, (head, tail, partial, counts, chosen) in enumerate(prompts):
        ids = tuple(heads[head] + tail)
        prompt_tokens = 16 * len(ids) - (16 - partial if partial else 0)
        keys = chain_keys(ids)
        request = Request(
            n, 0.0, "m", prompt_tokens, 10, block_ids=ids, block_tokens=16, block_keys=keys
        )
        views = _views(counts, [0] * 6, [0] * 6)
        if chosen is not None:
            views = [views[k] for k in chosen]
            counts = [counts[k] for k in chosen]
        expected = by_views.choose(request, views, 0.0).instance
        names = [v.id for v in views]
        assert names[by_prompt.choose_by_prompt(counts, names, list(keys), prompt_tokens, 16)] == (
            expected
        )
    for name in ("i0", "i1", "i2", "i3", "i4", "i5"):
        assert by_prompt.index.held_keys(name) == by_views.index.held_keys(name)
    rng = np.random.default_rng(0)
    assert make_router("prefix-aware", rng, metric="requests").counts_by_with_prompt is None


def test_routers_that_read_more_than_a_count_say_none() -> None:
    """Tokens, predictions, prices, sessions, oblivious routers: no count to choose by."""
    keyed = {(name, str(params)) for name, params, _ in BY_COUNT}
    for name in ROUTERS.names():
        if (name, "{}") in keyed:
            continue
        assert make_router(name, np.random.default_rng(0)).counts_by is None, name
    rng = np.random.default_rng(0)
    assert make_router("join-shortest-queue", rng, metric="tokens").counts_by is None
    assert make_router("power-of-two", rng, metric="tokens").counts_by is None


class _Contrary(LeastOutstandingRouter):
    """Overrides ``choose`` only: its count answer would be its parent's."""

    def choose(
        self, request: Request, candidates: Sequence[InstanceView], now: Seconds
    ) -> RouteDecision:
        return RouteDecision(max(candidates, key=lambda v: v.num_outstanding).id)


class _ContraryPrefix(PrefixAwareRouter):
    """Overrides ``choose`` only: its prompt answer would be its parent's."""

    def choose(
        self, request: Request, candidates: Sequence[InstanceView], now: Seconds
    ) -> RouteDecision:
        return RouteDecision(candidates[-1].id)


def test_a_subclass_that_overrides_choose_only_is_asked_by_views() -> None:
    """Inheriting ``choose_by_count`` (or ``choose_by_prompt``) while changing ``choose``
    would answer wrongly."""
    assert _Contrary(np.random.default_rng(0)).counts_by is None
    contrary = _ContraryPrefix(np.random.default_rng(0))
    assert contrary.counts_by_with_prompt is None and contrary.counts_by_without_content is None


def test_the_front_door_places_by_count_only_without_admission() -> None:
    """Admission reads more than the count; one candidate needs no router."""
    rng: Any = np.random.default_rng(0)
    door = FrontDoor(make_router("least-outstanding", rng))
    assert door.counts_by == "outstanding"
    assert door.place_by_count([3, 1, 1]) == 1
    assert door.place_by_count([5]) == 0
    assert door.place_by_count([]) is None
    screen = Admission(PredictedMissShedder(), None, LatencyHistory(), 256)
    screened = FrontDoor(make_router("least-outstanding", rng), screen)
    assert screened.counts_by is None
    prefix = FrontDoor(make_router("prefix-aware", rng))
    assert prefix.counts_by is None and prefix.counts_by_with_prompt == "outstanding"
    assert FrontDoor(make_router("prefix-aware", rng), screen).counts_by_with_prompt is None


class _LastOfFewest(LeastOutstandingRouter):
    """Chooses by count its own way: a driver may not find the position for it."""

    def choose(
        self, request: Request, candidates: Sequence[InstanceView], now: Seconds
    ) -> RouteDecision:
        counts = [v.num_outstanding for v in candidates]
        return RouteDecision(candidates[self.choose_by_count(counts)].id)

    def choose_by_count(self, counts: Sequence[int]) -> int:
        return len(counts) - 1 - counts[::-1].index(min(counts))


def test_which_routers_pick_the_first_of_the_fewest() -> None:
    """Least-outstanding, join-shortest-queue and prefix-aware take the shared rule, so a
    driver may apply it itself; power-of-two draws, and a subclass with its own
    ``choose_by_count`` is asked again."""
    rng: Any = np.random.default_rng(0)
    for name in ("least-outstanding", "join-shortest-queue", "prefix-aware"):
        assert make_router(name, rng).picks_first_least, name
        assert FrontDoor(make_router(name, rng)).places_first_least, name
    assert not make_router("power-of-two", rng).picks_first_least
    assert not make_router("round-robin", rng).picks_first_least
    assert not _LastOfFewest(rng).picks_first_least
    assert _LastOfFewest(rng).counts_by == "outstanding"  # (its own, asked by count)


@settings(max_examples=200, deadline=None)
@given(counts=st.lists(st.integers(0, 9), min_size=1, max_size=80))
def test_the_compiled_pass_finds_what_the_rule_finds(counts: list[int]) -> None:
    """The cluster's pass over the counts (compiled with the loop) and the routers'
    rule agree on every list, ties included (small counts over up to 80 instances)."""
    router = make_router("least-outstanding", np.random.default_rng(0))
    assert first_least(counts) == choose_first_least(router, counts) == counts.index(min(counts))


def test_prefix_aware_by_prompt_breaks_ties_by_position_not_by_index_order() -> None:
    """Two instances hold the same prompt, the later candidate having been sent it first:
    at equal loads the earlier candidate wins, in whatever order the candidates come (as
    ``choose`` decides over views)."""
    by_prompt = make_router("prefix-aware", np.random.default_rng(0), max_load_gap=4.0)
    by_views = make_router("prefix-aware", np.random.default_rng(0), max_load_gap=4.0)
    ids = (7, 8, 9, 10)
    keys = chain_keys(ids)
    request = Request(0, 0.0, "m", 64, 10, block_ids=ids, block_tokens=16, block_keys=keys)
    names = [f"i{k}" for k in range(6)]

    def both(counts: list[int], order: list[int]) -> str:
        views = [_views(counts, [0] * 6, [0] * 6)[k] for k in order]
        chosen = [names[k] for k in order]
        got = chosen[by_prompt.choose_by_prompt([counts[k] for k in order], chosen, keys, 64, 16)]
        assert got == by_views.choose(request, views, 0.0).instance
        return got

    everyone = list(range(6))
    assert both([5, 5, 5, 0, 5, 5], everyone) == "i3"  # no match: the least loaded
    assert both([5, 0, 5, 5, 5, 5], everyone) == "i1"  # i3 matches but is over the gap
    assert both([1] * 6, everyone) == "i1"  # both match, equal loads: the earlier
    assert both([1] * 6, everyone[::-1]) == "i3"  # the earlier in this order
    assert both([2, 1, 2, 0, 2, 2], everyone) == "i3"  # both match: the less loaded
