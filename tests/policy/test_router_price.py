"""Price-optimal routing: expected price, budget caps and rejections."""

from __future__ import annotations

import numpy as np
import pytest

from sincere.core import Request
from sincere.policy.router_base import InstanceView
from sincere.policy.routers import make_router
from sincere.policy.routers._common import budget_max_tokens

A = InstanceView("a", "m7", "H100", price_in_per_token_usd=1e-6, price_out_per_token_usd=2e-6)
B = InstanceView("b", "m70", "H100", price_in_per_token_usd=0.5e-6, price_out_per_token_usd=3e-6)


def route(req: Request, views: list[InstanceView]) -> tuple[str | None, int | None, str]:
    r = make_router("price-optimal", np.random.default_rng(0), length_predictor="max-tokens")
    d = r.route(req, views, 0.0)
    return d.instance, d.max_tokens, d.reason


def test_cheapest_depends_on_expected_output() -> None:
    """Short outputs favour cheap input tokens (b); long outputs favour cheap output tokens (a)."""
    short = Request(0, 0.0, "m", 1000, 10, max_tokens=100)  # a 1.2e-3, b 0.8e-3
    long = Request(1, 0.0, "m", 1000, 10, max_tokens=1000)  # a 3.0e-3, b 3.5e-3
    assert route(short, [A, B])[0] == "b"
    assert route(long, [A, B])[0] == "a"


def test_budget_cap_is_the_floor_of_the_remaining_budget_over_output_price() -> None:
    """max_tokens = floor((budget - p_in*prompt)/p_out) on each instance."""
    req = Request(0, 0.0, "m", 1000, 10, max_tokens=1000, budget_usd=0.0015)
    assert budget_max_tokens(req, A) == 250  # (0.0015 - 0.001) / 2e-6
    assert budget_max_tokens(req, B) == 333  # (0.0015 - 0.0005) / 3e-6 = 333.3
    # capped prices: a 0.001 + 250*2e-6 = 1.5e-3, b 0.0005 + 333*3e-6 = 1.499e-3
    instance, cap, _ = route(req, [A, B])
    assert (instance, cap) == ("b", 333)


def test_cap_looser_than_max_tokens_is_not_sent() -> None:
    """A budget that buys more than the request's max_tokens leaves max_tokens unchanged."""
    req = Request(0, 0.0, "m", 1000, 10, max_tokens=100, budget_usd=1.0)
    assert route(req, [A, B])[1] is None


def test_instance_the_budget_cannot_pay_for_is_skipped() -> None:
    """When the prompt alone exhausts the budget on the cheaper instance, the other is used."""
    cheap_out = InstanceView(
        "c", "m", "H100", price_in_per_token_usd=2e-6, price_out_per_token_usd=1e-9
    )
    req = Request(0, 0.0, "m", 1000, 10, max_tokens=1000, budget_usd=0.0015)
    assert (budget_max_tokens(req, cheap_out) or 0) < 1
    assert route(req, [cheap_out, A])[0] == "a"


def test_request_rejected_when_no_instance_affords_one_token() -> None:
    """A budget below every instance's prompt price rejects the request with a reason."""
    req = Request(0, 0.0, "m", 1000, 10, max_tokens=100, budget_usd=0.0004)
    instance, _, reason = route(req, [A, B])
    assert instance is None
    assert "budget" in reason


def test_free_output_tokens_mean_no_cap() -> None:
    """With p_out = 0 an affordable prompt gets no token cap; an unaffordable one is skipped."""
    free = InstanceView("f", "m", "cpu", price_in_per_token_usd=1e-6)
    ok = Request(0, 0.0, "m", 100, 10, max_tokens=10, budget_usd=1e-3)
    broke = Request(1, 0.0, "m", 100, 10, max_tokens=10, budget_usd=1e-5)
    assert budget_max_tokens(ok, free) is None
    assert route(ok, [free])[0] == "f"
    assert route(broke, [free])[0] is None


@pytest.mark.parametrize("budget", [0.0012, 0.002, 0.01])
def test_chosen_cap_never_overspends(budget: float) -> None:
    """Prompt price plus capped output price never exceeds the budget."""
    req = Request(0, 0.0, "m", 1000, 10, max_tokens=5000, budget_usd=budget)
    instance, cap, _ = route(req, [A, B])
    view = A if instance == "a" else B
    tokens = cap if cap is not None else 5000
    spend = view.price_in_per_token_usd * 1000 + view.price_out_per_token_usd * tokens
    assert spend <= budget + 1e-12
