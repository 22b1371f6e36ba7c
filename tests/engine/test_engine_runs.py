"""The planning loop and its pieces of work (engine/runs.py): the results of asking the policy.

Prefill runs (iterations a view-only policy's plan fixes) and plans the engine computes
itself change no result; victims are the scheduler's.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable
from itertools import pairwise
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sincere.core.records import RecordArrays
from sincere.core.request import RequestArrays, Tier
from sincere.engine.continuous import ContinuousEngine, EngineLimits
from sincere.engine.runs import decode_run
from sincere.perf.base import Batch, StepTimeBase
from sincere.policy.schedulers import SCHEDULERS, make_scheduler
from sincere.policy.schedulers.base import EngineView, IterationPlan, IterationScheduler
from sincere.policy.schedulers.orders import Sarathi

TIERS = (Tier("a", ttft_s=1.0), Tier("b", ttft_s=30.0))
VIEW_ONLY = ["fcfs", "priority", "edf", "srpf", "sarathi"]


class Ridge(StepTimeBase):
    """A max of two affine lines, like the roofline (compute vs memory)."""

    def iteration_s(self, batch: Batch) -> float:
        compute = 2e-5 * batch.num_tokens + 1e-9 * batch.prefill_attn_pairs
        memory = 0.004 + 3e-8 * (batch.decode_ctx_tokens + batch.prefill_ctx_tokens)
        return 0.001 + max(compute, memory)


def _asked(name: str) -> IterationScheduler:
    """The registered policy, but with ``plan`` overridden so the engine asks every time."""
    cls = SCHEDULERS.get(name)

    def plan(self: IterationScheduler, view: EngineView, now: float) -> IterationPlan:
        return cls.plan(self, view, now)

    sched: IterationScheduler = type(f"Asked{cls.__name__}", (cls,), {"plan": plan})()
    return sched


def _engine(req: RequestArrays, sched: IterationScheduler, **lim: int) -> ContinuousEngine:
    records = RecordArrays.empty(len(req), ["e0"])
    return ContinuousEngine("e0", req, records, 0, Ridge(), sched, EngineLimits(**lim))


def _drive(eng: ContinuousEngine, after: Callable[[], None] | None = None) -> int:
    """Add each request at its arrival, advance until idle; return the number of events."""
    arrivals, k, events = eng.requests.arrival_at.tolist(), 0, 0
    while True:
        at = eng.next_event_at()
        if k < len(arrivals) and (at is None or arrivals[k] <= at):
            eng.add(k, arrivals[k])
            k += 1
        elif at is not None:
            eng.advance(at)
        else:
            return events
        events += 1
        if after is not None:
            after()


def _run(req: RequestArrays, sched: IterationScheduler, **lim: int) -> ContinuousEngine:
    eng = _engine(req, sched, **lim)
    _drive(eng)
    return eng


@st.composite
def cases(draw: st.DrawFn) -> tuple[RequestArrays, str, dict[str, int]]:
    n = draw(st.integers(1, 40))
    gaps = draw(st.lists(st.floats(0.0, 0.3), min_size=n, max_size=n))
    prompts = draw(st.lists(st.integers(1, 1500), min_size=n, max_size=n))
    outs = draw(st.lists(st.integers(1, 150), min_size=n, max_size=n))
    tiers = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    req = RequestArrays.build(
        np.cumsum(gaps), prompts, outs, tiers=TIERS, tier=tiers, priority=tiers
    )
    limits = {
        "num_kv_blocks": draw(st.integers(100, 400)),
        "block_size": draw(st.sampled_from([4, 16])),
        "max_num_seqs": draw(st.integers(1, 24)),
        "max_num_batched_tokens": draw(st.integers(32, 700)),
    }
    return req, draw(st.sampled_from(VIEW_ONLY)), limits


@given(cases())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_prefill_runs_match_asking_the_scheduler_every_iteration(
    case: tuple[RequestArrays, str, dict[str, int]],
) -> None:
    """Same per-request times, tokens, preemptions and totals as one plan per iteration."""
    req, name, limits = case
    fast = _run(req, make_scheduler(name, {}), **limits)
    slow = _run(req, _asked(name), **limits)
    a, b = fast.records, slow.records
    for col in ("first_scheduled_at", "first_token_at", "finished_at"):
        np.testing.assert_allclose(getattr(a, col), getattr(b, col), rtol=1e-12)
    np.testing.assert_array_equal(a.output_tokens, b.output_tokens)
    np.testing.assert_array_equal(a.num_preemptions, b.num_preemptions)
    np.testing.assert_array_equal(a.rejected, b.rejected)
    sa, sb = fast.stats(), slow.stats()
    assert (sa.num_steps, sa.num_generated_tokens) == (sb.num_steps, sb.num_generated_tokens)
    assert sa.busy_s == pytest.approx(sb.busy_s, rel=1e-12)
    for ga, gb in zip(fast.gaps, slow.gaps, strict=True):
        assert ga.count == gb.count
        assert ga.mean_s == pytest.approx(gb.mean_s, rel=1e-9, nan_ok=True)
        ga.flush()
        gb.flush()
        np.testing.assert_array_equal(ga.counts, gb.counts)


def test_prefill_runs_do_happen() -> None:
    """A long prompt beside decodes runs as one multi-iteration piece of work."""
    req = RequestArrays.build([0.0, 0.0], [10, 5000], [400, 5])
    eng = _run(req, make_scheduler("sarathi", {"chunk_size": 256}), num_kv_blocks=4096)
    assert eng.stats().num_steps > 20
    assert eng.records.finished_at[0] > eng.records.first_token_at[1]


@pytest.mark.parametrize("name", VIEW_ONLY)
def test_classic_orders_are_view_only(name: str) -> None:
    """FCFS-family policies declare a plan that depends on the engine state alone."""
    assert make_scheduler(name, {}).plan_is_view_only()


def test_time_or_history_dependent_policies_are_not_view_only() -> None:
    """Niyama, an overridden plan, or an undeclared new budget opt out of prefill runs."""

    class Growing(Sarathi):
        def token_budget(self, view: EngineView, now: float) -> int:
            return 64 + int(now)

    class Declared(Growing, view_only=True):
        def token_budget(self, view: EngineView, now: float) -> int:
            return 64

    kwargs: dict[str, Any] = {"predictor": Ridge()}
    assert not make_scheduler("niyama", {}, **kwargs).plan_is_view_only()
    assert not _asked("fcfs").plan_is_view_only()
    assert not Growing().plan_is_view_only()
    assert Declared().plan_is_view_only()


def _snapshot(eng: ContinuousEngine) -> tuple[object, ...]:
    return (
        eng.next_event_at(),
        list(eng.prefilling()),
        [eng.prefill_remaining(i) for i in eng.prefilling()],
        list(eng.decoding()),
        list(eng.waiting()),
        eng.used_blocks,
        eng.num_iterations,
    )


@given(cases())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_known_plans_are_the_policys_plans_piece_by_piece(
    case: tuple[RequestArrays, str, dict[str, int]],
) -> None:
    """Piece by piece, the engine's own plans leave the state asking the policy would."""
    req, name, limits = case
    known = _engine(req, make_scheduler(name, {}), **limits)
    asked = _engine(req, _asked(name), **limits)
    known.configure(exact_loads=True)  # no prefill runs: the two go piece by piece in lockstep
    snapshots: list[tuple[object, ...]] = []
    _drive(asked, lambda: snapshots.append(_snapshot(asked)))
    seen = iter(snapshots)
    _drive(known, lambda: _compare(_snapshot(known), next(seen)))
    assert next(seen, None) is None
    assert known.records.reject_reason == asked.records.reject_reason
    np.testing.assert_array_equal(known.records.finished_at, asked.records.finished_at)
    assert known.stats() == asked.stats()


