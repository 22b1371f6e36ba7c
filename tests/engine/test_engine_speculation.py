"""Speculative decoding in the continuous engine: tokens per step, pricing, KV, counters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sincere.catalog import get_accelerator, get_model
from sincere.core.errors import ConfigError
from sincere.core.records import RecordArrays
from sincere.core.request import RequestArrays
from sincere.engine.build import build_engine
from sincere.engine.continuous import ContinuousEngine, EngineLimits
from sincere.engine.spec import ContinuousConfig, DeploymentSpec
from sincere.engine.speculation import SpeculationConfig, Speculator, build_speculator
from sincere.perf.base import Batch, Deployment
from sincere.perf.factory import make_step_model
from sincere.perf.speculation import SpeculativeDecode
from sincere.policy.schedulers import SCHEDULERS, make_scheduler

DEPLOYMENT = Deployment(get_model("llama-3.1-8b"), get_accelerator("H100-SXM"))
ROOFLINE = make_step_model("roofline", DEPLOYMENT, {})
LAYERS = DEPLOYMENT.model.num_layers
PROMPT = 100


def _speculator(seed: int = 0, **cfg: Any) -> Speculator:
    config = SpeculationConfig(**{"method": "eagle", "num_draft_tokens": 3, **cfg})
    return build_speculator(config, ROOFLINE, DEPLOYMENT, None, np.random.default_rng(seed))


def _engine(
    req: RequestArrays, spec: Speculator | None, num_kv_blocks: int = 1 << 20, block_size: int = 16
) -> ContinuousEngine:
    records = RecordArrays.empty(len(req), ["e0"])
    limits = EngineLimits(num_kv_blocks=num_kv_blocks, block_size=block_size)
    sched = make_scheduler("fcfs", {}, predictor=ROOFLINE)
    return ContinuousEngine("e0", req, records, 0, ROOFLINE, sched, limits, speculator=spec)


def _run(
    engine: ContinuousEngine,
    max_events: int = 100_000,
    after_each: Callable[[], None] | None = None,
) -> None:
    """Add every request at its arrival and advance until idle; ``after_each`` (if
    given) runs after every arrival and every advance."""
    arrivals = engine.requests.arrival_at.tolist()
    nxt = 0
    for _ in range(max_events):
        at = engine.next_event_at()
        if nxt < len(arrivals) and (at is None or arrivals[nxt] <= at):
            engine.add(nxt, arrivals[nxt])
            nxt += 1
        elif at is not None:
            engine.advance(at)
        else:
            return
        if after_each is not None:
            after_each()
    raise AssertionError("the engine did not go idle")


def _one(output: int, **spec: Any) -> ContinuousEngine:
    req = RequestArrays.build([0.0], [PROMPT], [output])
    engine = _engine(req, _speculator(**spec))
    _run(engine)
    return engine


def _prefill_s(decode: SpeculativeDecode) -> float:
    """The prompt's iteration: the target's, and the drafter's pass over the prompt."""
    batch = Batch.of(prefill=[(PROMPT, 0)])
    return ROOFLINE.iteration_s(batch) + decode.draft_prefill_s(batch)


def test_full_acceptance_gives_k_plus_one_tokens_per_step_priced_as_draft_and_verify() -> None:
    """Acceptance 1, k = 3: 21 tokens are the prefill's one and 5 steps of 4, each step
    priced as SpeculativeDecode's verify of 4 positions plus the draft."""
    engine = _one(21, acceptance=1.0)
    decode = SpeculativeDecode(ROOFLINE, _speculator(acceptance=1.0).params, LAYERS)
    end = _prefill_s(decode)
    for j in range(5):  # context: the prompt and the tokens made, plus the one computed
        ctx = PROMPT + 1 + 4 * j
        assert decode.step_s(1, ctx) == decode.draft_s(1, ctx) + decode.verify_s(1, ctx)
        end += decode.step_s(1, ctx)
    assert engine.records.output_tokens[0] == 21
    assert engine.records.finished_at[0] == pytest.approx(end, rel=1e-12)
    stats = engine.stats()
    assert stats.num_steps == 6
    assert stats.num_generated_tokens == 21
    assert stats.spec_decode is not None
    assert (stats.spec_decode.num_drafts, stats.spec_decode.num_draft_tokens) == (5, 15)
    assert stats.spec_decode.num_accepted_tokens == 15
    assert stats.spec_decode.accepted_per_pos == (5, 5, 5)


