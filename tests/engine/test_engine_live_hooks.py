"""Hooks a live driver needs: lazy request reads, a per-iteration token hook, aborts."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sincere.core.records import RecordArrays
from sincere.core.request import RequestArrays, Tier
from sincere.engine.continuous import ContinuousEngine, EngineLimits
from sincere.engine.request_level import RequestLevelEngine
from sincere.perf.base import Batch, StepTimeBase
from sincere.policy.batching import make_strategy
from sincere.policy.schedulers import make_scheduler

TIERS = (Tier("a", ttft_s=1.0), Tier("b", ttft_s=30.0))
VIEW_ONLY = ["fcfs", "priority", "edf", "srpf", "sarathi"]


class Ridge(StepTimeBase):
    """A max of two affine lines, like the roofline (compute vs memory)."""

    def iteration_s(self, batch: Batch) -> float:
        compute = 2e-5 * batch.num_tokens + 1e-9 * batch.prefill_attn_pairs
        memory = 0.004 + 3e-8 * (batch.decode_ctx_tokens + batch.prefill_ctx_tokens)
        return 0.001 + max(compute, memory)

    def request_batch_s(self, prompt_tokens: Sequence[int], output_tokens: int) -> float:
        return 0.01 * len(prompt_tokens) + 0.002 * output_tokens


def _engine(req: RequestArrays, sched: str, **lim: int) -> ContinuousEngine:
    records = RecordArrays.empty(len(req), ["e0"])
    params: dict[str, Any] = {"chunk_size": 64} if sched == "sarathi" else {}
    scheduler = make_scheduler(sched, params, predictor=Ridge())
    return ContinuousEngine("e0", req, records, 0, Ridge(), scheduler, EngineLimits(**lim))


def _drive(
    eng: Any,
    req: RequestArrays,
    aborts: dict[int, float] | None = None,
    after_abort: Callable[[bool], None] | None = None,
) -> list[int]:
    """Add each request at its arrival, abort as asked, advance until idle; return done.

    ``after_abort(present)`` runs after every abort with what ``abort`` returned.
    """
    arrivals = req.arrival_at.tolist()
    pending = sorted((at, i) for i, at in (aborts or {}).items())
    done: list[int] = []
    k = 0

    def abort(i: int, at: float) -> None:
        present = eng.abort(i, at)
        if after_abort is not None:
            after_abort(present)

    while True:
        at = eng.next_event_at()
        nxt_abort = pending[0][0] if pending else None
        if k < len(arrivals) and (at is None or arrivals[k] <= at):
            if nxt_abort is not None and nxt_abort < arrivals[k]:
                abort(pending.pop(0)[1], nxt_abort)
                continue
            eng.add(k, arrivals[k])
            k += 1
        elif nxt_abort is not None and (at is None or nxt_abort < at):
            abort(pending.pop(0)[1], nxt_abort)
        elif at is not None:
            done.extend(eng.advance(at))
        else:
            return done


@st.composite
def cases(draw: st.DrawFn) -> tuple[RequestArrays, str, dict[str, int]]:
    n = draw(st.integers(2, 24))
    gaps = draw(st.lists(st.floats(0.0, 0.05), min_size=n, max_size=n))
    prompts = draw(st.lists(st.integers(1, 300), min_size=n, max_size=n))
    outs = draw(st.lists(st.integers(1, 60), min_size=n, max_size=n))
    tiers = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    req = RequestArrays.build(
        np.cumsum(gaps), prompts, outs, tiers=TIERS, tier=tiers, priority=tiers
    )
    lim = {
        "num_kv_blocks": draw(st.integers(30, 400)),
        "max_num_seqs": draw(st.integers(1, 16)),
        "max_num_batched_tokens": draw(st.integers(16, 256)),
        "block_size": draw(st.sampled_from([4, 16])),
    }
    return req, draw(st.sampled_from(VIEW_ONLY)), lim


def _placeholder(n: int) -> RequestArrays:
    """A live driver's preallocated columns: every slot a 1-token placeholder at t=0."""
    return RequestArrays.build(np.zeros(n), [1] * n, [1] * n, tiers=TIERS)


def _fill(slots: RequestArrays, src: RequestArrays, i: int) -> None:
    """Copy request ``i``'s fields from ``src`` into the preallocated ``slots`` in place."""
    for name in ("arrival_at", "prompt_tokens", "output_tokens", "max_tokens", "tier", "priority"):
        getattr(slots, name)[i] = getattr(src, name)[i]


def _drive_filling(eng: Any, slots: RequestArrays, src: RequestArrays) -> None:
    """Like ``_drive`` but each slot is filled just before its ``add``."""
    arrivals = src.arrival_at.tolist()
    k = 0
    while True:
        at = eng.next_event_at()
        if k < len(arrivals) and (at is None or arrivals[k] <= at):
            _fill(slots, src, k)
            eng.add(k, arrivals[k])
            k += 1
        elif at is not None:
            eng.advance(at)
        else:
            return


def _assert_same(a: RecordArrays, b: RecordArrays) -> None:
    for name in ("first_scheduled_at", "first_token_at", "finished_at"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-9, atol=0)
    np.testing.assert_array_equal(a.output_tokens, b.output_tokens)
    np.testing.assert_array_equal(a.num_preemptions, b.num_preemptions)
    assert a.reject_reason == b.reject_reason


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_slots_filled_after_construction_give_the_same_records(
    case: tuple[RequestArrays, str, dict[str, int]],
) -> None:
    """A continuous engine reads request fields at add() time, so late-filled slots work."""
    req, sched, lim = case
    ref = _engine(req, sched, **lim)
    _drive(ref, req)
    slots = _placeholder(len(req))
    live = _engine(slots, sched, **lim)
    _drive_filling(live, slots, req)
    _assert_same(live.records, ref.records)


