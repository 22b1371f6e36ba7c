"""Load-balancing routers: random, round-robin, least-outstanding, JSQ, power of two."""

from __future__ import annotations

import copy
import pickle
from collections import Counter
from typing import Any

import numpy as np
import pytest

from sincere.core import ConfigError, Request
from sincere.policy.router_base import ROUTERS, InstanceView
from sincere.policy.routers import make_router, router_params
from sincere.policy.routers._draws import WordDraws

REQ = Request(0, 0.0, "m", 100, 10, max_tokens=64)


def view(name: str, **kw: Any) -> InstanceView:
    return InstanceView(name, "m", "H100", **kw)


def route_many(name: str, views: list[InstanceView], n: int, seed: int = 0) -> list[str | None]:
    router = make_router(name, np.random.default_rng(seed))
    return [router.route(REQ, views, float(t)).instance for t in range(n)]


def test_registry_lists_every_router() -> None:
    """All ten routers are registered under their documented names."""
    expected = {
        "random",
        "round-robin",
        "least-outstanding",
        "join-shortest-queue",
        "power-of-two",
        "latency-optimal",
        "price-optimal",
        "relevance-optimal",
        "cost-optimal",
        "small-model-first",
    }
    assert expected <= set(ROUTERS.names())


def test_random_is_uniform_and_seeded() -> None:
    """Random spreads evenly over healthy instances and repeats exactly under one seed."""
    views = [view(f"i{k}") for k in range(4)] + [view("down", healthy=False)]
    picks = route_many("random", views, 4000, seed=7)
    counts = Counter(picks)
    assert "down" not in counts
    assert all(900 < counts[f"i{k}"] < 1100 for k in range(4))
    assert picks == route_many("random", views, 4000, seed=7)
    assert picks != route_many("random", views, 4000, seed=8)


def test_round_robin_cycles_over_healthy_instances() -> None:
    """Round-robin visits healthy instances in order and skips unhealthy ones."""
    views = [view("a"), view("b", healthy=False), view("c")]
    assert route_many("round-robin", views, 5) == ["a", "c", "a", "c", "a"]


def test_least_outstanding_picks_fewest_and_first_on_ties() -> None:
    """Least-outstanding takes the smallest num_outstanding, the earlier one on a tie."""
    views = [
        view("a", num_outstanding=3),
        view("b", num_outstanding=1),
        view("c", num_outstanding=1),
    ]
    assert route_many("least-outstanding", views, 1) == ["b"]


def test_jsq_metric_requests_versus_tokens() -> None:
    """JSQ by requests and JSQ by tokens disagree when one queue holds a few long prompts."""
    views = [
        view("few-long", num_waiting=1, num_running=1, waiting_prefill_tokens=8000),
        view(
            "many-short",
            num_waiting=4,
            num_running=2,
            waiting_prefill_tokens=400,
            running_remaining_tokens=100,
        ),
    ]
    rng = np.random.default_rng(0)
    by_req = make_router("join-shortest-queue", rng)
    by_tok = make_router("join-shortest-queue", rng, metric="tokens")
    assert by_req.route(REQ, views, 0.0).instance == "few-long"
    assert by_tok.route(REQ, views, 0.0).instance == "many-short"


def test_power_of_two_never_picks_the_most_loaded() -> None:
    """With distinct loads two choices take the least loaded w.p. 2/n, never the most."""
    n = 8
    views = [view(f"i{k}", num_outstanding=k) for k in range(n)]
    picks = Counter(route_many("power-of-two", views, 4000, seed=1))
    assert f"i{n - 1}" not in picks
    assert picks["i0"] / 4000 == pytest.approx(2 / n, abs=0.03)


@pytest.mark.parametrize("num_choices", [1, 2])
def test_power_of_two_draws_what_the_generator_would(num_choices: int) -> None:
    """Its draws, read ahead from the generator's words, are those of ``integers(n)`` call
    by call: over many candidate counts (one draws nothing; 3 * 2**30 rejects a quarter of
    its first words, across the blocks read ahead), and whole samples as before."""
    words = WordDraws(np.random.default_rng(7))
    reference = np.random.default_rng(7)
    draws = np.random.default_rng(0)
    counts = draws.choice([1, 2, 3, 12, 64, 1000, 2**31 + 3, 3 * 2**30, 2**32], size=5000)
    for n in counts.tolist():
        assert words.below(n) == int(reference.integers(n)), n
    mine = make_router("power-of-two", np.random.default_rng(3), num_choices=num_choices)
    theirs = np.random.default_rng(3)
    for n in draws.integers(1, 100, size=2000).tolist():
        k = min(num_choices, n)
        first = int(theirs.integers(n))
        expected = [first]
        if k == 2:
            second = int(theirs.integers(n - 1))
            expected.append(second + (second >= first))
        assert mine._sample(n, k) == expected


