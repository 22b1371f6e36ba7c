"""Asynchronous scheduling's intake (sincere.engine.async_intake): a request that arrives
while an iteration runs joins the iteration after the next, by hand on a constant step."""

from __future__ import annotations

import pytest

from sincere.core.errors import ConfigError
from sincere.core.records import RecordArrays
from sincere.core.request import RequestArrays
from sincere.engine.async_intake import AsyncIntake
from sincere.engine.continuous import ContinuousEngine, EngineLimits
from sincere.perf.base import Batch, StepTimeBase
from sincere.perf.execution import (
    PRESETS,
    ExecutedStepModel,
    ExecutionParams,
    execution_params,
    schedules_ahead,
)
from sincere.policy.schedulers import make_scheduler

from .test_engine_continuous import drive

STEP = 0.010


class Constant(StepTimeBase):
    """Every iteration takes 10 ms on the GPU; the CPU's part is nothing."""

    def iteration_s(self, batch: Batch) -> float:
        return STEP

    def cpu_step_s(self, num_seqs: int) -> float:
        return 0.0


def _engine(
    req: RequestArrays, asynchronous: bool, recv_interval: int = 1, wait: int = 0, **lim: int
) -> ContinuousEngine:
    params = ExecutionParams(
        name="t", async_scheduling=asynchronous, recv_interval=recv_interval, batch_wait_iters=wait
    )
    step = ExecutedStepModel(Constant(), params)
    limits = EngineLimits(**{"num_kv_blocks": 1 << 20, **lim})
    records = RecordArrays.empty(len(req), ["e0"])
    return ContinuousEngine("e0", req, records, 0, step, make_scheduler("fcfs", {}), limits)


@pytest.mark.parametrize(("asynchronous", "first_token"), [(False, 0.040), (True, 0.050)])
def test_an_arrival_during_decode_joins_one_iteration_later(
    asynchronous: bool, first_token: float
) -> None:
    """A at 0 on an idle engine: prefilled in [0, 10) ms, decoding after. B at 25 ms, inside
    iteration [20, 30): a synchronous engine prefills it in [30, 40); an asynchronous one
    planned [30, 40) at 20 ms, so B waits for [40, 50)."""
    req = RequestArrays.build([0.0, 0.025], [100, 100], [20, 3])
    eng = _engine(req, asynchronous)
    drive(eng)
    rec = eng.records
    assert rec.first_token_at[0] == pytest.approx(STEP)  # an idle engine polls at once
    assert rec.first_token_at[1] == pytest.approx(first_token)
    assert rec.finished_at[0] == pytest.approx(20 * STEP)  # A's 20 steps are not slowed
    assert rec.finished_at[1] == pytest.approx(first_token + 2 * STEP)


def test_an_arrival_during_a_prefill_iteration_waits_for_the_one_after() -> None:
    """B arrives at 5 ms while A's prefill [0, 10) runs: seen at 10, prefilled in [20, 30)
    (async), where a synchronous engine prefills it in [10, 20)."""
    req = RequestArrays.build([0.0, 0.005], [100, 100], [5, 2])
    sync, asyn = _engine(req, False), _engine(req, True)
    drive(sync)
    drive(asyn)
    assert sync.records.first_token_at[1] == pytest.approx(2 * STEP)
    assert asyn.records.first_token_at[1] == pytest.approx(3 * STEP)


def test_a_held_request_is_seen_at_once_when_the_engine_would_idle() -> None:
    """A's last iteration ends at 20 ms; B arrived at 15 ms during it: with nothing left
    to run the engine polls at once and prefills B in [20, 30)."""
    req = RequestArrays.build([0.0, 0.015], [100, 100], [2, 1])
    eng = _engine(req, True)
    drive(eng)
    assert eng.records.first_token_at[1] == pytest.approx(3 * STEP)


def test_held_requests_count_as_waiting_and_can_be_aborted() -> None:
    """B, held at 25 ms, is a waiting request to the routers; aborted, it ends as such."""
    req = RequestArrays.build([0.0, 0.025], [100, 100], [20, 3])
    eng = _engine(req, True)
    eng.add(0, 0.0)
    eng.advance(0.024)
    eng.add(1, 0.025)
    assert eng.load().num_waiting == 1 and eng.queue_sizes()[1] == 1
    assert eng.abort(1, 0.026)
    eng.advance(1.0)
    assert eng.records.reject_reason[1] == "aborted"
    assert eng.records.finished_at[0] == pytest.approx(20 * STEP)  # A is not cut short
    assert eng.load().num_waiting == 0


@pytest.mark.parametrize(
    ("arrival", "first_token"),
    [(0.025, 0.070), (0.045, 0.070), (0.055, 0.110), (0.095, 0.150)],
)
def test_an_engine_that_polls_every_fourth_decode_iteration(
    arrival: float, first_token: float
) -> None:
    """Polls every 4 decode iterations (SGLang's --scheduler-recv-interval 4). A's prefill
    [0, 10) polls at its end; its decodes [10, 20), ..., [40, 50) end in a poll at 50 ms,
    the next at 90, 130. B arriving at 25 or 45 ms is seen at 50 and, [50, 60) already
    planned, prefilled in [60, 70); at 55 ms it is seen at 90 (prefill [100, 110)), at
    95 ms at 130 (prefill [140, 150))."""
    req = RequestArrays.build([0.0, arrival], [100, 100], [40, 3])
    eng = _engine(req, True, recv_interval=4)
    drive(eng)
    rec = eng.records
    assert rec.first_token_at[0] == pytest.approx(STEP)
    assert rec.first_token_at[1] == pytest.approx(first_token)
    assert rec.finished_at[0] == pytest.approx(40 * STEP)  # A's decodes are not slowed