def test_zero_acceptance_gives_one_token_per_step_at_the_speculative_price() -> None:
    """Acceptance 0: one token per step, each step still paying draft and verify."""
    engine = _one(10, acceptance=0.0)
    decode = SpeculativeDecode(ROOFLINE, _speculator(acceptance=0.0).params, LAYERS)
    end = _prefill_s(decode) + sum(decode.step_s(1, PROMPT + 1 + j) for j in range(9))
    assert engine.records.finished_at[0] == pytest.approx(end, rel=1e-12)
    assert engine.stats().num_steps == 10
    spec = engine.stats().spec_decode
    assert spec is not None and spec.num_drafts == 9 and spec.num_accepted_tokens == 0


def test_mean_tokens_per_step_matches_the_closed_form() -> None:
    """A fixed rate p = 0.6 with k = 3: tokens per sequence-step average
    (1 - p^4) / (1 - p) = 2.176 within 0.04 (about 3 standard errors of ~9,000 draws), and
    position i is accepted at p^i; the tokens the requests made are those the engine counts."""
    p = 0.6
    req = RequestArrays.build([0.0] * 8, [PROMPT] * 8, [2500] * 8)
    engine = _engine(req, _speculator(seed=7, acceptance=p))
    _run(engine)
    spec = engine.stats().spec_decode
    assert spec is not None and spec.num_drafts > 8000
    mean = (spec.num_drafts + spec.num_accepted_tokens) / spec.num_drafts
    assert mean == pytest.approx((1 - p**4) / (1 - p), abs=0.04)
    for i, accepted in enumerate(spec.accepted_per_pos):
        assert accepted / spec.num_drafts == pytest.approx(p ** (i + 1), abs=0.02)
    assert engine.stats().num_generated_tokens == int(engine.records.output_tokens.sum())
    assert (engine.records.output_tokens == 2500).all()


def test_per_position_rates_are_drawn_along_the_chain() -> None:
    """Rates (1, 0) with k = 2: the first draft is always kept, the second never: 2 tokens
    a step."""
    engine = _one(11, acceptance=[1.0, 0.0], num_draft_tokens=2)
    spec = engine.stats().spec_decode
    assert spec is not None
    assert spec.accepted_per_pos == (5, 0)
    assert engine.stats().num_steps == 1 + 5


def test_above_max_batch_the_step_does_not_speculate() -> None:
    """Three decoding sequences over max_batch 2: plain decode steps (no draft, one token,
    the target's price), the finish times of the engine without speculation but for the
    drafter's pass over the three prompts; with max_batch 3 the same batch speculates."""
    req = RequestArrays.build([0.0] * 3, [PROMPT] * 3, [6] * 3)
    speculator = _speculator(acceptance=1.0, max_batch=2)
    off = _engine(req, speculator)
    _run(off)
    plain = _engine(req, None)
    _run(plain)
    decode = SpeculativeDecode(ROOFLINE, speculator.params, LAYERS)
    drafter = decode.draft_prefill_s(Batch.of(prefill=[(PROMPT, 0)] * 3))
    assert drafter > 0.0
    assert np.allclose(off.records.finished_at, plain.records.finished_at + drafter, rtol=1e-12)
    spec = off.stats().spec_decode
    assert spec is not None and spec.num_drafts == 0
    assert off.stats().num_steps == plain.stats().num_steps == 6
    on = _engine(req, _speculator(acceptance=1.0, max_batch=3))
    _run(on)
    assert on.stats().num_steps == 1 + 2  # 5 tokens after the first: steps of 4, then 1


def test_a_request_with_two_tokens_left_never_overshoots() -> None:
    """Two tokens left at acceptance 1 and k = 3: one step makes exactly those two."""
    engine = _one(3, acceptance=1.0)
    assert engine.records.output_tokens[0] == 3
    assert engine.stats().num_generated_tokens == 3
    assert engine.stats().num_steps == 2


def test_kv_grows_by_the_accepted_tokens_only() -> None:
    """After one step accepting nothing the cache holds prompt + 1 tokens (rejected
    positions rolled back); accepting everything, prompt + 4."""
    for rate, cached in ((0.0, PROMPT + 1), (1.0, PROMPT + 4)):
        req = RequestArrays.build([0.0], [PROMPT], [50])
        engine = _engine(req, _speculator(acceptance=rate), block_size=1)
        engine.add(0, 0.0)
        while engine.stats().num_steps < 2:  # the prefill, then one decode step
            at = engine.next_event_at()
            assert at is not None
            engine.advance(at)
        assert engine.used_blocks == cached


def _run_within(engine: ContinuousEngine, pool: int) -> None:
    """Run every request (all arrive at 0) to the end, the pool never overdrawn."""
    for i in range(len(engine.requests)):
        engine.add(i, 0.0)
    for _ in range(10_000):
        at = engine.next_event_at()
        if at is None:
            return
        engine.advance(at)
        assert engine.used_blocks <= pool
    raise AssertionError("the engine did not go idle")


