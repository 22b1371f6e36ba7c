"""A deployment's ``time_scale``: its step model's times multiplied, in both paths' engines."""

from __future__ import annotations

import pytest

from sincere.core.errors import ConfigError
from sincere.engine.build import deployment_of, step_model_of
from sincere.engine.spec import DeploymentSpec
from sincere.engine.time_scale import TimeScaled
from sincere.perf.base import Batch, StepTimeModel
from sincere.serve.emulator.config import EmulatorConfig

BATCH = Batch.of(prefill=[(300, 0)], decode=[500, 700])


def _step(**fields: object) -> StepTimeModel:
    spec = DeploymentSpec.model_validate({"model": "llama-3-8b", "accelerator": "A100-80GB",
                                          **fields})  # fmt: skip
    return step_model_of(spec, deployment_of(spec, "llama-3-8b", "e"), "e")


def test_every_answer_of_the_step_model_is_scaled() -> None:
    """At 1/8: an iteration, a decode run, a request-level batch and a load, each 1/8."""
    base, fast = _step(), _step(time_scale=0.125)
    assert isinstance(fast, TimeScaled) and not isinstance(base, TimeScaled)
    assert fast.iteration_s(BATCH) == base.iteration_s(BATCH) / 8
    fields = (1, 300, 0, 45150.0, 2, 1200)
    assert fast.iteration_s_fast(*fields) == base.iteration_s_fast(*fields) / 8
    assert fast.decode_steps_s(4, 2000, 50) == base.decode_steps_s(4, 2000, 50) / 8
    assert fast.request_batch_s([100, 200], 20) == base.request_batch_s([100, 200], 20) / 8
    assert fast.load_time().mean_s == base.load_time().mean_s / 8


def test_the_emulator_takes_the_factor_with_its_deployment() -> None:
    """An emulator's config carries ``time_scale`` (its engines are built as the simulator's)."""
    config = EmulatorConfig(model="llama-3-8b", accelerator="A100-80GB", time_scale=0.25)
    assert config.deployment_fields()["time_scale"] == 0.25


def test_the_front_end_is_compressed_with_the_engine() -> None:
    """vllm-v1's front end (20 ms and 4 µs a prompt token of intake) at 1/8: 2.5 ms and
    0.5 µs, its first chunk and its API process unchanged; the engine's iterations 1/8 of
    the same preset's."""
    spec = DeploymentSpec(model="llama-3-8b", accelerator="A100-80GB", time_scale=0.125,
                          engine={"preset": "vllm-v1"})  # fmt: skip
    front = spec.front_end()
    assert (front.request_s, front.prompt_token_s) == (0.020 / 8, 4.0e-6 / 8)
    assert (front.first_chunk_tokens, front.intake_servers) == (1, 1)
    base, fast = _step(engine={"preset": "vllm-v1"}), _step(time_scale=0.125)
    assert isinstance(fast, TimeScaled) and not isinstance(base, TimeScaled)
    assert fast.iteration_s(BATCH) == base.iteration_s(BATCH) / 8


def test_times_it_does_not_scale_are_refused() -> None:
    """Speculation's draft keeps its own times: with a factor, a ConfigError naming
    time_scale; a factor that is no positive number: refused by the schema."""
    speculation = {"method": "eagle", "num_draft_tokens": 2, "acceptance": 0.7}
    with pytest.raises(ConfigError, match=r"e\.time_scale.*speculation"):
        _step(time_scale=0.5, engine={"speculation": speculation})
    with pytest.raises(ValueError, match="time_scale"):
        DeploymentSpec(model="llama-3-8b", time_scale=0.0)
