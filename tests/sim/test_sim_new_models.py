"""The simulator runs the new catalog models (MoE, MLA, sliding windows) through the
roofline unchanged."""

from __future__ import annotations

import pytest
from tests.conftest import NEW_MODELS

from sincere.catalog import get_model
from sincere.core.errors import ConfigError
from sincere.sim import SimulationConfig, simulate


def _config(model: str, **instance: object) -> SimulationConfig:
    return SimulationConfig.model_validate(
        {
            "seed": 5,
            "workload": {
                "num_requests": 40,
                "arrival": {"kind": "poisson", "rate": 4.0},
                "lengths": {
                    "prompt": {"kind": "uniform", "low": 10, "high": 600},
                    "output": {"kind": "uniform", "low": 1, "high": 60},
                },
                "models": {model: 1.0},
            },
            "instances": [
                {
                    "model": model,
                    "accelerator": "H200",
                    "tp": 8,
                    "precision": get_model(model).native_precision,
                    "engine": {"max_num_seqs": 32},
                    **instance,
                }
            ],
        }
    )


@pytest.mark.parametrize("model", NEW_MODELS)
def test_every_new_model_simulates(model: str) -> None:
    """Forty requests on eight H200s all complete, deterministically."""
    first = simulate(_config(model))
    assert first.summary["num_completed"] == 40
    assert simulate(_config(model)).summary["ttft_s"] == first.summary["ttft_s"]


def test_expert_parallelism_is_an_instance_setting() -> None:
    """`ep` in an instance spreads the experts; a bad value is refused naming it."""
    result = simulate(_config("qwen3-235b-a22b", ep=8))
    assert result.summary["num_completed"] == 40
    with pytest.raises(ConfigError, match="ep must divide tp 8"):
        simulate(_config("qwen3-235b-a22b", ep=3))