def test_a_request_seen_by_a_prefill_poll_joins_at_once() -> None:
    """With a poll every 30 decode iterations, B (at 5 ms, during A's prefill [0, 10))
    is seen at the prefill's end, as with polling every iteration: prefilled in [20, 30)."""
    req = RequestArrays.build([0.0, 0.005], [100, 100], [40, 2])
    eng = _engine(req, True, recv_interval=30)
    drive(eng)
    assert eng.records.first_token_at[1] == pytest.approx(3 * STEP)


def test_recv_interval_is_checked() -> None:
    """At least 1, a whole number, and only with asynchronous scheduling."""
    with pytest.raises(ConfigError, match="recv_interval must be a whole number"):
        ExecutionParams(async_scheduling=True, recv_interval=0)
    with pytest.raises(ConfigError, match="asynchronously scheduling engine only"):
        ExecutionParams(async_scheduling=False, recv_interval=10)
    assert execution_params("sglang", {"recv_interval": 30}).recv_interval == 30
    assert PRESETS["sglang"].recv_interval == 1  # SGLang's own default


@pytest.mark.parametrize(("wait", "first_token"), [(0, 0.050), (4, 0.090), (20, 0.250)])
def test_a_batch_waiting_engine_holds_a_prompt_for_its_count(wait: int, first_token: float) -> None:
    """TensorRT-LLM's batch_wait_timeout_iters: B arrives at 25 ms, in A's second decode
    iteration [20, 30). Without a wait it is seen at 30 and prefilled in [40, 50); held 4
    iterations it is seen at 70 (the end of the 4th iteration after its own) and, [70, 80)
    planned, prefilled in [80, 90); 20 iterations, in [240, 250). A is not slowed."""
    req = RequestArrays.build([0.0, 0.025], [100, 100], [40, 3])
    eng = _engine(req, True, wait=wait)
    drive(eng)
    rec = eng.records
    assert rec.first_token_at[0] == pytest.approx(STEP)  # the idle engine took A at once
    assert rec.first_token_at[1] == pytest.approx(first_token)
    assert rec.finished_at[0] == pytest.approx(40 * STEP)


def test_prompts_held_by_a_batch_wait_are_seen_together() -> None:
    """B at 25 ms starts a 4-iteration count (seen at 70 ms); C at 45 ms joins it: both
    are prefilled in [80, 90). D at 95 ms, after that poll, starts a count of its own: seen
    at 140 ms (the 4th iteration after [90, 100)), prefilled in [150, 160)."""
    req = RequestArrays.build([0.0, 0.025, 0.045, 0.095], [100] * 4, [40, 3, 3, 3])
    eng = _engine(req, True, wait=4)
    drive(eng)
    rec = eng.records
    assert rec.first_token_at[1] == pytest.approx(0.090)
    assert rec.first_token_at[2] == pytest.approx(0.090)
    assert rec.first_token_at[3] == pytest.approx(0.160)


def test_a_batch_waiting_engine_that_would_idle_takes_the_prompt_at_once() -> None:
    """A decodes [10, 20), [20, 30) and is done at 30 ms; B, held at 25 ms with a count of
    20, would leave the engine idle: it is taken at once and prefilled in [30, 40)."""
    req = RequestArrays.build([0.0, 0.025], [100, 100], [3, 2])
    eng = _engine(req, True, wait=20)
    drive(eng)
    assert eng.records.first_token_at[1] == pytest.approx(4 * STEP)


def test_batch_wait_iters_is_checked() -> None:
    """A whole number >= 0, with asynchronous scheduling and a poll every iteration."""
    with pytest.raises(ConfigError, match="batch_wait_iters must be a whole number"):
        ExecutionParams(async_scheduling=True, batch_wait_iters=-1)
    with pytest.raises(ConfigError, match="polls its queue every iteration"):
        ExecutionParams(async_scheduling=True, recv_interval=10, batch_wait_iters=20)
    with pytest.raises(ConfigError, match="polls its queue every iteration"):
        ExecutionParams(async_scheduling=False, batch_wait_iters=20)
    assert execution_params("trtllm", {"batch_wait_iters": 20}).batch_wait_iters == 20
    assert PRESETS["trtllm"].batch_wait_iters == 0  # TensorRT-LLM's own default


def test_the_intake_releases_in_arrival_order() -> None:
    intake = AsyncIntake()
    intake.hold(3, 10, 0.1)
    intake.hold(1, 20, 0.2)
    intake.hold(2, 30, 0.3)
    assert intake.release(0.2) == [(3, 10)]  # 1 arrived as the poll happened: it missed it
    assert intake.release(0.25) == [(1, 20)] and 2 in intake and len(intake) == 1
    assert intake.take(2) == (2, 30) and intake.take(2) is None
    assert intake.release_all() == []


def test_which_presets_schedule_ahead() -> None:
    """vLLM V1, SGLang and TensorRT-LLM overlap scheduling; the eager engine does not."""
    inner = Constant()
    assert schedules_ahead(ExecutedStepModel(inner, PRESETS["vllm-v1"]))
    assert schedules_ahead(ExecutedStepModel(inner, PRESETS["sglang"]))
    assert not schedules_ahead(ExecutedStepModel(inner, PRESETS["eager"]))
    assert not schedules_ahead(inner)
