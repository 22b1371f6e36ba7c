"""SINCERE's batching rules and their composition, on hand-made views."""

from __future__ import annotations

import numpy as np
import pytest

from sincere.core.errors import ConfigError
from sincere.perf.base import SwapTime
from sincere.policy.batching import (
    STRATEGIES,
    BatchDecision,
    BatchingView,
    BestBatch,
    BestBatchTable,
    Idle,
    ModelQueueView,
    PartialBatch,
    RunBatch,
    SelectBatch,
    StrategyParams,
    Timer,
    WaitUntil,
    closest_size,
    make_strategy,
    parse_strategy_name,
    valid_strategy_names,
)

LOAD = SwapTime(2.0, 1.0)
UNLOAD = SwapTime(0.5, 0.5)


def queue(model: str, *queued_at: float, loaded_at: float | None = None) -> ModelQueueView:
    """A queue with SINCERE-like swap times: T_adj = 3 + 1 + est_batch_time_s."""
    return ModelQueueView(model, np.asarray(queued_at, dtype=np.float64), LOAD, UNLOAD, loaded_at)


def view(*queues: ModelQueueView, draining: bool = False, cap: int | None = None) -> BatchingView:
    resident = tuple(q.model for q in queues if q.resident)
    return BatchingView(queues, resident, max_batch_size=cap, draining=draining)


def ran(decision: BatchDecision) -> RunBatch:
    assert isinstance(decision, RunBatch), decision
    return decision


def test_registry_holds_the_five_rules() -> None:
    """Each SINCERE rule is registered under its name."""
    assert STRATEGIES.names() == ["best-batch", "fcfs", "partial-batch", "select-batch", "timer"]


def test_timer_length_follows_the_formula() -> None:
    """T = SLA - T_adj, divided by 1 + 0.001 q, fires at head arrival + T."""
    timer = Timer(StrategyParams(sla_s=60.0))  # T_adj = 2+1 + 0.5+0.5 + 8 = 12
    one = queue("a", 10.0)
    assert timer.timer_s(one) == pytest.approx(48.0 / 1.001)
    two = queue("a", 10.0, 20.0)
    assert timer.fires_at(two) == pytest.approx(10.0 + 48.0 / 1.002)
    big = queue("a", *([0.0] * 500))
    assert timer.timer_s(big) == pytest.approx(48.0 / 1.5)


def test_timer_is_clamped_to_five_seconds() -> None:
    """A tight SLA, or a long queue, never gives a timer below min_timer_s."""
    assert Timer(StrategyParams(sla_s=10.0)).timer_s(queue("a", 0.0)) == 5.0
    many = queue("a", *([0.0] * 20000))
    assert Timer(StrategyParams(sla_s=60.0)).timer_s(many) == 5.0


def test_timer_waits_then_runs_everything() -> None:
    """Before firing it names the firing time; after, the whole queue (capped) runs."""
    timer = Timer(StrategyParams(sla_s=60.0))
    q = queue("a", 10.0, 11.0, 12.0)
    at = 10.0 + 48.0 / 1.003
    before = timer.assess(q, view(q), at - 1e-6)
    assert not before.ready and before.wake_at == pytest.approx(at)
    assert timer.assess(q, view(q), at).num_requests == 3
    assert timer.assess(q, view(q, cap=2), at).num_requests == 2


def test_best_batch_waits_for_exactly_its_size() -> None:
    """BestBatch is ready at the model's best batch and runs exactly that many."""
    rule = BestBatch(StrategyParams(sla_s=60.0, best_batch={"a": 3}))
    assert not rule.assess(queue("a", 0, 1), view(), 5.0).ready
    assert rule.assess(queue("a", 0, 1, 2), view(), 5.0).num_requests == 3
    assert rule.assess(queue("a", 0, 1, 2, 3, 4), view(), 5.0).num_requests == 3
    assert rule.assess(queue("a", 0, 1), view(cap=2), 5.0).num_requests == 2


