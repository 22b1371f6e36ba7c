"""Optional engine capabilities are declared (``kv_intake``, ``max_model_len``), not found by
an engine's class; the parts they come from (arrived KV, a request's fit) behave alone."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sincere.core.records import RecordArrays
from sincere.core.request import RequestArrays
from sincere.engine.build import build_engine
from sincere.engine.kv_intake import ArrivedKv
from sincere.engine.request_fit import RequestFit
from sincere.engine.spec import DeploymentSpec
from sincere.engine.state import BatchState, EngineLimits

SRC = Path(__file__).resolve().parents[2] / "src" / "sincere"


def _built(engine: dict[str, object], models: list[str]) -> object:
    req = RequestArrays.build([0.0], [100], [8], models=(models[0],))
    spec = DeploymentSpec(models=models, engine=engine)
    return build_engine(spec, "e0", req, RecordArrays.empty(1, ["e0"]), 0).engine


def test_a_continuous_engine_declares_its_kv_intake_and_context() -> None:
    """It takes prefilled KV (itself the intake) and reports the model's context limit."""
    engine = _built({"kind": "continuous", "max_model_len": 4096}, ["llama-3-8b"])
    assert engine.kv_intake is engine  # type: ignore[attr-defined]
    assert engine.max_model_len == 4096  # type: ignore[attr-defined]


@pytest.mark.parametrize("dispatch", ["idle", "server"])
def test_request_level_engines_declare_no_kv_intake(dispatch: str) -> None:
    """Engines whose answers come whole (request-level, SINCERE's server) take no
    prefilled KV and model no context limit."""
    engine = _built({"kind": "request-level", "dispatch": dispatch}, ["granite-7b", "llama3-8b"])
    assert engine.kv_intake is None  # type: ignore[attr-defined]
    assert engine.max_model_len is None  # type: ignore[attr-defined]


def test_the_simulator_never_asks_an_engine_its_class() -> None:
    """No ``isinstance(..., ContinuousEngine)`` in sim/: capabilities are declared."""
    found = [
        f"{path.name}:{n}"
        for path in sorted((SRC / "sim").glob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"isinstance\([^)]*ContinuousEngine", line)
    ]
    assert found == []


def _limits(**extra: int) -> EngineLimits:
    base = {"num_kv_blocks": 10, "block_size": 16, "max_num_seqs": 2}
    return EngineLimits(**(base | extra))  # type: ignore[arg-type]


def test_a_request_fits_unless_its_context_or_the_cache_says_no() -> None:
    """vLLM's context rule first, then the KV cache's size above the watermark."""
    fit = RequestFit(_limits(max_model_len=100))
    assert fit.reject_reason(100, 1, 1) == "prompt_too_long"
    assert fit.reject_reason(90, 5, 20) == "over_context"
    assert fit.reject_reason(50, 10, 10) is None
    small = RequestFit(_limits(num_kv_blocks=2))
    assert small.reject_reason(40, 1, 1) == "kv_capacity"  # 40 tokens: 3 blocks of 16
    assert RequestFit(_limits()).max_model_len == 1 << 62  # no limit given: none


def test_arrived_kv_joins_in_order_while_blocks_and_slots_are_free() -> None:
    """First come first served; a request that does not fit holds the ones behind it."""
    limits = _limits()
    state = BatchState(limits, RecordArrays.empty(3, ["e0"]), 1)
    kv = ArrivedKv(limits)
    for i, tokens in enumerate([100, 50, 10]):
        state.accept(i, 5, 0, 5)
        kv.arrive(i, tokens)
    kv.admit(state, 1.0)
    # 100 + 1 tokens: 7 blocks; 50 + 1: 4 more would pass the 10 blocks: the queue waits
    assert kv.admitted == [(0, 1.0)] and [i for i, _ in kv.waiting] == [1, 2]
    assert kv.drop(2) and not kv.drop(2)
    assert [i for i, _ in kv.waiting] == [1]
