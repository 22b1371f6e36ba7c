"""Every config edge reports schema problems and policy problems together, in one error."""

from __future__ import annotations

from typing import Any

import pytest

from sincere.core.errors import ConfigError
from sincere.serve.emulator.config import load_emulator_configs
from sincere.serve.gateway.config import parse_config
from sincere.sim.config import load_config


def _simulation(**changes: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "workload": {
            "num_requests": 10,
            "arrival": {"kind": "poisson", "rate": 1.0},
            "lengths": {
                "prompt": {"kind": "fixed", "tokens": 100},
                "output": {"kind": "fixed", "tokens": 10},
            },
        },
        "instances": [{"model": "llama-3-8b", "accelerator": "A100-80GB"}],
    }
    config.update(changes)
    return config


def _lines(exc: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    return [line.strip() for line in str(exc.value).splitlines()[1:]]


def test_simulation_config_lists_schema_router_scheduler_and_step_model_problems_at_once() -> None:
    """A bad seed, router parameter, scheduler parameter and step-model kind: four lines."""
    config = _simulation(
        seed="x",
        router={"name": "power-of-two", "params": {"num_choices": 0}},
        instances=[
            {"model": "llama-3-8b", "accelerator": "A100-80GB"},
            {
                "model": "llama-3-8b",
                "accelerator": "A100-80GB",
                "engine": {"scheduler": "niyama", "scheduler_params": {"h_s_per_token": -1.0}},
                "step_model": {"kind": "no-such-model"},
            },
        ],
    )
    with pytest.raises(ConfigError, match=r"\(4 problems\)") as exc:
        load_config(config)
    lines = _lines(exc)
    assert lines[0].startswith("seed:")
    assert any(line.startswith("router.params.num_choices:") for line in lines)
    assert any(
        line.startswith("instances[1].engine.scheduler_params.h_s_per_token:") for line in lines
    )
    assert any(
        line.startswith("instances[1].step_model.kind:") and "roofline" in line for line in lines
    )


def test_an_unknown_router_and_an_unknown_scheduler_are_both_named() -> None:
    """Two unknown names in one config come back in one error, each with what is allowed."""
    config = _simulation(
        router={"name": "fastest"},
        instances=[{"model": "llama-3-8b", "accelerator": "A100-80GB",
                    "engine": {"scheduler": "lifo"}}],
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"\(2 problems\)") as exc:
        load_config(config)
    text = str(exc.value)
    assert "router.name" in text and "'fastest'" in text and "least-outstanding" in text
    assert "instances[0].engine.scheduler" in text and "'lifo'" in text and "sarathi" in text


def test_a_request_level_engine_names_a_bad_strategy_beside_its_bad_fields() -> None:
    """An invalid strategy name and a negative Timer estimate: both reported."""
    config = _simulation(
        instances=[{"models": ["llama-3-8b"], "accelerator": "H100-SXM",
                    "engine": {"kind": "request-level", "strategy": "best-batch+nap",
                               "est_batch_time_s": -1}}],
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"\(2 problems\)") as exc:
        load_config(config)
    text = str(exc.value)
    assert "instances[0].engine.strategy: not a valid batching strategy" in text
    assert "est_batch_time_s" in text


def test_a_predictor_named_inside_router_params_is_checked_at_the_edge() -> None:
    """A latency predictor that does not exist fails when the config is read, not built."""
    config = _simulation(
        router={"name": "latency-optimal", "params": {"latency_predictor": "crystal-ball"}}
    )
    with pytest.raises(ConfigError, match="crystal-ball") as exc:
        load_config(config)
    assert "router.params.latency_predictor" in str(exc.value)


def test_a_valid_config_still_loads() -> None:
    """The checks add nothing to a good config: it validates as before."""
    config = load_config(_simulation(router={"name": "join-shortest-queue",
                                             "params": {"metric": "tokens"}}))  # fmt: skip
    assert config.router.params == {"metric": "tokens"}


def test_gateway_config_reports_a_bad_router_with_its_schema_problems() -> None:
    """The gateway's router is checked beside the rest of its config."""
    raw = {"port": -1, "router": {"name": "join-shortest-queue", "params": {"metric": "kv"}}}
    with pytest.raises(ConfigError, match=r"\(2 problems\)") as exc:
        parse_config(raw, "gateway.yaml")
    text = str(exc.value)
    assert "port:" in text and "router.params.metric" in text and "'kv'" in text


def test_emulator_config_checks_each_instance_scheduler_under_its_path(tmp_path: Any) -> None:
    """An emulator file's second instance with an unknown scheduler is named by position."""
    path = tmp_path / "emulators.yaml"
    path.write_text(
        "- {model: llama-3-8b, accelerator: A100-80GB}\n"
        "- {model: llama-3-8b, accelerator: A100-80GB, engine: {scheduler: lifo}}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"instances\[1\]\.engine\.scheduler") as exc:
        load_emulator_configs(path)
    assert "'lifo'" in str(exc.value)
