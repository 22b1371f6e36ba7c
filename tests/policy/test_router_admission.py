"""Admission helpers: predicted-miss shedding and priority bands."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sincere.core import ConfigError, Request, Tier
from sincere.policy.admission import (
    LatencyHistory,
    PredictedMissShedder,
    PriorityBands,
    cluster_utilisation,
)
from sincere.policy.router_base import InstanceView, Outcome
from sincere.predict.latency import LatencyEstimate

INTERACTIVE = Tier("interactive", ttft_s=1.0)
BATCH = Tier("batch", ttlt_s=60.0)


def est(ttft: float, e2e: float) -> LatencyEstimate:
    return LatencyEstimate(ttft, e2e, 10.0)


def test_shedding_uses_the_best_instance() -> None:
    """A request is admitted if any instance is predicted to meet its TTFT deadline."""
    shed = PredictedMissShedder()
    req = Request(0, 0.0, "m", 10, 10, tier=INTERACTIVE)
    assert shed.admit(req, [est(3.0, 9.0), est(0.8, 9.0)], 0.0).admit
    no = shed.admit(req, [est(3.0, 9.0), est(1.2, 9.0)], 0.0)
    assert not no.admit
    assert "TTFT" in no.reason


def test_factor_tolerates_predicted_misses_and_elapsed_time_counts() -> None:
    """factor=2 admits a 1.5x predicted miss; time since arrival shrinks the budget."""
    req = Request(0, 0.0, "m", 10, 10, tier=INTERACTIVE)
    assert PredictedMissShedder(factor=2.0).admit(req, [est(1.5, 9.0)], 0.0).admit
    assert not PredictedMissShedder().admit(req, [est(0.5, 9.0)], 0.6).admit


def test_ttlt_tiers_are_checked_on_e2e() -> None:
    """A batch tier is judged by the predicted end-to-end latency."""
    req = Request(0, 0.0, "m", 10, 10, tier=BATCH)
    assert PredictedMissShedder().admit(req, [est(50.0, 59.0)], 0.0).admit
    assert not PredictedMissShedder().admit(req, [est(1.0, 61.0)], 0.0).admit


def test_priority_bands_tighten_with_utilisation() -> None:
    """Higher utilisation admits only more important (smaller) priorities."""
    bands = PriorityBands([(0.7, 2), (0.9, 0)])
    low, mid = Request(0, 0.0, "m", 1, 1, priority=3), Request(1, 0.0, "m", 1, 1, priority=1)
    assert bands.admit(low, 0.5).admit
    assert not bands.admit(low, 0.75).admit
    assert bands.admit(mid, 0.75).admit
    assert not bands.admit(mid, 0.95).admit
    assert bands.max_priority(0.1) is None


def test_bands_must_not_loosen_with_load() -> None:
    """Bands admitting more priorities at higher utilisation are a config error."""
    with pytest.raises(ConfigError, match="max_priority"):
        PriorityBands([(0.5, 0), (0.9, 3)])
    with pytest.raises(ConfigError, match="factor"):
        PredictedMissShedder(factor=0.0)


def test_cluster_utilisation_averages_healthy_instances() -> None:
    """Utilisation is the mean busy share of healthy instances, 1.0 with none healthy."""
    views = [
        InstanceView("a", "m", "g", num_outstanding=8, max_num_seqs=16),
        InstanceView("b", "m", "g", kv_usage=0.9),
        InstanceView("c", "m", "g", kv_usage=0.0, healthy=False),
    ]
    assert cluster_utilisation(views) == pytest.approx((0.5 + 0.9) / 2)
    assert cluster_utilisation(views[2:]) == 1.0


def _outcome(prompt_tokens: int, ttft_s: float, at: float) -> Outcome:
    req = Request(0, 0.0, "m", prompt_tokens, 1)
    return Outcome(req, "i0", ttft_s, ttft_s, 1, at)


def test_history_judges_a_request_on_its_own_prompt() -> None:
    """Long prompts' long TTFTs predict a short prompt's TTFT in proportion, not as theirs."""
    history = LatencyHistory()
    for k in range(4):
        history.observe(_outcome(7500, 2.0, float(k)))
    short = history.predict("i0", 1, 4.0, prompt_tokens=10)
    long = history.predict("i0", 1, 4.0, prompt_tokens=7500)
    assert short is not None and long is not None
    assert short.ttft_s < 0.01 and long.ttft_s == pytest.approx(2.0)


@given(
    st.lists(st.tuples(st.integers(1, 20_000), st.floats(0.0, 30.0)), min_size=1, max_size=30),
    st.integers(1, 20_000),
    st.integers(1, 20_000),
)
def test_history_prediction_grows_with_the_prompt(
    measured: list[tuple[int, float]], a: int, b: int
) -> None:
    """Whatever was measured, a longer prompt is never predicted a shorter TTFT, nor < 0."""
    history = LatencyHistory()
    for k, (prompt, ttft) in enumerate(measured):
        history.observe(_outcome(prompt, ttft, float(k)))
    now = float(len(measured))
    small, large = sorted((a, b))
    lo = history.predict("i0", 1, now, prompt_tokens=small)
    hi = history.predict("i0", 1, now, prompt_tokens=large)
    assert lo is not None and hi is not None
    assert 0.0 <= lo.ttft_s <= hi.ttft_s + 1e-9
