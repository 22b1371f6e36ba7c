"""Per-instance latency predictors: the analytic step-model one and the learned ones."""

from __future__ import annotations

import numpy as np
import pytest

from sincere.core import ConfigError
from sincere.perf.base import Batch, StepTimeBase
from sincere.predict.latency import (
    LinearLatency,
    LinearLatencyParams,
    RecentWindow,
    RecentWindowParams,
    RouteContext,
    make_latency_predictor,
    step_model_latency,
)


class LinearStep(StepTimeBase):
    """Iteration time = base + per_token * tokens + per_ctx * decode context."""

    def __init__(self, base_s: float, per_token_s: float, per_ctx_s: float = 0.0) -> None:
        super().__init__()
        self.base_s, self.per_token_s, self.per_ctx_s = base_s, per_token_s, per_ctx_s

    def iteration_s(self, batch: Batch) -> float:
        return (
            self.base_s
            + self.per_token_s * batch.num_tokens
            + self.per_ctx_s * batch.decode_ctx_tokens
        )


def test_idle_instance_is_one_prefill_then_single_sequence_decode() -> None:
    """On an idle instance TTFT is one prefill iteration and E2E adds out-1 decode steps."""
    est = step_model_latency(LinearStep(0.01, 0.001), RouteContext(100, 11.0))
    assert est.ttft_s == pytest.approx(0.01 + 0.001 * 100)
    assert est.e2e_s == pytest.approx(0.11 + 10 * (0.01 + 0.001))
    assert est.tpot_s == pytest.approx(0.011)


def test_queued_prefill_and_running_decodes_delay_the_first_token() -> None:
    """Queued prompt tokens and running decodes share our prefill iteration."""
    model = LinearStep(0.01, 0.001)
    busy = RouteContext(100, 11.0, num_running=4, num_waiting=2, waiting_prefill_tokens=900)
    est = step_model_latency(model, busy)
    assert est.ttft_s == pytest.approx(0.01 + 0.001 * (900 + 100 + 4))
    # decoding alongside 6 others: each step computes 7 tokens
    assert est.e2e_s - est.ttft_s == pytest.approx(10 * (0.01 + 0.001 * 7))


def test_full_batch_adds_a_wait_for_a_free_slot() -> None:
    """When running + waiting fill max_num_seqs, TTFT includes the running sequences' decode."""
    model = LinearStep(0.01, 0.001)
    roomy = RouteContext(100, 11.0, num_running=4, running_remaining_tokens=400, max_num_seqs=8)
    full = RouteContext(100, 11.0, num_running=4, running_remaining_tokens=400, max_num_seqs=4)
    wait = step_model_latency(model, full).ttft_s - step_model_latency(model, roomy).ttft_s
    assert wait == pytest.approx(100 * (0.01 + 0.001 * 4))  # 100 steps of a 4-seq batch


def test_recent_window_is_an_ewma_and_scales_with_load() -> None:
    """RecentWindow averages TTFT and TPOT exponentially and scales by relative load."""
    pred = RecentWindow(RecentWindowParams(alpha=0.5))
    assert pred.predict("a", RouteContext(10, 5.0)) is None
    ctx = RouteContext(10, 5.0, num_outstanding=1)
    pred.observe("a", ctx, ttft_s=1.0, e2e_s=5.0, output_tokens=5)  # tpot 1.0
    pred.observe("a", ctx, ttft_s=3.0, e2e_s=7.0, output_tokens=5)  # tpot 1.0
    est = pred.predict("a", ctx)
    assert est is not None
    assert est.ttft_s == pytest.approx(2.0)
    assert est.e2e_s == pytest.approx(2.0 + 4 * 1.0)
    busier = pred.predict("a", RouteContext(10, 5.0, num_outstanding=3))
    assert busier is not None
    assert busier.ttft_s == pytest.approx(2.0 * 4 / 2)
    assert pred.predict("b", ctx) is None


def test_linear_latency_recovers_a_linear_ttft_law() -> None:
    """LinearLatency fits TTFT = a + b*prompt + c*waiting from noiseless outcomes."""
    rng = np.random.default_rng(3)
    pred = LinearLatency(LinearLatencyParams(window=64, min_samples=16, refit_every=4))
    for _ in range(40):
        prompt, waiting = int(rng.integers(10, 2000)), int(rng.integers(0, 10))
        ctx = RouteContext(prompt, 20.0, num_waiting=waiting, num_outstanding=waiting)
        ttft = 0.02 + 0.0005 * prompt + 0.1 * waiting
        pred.observe("a", ctx, ttft, ttft + 19 * 0.03, 20)
    est = pred.predict("a", RouteContext(1000, 20.0, num_waiting=5, num_outstanding=5))
    assert est is not None
    assert est.ttft_s == pytest.approx(0.02 + 0.5 + 0.5, rel=1e-3)
    assert est.tpot_s == pytest.approx(0.03, rel=1e-3)


def test_latency_registry_and_param_checks() -> None:
    """Unknown predictor names list the known ones; bad params name the parameter."""
    assert isinstance(make_latency_predictor("linear"), LinearLatency)
    with pytest.raises(ConfigError, match="recent-window"):
        make_latency_predictor("gradient-boosting")
    with pytest.raises(ConfigError, match=r"'lstm' needs parameter path; allowed: a file path"):
        make_latency_predictor("lstm")  # a trained model is loaded from a file
    with pytest.raises(ConfigError, match="alpha"):
        make_latency_predictor("recent-window", alpha=0.0)
    with pytest.raises(ConfigError, match="window"):
        make_latency_predictor("linear", window=0)
