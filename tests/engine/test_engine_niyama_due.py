"""Niyama's incremental decode slack on the continuous engine equals the full scan."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sincere.core.records import RecordArrays
from sincere.core.request import RequestArrays, Tier
from sincere.core.types import Seconds
from sincere.engine.continuous import ContinuousEngine, EngineLimits
from sincere.perf.base import Batch, StepTimeBase
from sincere.policy.schedulers.base import DecodeTimeline, EngineView
from sincere.policy.schedulers.niyama import Niyama

TIERS = (
    Tier("interactive", ttft_s=0.5, tbt_s=0.02),
    Tier("batch", ttlt_s=20.0, tbt_s=0.05),
    Tier("free"),  # no TBT target: never constrains the chunk
)


class Affine(StepTimeBase):
    """2 ms + 20 us per prompt token + 0.1 ms per decode."""

    def iteration_s(self, batch: Batch) -> float:
        return 0.002 + 2e-5 * batch.prefill_tokens + 1e-4 * batch.num_decode_seqs


class Checked(Niyama):
    """Niyama that compares its incremental slack with the scan at every budget."""

    def __init__(self) -> None:
        super().__init__(Affine(), chunk_sizes=(16, 32, 64, 128), initial_prefill_tps=2e4)
        self.pairs: list[tuple[Seconds, Seconds]] = []

    def token_budget(self, view: EngineView, now: Seconds) -> int:
        self.pairs.append((self.min_decode_slack_s(view, now), self.scan_decode_slack_s(view, now)))
        return super().token_budget(view, now)


def _run(
    req: RequestArrays, lim: dict[str, int], live: bool = False, abort: int = -1
) -> tuple[Checked, RecordArrays]:
    """Drive an engine with a checked Niyama over ``req``; abort one request midway."""
    sched = Checked()
    records = RecordArrays.empty(len(req), ["e0"])
    eng = ContinuousEngine("e0", req, records, 0, Affine(), sched, EngineLimits(**lim))
    if live:
        eng.on_tokens = lambda at, ids: None
    arrivals, k, num_events = req.arrival_at.tolist(), 0, 0
    while True:
        at = eng.next_event_at()
        if k < len(arrivals) and (at is None or arrivals[k] <= at):
            eng.add(k, arrivals[k])
            k += 1
        elif at is not None:
            eng.advance(at)
            num_events += 1
            if num_events == 40 and abort >= 0:
                eng.abort(abort, at)
        else:
            return sched, records


def _workload(seed: int, n: int) -> RequestArrays:
    rng = np.random.default_rng(seed)
    return RequestArrays.build(
        np.cumsum(rng.exponential(0.01, n)),
        rng.integers(1, 200, n),
        rng.integers(1, 80, n),
        tiers=TIERS,
        tier=rng.integers(0, 3, n),
    )


def test_incremental_slack_equals_the_scan_under_preemption() -> None:
    """With KV pressure (preemptions, recomputes) the slack is the scan's, bit for bit."""
    req = _workload(1, 150)
    sched, records = _run(req, {"num_kv_blocks": 60, "max_num_seqs": 32, "block_size": 16})
    assert records.num_preemptions.sum() > 0
    assert sched._due is not None  # the engine is a DecodeTimeline: the fast path ran
    assert len(sched.pairs) > 50
    assert any(np.isfinite(a) for a, _ in sched.pairs)
    assert all(a == b for a, b in sched.pairs)


def test_engine_is_a_decode_timeline_and_logs_starts() -> None:
    """ContinuousEngine implements DecodeTimeline; every decode start is logged once."""
    req = _workload(2, 30)
    records = RecordArrays.empty(len(req), ["e0"])
    lim = EngineLimits(num_kv_blocks=1 << 12)
    eng = ContinuousEngine("e0", req, records, 0, Affine(), Checked(), lim)
    assert isinstance(eng, DecodeTimeline)
    for i in range(len(req)):
        eng.add(i, 0.0)
    while (at := eng.next_event_at()) is not None:
        eng.advance(at)
    multi = req.output_tokens > 1  # a one-token request never decodes
    assert sorted(eng.decode_starts(0)) == list(np.flatnonzero(multi))
    assert eng.decode_starts(int(multi.sum())) == []
    assert eng.num_iterations == eng.stats().num_steps


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    blocks=st.integers(20, 400),
    live=st.booleans(),
    abort=st.integers(-1, 30),
)
def test_incremental_slack_equals_the_scan_property(
    seed: int, blocks: int, live: bool, abort: int
) -> None:
    """For any workload, KV size, live stepping or abort, fast slack == scanned slack."""
    req = _workload(seed, 40)
    sched, _ = _run(req, {"num_kv_blocks": blocks, "max_num_seqs": 16}, live=live, abort=abort)
    assert all(a == b for a, b in sched.pairs)