def test_request_level_engine_reads_slots_lazily() -> None:
    """The request-level engine also reads token counts at batch time, not construction."""
    req = RequestArrays.build([0.0, 0.1, 0.2, 3.0], [10, 20, 30, 40], [5, 9, 3, 7])
    req.max_tokens[1] = 4

    def engine(r: RequestArrays) -> RequestLevelEngine:
        records = RecordArrays.empty(len(r), ["e0"])
        strategy = make_strategy("fcfs", sla_s=60.0)
        return RequestLevelEngine("e0", r, records, 0, {"default": Ridge()}, strategy)

    ref = engine(req)
    _drive(ref, req)
    slots = RequestArrays.build(np.zeros(4), [1] * 4, [1] * 4)
    live = engine(slots)
    _drive_filling(live, slots, req)
    _assert_same(live.records, ref.records)
    assert live.records.output_tokens.tolist() == [5, 4, 3, 7]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_token_hook_counts_every_token_and_changes_nothing(
    case: tuple[RequestArrays, str, dict[str, int]],
) -> None:
    """on_tokens sees each request's tokens (first at first_token_at); records stay exact."""
    req, sched, lim = case
    ref = _engine(req, sched, **lim)
    _drive(ref, req)
    eng = _engine(req, sched, **lim)
    counts: Counter[int] = Counter()
    first: dict[int, float] = {}
    times: list[float] = []

    def on_tokens(at: float, positions: list[int]) -> None:
        times.append(at)
        for i in positions:
            counts[i] += 1
            first.setdefault(i, at)

    eng.on_tokens = on_tokens
    _drive(eng, req)
    _assert_same(eng.records, ref.records)
    ok = ~eng.records.rejected
    produced = np.array([counts[i] for i in range(len(req))])
    np.testing.assert_array_equal(produced[ok], eng.records.output_tokens[ok])
    for i in np.flatnonzero(ok).tolist():
        assert first[i] == eng.records.first_token_at[i]
    assert times == sorted(times) and len(times) == eng.stats().num_steps


def test_token_hook_lists_decodes_then_first_tokens() -> None:
    """Within one iteration, decoding sequences come first, then new first tokens."""
    req = RequestArrays.build([0.0, 0.0], [8, 8], [3, 2])
    eng = _engine(req, "fcfs", num_kv_blocks=100, max_num_batched_tokens=9)
    calls: list[list[int]] = []
    eng.on_tokens = lambda at, positions: calls.append(list(positions))
    _drive(eng, req)
    # iteration 1: prefill of 0 (8 tokens) + 1 token of 1; 2: decode 0 + rest of 1's prompt
    assert calls[:3] == [[0], [0, 1], [0, 1]]


@st.composite
def abort_cases(draw: st.DrawFn) -> tuple[RequestArrays, str, dict[str, int], dict[int, float]]:
    req, sched, lim = draw(cases())
    horizon = float(req.arrival_at[-1]) + 0.5
    victims = draw(st.lists(st.integers(0, len(req) - 1), unique=True, max_size=len(req)))
    aborts = {i: draw(st.floats(float(req.arrival_at[i]), horizon)) for i in victims}
    return req, sched, lim, aborts


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(abort_cases(), st.booleans())
def test_aborts_free_their_blocks_and_are_reported(
    case: tuple[RequestArrays, str, dict[str, int], dict[int, float]], live: bool
) -> None:
    """After aborts every KV block comes back; aborted requests are rejected 'aborted'."""
    req, sched, lim, aborts = case
    eng = _engine(req, sched, **lim)
    if live:
        eng.on_tokens = lambda at, positions: None
    done = _drive(eng, req, aborts)
    assert eng.used_blocks == 0 and eng.num_running == 0 and eng.num_waiting == 0
    assert sorted(done) == list(range(len(req)))
    rec = eng.records
    for i in range(len(req)):
        if rec.reject_reason[i] == "aborted":
            assert i in aborts and np.isnan(rec.finished_at[i])
            assert rec.output_tokens[i] < req.output_tokens[i]
        elif not rec.rejected[i]:
            assert rec.output_tokens[i] == req.output_tokens[i]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(abort_cases())
def test_blocks_held_match_running_sequences_across_aborts(
    case: tuple[RequestArrays, str, dict[str, int], dict[int, float]],
) -> None:
    """At every step the pool's used blocks equal the sum over running sequences."""
    req, sched, lim, aborts = case
    eng = _engine(req, sched, **lim)
    seen: defaultdict[str, int] = defaultdict(int)

    def check_blocks(present: bool) -> None:
        seen["present" if present else "absent"] += 1
        held = sum(eng.seq_blocks(j) for j in [*eng.prefilling(), *eng.decoding()])
        assert eng.used_blocks == held

    _drive(eng, req, aborts, after_abort=check_blocks)
    assert sum(seen.values()) == len(aborts)


def test_abort_of_unknown_or_finished_request_is_false() -> None:
    """abort() returns False for a request never added or already finished."""
    req = RequestArrays.build([0.0, 0.0], [8, 8], [2, 2])
    eng = _engine(req, "fcfs", num_kv_blocks=100)
    assert eng.abort(1, 0.0) is False
    eng.add(0, 0.0)
    eng.add(1, 0.0)
    assert eng.abort(1, 0.0) is True
    assert eng.abort(1, 0.0) is False
    done: list[int] = []
    while (at := eng.next_event_at()) is not None:
        done.extend(eng.advance(at))
    assert sorted(done) == [0, 1]
    assert eng.records.reject_reason == [None, "aborted"]
    assert eng.abort(0, 1.0) is False
