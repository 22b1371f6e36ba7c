"""The request-level multi-model engine on hand-made timelines."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pydantic
import pytest

from sincere.core.errors import ConfigError
from sincere.core.records import RecordArrays
from sincere.core.request import RequestArrays
from sincere.engine.base import Engine
from sincere.engine.request_level import RequestLevelConfig, RequestLevelEngine
from sincere.perf.base import Batch, StepTimeBase, SwapTime
from sincere.policy.batching import BatchStrategy, make_strategy


class FlatBatch(StepTimeBase):
    """A batch takes base_s + per_request_s * size; swaps take fixed times."""

    def __init__(self, base_s: float, load_s: float, unload_s: float, per_request_s: float = 0.0):
        super().__init__(SwapTime(load_s, 1.0), SwapTime(unload_s, 0.1))
        self.base_s = base_s
        self.per_request_s = per_request_s

    def iteration_s(self, batch: Batch) -> float:
        return 0.0

    def request_batch_s(self, prompt_tokens: Sequence[int], output_tokens: int) -> float:
        return self.base_s + self.per_request_s * len(prompt_tokens)


MODELS = {"a": FlatBatch(1.0, 2.0, 0.5), "b": FlatBatch(1.0, 3.0, 0.25)}


def requests_of(arrivals: Sequence[tuple[float, str]], out: int = 10) -> RequestArrays:
    models = ("a", "b")
    return RequestArrays.build(
        [t for t, _ in arrivals],
        [5] * len(arrivals),
        [out] * len(arrivals),
        models=models,
        model=[models.index(m) for _, m in arrivals],
        max_tokens=[4] * len(arrivals),
    )


def make_engine(
    arrivals: Sequence[tuple[float, str]],
    strategy: BatchStrategy,
    step_models: Mapping[str, StepTimeBase] = MODELS,
    **kwargs: object,
) -> tuple[RequestLevelEngine, RequestArrays, RecordArrays]:
    reqs = requests_of(arrivals)
    recs = RecordArrays.empty(len(reqs), ["gpu0"])
    engine = RequestLevelEngine("gpu0", reqs, recs, 0, step_models, strategy, **kwargs)  # type: ignore[arg-type]
    return engine, reqs, recs


def drive(engine: Engine, arrival_at: Sequence[float], *, drain: bool = True) -> list[int]:
    """A tiny event loop: arrivals and engine events in time order (engine first on ties)."""
    finished: list[int] = []
    k = 0
    while True:
        event_at = engine.next_event_at()
        if k < len(arrival_at) and (event_at is None or arrival_at[k] < event_at):
            engine.add(k, arrival_at[k])
            k += 1
            if k == len(arrival_at) and drain and isinstance(engine, RequestLevelEngine):
                engine.drain(arrival_at[k - 1])
        elif event_at is not None:
            finished += engine.advance(event_at)
        else:
            return finished


def test_fcfs_swaps_in_arrival_order() -> None:
    """FCFS: a@0, b@1, a@2 run one by one, swapping twice, with exact swap times."""
    arrivals = [(0.0, "a"), (1.0, "b"), (2.0, "a")]
    engine, reqs, recs = make_engine(arrivals, make_strategy("fcfs", sla_s=60.0))
    assert sorted(drive(engine, reqs.arrival_at.tolist())) == [0, 1, 2]
    # a: load 2 -> [2, 3]; b: unload a 0.5 + load b 3 -> [6.5, 7.5]; a: 0.25 + 2 -> [9.75, 10.75]
    np.testing.assert_allclose(recs.first_scheduled_at, [2.0, 6.5, 9.75])
    np.testing.assert_allclose(recs.finished_at, [3.0, 7.5, 10.75])
    np.testing.assert_allclose(recs.first_token_at, recs.finished_at)
    log = engine.batch_log()
    assert log.model == ("a", "b", "a")
    assert log.num_model_switches == 2
    stats = engine.stats()
    assert (stats.num_swaps, stats.num_steps) == (3, 3)
    assert stats.swap_s == pytest.approx(2.0 + 3.5 + 2.25)
    assert stats.busy_s == pytest.approx(3.0)
    assert stats.num_generated_tokens == 12  # min(output 10, max_tokens 4) each
    assert recs.output_tokens.tolist() == [4, 4, 4]
    assert recs.instance.tolist() == [0, 0, 0]


def test_prefer_resident_saves_a_swap() -> None:
    """FCFS with prefer_resident serves the resident model's later request first."""
    arrivals = [(0.0, "a"), (1.0, "b"), (2.0, "a")]
    strategy = make_strategy("fcfs", sla_s=60.0, prefer_resident=True)
    engine, reqs, recs = make_engine(arrivals, strategy)
    drive(engine, reqs.arrival_at.tolist())
    np.testing.assert_allclose(recs.finished_at, [3.0, 8.5, 4.0])
    assert engine.stats().num_swaps == 2


