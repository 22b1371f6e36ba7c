"""SINCERE's rules as its server applies them, and SelectBatch's two spans."""

from __future__ import annotations

import numpy as np
import pytest

from sincere.core.errors import ConfigError
from sincere.perf.base import SwapTime
from sincere.policy.batching import (
    BatchingView,
    ModelQueueView,
    SelectBatch,
    ServerRules,
    StrategyParams,
    make_strategy,
)

LOAD, UNLOAD = SwapTime(2.0, 1.0), SwapTime(0.5, 0.5)  # T_adj = 4 + est_batch_time_s


def queue(n: int, loaded_at: float | None = None) -> ModelQueueView:
    return ModelQueueView("a", np.arange(n, dtype=np.float64), LOAD, UNLOAD, loaded_at)


def view(q: ModelQueueView) -> BatchingView:
    return BatchingView((q,), ("a",) if q.resident else ())


def rules(name: str) -> ServerRules:
    return ServerRules(make_strategy(name, sla_s=40.0, best_batch={"a": 4}))


def test_targets_hand_off_at_arrival() -> None:
    """BestBatch hands off when the queue reaches its best batch; FCFS at every arrival."""
    best = rules("best-batch+timer")
    assert not best.hand_off_on_arrival(queue(3), view(queue(3)), 0.0)
    assert best.hand_off_on_arrival(queue(4), view(queue(4)), 0.0)
    assert rules("fcfs").hand_off_on_arrival(queue(1), view(queue(1)), 0.0)
    assert not rules("timer").hand_off_on_arrival(queue(50), view(queue(50)), 0.0)


def test_timer_length_and_flush_come_from_the_rules() -> None:
    """Timer: (40 - 12) / (1 + 0.001 q); PartialBatch: ready after 10 s of residency."""
    r = rules("best-batch+partial-batch+timer")
    assert r.has_timer and r.has_flush
    assert r.timer_s(queue(1)) == pytest.approx(28.0 / 1.001)
    assert rules("best-batch").timer_s(queue(1)) is None
    resident = queue(2, loaded_at=5.0)  # 2 > 0.25 x 4
    assert r.flush(resident, view(resident), 10.0).wake_at == 15.0
    assert r.flush(resident, view(resident), 15.0).num_requests == 2
    assert not r.flush(queue(2), view(queue(2)), 99.0).ready  # not resident


def test_select_batch_span_is_sla_slack_or_swap_and_batch() -> None:
    """sla-slack: λ·(SLA - T_adj); swap-and-batch: λ·T_adj (what SINCERE's runs show)."""
    q = queue(1)
    slack = SelectBatch(StrategyParams(sla_s=40.0))
    swap = SelectBatch(StrategyParams(sla_s=40.0, select_horizon="swap-and-batch"))
    assert slack.span_s(q) == pytest.approx(40.0 - 12.0)
    assert swap.span_s(q) == pytest.approx(12.0)
    with pytest.raises(ConfigError, match="select_horizon"):
        make_strategy("select-batch", sla_s=40.0, select_horizon="later")
    strategy = make_strategy("select-batch", sla_s=40.0, select_horizon="swap-and-batch")
    for k in range(150):  # 3 req/s: 3 x 12 = 36 -> 32 (sla-slack: 3 x 28 = 84 -> 64)
        strategy.observe_arrival("a", k / 3.0)
    ready = strategy.assess(queue(32), view(queue(32)), 50.0)
    assert ready.num_requests == 32
