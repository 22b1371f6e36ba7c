"""The request-level engine on SINCERE's measured H100 profiles (shipped with sincere.perf)."""

from __future__ import annotations

import numpy as np
import pytest

from sincere.core.records import RecordArrays
from sincere.core.request import RequestArrays
from sincere.engine.request_level import RequestLevelConfig, RequestLevelEngine

table = pytest.importorskip("sincere.perf.table")

MODELS = ("granite-7b", "gemma-7b", "llama3-8b")


def sincere_trace(rate: float, duration_s: float, seed: int) -> RequestArrays:
    """SINCERE's gamma traffic (shape 1) with its 0.1 / 0.3 / 0.6 model mix, 50 new tokens."""
    rng = np.random.default_rng(seed)
    gaps = rng.gamma(1.0, 1.0 / rate, size=int(rate * duration_s * 2))
    arrival_at = np.cumsum(gaps)
    arrival_at = arrival_at[arrival_at < duration_s]
    n = len(arrival_at)
    return RequestArrays.build(
        arrival_at,
        rng.integers(20, 400, n),
        np.full(n, 50),
        models=MODELS,
        model=rng.choice(3, size=n, p=[0.1, 0.3, 0.6]),
    )


def simulate(
    strategy: str, cc: bool, reqs: RequestArrays
) -> tuple[RequestLevelEngine, RecordArrays]:
    step = {m: table.sincere_profile(m, cc=cc) for m in MODELS}
    recs = RecordArrays.empty(len(reqs), ["h100"])
    config = RequestLevelConfig(strategy=strategy, sla_s=60.0, max_batch_size=64, dispatch="idle")
    engine = config.build("h100", reqs, recs, 0, step)
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
            engine.advance(event_at)
        else:
            return engine, recs


@pytest.mark.parametrize(
    "strategy",
    [
        "fcfs",
        "best-batch",
        "best-batch+timer",
        "select-batch+timer",
        "best-batch+partial-batch+timer",
    ],
)
def test_swept_strategies_serve_everything(strategy: str) -> None:
    """Each swept SINCERE strategy finishes a 2-minute, 4 req/s trace on measured profiles."""
    reqs = sincere_trace(4.0, 120.0, seed=1)
    engine, recs = simulate(strategy, cc=True, reqs=reqs)
    assert recs.unfinished().size == 0
    assert engine.batch_log().size.max() <= 64
    assert engine.stats().num_steps == len(engine.batch_log())


def test_cc_mode_pays_slower_loads() -> None:
    """Same trace, same FCFS order: CC mode spends ~2.5x longer swapping models."""
    reqs = sincere_trace(2.0, 60.0, seed=2)
    cc, _ = simulate("fcfs", cc=True, reqs=reqs)
    plain, _ = simulate("fcfs", cc=False, reqs=reqs)
    assert cc.stats().num_swaps == plain.stats().num_swaps > 0
    ratio = cc.stats().swap_s / plain.stats().swap_s
    assert 2.0 < ratio < 3.5
