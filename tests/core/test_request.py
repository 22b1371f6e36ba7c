"""Requests, tiers and their array form."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sincere.core import ConfigError, Request, RequestArrays, Tier
from sincere.core.registry import Registry


def test_tier_rejects_non_positive_target() -> None:
    """A tier with a zero or negative deadline is refused, naming the field."""
    with pytest.raises(ConfigError, match="ttft_s"):
        Tier("bad", ttft_s=0.0)


def test_tier_meets_checks_every_target() -> None:
    """A request meets its tier only if TTFT, E2E and TPOT are all within target."""
    tier = Tier("interactive", ttft_s=1.0, ttlt_s=10.0, tbt_s=0.1)
    assert tier.meets(0.5, 9.0, 0.05)
    assert not tier.meets(1.5, 9.0, 0.05)
    assert not tier.meets(0.5, 11.0, 0.05)
    assert not tier.meets(0.5, 9.0, 0.2)


def test_request_validates_token_counts() -> None:
    """Zero prompt tokens is an error that carries the value."""
    with pytest.raises(ConfigError, match="prompt_tokens"):
        Request(id=1, arrival_at=0.0, model="m", prompt_tokens=0, output_tokens=3)


def test_arrays_round_trip_through_objects() -> None:
    """from_requests(to_requests()) keeps every field."""
    tiers = (Tier("a", ttft_s=1.0), Tier("b", ttlt_s=60.0))
    reqs = [
        Request(0, 0.0, "m1", 10, 5, tier=tiers[0], priority=1),
        Request(1, 0.5, "m2", 20, 7, tier=tiers[1], budget_usd=0.01, prompt="hi"),
    ]
    arrays = RequestArrays.from_requests(reqs)
    back = arrays.to_requests()
    assert [r.model for r in back] == ["m1", "m2"]
    assert back[1].tier == tiers[1] and back[1].budget_usd == 0.01
    assert back[0].budget_usd is None and back[0].priority == 1
    assert back[1].prompt == "hi" and back[0].prompt is None
    assert math.isnan(arrays.budget_usd[0])


def test_arrays_must_be_sorted() -> None:
    """Unsorted arrival times are refused."""
    with pytest.raises(ConfigError, match="sorted"):
        RequestArrays.build([1.0, 0.5], [1, 1], [1, 1])


def test_arrays_build_defaults() -> None:
    """Omitted columns default to model 0, tier 0 and max_tokens = output_tokens."""
    arrays = RequestArrays.build(np.array([0.0, 1.0]), [3, 4], [5, 6])
    assert list(arrays.max_tokens) == [5, 6]
    assert arrays.request(1).model == "default"


def test_registry_refuses_unknown_and_duplicate() -> None:
    """Unknown names list the valid ones; a name can be registered only once."""
    reg: Registry[type] = Registry("widget")
    reg.register("a")(int)
    with pytest.raises(ConfigError, match="allowed: a"):
        reg.get("b")
    with pytest.raises(ConfigError, match="already registered"):
        reg.register("a")(float)
