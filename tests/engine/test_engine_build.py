"""Building engines from a deployment spec, and the one view routers read on both paths."""

from __future__ import annotations

import pytest

from sincere.catalog import get_model
from sincere.core.errors import ConfigError
from sincere.core.records import RecordArrays
from sincere.core.request import RequestArrays
from sincere.engine.base import EngineLoad
from sincere.engine.build import build_engine, build_streaming_engine, valid_tp
from sincere.engine.continuous import ContinuousEngine
from sincere.engine.instance import InstanceInfo, instance_view, spec_info
from sincere.engine.spec import DeploymentSpec


def _arrays(n: int, prompt: int = 100, output: int = 8) -> tuple[RequestArrays, RecordArrays]:
    req = RequestArrays.build([0.0] * n, [prompt] * n, [output] * n, models=("llama-3-8b",))
    return req, RecordArrays.empty(n, ["e0"])


def test_a_continuous_spec_builds_an_engine_sized_by_the_memory_plan() -> None:
    """The engine's KV blocks come from the memory plan; its step model from the spec."""
    spec = DeploymentSpec(model="llama-3-8b", accelerator="A100-80GB")
    req, rec = _arrays(1)
    built = build_engine(spec, "e0", req, rec, 0)
    assert isinstance(built.engine, ContinuousEngine)
    assert built.engine.limits.num_kv_blocks > 1000
    assert built.deployment.accelerator.name == "A100-80GB"
    assert built.step_model.iteration_s_fast(1, 100, 0, 5050.0, 0, 0) > 0.0


def test_spec_errors_name_where_and_what_is_allowed() -> None:
    """A TP that cannot split the heads raises naming the instance and the valid degrees."""
    spec = DeploymentSpec(model="llama-3-8b", tp=3)
    req, rec = _arrays(1)
    with pytest.raises(ConfigError, match=r"emulator e: tp=3 does not split.*allowed: 1, 2, 4"):
        build_engine(spec, "e0", req, rec, 0, where="emulator e")
    assert valid_tp(get_model("llama-3-8b")) == [1, 2, 4, 8, 16, 32]


def test_only_continuous_engines_stream() -> None:
    """A request-level spec cannot run live: the error names the engine kind allowed."""
    spec = DeploymentSpec(
        models=["granite-7b", "llama3-8b"], engine={"kind": "request-level"}, cc=True
    )
    req, rec = _arrays(1)
    with pytest.raises(ConfigError, match="only continuous engines can run live"):
        build_streaming_engine(spec, "e0", req, rec, "emulator e")


def test_the_engine_reports_the_context_its_running_sequences_hold() -> None:
    """running_ctx_tokens = the tokens the running sequences hold in the KV cache, summed."""
    spec = DeploymentSpec(model="llama-3-8b", accelerator="A100-80GB")
    req = RequestArrays.build([0.0, 0.0], [100, 100], [3, 50], models=("llama-3-8b",))
    engine = build_engine(spec, "e0", req, RecordArrays.empty(2, ["e0"]), 0).engine
    engine.configure(exact_loads=True)  # one event per prefill iteration, as under a router
    engine.add(0, 0.0)
    engine.add(1, 0.0)
    assert engine.load().running_ctx_tokens == 0  # nothing computed yet
    loads = []
    while (at := engine.next_event_at()) is not None and not engine.advance(at):
        loads.append(engine.load())
    # after the prefill: both prompts cached (a new token enters the cache next iteration)
    assert (loads[-1].num_running, loads[-1].running_ctx_tokens) == (2, 200)
    done = engine.load()  # request 0 finished its 3 tokens after two decode iterations
    assert (done.num_running, done.running_ctx_tokens) == (1, 100 + 2)


def test_a_view_shows_unknown_load_as_none_and_known_load_as_reported() -> None:
    """Without a load record every engine-side field is None; with one, its values."""
    info = InstanceInfo("a", ("m",), "A100-80GB", max_num_seqs=8, max_in_flight=4)
    unknown = instance_view(info, None, 3)
    assert unknown.num_outstanding == 3 and unknown.has_room
    assert None is unknown.num_running is unknown.kv_usage is unknown.running_ctx_tokens
    assert not unknown.engine_load_known
    load = EngineLoad(2, 1, 500, 40, 900, 0.25, 1.0)
    known = instance_view(info, load, 4, healthy=False, model="alias")
    assert (known.num_running, known.num_waiting, known.waiting_prefill_tokens) == (2, 1, 500)
    assert (known.running_remaining_tokens, known.running_ctx_tokens) == (40, 900)
    assert known.kv_usage == 0.25 and known.engine_load_known and not known.has_room
    assert known.model == "alias" and not known.healthy and known.max_num_seqs == 8


def test_spec_facts_carry_prices_limits_and_the_step_model() -> None:
    """spec_info turns per-1M prices into per-token ones and takes the engine's batch limit."""
    spec = DeploymentSpec(model="llama-3-8b", engine={"max_num_seqs": 64})
    req, rec = _arrays(1)
    built = build_engine(spec, "e0", req, rec, 0)
    info = spec_info(spec, "e0", built.deployment, built.step_model, price_in_per_mtok_usd=2.0)
    assert info.price_in_per_token_usd == pytest.approx(2e-6)
    assert info.max_num_seqs == 64 and info.step_model is built.step_model
    assert info.cost_per_hour_usd == pytest.approx(built.deployment.accelerator.price_per_hour_usd)


def test_progress_inside_a_decode_run_matches_an_engine_stepping_each_iteration() -> None:
    """load() moved on by progress_at(t) equals the load of an engine advanced per iteration."""
    spec = DeploymentSpec(model="llama-3-8b", accelerator="A100-80GB")
    req = RequestArrays.build([0.0] * 3, [300, 500, 700], [40, 60, 80], models=("llama-3-8b",))
    closed = build_engine(spec, "e0", req, RecordArrays.empty(3, ["e0"]), 0).engine
    stepped = build_engine(spec, "e1", req, RecordArrays.empty(3, ["e1"]), 0).engine
    assert isinstance(stepped, ContinuousEngine)
    stepped.on_tokens = lambda at, positions: None  # one iteration per event
    for engine in (closed, stepped):
        for i in range(3):
            engine.add(i, 0.0)
    for engine in (closed, stepped):
        for _ in range(2):  # admission, then the prefill
            at = engine.next_event_at()
            assert at is not None
            engine.advance(at)
    base = closed.load()
    for t in (0.2, 0.35, 0.5):  # inside the first decode run (0.11 s to 0.58 s)
        stepped.advance(t)
        progress = closed.progress_at(t)
        assert progress is not None and progress.num_decode == 3
        want = stepped.load()
        moved = base.running_ctx_tokens + progress.steps * 3  # type: ignore[operator]
        assert moved == want.running_ctx_tokens
        assert base.running_remaining_tokens - progress.steps * 3 == want.running_remaining_tokens  # type: ignore[operator]
        assert progress.kv_usage == want.kv_usage
