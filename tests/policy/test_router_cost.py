"""Cost-optimal routing: the weighted score, presets, the SLO filter and budgets."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from sincere.core import Request, Tier
from sincere.perf.base import Batch, StepTimeBase
from sincere.policy.router_base import InstanceView, Outcome
from sincere.policy.routers import PRESETS, CostOptimalRouter, make_router
from sincere.policy.routers.cost_optimal import weighted_scores


class ConstStep(StepTimeBase):
    """Every iteration takes ``step_s``: an idle request's E2E is out_tokens * step_s."""

    def __init__(self, step_s: float) -> None:
        super().__init__()
        self.step_s = step_s

    def iteration_s(self, batch: Batch) -> float:
        return self.step_s


def inst(
    name: str, quality: float, p_in: float, p_out: float, step_s: float, **kw: Any
) -> InstanceView:
    return InstanceView(
        name,
        "m",
        "H100",
        quality=quality,
        price_in_per_token_usd=p_in,
        price_out_per_token_usd=p_out,
        step_model=ConstStep(step_s),
        max_num_seqs=16,
        **kw,
    )


def router(**kw: Any) -> CostOptimalRouter:
    r = make_router("cost-optimal", np.random.default_rng(0), length_predictor="max-tokens", **kw)
    assert isinstance(r, CostOptimalRouter)
    return r


REQ = Request(0, 0.0, "m", 100, 10, max_tokens=10)

# latency (E2E of 10 tokens): a 0.5 s, b 0.2 s, c 1.0 s; util: a 8/16, b 2/16, c kv 0.25
THREE = [
    inst("a", 0.9, 1e-6, 1e-6, 0.05, num_outstanding=8),
    inst("b", 0.6, 0.0, 1e-7, 0.02, num_outstanding=2),
    inst("c", 0.8, 5e-7, 5e-7, 0.10, kv_usage=0.25),
]


def test_three_instance_score_matches_hand_computation() -> None:
    """The balance score of three instances equals the published formula worked by hand."""
    # prices: a 1.1e-4, b 1e-6, c 5.5e-5 (max 1.1e-4)
    # a: .3*.9 + .2*0 + .3*(1-.5/1) + .2*(1-.5/.5)            = 0.42
    # b: .3*.6 + .2*(1-1e-6/1.1e-4) + .3*(1-.2) + .2*(1-.125/.5) = 0.768182
    # c: .3*.8 + .2*(1-.5) + .3*0 + .2*(1-.25/.5)             = 0.44
    scores = weighted_scores(
        PRESETS["balance"],
        [0.9, 0.6, 0.8],
        [1.1e-4, 1e-6, 5.5e-5],
        [0.5, 0.2, 1.0],
        [0.5, 0.125, 0.25],
    )
    assert scores == pytest.approx([0.42, 0.768182, 0.44], abs=1e-6)
    decision = router().route(REQ, THREE, 0.0)
    assert decision.instance == "b"
    assert "score=0.7682" in decision.reason


def test_zero_maxima_make_their_terms_one() -> None:
    """When every candidate has zero cost, latency and util, those terms are 1 for all."""
    scores = weighted_scores(PRESETS["balance"], [0.5, 1.0], [0, 0], [0, 0], [0, 0])
    assert scores == pytest.approx([0.15 + 0.7, 0.3 + 0.7])


X = inst("x", 1.0, 1e-5, 1e-5, 0.10)  # best quality, expensive, slow
Y = inst("y", 0.5, 1e-8, 1e-8, 0.05)  # half quality, nearly free, twice as fast


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"preset": "quality"}, "x"),
        ({"preset": "cost"}, "y"),
        ({"preset": "latency"}, "y"),
        ({"preset": "balance", "w_quality": 2.0}, "x"),
    ],
)
def test_presets_move_the_choice_towards_their_objective(
    params: dict[str, object], expected: str
) -> None:
    """The quality preset takes the better model; cost and latency presets the cheap fast one."""
    assert router(**params).route(REQ, [X, Y], 0.0).instance == expected


def test_slo_filter_drops_instances_unlikely_to_meet_the_tier() -> None:
    """A slow high-quality instance is filtered out when the tier's deadline it would miss."""
    slow_good = inst("slow", 1.0, 0.0, 0.0, 0.2)  # E2E 2.0 s
    fast_poor = inst("fast", 0.3, 0.0, 0.0, 0.05)  # E2E 0.5 s
    views = [slow_good, fast_poor]
    r = router(preset="quality")
    assert r.route(REQ, views, 0.0).instance == "slow"
    strict = Request(1, 0.0, "m", 100, 10, max_tokens=10, tier=Tier("i", ttlt_s=1.0))
    assert r.route(strict, views, 0.0).instance == "fast"


def test_all_filtered_falls_back_to_the_most_likely() -> None:
    """When no instance reaches min_slo_prob, the highest SLO probability wins."""
    views = [inst("slow", 1.0, 0.0, 0.0, 0.2), inst("fast", 0.3, 0.0, 0.0, 0.05)]
    hopeless = Request(1, 0.0, "m", 100, 10, max_tokens=10, tier=Tier("i", ttlt_s=0.1))
    decision = router(preset="quality").route(hopeless, views, 0.0)
    assert decision.instance == "fast"
    assert "no instance with p_slo>=0.7" in decision.reason


def test_elapsed_time_counts_against_the_deadline() -> None:
    """The same request routed later (less budget left) can be filtered off an instance."""
    views = [inst("slow", 1.0, 0.0, 0.0, 0.08), inst("fast", 0.3, 0.0, 0.0, 0.02)]
    req = Request(1, 0.0, "m", 100, 10, max_tokens=10, tier=Tier("i", ttlt_s=1.5))
    r = router(preset="quality")
    assert r.route(req, views, 0.0).instance == "slow"  # 0.8 s vs 1.5 s left
    assert r.route(req, views, 0.9).instance == "fast"  # 0.8 s vs 0.6 s left


def test_budget_caps_and_rejects_like_price_optimal() -> None:
    """An over-budget request is rejected; an affordable one carries its token cap."""
    poor = Request(1, 0.0, "m", 100, 10, max_tokens=1000, budget_usd=1e-9)
    assert router().route(poor, [X], 0.0).instance is None
    capped = Request(2, 0.0, "m", 100, 10, max_tokens=1000, budget_usd=1e-3 + 100 * 1e-5)
    assert router().route(capped, [X], 0.0).max_tokens == 100  # (2e-3 - 1e-3) / 1e-5


def test_observe_trains_the_error_model() -> None:
    """Outcomes of routed requests update the SLO error model and free their pending entry."""
    r = router()
    d = r.route(REQ, THREE, 0.0)
    assert d.instance is not None
    r.observe(Outcome(REQ, d.instance, ttft_s=0.05, e2e_s=0.4, output_tokens=10, finished_at=0.4))
    assert r.estimator.error.num_observed == 2
    assert r.estimator.num_pending == 0
