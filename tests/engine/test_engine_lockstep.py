"""Attention ranks stepping together (sincere.engine.lockstep): a rank's prefill holds the
other ranks' decodes, requests spread as vLLM's front end spreads them, an idle rank joins
at the group's next boundary; by hand on the toy split step of the lockstep timing tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sincere.core.errors import ConfigError
from sincere.core.records import RecordArrays
from sincere.core.request import RequestArrays
from sincere.engine.continuous import ContinuousEngine, EngineLimits
from sincere.engine.lockstep import LockstepGroup, piece_batch
from sincere.perf.base import Batch
from sincere.perf.execution import PRESETS, ExecutedStepModel, ExecutionParams, execution_params
from sincere.perf.lockstep import LockstepTiming
from sincere.policy.schedulers import make_scheduler

from ..perf.test_perf_lockstep import MS, Split
from .test_engine_continuous import drive as run

LIMITS = EngineLimits(num_kv_blocks=1 << 20, max_num_batched_tokens=1000)


def _group(req: RequestArrays, ranks: int = 2) -> LockstepGroup:
    records = RecordArrays.empty(len(req), ["g"])
    step = Split(ranks)
    engines = [
        ContinuousEngine("g", req, records, 0, step, make_scheduler("fcfs", {}), LIMITS)
        for _ in range(ranks)
    ]
    return LockstepGroup("g", engines, LockstepTiming(step, ranks))


def drive(
    group: LockstepGroup, arrivals: list[float], check: Callable[[], None] | None = None
) -> RecordArrays:
    """Every request at its arrival, the group advanced until idle: its records."""
    run(group, check, arrivals)
    return group.ranks[0].records


def test_requests_spread_over_the_ranks_by_vllms_score() -> None:
    """Two requests at once: the first goes to rank 0, the second to rank 1 (rank 0 has one
    waiting, score 4). They prefill in one group iteration: dense 1 ms + 10 µs x 100 on
    each, experts 50 µs x 200 tokens: 12 ms, and both first tokens come at its end."""
    req = RequestArrays.build([0.0, 0.0], [100, 100], [1, 1])
    group = _group(req)
    rec = drive(group, [0.0, 0.0])
    assert rec.first_token_at[0] == pytest.approx(12 * MS)
    assert rec.first_token_at[1] == pytest.approx(12 * MS)
    assert group.stats().num_steps == 1
    assert group.stats().busy_s == pytest.approx(12 * MS)
    assert list(rec.instance) == [0, 0]


def test_a_prefill_on_one_rank_holds_the_other_ranks_decodes() -> None:
    """A (10-token prompt, 4 tokens) starts alone on rank 0: prefill 1.1 + 0.5 = 1.6 ms.
    B (500-token prompt) arrives at 1 ms for rank 1, idle while the group runs: it waits
    for the boundary at 1.6 ms and prefills there beside A's first decode: dense 1 ms +
    5 ms (B's 500 tokens), experts of 501 tokens (251 a rank, 25.1 ms): 31.1 ms. A's
    decodes after that run beside B's: 1 ms + 10 µs x 1 + 50 µs x 2 = 1.11 ms each."""
    req = RequestArrays.build([0.0, 0.001], [10, 500], [4, 3])
    group = _group(req)
    rec = drive(group, [0.0, 0.001])
    prefill_a = 1.0 + 0.1 + 0.5
    joint = 1.0 + 5.0 + 0.05 * 502  # the group's 501 tokens priced as 251 a rank
    assert rec.first_token_at[0] == pytest.approx(prefill_a * MS)
    assert rec.first_token_at[1] == pytest.approx((prefill_a + joint) * MS)
    # A's 3 decodes: one held by B's prefill, two beside B's decodes
    assert rec.finished_at[0] == pytest.approx((prefill_a + joint + 2 * 1.11) * MS)
    # B's 2 decodes beside A's, the last alone
    assert rec.finished_at[1] == pytest.approx((prefill_a + joint + 2 * 1.11) * MS)


def test_a_rank_alone_is_priced_without_the_symmetric_doubling() -> None:
    """One request on a group of two: its prefill's experts see its own 100 tokens (7 ms),
    where one rank of a symmetric group would see twice that (12 ms)."""
    req = RequestArrays.build([0.0], [100], [1])
    rec = drive(_group(req), [0.0])
    assert rec.first_token_at[0] == pytest.approx(7 * MS)


def test_every_rank_ends_its_iterations_at_the_group_boundaries() -> None:
    """Four ranks, requests of several lengths arriving over time: at every step every
    working rank's piece starts and ends with the group's, and the group's load is the sum
    of its ranks'."""
    n = 24
    arrivals = [0.002 * k for k in range(n)]
    prompts = [50 + 37 * (k % 7) for k in range(n)]
    outputs = [3 + (k % 5) for k in range(n)]
    req = RequestArrays.build(arrivals, prompts, outputs)
    group = _group(req, ranks=4)

    def same_boundaries() -> None:
        pieces = [rank.piece for rank in group.ranks if rank.piece is not None]
        ends = {p.end_at for p in pieces}
        assert len(ends) <= 1
        if pieces:
            assert group.next_event_at() == pieces[0].end_at
        load = group.load()
        assert load.num_running == sum(r.load().num_running or 0 for r in group.ranks)

    rec = drive(group, arrivals, same_boundaries)
    assert (rec.output_tokens == req.output_tokens).all()
    assert sum(1 for rank in group.ranks if rank.stats().num_generated_tokens) == 4
    assert group.stats().num_generated_tokens == int(req.output_tokens.sum())
    assert group.queue_sizes() == (0, 0, 0)


def test_piece_batch_reads_a_ranks_iteration() -> None:
    req = RequestArrays.build([0.0], [100], [2])
    group = _group(req)
    group.add(0, 0.0)
    group.advance(0.0)
    assert piece_batch(group.ranks[0]) == Batch(1, 100, 0, 5050.0, 0, 0)
    assert piece_batch(group.ranks[1]) == Batch()


def test_a_group_needs_two_ranks() -> None:
    req = RequestArrays.build([0.0], [10], [1])
    with pytest.raises(ValueError, match="at least two ranks"):
        _group(req, ranks=1)


def _balanced_group(req: RequestArrays, timeout: int, batching: int = 0) -> LockstepGroup:
    """Two ranks under TensorRT-LLM's attention-DP balance (no graphs, CPU in series)."""
    records = RecordArrays.empty(len(req), ["g"])
    params = ExecutionParams(
        name="t", balance_timeout_iters=timeout, balance_batching_iters=batching
    )
    step = ExecutedStepModel(Split(2), params)
    engines = [
        ContinuousEngine("g", req, records, 0, step, make_scheduler("fcfs", {}), LIMITS)
        for _ in range(2)
    ]
    return LockstepGroup("g", engines, LockstepTiming(step, 2))


# A and B (10-token prompts, 20 tokens) prefill together on the two ranks in [0, 2.1) ms,
# then decode one token each per 1.11 ms iteration: boundaries 2.1, 3.21, 4.32, 5.43, ...
PREFILL_END = 2.1
DECODE = 1.11


def _boundary(k: int) -> float:
    return (PREFILL_END + k * DECODE) * MS


def test_a_lone_prompt_waits_for_the_balance_timeout() -> None:
    """Timeout 3: the count runs at every boundary where not every rank has a prompt
    (1, 2, 3 at boundaries 1-3, back to 0 there). C arrives just after boundary 3 for rank 0
    while both ranks decode; only rank 0 has a prompt, so it waits for the count to reach 3
    again (boundary 6) and prefills there beside the decodes: rank 0 runs 11 tokens (1.11
    ms), the experts 12 (0.6 ms). Without the balance it would join at boundary 4."""
    arrivals = [0.0, 0.0, _boundary(3) + 0.05 * MS]
    req = RequestArrays.build(arrivals, [10, 10, 10], [20, 20, 2])
    rec = drive(_balanced_group(req, timeout=3), arrivals)
    assert rec.first_token_at[2] == pytest.approx(_boundary(6) + 1.71 * MS)
    plain = drive(_balanced_group(req, timeout=0), arrivals)
    assert plain.first_token_at[2] == pytest.approx(_boundary(4) + 1.71 * MS)


def test_prompts_on_every_rank_go_at_once_or_after_the_batching_wait() -> None:
    """C and D arrive after boundary 3, one for each rank (D's rank has no prompt held):
    every rank has a prompt, so they prefill at boundary 4 (10 tokens beside a decode on
    each rank: 1.11 ms dense, experts of 22 tokens: 1.1 ms). With a batching wait of 2
    iterations while every rank decodes they go at boundary 6."""
    c_at = _boundary(3) + 0.05 * MS
    arrivals = [0.0, 0.0, c_at, c_at + 0.01 * MS]
    req = RequestArrays.build(arrivals, [10, 10, 10, 10], [20, 20, 2, 2])
    rec = drive(_balanced_group(req, timeout=50), arrivals)
    assert list(rec.first_token_at[2:]) == pytest.approx([_boundary(4) + 2.21 * MS] * 2)
    waited = drive(_balanced_group(req, timeout=50, batching=2), arrivals)
    assert list(waited.first_token_at[2:]) == pytest.approx([_boundary(6) + 2.21 * MS] * 2)


def test_a_prompt_goes_at_once_when_a_rank_has_nothing_to_decode() -> None:
    """A decodes alone on rank 0 (prefill 1.1 + 0.5 = 1.6 ms, then 1.11 ms a decode). B
    arrives after its third decode and goes to the idle rank 1: not every rank has a
    prompt, but rank 1 has nothing to decode, so the balance lets B go at the next
    boundary, beside A's decode (dense 1.1 ms, experts of 11 tokens, 6 a rank: 0.6 ms)."""
    b_at = (1.6 + 3 * 1.11 + 0.05) * MS
    arrivals = [0.0, b_at]
    req = RequestArrays.build(arrivals, [10, 10], [20, 2])
    rec = drive(_balanced_group(req, timeout=50), arrivals)
    assert rec.first_token_at[1] == pytest.approx((1.6 + 4 * 1.11 + 1.7) * MS)


def test_the_balance_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="balance_timeout_iters must be a whole number"):
        ExecutionParams(name="t", balance_timeout_iters=-1)
    with pytest.raises(ConfigError, match="turns on") as err:
        ExecutionParams(name="t", balance_batching_iters=10)
    assert "balance_batching_iters" in str(err.value)
    params = execution_params("trtllm", {"balance_timeout_iters": 60})
    assert (params.balance_timeout_iters, params.balance_batching_iters) == (60, 0)
    assert PRESETS["trtllm"].balance_timeout_iters == 0