def test_the_step_reserves_kv_for_every_verified_position() -> None:
    """Blocks of 1 token, a pool of 2 * prompt + 5, two requests of 3 tokens: without
    speculation both decode at once (at most 2 * 102 tokens); verifying 4 positions each
    needs 208, so one is preempted first."""
    pool = 2 * PROMPT + 5
    req = RequestArrays.build([0.0, 0.0], [PROMPT, PROMPT], [3, 3])
    plain = _engine(req, None, num_kv_blocks=pool, block_size=1)
    _run_within(plain, pool)
    assert plain.stats().num_preemptions == 0
    spec = _engine(req, _speculator(acceptance=1.0), num_kv_blocks=pool, block_size=1)
    _run_within(spec, pool)
    assert spec.stats().num_preemptions >= 1
    assert (spec.records.output_tokens == 3).all()


def test_a_lone_sequence_near_the_pool_size_is_not_preempted_for_its_lookahead() -> None:
    """One request filling the pool (prompt + output - 1 = 139 of 140 blocks, 1 held back
    by the watermark): it finishes; reserving 4 positions near its end would preempt it
    for ever."""
    req = RequestArrays.build([0.0], [PROMPT], [40])
    engine = _engine(req, _speculator(acceptance=0.5), num_kv_blocks=140, block_size=1)
    _run_within(engine, 140)
    assert engine.records.output_tokens[0] == 40
    assert engine.stats().num_preemptions == 0


def test_same_seed_same_result_and_another_seed_differs() -> None:
    """Draws come from the engine's seeded generator."""
    req = RequestArrays.build([0.0, 0.01, 0.02], [PROMPT] * 3, [200, 150, 100])

    def finish(seed: int) -> np.ndarray:
        engine = _engine(req, _speculator(seed=seed, acceptance=0.7))
        _run(engine)
        return engine.records.finished_at.copy()

    assert np.array_equal(finish(1), finish(1))
    assert not np.array_equal(finish(1), finish(2))


def _spec(**engine: Any) -> DeploymentSpec:
    return DeploymentSpec(model="llama-3.1-8b", accelerator="H100-SXM", engine=engine)


def _built(spec: DeploymentSpec, rng: np.random.Generator) -> ContinuousEngine:
    req = RequestArrays.build([0.0, 0.0], [PROMPT] * 2, [40, 30], models=("llama-3.1-8b",))
    records = RecordArrays.empty(len(req), ["e0"])
    engine = build_engine(spec, "e0", req, records, 0, rng=rng).engine
    assert isinstance(engine, ContinuousEngine)
    _run(engine)
    return engine


def test_off_by_default_and_the_generator_is_never_drawn_from() -> None:
    """Without ``speculation`` the engine does not speculate and leaves the driver's
    generator untouched (other streams unchanged); with it, it draws."""
    assert ContinuousConfig().speculation is None
    rng = np.random.default_rng(5)
    before = rng.bit_generator.state
    engine = _built(_spec(), rng)
    assert rng.bit_generator.state == before
    assert engine.stats().spec_decode is None
    spec = {"method": "ngram", "num_draft_tokens": 2, "acceptance": 0.5}
    _built(_spec(speculation=spec), rng)
    assert rng.bit_generator.state != before


def test_config_errors_name_the_value_and_what_is_allowed() -> None:
    """Unknown method, rate out of range, draft model with another method, a step model
    that cannot price a draft (CC mode)."""
    with pytest.raises(ValueError, match=r"unknown speculative decoding method.*medusa"):
        SpeculationConfig(method="medusa", acceptance=0.5)
    with pytest.raises(ValueError, match=r"acceptance must be.*\[1\.5\]"):
        SpeculationConfig(method="eagle", acceptance=1.5)
    with pytest.raises(ValueError, match="draft_model names the drafting model"):
        SpeculationConfig(method="eagle", acceptance=0.5, draft_model="tinyllama-1.1b")
    with pytest.raises(ValueError, match=r"needs its acceptance.*acceptance: 0\.7"):
        SpeculationConfig(method="eagle")
    spec = DeploymentSpec(
        model="llama-3.1-8b",
        accelerator="H100-SXM",
        cc=True,
        engine={"speculation": {"method": "mtp"}},
    )
    with pytest.raises(ConfigError, match=r"engine\.speculation.*splits its iterations"):
        _built(spec, np.random.default_rng(0))


def test_draft_model_and_mtp_defaults_build() -> None:
    """A draft model is priced on its own roofline on the target's GPUs; mtp takes
    DeepSeek's published rate (0.85, one drafted token)."""
    draft = {"method": "draft-model", "draft_model": "tinyllama-1.1b", "acceptance": 0.6}
    engine = _built(_spec(speculation=draft), np.random.default_rng(0))
    assert engine.records.output_tokens.tolist() == [40, 30]
    mtp = SpeculationConfig(method="mtp").params()
    assert (mtp.num_draft_tokens, mtp.acceptance) == (1, (0.85,))