def _compare(mine: tuple[object, ...], theirs: tuple[object, ...]) -> None:
    assert mine == theirs


def test_exact_loads_end_an_event_at_every_iteration_and_change_no_result() -> None:
    """Exact loads split prefill runs into single iterations; records stay the same."""
    req = RequestArrays.build([0.0, 0.0], [10, 5000], [400, 5])
    sched = {"chunk_size": 256}
    fast = _engine(req, make_scheduler("sarathi", sched), num_kv_blocks=4096)
    exact = _engine(req, make_scheduler("sarathi", sched), num_kv_blocks=4096)
    exact.configure(exact_loads=True)
    steps: list[int] = []
    events = _drive(exact, lambda: steps.append(exact.num_iterations))
    assert _drive(fast) < events
    while_prefilling = [b - a for a, b in pairwise(steps)][:15]
    assert max(while_prefilling) == 1  # the 5000-token prefill: one iteration per event
    for col in ("first_token_at", "finished_at"):
        np.testing.assert_array_equal(getattr(fast.records, col), getattr(exact.records, col))


@given(
    st.integers(1, 64),
    st.integers(0, 50_000),
    st.integers(2, 300),
    st.floats(0.0, 1.0),
)
def test_steps_covering_is_the_fewest_iterations_ending_after_now(
    n: int, ctx: int, steps: int, fraction: float
) -> None:
    """A decode run cut at ``now`` keeps exactly the iterations that began before it."""
    model = Ridge()
    run = decode_run(model.decode_steps_s, 3.0, n, ctx, steps)
    now = run.start_at + fraction * (run.end_at - run.start_at)
    ends = [run.start_at + model.decode_steps_s(n, ctx, j) for j in range(1, steps + 1)]
    expected = next(j for j, end in enumerate(ends, start=1) if end >= now or j == steps)
    assert run.steps_covering(now, model.decode_steps_s) == expected


