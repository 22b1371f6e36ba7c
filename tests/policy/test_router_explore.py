"""The learning routers' train phase (explore) and their use of predicted distributions."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from sincere.core import Request
from sincere.core.errors import ConfigError
from sincere.core.request import Tier
from sincere.core.types import InstanceId
from sincere.policy.router_base import ROUTERS, InstanceView, Router
from sincere.policy.routers import CostOptimalRouter
from sincere.policy.routers._estimates import ExploreParams, Explorer
from sincere.predict.latency import LatencyEstimate, RecentWindow, RouteContext
from sincere.predict.length import MaxTokens
from sincere.predict.slo import LatencyDistribution


def views(n: int) -> list[InstanceView]:
    return [InstanceView(f"i{k}", "m", "H100", num_outstanding=k) for k in range(n)]


def req(k: int, at: float = 0.0, tier: Tier | None = None) -> Request:
    extra: dict[str, Any] = {} if tier is None else {"tier": tier}
    return Request(k, at, "m", 100, 20, max_tokens=20, **extra)


def build(name: str, seed: int = 0, **params: Any) -> Router:
    return ROUTERS.build(
        name,
        params,
        rng=np.random.default_rng(seed),
        length_predictor=MaxTokens(),
        latency_predictor=RecentWindow(),
    )


def routed(router: Router, n: int, step_s: float = 0.0) -> list[str | None]:
    cands = views(4)
    return [router.route(req(k, k * step_s), cands, k * step_s).instance for k in range(n)]


@pytest.mark.parametrize("name", ["latency-optimal", "cost-optimal"])
def test_full_exploration_spreads_requests_at_random(name: str) -> None:
    """fraction 1 sends every request of the phase to a random candidate, all four in use."""
    router = build(name, explore={"fraction": 1.0})
    chosen = routed(router, 200)
    counts = {i: chosen.count(i) for i in set(chosen)}
    assert set(counts) == {"i0", "i1", "i2", "i3"}
    assert min(counts.values()) > 30
    decision = router.route(req(999), views(4), 0.0)
    assert "explore phase" in decision.reason


@pytest.mark.parametrize("name", ["latency-optimal", "cost-optimal"])
def test_the_same_seed_explores_the_same_way(name: str) -> None:
    """The same seed and inputs give the same random choices; another seed differs."""
    a = routed(build(name, seed=3, explore={"fraction": 0.5}), 60)
    b = routed(build(name, seed=3, explore={"fraction": 0.5}), 60)
    c = routed(build(name, seed=4, explore={"fraction": 0.5}), 60)
    assert a == b
    assert a != c


def test_the_phase_ends_after_until_requests() -> None:
    """After until_requests decisions no request is routed at random any more."""
    router = build("latency-optimal", explore={"fraction": 1.0, "until_requests": 5})
    cands = views(4)
    reasons = [router.route(req(k), cands, 0.0).reason for k in range(10)]
    assert all("explore phase" in r for r in reasons[:5])
    assert not any("explore phase" in r for r in reasons[5:])


def test_the_phase_ends_until_s_after_the_first_request() -> None:
    """until_s counts from the first decided request on the driver's clock, not from zero."""
    explorer = Explorer(ExploreParams(fraction=1.0, until_s=10.0), np.random.default_rng(0))
    cands = views(3)
    assert explorer.pick(cands, 1000.0) is not None
    assert explorer.pick(cands, 1009.9) is not None
    assert explorer.pick(cands, 1010.0) is None


def test_no_phase_draws_nothing_from_the_generator() -> None:
    """fraction 0 (the default) leaves the generator untouched, so decisions are unchanged."""
    rng = np.random.default_rng(7)
    explorer = Explorer(ExploreParams(), rng)
    assert explorer.pick(views(3), 0.0) is None
    assert rng.random() == np.random.default_rng(7).random()


def test_a_bad_fraction_is_a_clear_error() -> None:
    """A fraction above 1 names the parameter, the value and the allowed range."""
    with pytest.raises(ConfigError, match=r"explore.fraction should be <= 1; got 1.5"):
        build("cost-optimal", explore={"fraction": 1.5})