def test_default_best_batches_are_sincere_profiles() -> None:
    """granite 48, gemma 64, llama 64, and the fallback for other models."""
    params = StrategyParams(sla_s=60.0)
    table = BestBatchTable.of(params)
    sizes = [table.size(m) for m in ("granite-7b", "gemma-7b", "llama3-8b", "x")]
    assert sizes == [48, 64, 64, params.default_best_batch]
    overridden = BestBatchTable.of(StrategyParams(sla_s=60.0, best_batch={"gemma-7b": 8}))
    assert [overridden.size(m) for m in ("granite-7b", "gemma-7b")] == [48, 8]


@pytest.mark.parametrize(
    ("target", "size"), [(0.0, 8), (12.0, 8), (12.5, 16), (23.9, 16), (24.1, 32), (1e9, 64)]
)
def test_closest_size(target: float, size: int) -> None:
    """The nearest candidate wins; ties go to the smaller size."""
    assert closest_size(target, (8, 16, 32, 64)) == size


@pytest.mark.parametrize(("interval_s", "size"), [(0.5, 64), (3.5, 16), (1.5, 32), (100.0, 8)])
def test_select_batch_size_from_rate(interval_s: float, size: int) -> None:
    """Size = candidate closest to rate x (SLA - T_adj); here SLA - T_adj = 48 s."""
    rule = SelectBatch(StrategyParams(sla_s=60.0))
    for k in range(30):
        rule.observe_arrival("a", k * interval_s)
    assert rule.rate("a") == pytest.approx(1.0 / interval_s)
    assert rule.target(queue("a", 0.0), view()) == size


def test_select_batch_uses_only_the_last_100_intervals() -> None:
    """Older arrivals beyond the window do not move the rate."""
    rule = SelectBatch(StrategyParams(sla_s=60.0))
    times = [0.01 * k for k in range(200)] + [3.0 + k for k in range(101)]
    for t in times:
        rule.observe_arrival("a", t)
    assert rule.rate("a") == pytest.approx(1.0)


def test_select_batch_without_rate_uses_best_batch() -> None:
    """Before two arrivals of a model its best batch is the target."""
    rule = SelectBatch(StrategyParams(sla_s=60.0, best_batch={"a": 5}))
    rule.observe_arrival("a", 0.0)
    assert rule.target(queue("a", 0.0), view()) == 5
    assert rule.assess(queue("a", *([0.0] * 5)), view(), 1.0).num_requests == 5


def test_partial_batch_needs_residency_and_a_quarter() -> None:
    """Flush only a resident model, after 10 s of residency, with > best/4 queued."""
    rule = PartialBatch(StrategyParams(sla_s=60.0, best_batch={"a": 8}))
    enough = queue("a", 5, 6, 7, loaded_at=2.0)
    early = rule.assess(enough, view(enough), 11.9)
    assert not early.ready and early.wake_at == 12.0
    assert rule.assess(enough, view(enough), 12.0).num_requests == 3
    two = queue("a", 5, 6, loaded_at=2.0)
    assert rule.assess(two, view(two), 50.0) == rule.assess(two, view(two), 0.0)
    assert not rule.assess(two, view(two), 50.0).ready
    absent = queue("a", 5, 6, 7)
    assert not rule.assess(absent, view(absent), 50.0).ready


def test_fcfs_serves_oldest_head_across_models() -> None:
    """FCFS runs one request of the model whose head arrived first, even if not resident."""
    strategy = make_strategy("fcfs", sla_s=60.0)
    a, b = queue("a", 3.0, loaded_at=0.0), queue("b", 1.0)
    assert strategy.decide(view(a, b), 4.0) == RunBatch("b", 1, "FcfsBatch")


def test_prefer_resident_avoids_a_swap() -> None:
    """With prefer_resident a ready resident queue beats an older one elsewhere."""
    a, b = queue("a", 3.0, loaded_at=0.0), queue("b", 1.0)
    strategy = make_strategy("fcfs", sla_s=60.0, prefer_resident=True)
    assert ran(strategy.decide(view(a, b), 4)).model == "a"


def test_choose_largest_queue() -> None:
    """choose='largest-queue' runs the ready queue with most requests."""
    table = {"a": 2, "b": 2}
    a, b = queue("a", 0, 1), queue("b", 2, 3, 4)
    oldest = make_strategy("best-batch", sla_s=60.0, best_batch=table)
    largest = make_strategy("best-batch", sla_s=60.0, best_batch=table, choose="largest-queue")
    assert ran(oldest.decide(view(a, b), 5.0)).model == "a"
    assert ran(largest.decide(view(a, b), 5.0)).model == "b"


