"""SINCERE's threaded server engine on hand-made timelines: hand-offs, lock, timer thread."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sincere.core.errors import ConfigError
from sincere.core.records import RecordArrays
from sincere.core.request import RequestArrays
from sincere.engine.request_level import RequestLevelConfig, RequestLevelEngine
from sincere.engine.sincere_server import OVERWRITTEN, SincereServerEngine
from sincere.perf.base import SwapTime
from sincere.perf.sincere_runs import Affine, RunCalibratedModel, SchedulerPlanning

STRATEGY_NAMES = (
    "fcfs",
    "best-batch",
    "best-batch+timer",
    "select-batch+timer",
    "best-batch+partial-batch+timer",
    "timer",
)
PLAN = SchedulerPlanning(SwapTime(2.0), SwapTime(0.0), "sla-slack", 0.1)


def timing(load_s: float = 5.0) -> RunCalibratedModel:
    """Batch 1 + 0.1 n s, load 5 s, release 1 s, cold load 10 s, 0.5 s after each batch."""
    return RunCalibratedModel(
        Affine(1.0, 0.1), SwapTime(load_s), SwapTime(1.0), cold_load_s=10.0,
        after_batch=Affine(0.5, 0.0), planning=PLAN,
    )  # fmt: skip


def run(
    arrivals: Sequence[tuple[float, str]], strategy: str = "best-batch", **config: object
) -> tuple[SincereServerEngine, RecordArrays]:
    """Drive a server engine (best batch 2 for both models) through ``arrivals``."""
    models = ("a", "b")
    reqs = RequestArrays.build(
        [t for t, _ in arrivals], [5] * len(arrivals), [10] * len(arrivals), models=models,
        model=[models.index(m) for _, m in arrivals],
    )  # fmt: skip
    recs = RecordArrays.empty(len(reqs), ["gpu"])
    cfg = RequestLevelConfig(strategy=strategy, best_batch={"a": 2, "b": 2}, **config)  # type: ignore[arg-type]
    engine = cfg.build("gpu", reqs, recs, 0, {"a": timing(), "b": timing()})
    assert isinstance(engine, SincereServerEngine)
    k = 0
    for _ in range(100_000):  # a run that never ends fails here instead of hanging
        due = engine.next_event_at()
        if k < len(arrivals) and (due is None or arrivals[k][0] <= due):
            engine.add(k, arrivals[k][0])
            k += 1
        elif due is not None:
            engine.advance(due)
        else:
            engine.drain(arrivals[-1][0])
            assert engine.next_event_at() is None  # no final flush
            return engine, recs
    raise AssertionError("the engine kept asking for events")


def test_queue_sizes_are_the_load_reports_fields() -> None:
    """queue_sizes() is (num_running, num_waiting, waiting_prefill_tokens) of load()."""
    models = ("a", "b")
    reqs = RequestArrays.build([0.0, 0.5, 1.0], [5] * 3, [10] * 3, models=models, model=[0, 0, 1])
    recs = RecordArrays.empty(len(reqs), ["gpu"])
    cfg = RequestLevelConfig(strategy="best-batch", best_batch={"a": 2, "b": 2})
    engine = cfg.build("gpu", reqs, recs, 0, {"a": timing(), "b": timing()})
    assert isinstance(engine, SincereServerEngine)
    sizes = []
    for i in range(3):
        engine.add(i, float(reqs.arrival_at[i]))
    while (at := engine.next_event_at()) is not None:
        load = engine.load()
        sizes.append(engine.queue_sizes())
        assert sizes[-1] == (load.num_running, load.num_waiting, load.waiting_prefill_tokens)
        engine.advance(at)
    assert any(running for running, _, _ in sizes)


def test_a_batch_is_handed_off_when_the_queue_reaches_its_target() -> None:
    """The second request of a hands off both; cold load 10 s, batch 1.2 s."""
    engine, recs = run([(0.0, "a"), (1.0, "a")])
    assert recs.first_scheduled_at.tolist() == [11.0, 11.0]
    assert recs.finished_at.tolist() == pytest.approx([12.2, 12.2])
    assert engine.stats().num_swaps == 1 and engine.stats().swap_s == 10.0


def test_a_second_hand_off_replaces_one_still_waiting() -> None:
    """While the GPU is busy, a new hand-off of the same model loses the one before."""
    arrivals = [(0.0, "a"), (1.0, "a"), (2.0, "a"), (3.0, "a"), (4.0, "a"), (5.0, "a")]
    engine, recs = run(arrivals)
    assert [recs.reject_reason[i] for i in (2, 3)] == [OVERWRITTEN, OVERWRITTEN]
    assert np.isnan(recs.finished_at[[2, 3]]).all()
    # the first waiting thread serves the slot as it is now: requests 4 and 5, no load
    assert recs.first_scheduled_at[4] == pytest.approx(12.2 + 0.5)
    assert engine.num_overwritten == 2 and len(engine.batch_log()) == 2


def test_waiting_threads_get_the_gpu_first_come_first_served() -> None:
    """b handed off before a, both while busy: b runs first (a swap), then a (another)."""
    arrivals = [(0.0, "a"), (1.0, "a"), (2.0, "b"), (3.0, "b"), (4.0, "a"), (5.0, "a")]
    engine, recs = run(arrivals)
    release = 12.2 + 0.5
    b_start = release + 1.0 + 5.0  # release a, load b
    assert recs.first_scheduled_at[2] == pytest.approx(b_start)
    a_start = b_start + 1.2 + 0.5 + 1.0 + 5.0
    assert recs.first_scheduled_at[4] == pytest.approx(a_start)
    assert engine.batch_log().model == ("a", "b", "a")


def test_the_timer_fires_on_the_first_pass_after_it_expires() -> None:
    """Timer only, SLA 20 s: T = (20 - (2 + 8)) / 1.001, fired on the 0.1 s grid."""
    engine, recs = run([(0.0, "a")], strategy="timer", sla_s=20.0)
    expires = 10.0 / 1.001
    fired = np.ceil(expires / 0.1 - 1e-9) * 0.1
    assert recs.first_scheduled_at[0] == pytest.approx(fired + 10.0)  # then the cold load
    assert engine.batch_log().size.tolist() == [1]


def test_a_timer_restarts_at_the_first_arrival_after_a_batch() -> None:
    """Requests already queued when a batch ends wait for the next arrival's timer."""
    arrivals = [(0.0, "a"), (1.0, "a"), (11.5, "a"), (30.0, "a")]
    _, recs = run(arrivals, strategy="best-batch+timer", sla_s=20.0)
    # request 2 arrived while the first batch ran; its model's timer was reset at the
    # release (12.7) and only restarts with request 3, which then completes the target
    assert recs.first_scheduled_at[2] == recs.first_scheduled_at[3] == pytest.approx(30.0)