class OldestFirst(IterationScheduler, view_only=True):
    """FCFS whose preemption victim is the sequence that began decoding first."""

    def __init__(self) -> None:
        self.victims: list[int] = []

    def victim(self, view: EngineView) -> int:
        decoding = list(view.decoding())
        i = decoding[0] if decoding else next(iter(view.prefilling()))
        self.victims.append(i)
        return i


def test_the_engine_preempts_the_victims_its_scheduler_names() -> None:
    """Every preemption is of the sequence ``victim`` returned, and the run still finishes."""
    rng = np.random.default_rng(3)
    req = RequestArrays.build(
        np.cumsum(rng.exponential(0.01, 60)), rng.integers(1, 300, 60), rng.integers(20, 200, 60)
    )
    sched = OldestFirst()
    eng = _engine(req, sched, num_kv_blocks=120, block_size=16, max_num_seqs=32)
    _drive(eng)
    assert len(sched.victims) == eng.stats().num_preemptions > 0
    counts = np.bincount(sched.victims, minlength=len(req))
    np.testing.assert_array_equal(counts, eng.records.num_preemptions)
    assert not np.isnan(eng.records.finished_at).any()
    default = _engine(req, make_scheduler("fcfs", {}), num_kv_blocks=120, max_num_seqs=32)
    _drive(default)
    assert not np.array_equal(default.records.num_preemptions, eng.records.num_preemptions)


class Stranger(IterationScheduler, view_only=True):
    """Names a request that is not running."""

    def victim(self, view: EngineView) -> int:
        return next(iter(view.waiting()), 10**6)


def test_a_victim_that_is_not_running_is_a_clear_error() -> None:
    """The engine refuses a victim outside the running set, naming the policy."""
    req = RequestArrays.build(np.zeros(40), [200] * 40, [200] * 40)
    eng = _engine(req, Stranger(), num_kv_blocks=100, block_size=16)
    with pytest.raises(ValueError, match=r"Stranger chose request .* not running"):
        _drive(eng)


def test_drain_and_gaps_are_part_of_every_engine() -> None:
    """A continuous engine drains as a no-op and reports one ITL histogram per tier."""
    req = RequestArrays.build([0.0, 0.1], [20, 30], [5, 6], tiers=TIERS, tier=[0, 1])
    eng = _engine(req, make_scheduler("fcfs", {}), num_kv_blocks=100)
    _drive(eng)
    before = eng.next_event_at()
    eng.drain(1.0)
    assert before is None and eng.next_event_at() is None
    assert [h.count for h in eng.gaps] == [4, 5]
    assert all(math.isfinite(h.mean_s) for h in eng.gaps)


def test_a_finished_engine_is_freed_without_the_cycle_collector() -> None:
    """No reference cycle (engine, planner, state): dropping an engine frees its state at once."""
    req = RequestArrays.build(np.linspace(0.0, 1.0, 30), [300] * 30, [40] * 30)
    gc.collect()
    gc.disable()
    try:
        eng = _engine(req, make_scheduler("sarathi", {}), num_kv_blocks=80)
        _drive(eng)
        assert eng.stats().num_preemptions > 0
        del eng
        # what the collector would have to free, kept for a look: none of the engine's own
        # objects (a thread left by another test may add garbage of its own meanwhile)
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        ours = {type(o).__qualname__ for o in gc.garbage
                if type(o).__module__.startswith("sincere.")}  # fmt: skip
        assert ours == set()
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
