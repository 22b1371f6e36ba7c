"""Niyama: hybrid order, eager relegation, dynamic chunk and deadline conversion."""

from __future__ import annotations

import math

import pytest

from sincere.core.errors import ConfigError
from sincere.core.request import RequestArrays, Tier
from sincere.perf.base import Batch, StepTimeBase
from sincere.policy.schedulers import StaticView, make_scheduler
from sincere.policy.schedulers.niyama import Niyama

TIERS = (
    Tier("interactive", ttft_s=6.0, tbt_s=0.1),
    Tier("batch", ttlt_s=600.0, tbt_s=0.4),
)


class PerToken(StepTimeBase):
    """1 ms per token computed, nothing else."""

    def iteration_s(self, batch: Batch) -> float:
        return 0.001 * batch.num_tokens


def _niyama(**params: object) -> Niyama:
    sched = make_scheduler("niyama", dict(params), predictor=PerToken())
    assert isinstance(sched, Niyama)
    return sched


def _requests() -> RequestArrays:
    return RequestArrays.build(
        [0.0, 1.0, 2.0, 3.0],
        [1000, 100, 4000, 500],
        [50, 50, 50, 50],
        tiers=TIERS,
        tier=[0, 0, 1, 1],
        max_tokens=[50, 50, 101, 1001],
    )


def test_ttlt_deadline_is_converted_with_predicted_decode_tokens() -> None:
    """A TTLT tier's TTFT deadline is ttlt - (max_tokens - 1) * tbt after arrival."""
    sched = _niyama()
    view = StaticView(_requests(), sched)
    assert sched.deadline_at(view, 2) == pytest.approx(2.0 + 600.0 - 100 * 0.4)
    assert sched.deadline_at(view, 0) == pytest.approx(6.0)


def test_hybrid_key_adds_h_times_remaining_prefill() -> None:
    """Hybrid order: arrival + ttft deadline + h * remaining prefill tokens."""
    sched = _niyama(h_s_per_token=0.01)
    view = StaticView(_requests(), sched, remaining={0: 800})
    assert sched.waiting_key(view, 0)[0] == pytest.approx(6.0 + 0.01 * 800)
    # r3: deadline 3 + 600 - 1000*0.4 = 203, plus 0.01 * 500
    assert sched.waiting_key(view, 3)[0] == pytest.approx(203.0 + 5.0)


def test_hybrid_order_of_waiting_queue() -> None:
    """Waiting requests are served by the hybrid key: long prompts pay h per token."""
    sched = _niyama(h_s_per_token=0.01)
    view = StaticView(_requests(), sched, waiting_ix=[3, 2, 1, 0])
    # keys: r0 = 6 + 10 = 16; r1 = 7 + 1 = 8; r2 = 562 + 40 = 602; r3 = 203 + 5 = 208
    assert tuple(view.waiting()) == (1, 0, 3, 2)
    assert sched.plan(view, now=0.0).admit == (1, 0, 3, 2)


def test_eager_relegation_moves_late_requests_last() -> None:
    """A waiting request that cannot prefill by its deadline at the EMA rate is relegated."""
    sched = _niyama(h_s_per_token=0.0, initial_prefill_tps=100.0)
    view = StaticView(_requests(), sched, waiting_ix=[0, 1], max_num_batched_tokens=2048)
    # at t = 0: r0 needs 1000 / 100 = 10 s > its 6 s deadline; r1 needs 1 s by 7 s
    plan = sched.plan(view, now=0.0)
    assert plan.relegate == (0,)
    assert plan.admit == (1, 0)  # room left: the relegated one runs after the others
    assert plan.chunks[0] == (1, 100)


def test_relegated_requests_wait_behind_all_others() -> None:
    """Already relegated requests come after every non-relegated one."""
    sched = _niyama(h_s_per_token=0.0)
    view = StaticView(_requests(), sched, waiting_ix=[0, 1, 3], relegated=frozenset({0}))
    assert tuple(view.waiting()) == (1, 3, 0)


def test_no_relegation_before_a_throughput_estimate() -> None:
    """Without an observed prefill rate nothing is relegated."""
    sched = _niyama()
    view = StaticView(_requests(), sched, waiting_ix=[0])
    assert sched.plan(view, now=100.0).relegate == ()


def test_prefill_throughput_is_an_ema() -> None:
    """observe() keeps an exponential moving average of prompt tokens per second."""
    sched = _niyama(ema_alpha=0.5)
    sched.observe(1000, 1.0)
    assert sched.prefill_tps == pytest.approx(1000.0)
    sched.observe(3000, 1.0)
    assert sched.prefill_tps == pytest.approx(2000.0)
    sched.observe(0, 1.0)  # decode-only iterations do not count
    assert sched.prefill_tps == pytest.approx(2000.0)


def test_dynamic_chunk_is_largest_fitting_the_decode_slack() -> None:
    """Token budget: largest T with 1.2 * predicted_time(T) <= min decode slack."""
    sched = _niyama()
    req = _requests()
    # r0 decodes: first token at 1.0, deadline 6.0, 3 tokens made -> next due 6 + 0.3
    view = StaticView(req, sched, decoding_ix=[0], produced={0: 3}, first_token={0: 1.0})
    assert sched.min_decode_slack_s(view, now=5.6) == pytest.approx(0.7)
    # 1.2 * 0.001 * T <= 0.7 -> T <= 583 -> 512
    assert sched.token_budget(view, now=5.6) == 512
    assert sched.token_budget(view, now=6.0) == 128  # slack 0.3: T <= 250 -> 128
    assert sched.token_budget(view, now=6.29) == 128  # nothing fits: the smallest


def test_late_first_token_moves_the_decode_deadlines() -> None:
    """Decode deadlines start from max(first token, TTFT deadline)."""
    sched = _niyama()
    view = StaticView(_requests(), sched, decoding_ix=[1], produced={1: 2}, first_token={1: 9.0})
    # r1: deadline 7.0 but first token at 9.0 -> token 2 due at 9 + 0.2
    assert sched.min_decode_slack_s(view, now=9.0) == pytest.approx(0.2)


def test_no_decodes_means_the_largest_chunk() -> None:
    """Without decode deadlines the budget is the largest allowed chunk."""
    sched = _niyama()
    view = StaticView(_requests(), sched, max_num_batched_tokens=2048)
    assert math.isinf(sched.min_decode_slack_s(view, 0.0))
    assert sched.token_budget(view, 0.0) == 2048


def test_kv_pressure_shrinks_the_chunk() -> None:
    """Above the KV-usage threshold the chunk is capped at pressure_max_chunk."""
    sched = _niyama(kv_pressure=0.8, pressure_max_chunk=256)
    view = StaticView(_requests(), sched, kv_usage=0.85)
    assert sched.token_budget(view, 0.0) == 256


def test_bad_parameters_are_rejected() -> None:
    """Invalid Niyama parameters raise ConfigError naming them."""
    with pytest.raises(ConfigError, match=r"order.*allowed: edf, fcfs, hybrid, srpf"):
        _niyama(order="random")
    with pytest.raises(ConfigError, match="chunk_sizes"):
        _niyama(chunk_sizes=[])
    with pytest.raises(ConfigError, match="needs a batch-time predictor"):
        make_scheduler("niyama")
