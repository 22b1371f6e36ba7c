"""Small-model-first routing (the LLM-router + round-robin baseline) and relevance-optimal."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from sincere.core import ConfigError, Request
from sincere.policy.router_base import InstanceView
from sincere.policy.routers import RelevanceOptimalRouter, SmallModelFirstRouter
from sincere.policy.routers.small_model_first import catalog_sizes


def inst(name: str, model: str, price: float, quality: float, **kw: Any) -> InstanceView:
    return InstanceView(
        name,
        model,
        "H100",
        price_in_per_token_usd=price,
        price_out_per_token_usd=price,
        quality=quality,
        **kw,
    )


VIEWS = [
    inst("s0", "small", 1e-7, 0.6),
    inst("l0", "large", 1e-6, 0.9),
    inst("s1", "small", 1e-7, 0.6),
    inst("l1", "large", 1e-6, 0.9),
]


def req(prompt: int, k: int = 0) -> Request:
    return Request(k, 0.0, "m", prompt, 10)


def test_easy_requests_round_robin_over_the_small_model() -> None:
    """Short prompts go to the cheapest model's instances in turn."""
    r = SmallModelFirstRouter(np.random.default_rng(0))
    assert [r.route(req(100, k), VIEWS, 0.0).instance for k in range(3)] == ["s0", "s1", "s0"]


def test_hard_requests_round_robin_over_the_large_model() -> None:
    """Prompts longer than hard_prompt_tokens go to the largest model, in turn."""
    r = SmallModelFirstRouter(np.random.default_rng(0), hard_prompt_tokens=256)
    picks = [r.route(req(p), VIEWS, 0.0).instance for p in (300, 100, 5000)]
    assert picks == ["l0", "s0", "l1"]


def test_difficulty_predictor_overrides_prompt_length() -> None:
    """With a difficulty callable, its score against hard_threshold decides."""
    r = SmallModelFirstRouter(
        np.random.default_rng(0), difficulty=lambda q: 1.0 if q.prompt_tokens % 2 else 0.0
    )
    assert r.route(req(10_001), VIEWS, 0.0).instance == "l0"
    assert r.route(req(10_000), VIEWS, 0.0).instance == "s0"


def test_model_sizes_rank_models_explicitly() -> None:
    """Given sizes, the model with fewer parameters is the small one whatever the price."""
    r = SmallModelFirstRouter(np.random.default_rng(0), model_sizes={"small": 70, "large": 8})
    assert r.route(req(10), VIEWS, 0.0).instance == "l0"
    partial = SmallModelFirstRouter(np.random.default_rng(0), model_sizes={"small": 7})
    with pytest.raises(ConfigError, match=r"model_sizes.*large"):
        partial.route(req(10), VIEWS, 0.0)


def test_catalog_sizes_rank_by_parameters() -> None:
    """catalog_sizes reads parameter counts, so an 8B model is smaller than a 70B one."""
    sizes = catalog_sizes(["llama-3-70b", "llama-3-8b"])
    assert sizes["llama-3-8b"] < sizes["llama-3-70b"]
    views = [inst("big", "llama-3-70b", 0.0, 0.9), inst("small", "llama-3-8b", 0.0, 0.6)]
    r = SmallModelFirstRouter(np.random.default_rng(0), model_sizes=sizes)
    assert r.route(req(10), views, 0.0).instance == "small"


def test_unhealthy_small_model_falls_to_the_only_model_up() -> None:
    """When the small model's instances are down, easy requests go to the model that is up."""
    views = [inst("s0", "small", 1e-7, 0.6, healthy=False), inst("l0", "large", 1e-6, 0.9)]
    assert (
        SmallModelFirstRouter(np.random.default_rng(0)).route(req(1), views, 0.0).instance == "l0"
    )


def test_relevance_optimal_takes_best_quality_then_least_loaded() -> None:
    """Relevance-optimal picks the top quality; among equals the least outstanding."""
    views = [
        inst("a", "m", 0.0, 0.8),
        inst("b", "m", 0.0, 0.9, num_outstanding=5),
        inst("c", "m", 0.0, 0.9, num_outstanding=2),
    ]
    assert (
        RelevanceOptimalRouter(np.random.default_rng(0)).route(req(1), views, 0.0).instance == "c"
    )
    loose = RelevanceOptimalRouter(np.random.default_rng(0), tolerance=0.15)
    assert loose.route(req(1), views, 0.0).instance == "a"  # 0.8 within 0.15, outstanding 0