def test_an_emptied_timer_does_not_keep_the_run_going() -> None:
    """A timer left expired with nothing queued stops firing once the GPU is free."""
    arrivals = [(7.4, "b"), (13.4, "a"), (20.3, "b"), (22.3, "b"), (23.4, "a"), (28.7, "b")]
    engine, recs = run(arrivals, strategy="best-batch+timer", sla_s=20.0)
    assert engine.next_event_at() is None
    assert int(np.isfinite(recs.finished_at).sum()) + engine.num_overwritten <= len(arrivals)


def test_requests_left_below_target_stay_unfinished() -> None:
    """BestBatch alone, one request: never served, and drain adds nothing."""
    _, recs = run([(0.0, "a")])
    assert np.isnan(recs.finished_at[0]) and not recs.rejected[0]


def test_same_input_same_output() -> None:
    """Deterministic: two runs give identical records."""
    arrivals = [(0.1 * i, "ab"[i % 3 == 0]) for i in range(60)]
    _, first = run(arrivals, strategy="best-batch+timer")
    _, second = run(arrivals, strategy="best-batch+timer")
    np.testing.assert_array_equal(first.finished_at, second.finished_at)
    assert first.reject_reason == second.reject_reason


def test_server_checks_its_arguments() -> None:
    """A non-positive polling period is refused."""
    reqs = RequestArrays.build([0.0], [5], [10], models=("a",))
    recs = RecordArrays.empty(1, ["gpu"])
    strategy = RequestLevelConfig().make_strategy()
    with pytest.raises(ConfigError, match="poll_period_s"):
        SincereServerEngine("gpu", reqs, recs, 0, {"a": timing()}, strategy, poll_period_s=0.0)


@settings(max_examples=40, deadline=None)
@given(
    gaps=st.lists(st.floats(0.0, 3.0), min_size=1, max_size=60),
    picks=st.lists(st.booleans(), min_size=60, max_size=60),
    strategy=st.sampled_from(STRATEGY_NAMES),
)
def test_no_request_is_lost_silently_and_batches_do_not_overlap(
    gaps: list[float], picks: list[bool], strategy: str
) -> None:
    """Each request is finished, overwritten or still queued; batches run one at a time."""
    times = np.cumsum(gaps)
    arrivals = [(float(t), "a" if picks[i] else "b") for i, t in enumerate(times)]
    engine, recs = run(arrivals, strategy=strategy, sla_s=30.0)
    done = np.isfinite(recs.finished_at)
    assert not (done & recs.rejected).any()
    assert all(recs.reject_reason[i] == OVERWRITTEN for i in np.flatnonzero(recs.rejected))
    assert (recs.finished_at[done] >= times[done]).all()
    log = engine.batch_log()
    assert (log.start_at[1:] >= log.end_at[:-1]).all()
    assert int(log.size.sum()) == int(done.sum())


def test_the_idle_engine_pays_calibrated_costs_too() -> None:
    """dispatch idle: cold first load, after-batch work before the next batch, planned swaps."""
    models = ("a", "b")
    reqs = RequestArrays.build([0.0, 0.0, 0.0, 0.0], [5] * 4, [10] * 4, models=models,
                               model=[0, 0, 1, 1])  # fmt: skip
    recs = RecordArrays.empty(4, ["gpu"])
    cfg = RequestLevelConfig(strategy="best-batch", best_batch={"a": 2, "b": 2}, dispatch="idle")
    engine = cfg.build("gpu", reqs, recs, 0, {"a": timing(), "b": timing()})
    assert isinstance(engine, RequestLevelEngine)
    assert engine.view().queues[0].load == PLAN.load  # strategies plan with the profile's
    for i in range(4):
        engine.add(i, 0.0)
    while (due := engine.next_event_at()) is not None:
        engine.advance(due)
    assert recs.first_scheduled_at.tolist() == pytest.approx([10.0, 10.0, 17.7, 17.7])
    # a: cold 10 s, batch 1.2 s, after-batch 0.5 s; then b: release 1 s + load 5 s
