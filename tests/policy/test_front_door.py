"""The front door: budget, admission, eligibility, holding, routing and capping as one policy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sincere.core import ConfigError, Request, Tier
from sincere.core.types import Seconds
from sincere.perf.base import Batch, StepTimeBase
from sincere.policy.front_door import (
    FrontDoor,
    Hold,
    HoldRules,
    Reject,
    Route,
    build_front_door,
    deadline_at,
)
from sincere.policy.front_door_config import AdmissionConfig, RouterConfig
from sincere.policy.router_base import InstanceView, Outcome, RouteDecision, Router


class Slow(StepTimeBase):
    """0.5 s per iteration, whatever it holds."""

    def iteration_s(self, batch: Batch) -> float:
        return 0.5


class Counting(Router):
    """Picks the last candidate and counts what it was asked and told."""

    def __init__(self) -> None:
        super().__init__(np.random.default_rng(0))
        self.asked = 0
        self.told: list[int] = []

    def choose(
        self, request: Request, candidates: Sequence[InstanceView], now: Seconds
    ) -> RouteDecision:
        self.asked += 1
        return RouteDecision(candidates[-1].id, reason="last")

    def observe(self, outcome: Outcome) -> None:
        self.told.append(outcome.request.id)


def view(name: str, **kw: Any) -> InstanceView:
    return InstanceView(name, "m", "H100", **kw)


def req(i: int = 0, at: float = 0.0, **kw: Any) -> Request:
    return Request(i, at, "m", 100, 10, **{"max_tokens": 64, **kw})


def door(**config: Any) -> FrontDoor:
    rules = config.pop("hold", HoldRules())
    router = RouterConfig(name=config.pop("router", "least-outstanding"))
    return build_front_door(router, AdmissionConfig(**config), 0, hold=rules)


def test_one_candidate_is_routed_without_the_router_which_learns_only_its_choices() -> None:
    """The router is asked only among several candidates and told only those outcomes."""
    router = Counting()
    fd = FrontDoor(router)
    only = fd.decide(req(1), [view("a"), view("b", healthy=False)], 0.0)
    assert only == Route("a", None, "only candidate")
    chosen = fd.decide(req(2), [view("a"), view("b")], 0.0)
    assert isinstance(chosen, Route) and chosen.instance == "b" and router.asked == 1
    for i, name in ((1, "a"), (2, "b")):
        fd.observe(Outcome(req(i), name, 0.1, 0.5, 10, 1.0))
    assert router.told == [2]


def test_a_budget_is_checked_first_and_only_ever_lowers_max_tokens() -> None:
    """Unaffordable everywhere: budget_exceeded; else the cap is the smaller one."""
    fd = door()
    priced = [view("a", price_out_per_token_usd=1.0), view("b", price_out_per_token_usd=0.5)]
    poor = fd.decide(req(budget_usd=0.4), priced, 0.0)
    assert isinstance(poor, Reject) and poor.code == "budget_exceeded"
    capped = fd.decide(req(budget_usd=3.0), priced, 0.0)
    assert capped == Route("a", 3, "outstanding=0")  # 3 tokens paid there, under its 64
    rich = fd.decide(req(budget_usd=1e6), priced, 0.0)
    assert isinstance(rich, Route) and rich.max_tokens == 64  # never above its own cap
    assert door().decide(req(), priced, 0.0) == Route("a", None, "outstanding=0")


def test_no_room_holds_and_a_queue_that_cannot_drain_sheds_early() -> None:
    """Full instances hold the request (at the head when important); shed when hopeless."""
    rules = HoldRules(max_wait_s=1.0, head_priority=0, shed_early=True)
    fd = door(hold=rules)
    full = [view("a", num_outstanding=2, max_in_flight=2)]
    held = fd.decide(req(priority=0), full, 10.0)
    assert held == Hold("no instance has room", True, 1.0)
    fd.observe_hold("a", 4.0)  # a slot is held 4 s: the queue drains 0.5 requests/s
    shed = fd.decide(req(priority=3), full, 10.0, num_queued=5)
    assert isinstance(shed, Reject) and shed.code == "queue_overloaded"
    assert "over its limit of 1s" in shed.reason
    waiting = fd.place(req(priority=3), full, 10.0, num_queued=5, waiting=True)
    assert isinstance(waiting, Hold)  # a request already queued is never shed


def test_admission_predicts_from_the_step_model_when_the_view_allows_it() -> None:
    """With a step model and a known load the prediction is analytic; without, measured."""
    tier = Tier("fast", ttft_s=0.2)
    fd = door(enabled=True)
    modelled = fd.decide(req(tier=tier), [view("a", step_model=Slow())], 0.0)
    assert isinstance(modelled, Reject) and modelled.code == "deadline_unreachable"
    assert "predicted TTFT 0.5s misses fast" in modelled.reason
    blind = [view("a", step_model=Slow(), num_running=None)]
    assert isinstance(fd.decide(req(tier=tier), blind, 0.0), Route)  # nothing measured yet
    fd.observe(Outcome(req(), "a", 0.05, 0.5, 10, 1.0))
    assert isinstance(fd.decide(req(at=1.0, tier=tier), blind, 1.0), Route)  # measured 0.05 s


def test_a_whole_answer_teaches_admission_no_ttft_and_estimates_expire() -> None:
    """An unmeasured TTFT is not learned; a measurement older than the max age is dropped."""
    tier = Tier("fast", ttft_s=0.2)
    fd = door(enabled=True, max_estimate_age_s=5.0)
    views = [view("a")]
    fd.observe(Outcome(req(), "a", None, 9.0, 10, 1.0))
    assert isinstance(fd.decide(req(at=2.0, tier=tier), views, 2.0), Route)
    fd.observe(Outcome(req(), "a", 3.0, 9.0, 10, 1.0))
    assert isinstance(fd.decide(req(at=2.0, tier=tier), views, 2.0), Reject)
    assert isinstance(fd.decide(req(at=7.0, tier=tier), views, 7.0), Route)  # expired


def test_priority_bands_shed_the_less_important_as_the_cluster_fills() -> None:
    """Above 90 % utilisation only priority <= 0 is admitted."""
    fd = door(enabled=True, priority_bands=[(0.9, 0)])
    busy = [view("a", kv_usage=0.95)]
    out = fd.decide(req(priority=2), busy, 0.0)
    assert isinstance(out, Reject) and out.code == "priority_shed"
    assert out.reason.startswith("overloaded: priority 2 > 0")
    assert isinstance(fd.decide(req(priority=0), busy, 0.0), Route)


def test_retries_exclude_failed_instances_and_empty_views_are_no_instance() -> None:
    """place() skips excluded instances; with no view at all the answer is no_instance."""
    fd = FrontDoor(Counting())
    views = [view("a"), view("b")]
    assert fd.place(req(), views, 0.0, exclude={"b"}) == Route("a", None, "only candidate")
    assert isinstance(fd.place(req(), views, 0.0, exclude={"a", "b"}), Hold)
    none = fd.decide(req(), [], 0.0)
    assert isinstance(none, Reject) and none.code == "no_instance"


def test_deadline_is_the_earlier_of_ttft_and_ttlt() -> None:
    """A request's deadline is its tier's tighter target from arrival; none is inf."""
    assert deadline_at(req(tier=Tier("t", ttft_s=2.0, ttlt_s=9.0))) == 2.0
    assert deadline_at(req()) == float("inf")


def test_an_unknown_router_names_the_config_path() -> None:
    """A bad router in the config is a ConfigError at 'router' listing the routers."""
    with pytest.raises(ConfigError, match=r"router.*unknown router.*least-outstanding"):
        build_front_door(RouterConfig(name="nope"), AdmissionConfig(), 0)


class Picker(Router):
    """Picks the candidate at a position it is told, or an id no candidate has."""

    def __init__(self) -> None:
        super().__init__(np.random.default_rng(0))
        self.pick: int | None = 0

    def choose(
        self, request: Request, candidates: Sequence[InstanceView], now: Seconds
    ) -> RouteDecision:
        if self.pick is None:
            return RouteDecision("nowhere", reason="made up")
        return RouteDecision(candidates[self.pick].id, reason="told")


@given(st.lists(st.tuples(st.permutations(range(6)), st.integers(0, 5)), max_size=30))
def test_the_chosen_view_is_found_however_the_candidates_are_ordered(
    steps: list[tuple[list[int], int]],
) -> None:
    """Orders that change between requests: the route is always the router's choice."""
    router = Picker()
    fd = FrontDoor(router)
    for order, pick in steps:
        views = [view(f"i{k}", num_outstanding=k) for k in order]
        router.pick = pick
        decision = fd.decide(req(1), views, 0.0, all_open=True)
        assert isinstance(decision, Route)
        assert decision.instance == views[pick].id
    router.pick = None
    rejected = fd.decide(req(2), [view("a"), view("b")], 0.0)
    assert isinstance(rejected, Reject) and "nowhere" in rejected.reason


def test_all_open_views_give_the_decisions_of_screened_ones() -> None:
    """all_open only skips the test per view: same routes as when the views are screened."""
    views = [view(f"i{k}", num_outstanding=(7 * k) % 5) for k in range(12)]
    screened, trusted = door(), door()
    for i in range(20):
        a = screened.decide(req(i), views, 0.0)
        b = trusted.decide(req(i), views, 0.0, all_open=True)
        assert a == b


def test_past_max_pending_the_oldest_awaited_outcome_is_forgotten() -> None:
    """Outcomes that never came back are dropped oldest first, the newest kept."""
    fd = FrontDoor(Counting())
    fd.max_pending = 3
    for i in range(5):
        assert isinstance(fd.decide(req(i), [view("a"), view("b")], 0.0), Route)
    assert [fd.wants_outcome(i) for i in range(5)] == [False, False, True, True, True]
    fd.observe(Outcome(req(3), "b", 0.1, 0.2, 10, 0.2))
    assert [fd.wants_outcome(i) for i in range(5)] == [False, False, True, False, True]