def test_cost_optimal_explores_only_affordable_instances() -> None:
    """A random pick in the phase never goes where the budget buys no token."""
    router = build("cost-optimal", explore={"fraction": 1.0})
    cands = [
        InstanceView("cheap", "m", "H100"),
        InstanceView("dear", "m", "H100", price_in_per_token_usd=1.0),
    ]
    budget = Request(0, 0.0, "m", 100, 20, max_tokens=20, budget_usd=1.0)
    chosen = {router.route(budget, cands, 0.0).instance for _ in range(30)}
    assert chosen == {"cheap"}


class FixedDistributions:
    """A distribution predictor with a fixed lognormal per instance (counts its batch calls)."""

    def __init__(self, by_instance: dict[InstanceId, LatencyDistribution]) -> None:
        self.by_instance = by_instance
        self.num_calls = 0

    def distributions(
        self, instances: Sequence[InstanceId], ctxs: Sequence[RouteContext]
    ) -> list[LatencyDistribution | None]:
        self.num_calls += 1
        return [self.by_instance.get(i) for i in instances]

    def predict(self, instance: InstanceId, ctx: RouteContext) -> LatencyEstimate | None:
        dist = self.by_instance.get(instance)
        return None if dist is None else dist.estimate(ctx.expected_output_tokens)

    def observe(self, *args: Any) -> None:
        """Nothing to learn."""


def test_cost_optimal_takes_the_slo_probability_from_the_distribution() -> None:
    """Same median, different spread: the wide instance falls under 0.7 and is dropped."""
    tier = Tier("tight", ttft_s=1.2)
    mu = math.log(1.0)
    predictor = FixedDistributions(
        {
            "narrow": LatencyDistribution(mu, 0.05, math.log(0.01), 0.05),
            "wide": LatencyDistribution(mu, 2.0, math.log(0.01), 0.05),
        }
    )
    router = ROUTERS.build(
        "cost-optimal",
        {"preset": "cost"},
        rng=np.random.default_rng(0),
        length_predictor=MaxTokens(),
        latency_predictor=predictor,
    )
    assert isinstance(router, CostOptimalRouter)
    cands = [InstanceView("wide", "m", "H100"), InstanceView("narrow", "m", "H100")]
    decision = router.route(req(0, tier=tier), cands, 0.0)
    assert decision.instance == "narrow"
    assert dict(decision.estimates).keys() == {"narrow"}
    assert predictor.num_calls == 1


def test_latency_optimal_predicts_all_candidates_in_one_batch() -> None:
    """A distribution predictor is asked once per decision, and its medians rank instances."""
    predictor = FixedDistributions(
        {
            f"i{k}": LatencyDistribution(math.log(1.0 + k), 0.1, math.log(0.01), 0.1)
            for k in range(4)
        }
    )
    router = ROUTERS.build(
        "latency-optimal",
        {},
        rng=np.random.default_rng(0),
        length_predictor=MaxTokens(),
        latency_predictor=predictor,
    )
    decision = router.route(req(0), list(reversed(views(4))), 0.0)
    assert decision.instance == "i0"
    assert predictor.num_calls == 1


def test_use_step_model_false_routes_on_the_learned_predictor() -> None:
    """With use_step_model false a view's step model is ignored and the predictor decides."""
    from sincere.perf.base import Batch, StepTimeBase

    class Fixed(StepTimeBase):
        def __init__(self, s: float) -> None:
            super().__init__()
            self.s = s

        def iteration_s(self, batch: Batch) -> float:
            return self.s

    known = {"num_running": 0, "num_waiting": 0, "waiting_prefill_tokens": 0,
             "running_remaining_tokens": 0, "running_ctx_tokens": 0}  # fmt: skip
    cands = [
        InstanceView("fast-model", "m", "H100", step_model=Fixed(0.001), **known),
        InstanceView("slow-model", "m", "H100", step_model=Fixed(0.1), **known),
    ]
    dist = LatencyDistribution(math.log(0.5), 0.1, math.log(0.01), 0.1)
    predictor = FixedDistributions(
        {"fast-model": dist._replace(ttft_mu=math.log(5.0)), "slow-model": dist}
    )
    for use, expected in ((True, "fast-model"), (False, "slow-model")):
        router = ROUTERS.build(
            "latency-optimal",
            {"use_step_model": use},
            rng=np.random.default_rng(0),
            length_predictor=MaxTokens(),
            latency_predictor=predictor,
        )
        assert router.route(req(0), cands, 0.0).instance == expected