def test_power_of_two_copies_and_pickles_with_its_draws() -> None:
    """A copy (or a pickled and loaded router) draws what the original draws next: its
    generator and the words read ahead come along (the draws are a compiled class)."""
    router = make_router("power-of-two", np.random.default_rng(5))
    counts = [4, 1, 3, 3, 0, 2, 7]
    for _ in range(700):  # (into the block read ahead)
        router.choose_by_count(counts)
    for make_twin in (copy.deepcopy, lambda r: pickle.loads(pickle.dumps(r))):
        twin = make_twin(router)
        mine = [router.choose_by_count(counts) for _ in range(600)]
        theirs = [twin.choose_by_count(counts) for _ in range(600)]
        assert mine == theirs and len(set(mine)) > 3


def test_no_healthy_instance_is_a_rejection() -> None:
    """With every instance down, a router returns instance None with a reason."""
    decision = make_router("least-outstanding", np.random.default_rng(0)).route(
        REQ, [view("a", healthy=False)], 0.0
    )
    assert decision.instance is None
    assert "no healthy instance" in decision.reason


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("join-shortest-queue", {"metric": "latency"}, "metric.*requests, tokens"),
        ("power-of-two", {"num_choices": 0}, "num_choices"),
        ("power-of-two", {"metric": "x"}, "outstanding, requests, tokens"),
        ("relevance-optimal", {"tolerance": -1.0}, "tolerance"),
        ("round-robin", {"weights": [1]}, "weights.*allowed: none"),
        ("cost-optimal", {"preset": "cheap"}, "preset.*balance, cost, latency, quality"),
        ("cost-optimal", {"min_slo_prob": 1.5}, "min_slo_prob"),
        ("cost-optimal", {"w_latency": -0.1}, "w_latency"),
        ("latency-optimal", {"objective": "p99"}, "objective.*e2e, ttft"),
        ("latency-optimal", {"length_predictor": "oracle"}, "history-mean"),
        ("small-model-first", {"hard_prompt_tokens": 0}, "hard_prompt_tokens"),
    ],
)
def test_invalid_params_name_the_param_and_allowed_values(
    name: str, params: dict[str, object], match: str
) -> None:
    """A bad router parameter raises ConfigError naming it and what is allowed."""
    with pytest.raises(ConfigError, match=match):
        make_router(name, np.random.default_rng(0), **params)


def test_unknown_router_lists_names_and_params_are_introspectable() -> None:
    """An unknown router name lists the registered ones; router_params lists keywords."""
    with pytest.raises(ConfigError, match="least-outstanding"):
        make_router("fastest", np.random.default_rng(0))
    assert router_params("power-of-two") == ["metric", "num_choices"]


def test_jsq_by_tokens_falls_back_where_tokens_are_unknown_and_says_so() -> None:
    """Unknown token counts on one candidate: all compared by requests, named in the reason."""
    router = make_router("join-shortest-queue", np.random.default_rng(0), metric="tokens")
    views = [
        view("a", num_waiting=3, num_running=2, waiting_prefill_tokens=10),
        view("b", num_waiting=0, num_running=1, waiting_prefill_tokens=None),
    ]
    decision = router.route(REQ, views, 0.0)
    assert decision.instance == "b"
    assert decision.reason == "requests=1; tokens unknown on b, by requests"
    unknown: dict[str, Any] = {"num_running": None, "waiting_prefill_tokens": None}
    blind = [view("a", num_outstanding=2, **unknown), view("b", num_outstanding=1)]
    decision = router.route(REQ, blind, 0.0)
    assert decision.instance == "b"
    assert decision.reason == "outstanding=1; tokens unknown on a, by outstanding"


@pytest.mark.parametrize("name", ["random", "round-robin", "least-outstanding", "power-of-two"])
def test_load_blind_routers_ignore_engine_load(name: str) -> None:
    """Routers saying they read no engine load choose the same with the load unknown."""
    rng = np.random.default_rng(3)
    loaded, blind = [], []
    for k in range(6):
        outstanding = int(rng.integers(0, 9))
        loaded.append(
            view(
                f"i{k}", num_outstanding=outstanding, num_running=int(rng.integers(0, 9)),
                num_waiting=int(rng.integers(0, 9)), kv_usage=float(rng.random()),
                waiting_prefill_tokens=int(rng.integers(0, 5000)),
            )
        )  # fmt: skip
        blind.append(view(f"i{k}", num_outstanding=outstanding))
    assert not make_router(name, np.random.default_rng(0)).reads.load
    assert route_many(name, loaded, 50) == route_many(name, blind, 50)


def test_load_reading_routers_say_so() -> None:
    """Routers that compare engine load keep the default: they read it."""
    for name in ("join-shortest-queue", "latency-optimal", "cost-optimal"):
        assert make_router(name, np.random.default_rng(0)).reads.load
    for metric in ("requests", "tokens"):
        router = ROUTERS.build("power-of-two", {"metric": metric}, rng=np.random.default_rng(0))
        assert router.reads.load
