"""What a run must not hide: unserved models, rejected requests, impossible parallelism."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from sincere.catalog import get_model
from sincere.cli.app import main
from sincere.core.errors import ConfigError
from sincere.engine.build import valid_tp
from sincere.sim import SimulationWarning, load_config, simulate

BASE: dict[str, Any] = {
    "seed": 0,
    "workload": {
        "num_requests": 60,
        "arrival": {"kind": "poisson", "rate": 5.0},
        "lengths": {
            "prompt": {"kind": "fixed", "tokens": 32},
            "output": {"kind": "fixed", "tokens": 8},
        },
        "models": {"llama-3-8b": 1.0},
    },
    "instances": [{"model": "llama-3-8b", "accelerator": "A100-80GB"}],
}


def _config(**workload: Any) -> dict[str, Any]:
    config = copy.deepcopy(BASE)
    config["workload"].update(workload)
    return config


def test_a_typo_in_the_workload_model_warns_names_it_and_suggests() -> None:
    """Every request for an unserved model is rejected and the result says which and why."""
    with pytest.warns(SimulationWarning, match="every request was rejected"):
        result = simulate(_config(models={"llama-3-8bx": 1.0}))
    assert result.summary["num_completed"] == 0
    assert result.warnings[0] == (
        "workload model 'llama-3-8bx' is served by no instance (did you mean 'llama-3-8b'?): "
        "its 60 requests are rejected; the instances serve llama-3-8b"
    )
    assert result.warnings[1] == "every request was rejected (no_instance 60)"


def test_a_partly_unserved_mix_warns_with_counts_but_does_not_raise_a_warning() -> None:
    """A mix with one unserved model counts its rejections; the run still served the rest."""
    result = simulate(_config(models={"llama-3-8b": 0.5, "mistral-7b": 0.5}))
    rejected = result.summary["num_rejected"]
    assert 0 < rejected < 60
    assert (
        result.warnings[-1] == f"{rejected} of 60 requests were rejected (no_instance {rejected})"
    )


def test_a_clean_run_has_no_warnings() -> None:
    """Nothing rejected, nothing to say."""
    assert simulate(_config()).warnings == []


def test_cli_exits_1_and_says_so_when_nothing_completed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sincere simulate` on a config whose every request is rejected exits 1, loudly."""
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(_config(models={"llama-3-8bx": 1.0})))
    monkeypatch.setattr(
        "sys.argv", ["sincere", "simulate", str(path), "--out", str(tmp_path / "o")]
    )
    with pytest.raises(SystemExit) as exited:
        main()
    err = " ".join(capsys.readouterr().err.split())
    assert exited.value.code == 1
    assert "did you mean 'llama-3-8b'?" in err and "error: no request completed" in err
    assert (tmp_path / "o" / "summary.json").exists()


def test_tp_must_split_the_attention_heads() -> None:
    """tp 3 on a 32-head model is refused, listing the degrees that work."""
    config = copy.deepcopy(BASE)
    config["instances"][0]["tp"] = 3
    with pytest.raises(ConfigError, match=r"instances\[0\]: tp=3 does not split llama-3-8b's 32"):
        simulate(config)
    assert valid_tp(get_model("llama-3-8b")) == [1, 2, 4, 8, 16, 32]
    config["instances"][0]["tp"] = 2
    assert simulate(config).summary["num_completed"] == 60


def test_pp_cannot_exceed_the_layers() -> None:
    """More pipeline stages than layers is refused."""
    config = copy.deepcopy(BASE)
    config["instances"][0]["pp"] = 64
    with pytest.raises(ConfigError, match="pp=64 is more pipeline stages than llama-3-8b's 32"):
        simulate(config)


def test_scheduler_parameters_are_checked_when_the_config_loads() -> None:
    """A parameter the scheduler does not take fails load_config, not the run."""
    config = copy.deepcopy(BASE)
    config["instances"][0]["engine"] = {"scheduler": "fcfs", "scheduler_params": {"chunk": 5}}
    with pytest.raises(ConfigError, match=r"engine scheduler 'fcfs'; got 'chunk'"):
        load_config(config)
