"""Invariants of the request-level engine under random traffic and strategies."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sincere.core.records import RecordArrays
from sincere.core.request import RequestArrays
from sincere.engine.request_level import RequestLevelEngine
from sincere.perf.base import Batch, StepTimeBase, SwapTime
from sincere.policy.batching import make_strategy, valid_strategy_names


class LinearBatch(StepTimeBase):
    """A batch takes 0.5 s + 0.05 s per request + 0.01 s per output token."""

    def __init__(self, load_s: float, unload_s: float) -> None:
        super().__init__(SwapTime(load_s, 0.5), SwapTime(unload_s, 0.05))

    def iteration_s(self, batch: Batch) -> float:
        return 0.0

    def request_batch_s(self, prompt_tokens: Sequence[int], output_tokens: int) -> float:
        return 0.5 + 0.05 * len(prompt_tokens) + 0.01 * output_tokens


STEP = {
    "granite-7b": LinearBatch(3.0, 0.1),
    "gemma-7b": LinearBatch(4.0, 0.2),
    "llama3-8b": LinearBatch(5.0, 0.3),
}

traffic = st.lists(
    st.tuples(st.floats(0.0, 5.0), st.sampled_from(sorted(STEP)), st.integers(1, 60)),
    min_size=1,
    max_size=40,
)


def run(
    arrivals: list[tuple[float, str, int]], engine_of: object
) -> tuple[RequestLevelEngine, RequestArrays, RecordArrays, list[int]]:
    gaps = np.array([a[0] for a in arrivals])
    models = tuple(sorted(STEP))
    reqs = RequestArrays.build(
        np.cumsum(gaps),
        [10] * len(arrivals),
        [a[2] for a in arrivals],
        models=models,
        model=[models.index(a[1]) for a in arrivals],
        max_tokens=[50] * len(arrivals),
    )
    recs = RecordArrays.empty(len(reqs), ["gpu0"])
    engine: RequestLevelEngine = engine_of(reqs, recs)  # type: ignore[operator]
    finished: list[int] = []
    times = reqs.arrival_at.tolist()
    k = 0
    while True:
        event_at = engine.next_event_at()
        if k < len(times) and (event_at is None or times[k] < event_at):
            engine.add(k, times[k])
            k += 1
            if k == len(times):
                engine.drain(times[-1])
        elif event_at is not None:
            finished += engine.advance(event_at)
        else:
            return engine, reqs, recs, finished


@settings(max_examples=60, deadline=None)
@given(
    arrivals=traffic,
    name=st.sampled_from(valid_strategy_names()),
    max_resident=st.integers(1, 2),
    max_batch=st.one_of(st.none(), st.integers(1, 8)),
    sla_s=st.floats(5.0, 80.0),
    seed=st.one_of(st.none(), st.integers(0, 2**16)),
)
def test_every_request_finishes_and_batches_never_overlap(
    arrivals: list[tuple[float, str, int]],
    name: str,
    max_resident: int,
    max_batch: int | None,
    sla_s: float,
    seed: int | None,
) -> None:
    """After drain all requests finish once, in order, in non-overlapping batches."""

    def build(reqs: RequestArrays, recs: RecordArrays) -> RequestLevelEngine:
        strategy = make_strategy(name, sla_s=sla_s, best_batch={m: 4 for m in STEP})
        return RequestLevelEngine(
            "gpu0",
            reqs,
            recs,
            0,
            STEP,
            strategy,
            max_resident_models=max_resident,
            max_batch_size=max_batch,
            rng=None if seed is None else np.random.default_rng(seed),
            sample_swap_times=seed is not None,
        )

    engine, reqs, recs, finished = run(arrivals, build)
    assert sorted(finished) == list(range(len(reqs)))
    assert recs.unfinished().size == 0
    assert np.all(recs.first_scheduled_at >= reqs.arrival_at)
    assert np.all(recs.finished_at > recs.first_scheduled_at)
    log = engine.batch_log()
    assert np.all(log.start_at[1:] - log.swap_s[1:] >= log.end_at[:-1] - 1e-9)
    assert int(log.size.sum()) == len(reqs)
    if max_batch is not None:
        assert log.size.max() <= max_batch
    stats = engine.stats()
    assert stats.num_steps == len(log)
    assert np.isclose(stats.busy_s, log.duration_s.sum())
    assert np.isclose(stats.swap_s, log.swap_s.sum())
    assert stats.num_generated_tokens == int(recs.output_tokens.sum())
    if max_resident == 1:
        assert stats.num_swaps == 1 + log.num_model_switches


@settings(max_examples=30, deadline=None)
@given(arrivals=traffic)
def test_fcfs_finishes_in_arrival_order(arrivals: list[tuple[float, str, int]]) -> None:
    """FCFS runs one request per batch, started in arrival order."""

    def build(reqs: RequestArrays, recs: RecordArrays) -> RequestLevelEngine:
        return RequestLevelEngine("gpu0", reqs, recs, 0, STEP, make_strategy("fcfs", sla_s=60.0))

    engine, _, recs, _ = run(arrivals, build)
    assert engine.batch_log().size.tolist() == [1] * len(arrivals)
    assert np.all(np.diff(recs.first_scheduled_at) > 0)