def test_best_batch_waits_for_exactly_n_and_starves_without_drain() -> None:
    """BestBatch(3) runs at the third arrival; a fourth request stays queued forever."""
    arrivals = [(0.0, "a"), (1.0, "a"), (2.0, "a"), (3.0, "a")]
    strategy = make_strategy("best-batch", sla_s=60.0, best_batch={"a": 3})
    engine, reqs, recs = make_engine(arrivals, strategy)
    assert sorted(drive(engine, reqs.arrival_at.tolist(), drain=False)) == [0, 1, 2]
    np.testing.assert_allclose(recs.first_scheduled_at[:3], 4.0)  # decided at 2, load 2
    assert recs.unfinished().tolist() == [3]
    assert engine.load().num_waiting == 1
    assert engine.next_event_at() is None


def test_drain_flushes_the_remainder() -> None:
    """drain(): the queue below its best batch runs after the full batch, no swap."""
    arrivals = [(0.0, "a"), (1.0, "a"), (2.0, "a"), (3.0, "a")]
    strategy = make_strategy("best-batch", sla_s=60.0, best_batch={"a": 3})
    engine, reqs, recs = make_engine(arrivals, strategy)
    drive(engine, reqs.arrival_at.tolist())
    np.testing.assert_allclose(recs.finished_at, [5.0, 5.0, 5.0, 6.0])
    assert engine.batch_log().size.tolist() == [3, 1]
    assert engine.stats().num_swaps == 1


def test_timer_fires_at_formula_time() -> None:
    """Timer: SLA 60, T_adj = (2+1) + (0.5+0.1) + 8, two queued -> fires at 10 + T/1.002."""
    arrivals = [(10.0, "a"), (20.0, "a")]
    engine, reqs, recs = make_engine(arrivals, make_strategy("timer", sla_s=60.0))
    drive(engine, reqs.arrival_at.tolist(), drain=False)
    fire_at = 10.0 + (60.0 - 11.6) / 1.002
    np.testing.assert_allclose(recs.first_scheduled_at, fire_at + 2.0)
    np.testing.assert_allclose(recs.finished_at, fire_at + 3.0)


def test_timer_clamped_and_running_other_model_meanwhile() -> None:
    """A tight SLA gives the 5 s floor; each model's timer runs its own queue."""
    arrivals = [(0.0, "a"), (1.0, "b")]
    engine, reqs, recs = make_engine(arrivals, make_strategy("timer", sla_s=10.0))
    drive(engine, reqs.arrival_at.tolist(), drain=False)
    # a fires at 5 -> load 2 -> [7, 8]; b fired at 6 (busy) -> at 8: 0.5 + 3 -> [11.5, 12.5]
    np.testing.assert_allclose(recs.first_scheduled_at, [7.0, 11.5])
    np.testing.assert_allclose(recs.finished_at, [8.0, 12.5])


def test_select_batch_from_synthetic_interarrivals() -> None:
    """SelectBatch+Timer: arrivals every 1.5 s give a target of 32 (rate x 48 s = 32)."""
    step = {"a": FlatBatch(1.0, 2.0, 0.5), "b": FlatBatch(1.0, 3.0, 0.25)}
    strategy = make_strategy("select-batch+timer", sla_s=60.0 + 0.6, est_batch_time_s=8.0)
    times = [1.5 * k for k in range(40)]
    engine, _, _ = make_engine([(t, "a") for t in times], strategy, step)
    drive(engine, times, drain=False)
    # SLA - T_adj = 60.6 - 12.6 = 48 s; first 32 arrive by 46.5 s, before the timer (~47.9 s)
    assert engine.batch_log().size.tolist()[0] == 32


def test_partial_batch_flushes_after_ten_seconds_residency() -> None:
    """best=8: a full batch loads a; three more queued flush at loaded_at + 10 s, two do not."""
    strategy = make_strategy("best-batch+partial-batch", sla_s=60.0, best_batch={"a": 8, "b": 8})
    arrivals = [(0.0, "a")] * 8 + [(5.0, "a"), (6.0, "a"), (7.0, "a"), (8.0, "b"), (9.0, "b")]
    arrivals += [(9.5, "b"), (13.0, "a"), (13.5, "a")]
    engine, reqs, recs = make_engine(arrivals, strategy)
    drive(engine, reqs.arrival_at.tolist(), drain=False)
    log = engine.batch_log()
    # full batch [2, 3]; loaded at 2 -> flush of 3 queued at 12 -> [12, 13]; b never runs
    assert log.size.tolist() == [8, 3]
    np.testing.assert_allclose(log.start_at, [2.0, 12.0])
    assert recs.unfinished().tolist() == [11, 12, 13, 14, 15]


def test_max_resident_models_keeps_two_loaded() -> None:
    """With room for two models, alternating requests swap only twice (two loads)."""
    arrivals = [(0.0, "a"), (10.0, "b"), (20.0, "a"), (30.0, "b")]
    engine, reqs, _ = make_engine(
        arrivals, make_strategy("fcfs", sla_s=60.0), max_resident_models=2
    )
    drive(engine, reqs.arrival_at.tolist())
    assert engine.stats().num_swaps == 2
    assert engine.batch_log().swap_s.tolist() == [2.0, 3.0, 0.0, 0.0]