def test_mixed_iteration_prices_the_verify_positions_as_chunks_beside_the_prefill() -> None:
    """A prefill chunk beside speculating decodes: the drafter's pass over the chunk, the
    draft, and one forward holding the chunk and every sequence's k + 1 positions."""
    spec = _speculator(acceptance=0.5)
    model = spec.step_model
    decode = SpeculativeDecode(ROOFLINE, spec.params, LAYERS)
    prefill = Batch.of(prefill=[(300, 0)])
    mixed = Batch(1, 300, 0, prefill.prefill_attn_pairs, 4, 4 * 500)
    drafter = decode.draft_prefill_s(prefill)
    want = drafter + decode.draft_s(4, 2000) + decode.verify_with_s(4, 2000, prefill)
    assert model.iteration_s(mixed) == want
    assert want > decode.step_s(4, 2000)
    assert decode.verify_with_s(4, 2000, Batch()) == decode.verify_s(4, 2000)


def test_a_sequence_keeps_only_the_accepted_drafts_whose_blocks_are_free() -> None:
    """With one free block of one token left after the step, all-accepted drafts gain a
    single token: the pool is never overdrawn, whatever planned the step."""
    req = RequestArrays.build([0.0], [PROMPT], [50])
    spec = _speculator(acceptance=1.0)
    engine = _engine(req, spec, block_size=1)
    engine.add(0, 0.0)
    while engine.stats().num_steps < 2:
        at = engine.next_event_at()
        assert at is not None
        engine.advance(at)
    st = engine.state
    assert engine.used_blocks == PROMPT + 4
    st.step += 1  # the next decode step ended: one token each, then the drafts
    st.num_blocks = engine.used_blocks + 1
    assert spec.verified(st, 1) == [0]
    assert engine.used_blocks == st.num_blocks


@st.composite
def speculating_workloads(draw: st.DrawFn) -> tuple[RequestArrays, ContinuousEngine, int]:
    """Small random workloads on a tight KV pool, any scheduler, any speculation."""
    n = draw(st.integers(1, 30))
    gaps = draw(st.lists(st.floats(0.0, 0.05), min_size=n, max_size=n))
    prompts = draw(st.lists(st.integers(1, 300), min_size=n, max_size=n))
    outs = draw(st.lists(st.integers(1, 150), min_size=n, max_size=n))
    req = RequestArrays.build(np.cumsum(gaps), prompts, outs)
    blocks = draw(st.integers(8, 80))
    limits = EngineLimits(
        num_kv_blocks=blocks, block_size=8, max_num_seqs=draw(st.integers(1, 16)),
        max_num_batched_tokens=draw(st.integers(64, 600)),
    )  # fmt: skip
    rates = draw(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=4))
    max_batch = draw(st.none() | st.integers(1, 8))
    spec = _speculator(draw(st.integers(0, 3)), acceptance=rates, max_batch=max_batch,
                       num_draft_tokens=len(rates) + draw(st.integers(0, 2)))  # fmt: skip
    name = draw(st.sampled_from(SCHEDULERS.names()))
    params: dict[str, Any] = {"chunk_size": 64} if name == "sarathi" else {}
    sched = make_scheduler(name, params, predictor=ROOFLINE)
    records = RecordArrays.empty(n, ["e0"])
    engine = ContinuousEngine("e0", req, records, 0, ROOFLINE, sched, limits, speculator=spec)
    return req, engine, blocks


@given(speculating_workloads())
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_invariants_hold_while_speculating(
    case: tuple[RequestArrays, ContinuousEngine, int],
) -> None:
    """Every request ends done (with exactly its tokens) or rejected, KV blocks are
    conserved and within the pool, load()'s running sums match the sequences."""
    req, engine, blocks = case
    st_ = engine.state

    def check() -> None:
        held = sum(engine.seq_blocks(i) for i in range(len(req)))
        assert engine.used_blocks == held <= blocks
        remaining = sum(int(req.max_tokens[i]) for i in st_.pre) + sum(
            int(req.max_tokens[i]) - st_.held[i].target + st_.held[i].finish_step - st_.step
            for i in st_.offset
        )
        assert engine.load().running_remaining_tokens == remaining

    _run(engine, after_each=check)
    rec = engine.records
    finished = ~np.isnan(rec.finished_at)
    assert np.all(finished ^ rec.rejected)
    np.testing.assert_array_equal(rec.output_tokens[finished], req.output_tokens[finished])
    assert engine.stats().num_generated_tokens == int(rec.output_tokens[finished].sum())
    assert engine.used_blocks == 0 and engine.num_running == 0