def test_composed_waits_for_earliest_timer_or_idles() -> None:
    """Not ready: wait for the earliest timer; no timer at all: Idle."""
    a, b = queue("a", 10.0), queue("b", 0.0)
    timed = make_strategy("best-batch+timer", sla_s=60.0)
    decision = timed.decide(view(a, b), 1.0)
    assert isinstance(decision, WaitUntil)
    assert decision.wake_at == pytest.approx(48.0 / 1.001)
    assert make_strategy("best-batch", sla_s=60.0).decide(view(a, b), 1.0) == Idle()
    assert timed.decide(view(), 1.0) == Idle()


def test_draining_flushes_below_target() -> None:
    """While draining, a queue below its best batch runs whole."""
    a = queue("a", 0, 1)
    strategy = make_strategy("best-batch", sla_s=60.0)
    assert strategy.decide(view(a, draining=True), 2.0) == RunBatch("a", 2, "drain")


def test_combination_takes_largest_ready_batch() -> None:
    """best-batch+timer: a fired timer runs the whole queue, beyond the best batch."""
    strategy = make_strategy("best-batch+timer", sla_s=60.0, best_batch={"a": 2})
    q = queue("a", 0, 0, 0)
    assert ran(strategy.decide(view(q), 1.0)).num_requests == 2
    assert strategy.decide(view(q), 100.0) == RunBatch("a", 3, "BestBatch+Timer")


def test_names_are_canonical_and_validated() -> None:
    """Order of '+' parts does not matter; swept SINCERE combinations are valid."""
    assert parse_strategy_name("timer+partial-batch+best-batch") == (
        "best-batch",
        "partial-batch",
        "timer",
    )
    for name in ("fcfs", "best-batch", "best-batch+timer", "select-batch+timer"):
        assert name in valid_strategy_names()
    assert "best-batch+partial-batch+timer" in valid_strategy_names()


@pytest.mark.parametrize(
    "name", ["fcfs+timer", "best-batch+select-batch", "partial-batch", "timer+timer", "lifo"]
)
def test_invalid_names_list_valid_ones(name: str) -> None:
    """A nonsensical combination raises, listing the valid strategies."""
    with pytest.raises(ConfigError, match=r"not a valid batching strategy.*allowed: best-batch"):
        make_strategy(name, sla_s=60.0)


def test_bad_parameters_are_rejected() -> None:
    """Unknown parameters and out-of-range values raise ConfigError naming them."""
    with pytest.raises(
        ConfigError, match="unknown parameter for batching strategy 'timer'; got 'slack'"
    ):
        make_strategy("timer", sla_s=60.0, slack=3)
    with pytest.raises(
        ConfigError, match=r"parameter sla_s should be > 0; got -1.0; allowed: a number > 0"
    ):
        make_strategy("timer", sla_s=-1.0)
    with pytest.raises(ConfigError, match=r"parameter best_batch.a should be >= 1; got 0"):
        make_strategy("best-batch", sla_s=60.0, best_batch={"a": 0})
    with pytest.raises(ConfigError, match=r"parameter choose.*allowed: largest-queue, oldest-head"):
        make_strategy("timer", sla_s=60.0, choose="random")  # type: ignore[arg-type]


def test_every_bad_parameter_is_reported_at_once() -> None:
    """One error lists each bad strategy parameter on its own line."""
    with pytest.raises(ConfigError) as caught:
        make_strategy("select-batch+timer", sla_s=0.0, select_sizes=[], min_timer_s="5")
    lines = str(caught.value).splitlines()
    assert "3 problems" in lines[0]
    named = {line.split(" parameter ")[1].split(" ")[0] for line in lines[1:]}
    assert named == {"sla_s", "min_timer_s", "select_sizes"}


def test_fcfs_default_does_not_prefer_resident() -> None:
    """fcfs keeps strict arrival order by default; other strategies prefer the resident."""
    assert not make_strategy("fcfs", sla_s=60.0).prefer_resident
    assert make_strategy("best-batch+timer", sla_s=60.0).prefer_resident
