"""Prefill runs (iterations a view-only policy's plan fixes) change no result."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sincere.core.records import RecordArrays
from sincere.core.request import RequestArrays, Tier
from sincere.engine.continuous import ContinuousEngine, EngineLimits
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


def _run(req: RequestArrays, sched: IterationScheduler, **lim: int) -> ContinuousEngine:
    records = RecordArrays.empty(len(req), ["e0"])
    eng = ContinuousEngine("e0", req, records, 0, Ridge(), sched, EngineLimits(**lim))
    arrivals, k = req.arrival_at, 0
    while True:
        at = eng.next_event_at()
        if k < len(arrivals) and (at is None or arrivals[k] <= at):
            eng.add(k, float(arrivals[k]))
            k += 1
        elif at is not None:
            eng.advance(at)
        else:
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
