"""Prefill iterations apart from the decodes (the execution model's ``mixed_prefill: false``,
SGLang's default): while a prompt is prefilled the decoding requests wait and gain no token;
by hand on a constant 10 ms step."""

from __future__ import annotations

import pytest

from sincere.core.errors import ConfigError
from sincere.core.records import RecordArrays
from sincere.core.request import RequestArrays
from sincere.engine.continuous import ContinuousEngine, EngineLimits
from sincere.perf.execution import (
    PRESETS,
    ExecutedStepModel,
    ExecutionParams,
    execution_params,
    mixes_prefill,
)
from sincere.policy.schedulers import make_scheduler

from .test_engine_async_intake import STEP, Constant
from .test_engine_continuous import drive


def _run(req: RequestArrays, mixed: bool, **lim: int) -> RecordArrays:
    step = ExecutedStepModel(Constant(), ExecutionParams(name="t", mixed_prefill=mixed))
    limits = EngineLimits(**{"num_kv_blocks": 1 << 20, **lim})
    records = RecordArrays.empty(len(req), ["e0"])
    engine = ContinuousEngine("e0", req, records, 0, step, make_scheduler("fcfs", {}), limits)
    drive(engine)
    return engine.records


@pytest.mark.parametrize(("mixed", "a_done"), [(True, 0.200), (False, 0.210)])
def test_a_decode_waits_for_a_prefill_run_apart(mixed: bool, a_done: float) -> None:
    """A (20 tokens) prefills in [0, 10) and decodes from there; B arrives at 25 ms and is
    prefilled in [30, 40). Mixed, A decodes in that iteration too and ends at 200 ms; apart,
    it gains nothing there and ends one iteration later. B's times are the same."""
    req = RequestArrays.build([0.0, 0.025], [100, 100], [20, 3])
    rec = _run(req, mixed)
    assert rec.first_token_at[0] == pytest.approx(STEP)
    assert rec.finished_at[0] == pytest.approx(a_done)
    assert rec.first_token_at[1] == pytest.approx(4 * STEP)
    assert rec.finished_at[1] == pytest.approx(6 * STEP)
    assert rec.output_tokens[0] == 20 and rec.output_tokens[1] == 3


@pytest.mark.parametrize(("mixed", "a_done"), [(True, 0.200), (False, 0.230)])
def test_a_chunked_prompt_holds_the_decodes_for_every_chunk(mixed: bool, a_done: float) -> None:
    """B's 250-token prompt at 100 tokens an iteration takes three iterations either way
    (mixed: 99 + 99 + 52 beside A's decode token; apart: 100 + 100 + 50 alone), [30, 60):
    apart A waits through all three."""
    req = RequestArrays.build([0.0, 0.025], [100, 250], [20, 2])
    rec = _run(req, mixed, max_num_batched_tokens=100)
    assert rec.first_token_at[1] == pytest.approx(6 * STEP)
    assert rec.finished_at[0] == pytest.approx(a_done)
    assert rec.finished_at[1] == pytest.approx(7 * STEP)


def test_presets_and_overrides() -> None:
    """SGLang's preset runs prefill apart; vLLM's, TensorRT-LLM's and the eager engine mix;
    an override sets it and a non-boolean is refused with what is allowed."""
    assert not PRESETS["sglang"].mixed_prefill
    assert all(PRESETS[name].mixed_prefill for name in ("vllm-v1", "trtllm", "eager"))
    params = execution_params("vllm-v1", {"mixed_prefill": False})
    assert not params.mixed_prefill and "mixed_prefill" in params.source
    assert not mixes_prefill(ExecutedStepModel(Constant(), params))
    assert mixes_prefill(Constant())  # no execution model: the 2024 engine mixes
    with pytest.raises(ConfigError, match="mixed_prefill must be true") as err:
        execution_params("sglang", {"mixed_prefill": "no"})
    assert "no" in str(err.value)
