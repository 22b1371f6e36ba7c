"""The continuous-batching engine against a step-by-step reference and its invariants."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sincere.core.errors import ConfigError
from sincere.core.records import RecordArrays
from sincere.core.request import RequestArrays, Tier
from sincere.engine.base import Engine
from sincere.engine.continuous import ContinuousEngine, EngineLimits
from sincere.perf.base import Batch, StepTimeBase
from sincere.policy.schedulers import SCHEDULERS, make_scheduler


class Affine(StepTimeBase):
    """5 ms + 0.1 ms per prompt token + 0.2 ms per decode + 10 ns per context token."""

    def iteration_s(self, batch: Batch) -> float:
        return (
            0.005
            + 1e-4 * batch.prefill_tokens
            + 2e-4 * batch.num_decode_seqs
            + 1e-8 * batch.decode_ctx_tokens
        )


def _engine(
    req: RequestArrays, scheduler: str = "fcfs", params: dict[str, object] | None = None, **lim: int
) -> ContinuousEngine:
    limits = EngineLimits(**{"num_kv_blocks": 1 << 20, **lim})
    records = RecordArrays.empty(len(req), ["e0"])
    sched = make_scheduler(scheduler, dict(params or {}), predictor=Affine())
    return ContinuousEngine("e0", req, records, 0, Affine(), sched, limits)


def drive(
    engine: Engine,
    check: Callable[[], None] | None = None,
    arrivals: Sequence[float] | None = None,
) -> None:
    """Feed every request at its arrival (``arrivals``; default a continuous engine's own
    requests') and advance the engine until it is idle."""
    if arrivals is None:
        assert isinstance(engine, ContinuousEngine)
        arrivals = engine.requests.arrival_at.tolist()
    nxt = 0
    while True:
        at = engine.next_event_at()
        if nxt < len(arrivals) and (at is None or arrivals[nxt] <= at):
            engine.add(nxt, float(arrivals[nxt]))
            nxt += 1
        elif at is not None:
            engine.advance(at)
        else:
            break
        if check is not None:
            check()


def reference(req: RequestArrays, budget: int, max_seqs: int) -> np.ndarray:
    """Finish times from a plain one-iteration-at-a-time FCFS loop (no KV pressure)."""
    model = Affine()
    n = len(req)
    prompt, target = req.prompt_tokens.tolist(), req.output_tokens.tolist()
    done, made = [0] * n, [0] * n
    finish = np.full(n, np.nan)
    running: list[int] = []
    nxt, t = 0, 0.0
    while nxt < n or running:
        if not running and nxt < n and req.arrival_at[nxt] > t:
            t = float(req.arrival_at[nxt])
        while nxt < n and req.arrival_at[nxt] <= t:
            nxt_waiting = nxt
            nxt += 1
            running.append(-1 - nxt_waiting)  # negative: still waiting
        decode = [i for i in running if i >= 0 and done[i] == prompt[i]]
        left = budget - len(decode)
        chunks = []
        for pos, i in enumerate(running):
            if left <= 0:
                break
            if i < 0:
                if sum(1 for j in running if j >= 0) >= max_seqs:
                    break
                i = -1 - i
                running[pos] = i
            if done[i] < prompt[i]:
                c = min(prompt[i] - done[i], left)
                chunks.append((c, done[i], i))
                left -= c
        batch = Batch.of([(c, d) for c, d, _ in chunks], [prompt[i] + made[i] for i in decode])
        t += model.iteration_s(batch)
        for i in decode:
            made[i] += 1
        for c, _, i in chunks:
            done[i] += c
            made[i] += done[i] == prompt[i]
        for i in [j for j in running if j >= 0 and made[j] == target[j]]:
            finish[i] = t
            running.remove(i)
    return finish


def _workload(seed: int, n: int, rate: float) -> RequestArrays:
    rng = np.random.default_rng(seed)
    return RequestArrays.build(
        np.cumsum(rng.exponential(1 / rate, n)),
        rng.integers(1, 1500, n),
        rng.integers(1, 300, n),
    )


@pytest.mark.parametrize(("budget", "max_seqs", "rate"), [(512, 64, 8.0), (2048, 8, 20.0)])
def test_closed_form_runs_match_step_by_step_reference(
    budget: int, max_seqs: int, rate: float
) -> None:
    """Jumping over decode runs gives the same finish times as one event per iteration."""
    req = _workload(1, 300, rate)
    eng = _engine(req, max_num_batched_tokens=budget, max_num_seqs=max_seqs)
    drive(eng)
    np.testing.assert_allclose(eng.records.finished_at, reference(req, budget, max_seqs), rtol=1e-9)
    assert eng.stats().num_generated_tokens == int(req.output_tokens.sum())


def test_single_request_timeline_is_exact() -> None:
    """One request: chunked prefill iterations, then closed-form decode steps."""
    req = RequestArrays.build([1.0], [1000], [5])
    eng = _engine(req, max_num_batched_tokens=512)
    drive(eng)
    model = Affine()
    first = model.iteration_s(Batch.of([(512, 0)])) + model.iteration_s(Batch.of([(488, 512)]))
    rec = eng.records
    assert rec.first_scheduled_at[0] == 1.0
    assert rec.first_token_at[0] == pytest.approx(1.0 + first)
    decode = sum(model.iteration_s(Batch.of(decode=[1000 + k])) for k in range(1, 5))
    assert rec.finished_at[0] == pytest.approx(1.0 + first + decode)
    assert rec.output_tokens[0] == 5


def test_max_tokens_caps_generation() -> None:
    """A request generates min(output_tokens, max_tokens) tokens."""
    req = RequestArrays.build([0.0], [10], [50], max_tokens=[7])
    eng = _engine(req)
    drive(eng)
    assert eng.records.output_tokens[0] == 7


def test_request_that_can_never_fit_is_rejected() -> None:
    """A request larger than the whole KV cache is rejected with a reason."""
    req = RequestArrays.build([0.0, 0.5], [100, 10], [100, 5])
    eng = _engine(req, num_kv_blocks=8, block_size=16)
    drive(eng)
    assert eng.records.rejected.tolist() == [True, False]
    assert eng.records.reject_reason[0] == "kv_capacity"
    assert not np.isnan(eng.records.finished_at[1])


def test_bad_limits_are_named() -> None:
    """Invalid engine limits raise ConfigError naming the limit."""
    with pytest.raises(ConfigError, match="max_num_seqs"):
        EngineLimits(num_kv_blocks=10, max_num_seqs=0)


def test_preemption_recomputes_and_still_finishes() -> None:
    """Under KV pressure sequences are preempted, recomputed, and all complete."""
    req = _workload(3, 60, 50.0)
    eng = _engine(req, num_kv_blocks=200, block_size=16, max_num_seqs=32)
    drive(eng)
    rec = eng.records
    assert eng.stats().num_preemptions > 0
    assert int(rec.num_preemptions.sum()) == eng.stats().num_preemptions
    assert not rec.rejected.any() and not np.isnan(rec.finished_at).any()
    np.testing.assert_array_equal(rec.output_tokens, req.output_tokens)


TIERS = (Tier("i", ttft_s=2.0, tbt_s=0.1), Tier("b", ttlt_s=60.0, tbt_s=0.4))


@st.composite
def workloads(draw: st.DrawFn) -> tuple[RequestArrays, str, int, int, int]:
    n = draw(st.integers(1, 40))
    gaps = draw(st.lists(st.floats(0.0, 0.5), min_size=n, max_size=n))
    prompts = draw(st.lists(st.integers(1, 400), min_size=n, max_size=n))
    outs = draw(st.lists(st.integers(1, 200), min_size=n, max_size=n))
    tiers = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    req = RequestArrays.build(
        np.cumsum(gaps), prompts, outs, tiers=TIERS, tier=tiers, priority=tiers
    )
    sched = draw(st.sampled_from(SCHEDULERS.names()))
    return (
        req,
        sched,
        draw(st.integers(8, 80)),
        draw(st.integers(1, 16)),
        draw(st.integers(64, 600)),
    )


@given(workloads())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_invariants_hold_for_any_workload(case: tuple[RequestArrays, str, int, int, int]) -> None:
    """Every request ends done or rejected, KV blocks are conserved, no early tokens."""
    req, sched, blocks, max_seqs, budget = case
    eng = _engine(
        req, sched, num_kv_blocks=blocks, block_size=8, max_num_seqs=max_seqs,
        max_num_batched_tokens=budget,
    )  # fmt: skip

    def conserved() -> None:
        held = sum(eng.seq_blocks(i) for i in range(len(req)))
        assert eng.used_blocks == held <= blocks

    drive(eng, conserved)
    rec = eng.records
    finished = ~np.isnan(rec.finished_at)
    assert np.all(finished ^ rec.rejected)
    np.testing.assert_array_equal(rec.output_tokens[finished], req.output_tokens[finished])
    model = Affine()
    for i in np.flatnonzero(finished):
        prefill_alone = model.iteration_s(Batch.of([(int(req.prompt_tokens[i]), 0)]))
        assert rec.first_scheduled_at[i] >= req.arrival_at[i]
        assert rec.first_token_at[i] - rec.first_scheduled_at[i] >= prefill_alone * (1 - 1e-9)
        assert rec.finished_at[i] >= rec.first_token_at[i]
    assert eng.used_blocks == 0 and eng.num_running == 0


def _load_by_sequence(eng: ContinuousEngine) -> tuple[int, int]:
    """Remaining and cached tokens of the running sequences, summed one by one."""
    st_, caps = eng.state, eng.requests.max_tokens
    remaining = sum(int(caps[i]) for i in st_.pre) + sum(
        int(caps[i]) - st_.held[i].target + st_.held[i].finish_step - st_.step for i in st_.offset
    )
    ctx = st_.offset_sum + st_.step * len(st_.offset) + sum(st_.pre.values())
    return remaining, ctx


@given(workloads(), st.integers(1, 250))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_load_running_sums_match_the_sequences(
    case: tuple[RequestArrays, str, int, int, int], cap: int
) -> None:
    """load()'s O(1) remaining and cached tokens equal sums over the running sequences."""
    req, sched, blocks, max_seqs, budget = case
    req.max_tokens[::2] = cap  # some caps below the output, some above
    eng = _engine(
        req, sched, num_kv_blocks=blocks, block_size=8, max_num_seqs=max_seqs,
        max_num_batched_tokens=budget,
    )  # fmt: skip
    eng.configure(exact_loads=True)

    def same() -> None:
        load = eng.load()
        assert (load.running_remaining_tokens, load.running_ctx_tokens) == _load_by_sequence(eng)

    drive(eng, same)
    assert _load_by_sequence(eng) == (0, 0) == (eng.state.pre_cap_sum, eng.state.pre_done_sum)


def test_queue_sizes_are_the_load_reports_fields() -> None:
    """queue_sizes() is (num_running, num_waiting, waiting_prefill_tokens) of load()."""
    eng = _engine(_workload(3, 200, 40.0), max_num_seqs=8, max_num_batched_tokens=512)
    seen: list[tuple[int, int, int]] = []

    def check() -> None:
        load = eng.load()
        sizes = eng.queue_sizes()
        assert sizes == (load.num_running, load.num_waiting, load.waiting_prefill_tokens)
        seen.append(sizes)

    drive(eng, check)
    assert any(r and w and t for r, w, t in seen)  # some moment had all three non-zero