def test_max_batch_size_caps_batches() -> None:
    """A timer flush of five requests is cut into batches of two."""
    arrivals = [(0.0, "a")] * 5
    engine, reqs, _ = make_engine(arrivals, make_strategy("timer", sla_s=60.0), max_batch_size=2)
    drive(engine, reqs.arrival_at.tolist())
    assert engine.batch_log().size.tolist() == [2, 2, 1]


def test_sampled_swap_times_are_seeded() -> None:
    """sample_swap_times draws load times from the rng: same seed, same timeline."""
    arrivals = [(0.0, "a"), (1.0, "b"), (2.0, "a")]

    def run(seed: int) -> list[float]:
        engine, reqs, recs = make_engine(
            arrivals,
            make_strategy("fcfs", sla_s=60.0),
            rng=np.random.default_rng(seed),
            sample_swap_times=True,
        )
        drive(engine, reqs.arrival_at.tolist())
        return [float(x) for x in recs.finished_at]

    assert run(1) == run(1)
    assert run(1) != run(2)
    assert run(1) != [3.0, 7.5, 10.75]


def test_load_reports_queue_and_resident_model() -> None:
    """load(): waiting requests, their prompt tokens, the batch in flight, the model."""
    arrivals = [(0.0, "a"), (1.0, "b"), (1.5, "b")]
    engine, _, _ = make_engine(arrivals, make_strategy("fcfs", sla_s=60.0))
    for i, (t, _) in enumerate(arrivals):
        engine.add(i, t)
    load = engine.load()
    assert (load.num_running, load.num_waiting, load.waiting_prefill_tokens) == (1, 2, 10)
    assert load.resident_model == "a"
    assert load.running_remaining_tokens == 4


def test_queue_sizes_are_the_load_reports_fields() -> None:
    """queue_sizes() is (num_running, num_waiting, waiting_prefill_tokens) of load()."""
    arrivals = [(0.0, "a"), (1.0, "b"), (1.5, "b"), (2.0, "a")]
    engine, _, _ = make_engine(arrivals, make_strategy("fcfs", sla_s=60.0))
    for i, (t, _) in enumerate(arrivals):
        engine.add(i, t)
    while (at := engine.next_event_at()) is not None:
        load = engine.load()
        assert engine.queue_sizes() == (
            load.num_running, load.num_waiting, load.waiting_prefill_tokens,
        )  # fmt: skip
        engine.advance(at)
    assert engine.queue_sizes() == (0, 0, 0)


def test_bad_arguments_raise() -> None:
    """Constructor and add() reject bad input with ConfigError naming it."""
    strategy = make_strategy("fcfs", sla_s=60.0)
    with pytest.raises(ConfigError, match="max_resident_models must be >= 1; got 0"):
        make_engine([(0.0, "a")], strategy, max_resident_models=0)
    with pytest.raises(ConfigError, match="sample_swap_times needs an rng"):
        make_engine([(0.0, "a")], strategy, sample_swap_times=True)
    engine, _, _ = make_engine([(0.0, "b")], strategy, {"a": MODELS["a"]})
    with pytest.raises(ConfigError, match="does not serve; got 'b'; allowed: a"):
        engine.add(0, 0.0)


def test_config_builds_engine_from_yaml_like_dict() -> None:
    """RequestLevelConfig validates once and builds an engine with a fresh strategy."""
    config = RequestLevelConfig.model_validate(
        {
            "kind": "request-level",
            "strategy": "timer+best-batch",
            "sla_s": 40,
            "best_batch": {"a": 2},
        }
    )
    assert config.strategy == "best-batch+timer"
    reqs = requests_of([(0.0, "a"), (0.5, "a")])
    recs = RecordArrays.empty(2, ["gpu0"])
    engine = config.build("gpu0", reqs, recs, 0, MODELS)
    drive(engine, reqs.arrival_at.tolist())
    assert engine.batch_log().size.tolist() == [2]
    with pytest.raises(pydantic.ValidationError, match="not a valid batching strategy"):
        RequestLevelConfig.model_validate({"strategy": "fcfs+timer"})
    with pytest.raises(pydantic.ValidationError, match="max_resident_models"):
        RequestLevelConfig.model_validate({"max_resident_models": 0})


def test_long_queues_keep_fifo_order() -> None:
    """Queues far beyond their initial capacity (growth and compaction) stay FIFO."""
    arrivals = [(0.01 * k, "ab"[(k // 7) % 2]) for k in range(300)]
    engine, reqs, recs = make_engine(arrivals, make_strategy("fcfs", sla_s=60.0))
    drive(engine, reqs.arrival_at.tolist())
    assert np.all(np.diff(recs.first_scheduled_at) > 0)
    assert engine.stats().num_swaps == 1 + 300 // 7 - (300 % 7 == 0)
