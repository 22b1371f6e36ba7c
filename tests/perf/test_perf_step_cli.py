"""``sincere step``: one iteration's time and its parts, from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import sincere.cli.step  # noqa: F401  (registers the command)
from sincere.catalog import get_accelerator, get_model
from sincere.cli.app import app
from sincere.core.errors import ConfigError
from sincere.perf import Batch, Deployment, Roofline

runner = CliRunner()


def test_json_gives_the_iteration_and_its_parts() -> None:
    """`--json` prints {"iteration_s", "parts"}; parts sum to the iteration, and it is the
    default A100 roofline's time of that batch."""
    args = [
        "step",
        "llama-3-8b",
        "--accelerator",
        "A100",
        "--prefill",
        "480@500",
        "--decode",
        "32@1200",
        "--json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert set(out) == {"iteration_s", "parts"}
    assert set(out["parts"]) == {"linear", "attention", "communication", "lm_head", "overhead"}
    assert sum(out["parts"].values()) == pytest.approx(out["iteration_s"])
    dep = Deployment(get_model("llama-3-8b"), get_accelerator("A100-80GB"))
    batch = Batch.of(prefill=[(480, 500)], decode=[1200] * 32)
    assert out["iteration_s"] == pytest.approx(Roofline(dep).iteration_s(batch))


def test_tensor_parallelism_adds_communication() -> None:
    """At TP2 the all-reduces show up as their own part."""
    args = [
        "step",
        "llama-2-70b",
        "--accelerator",
        "A100",
        "--tp",
        "2",
        "--decode",
        "64@1024",
        "--json",
    ]
    out = json.loads(runner.invoke(app, args).output)
    assert out["parts"]["communication"] > 0


def test_table_names_where_the_constants_come_from() -> None:
    """The human output is a table of parts plus the origin of the roofline's constants."""
    result = runner.invoke(
        app,
        ["step", "llama-3-8b", "--accelerator", "H100", "--prefill", "2048"],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "attention" in result.output and "iteration" in result.output
    assert "constants: prior" in result.output


def test_other_step_models_and_params_files(tmp_path: Path) -> None:
    """`--step-model inferno --params FILE` times the batch with that model (no breakdown)."""
    params = tmp_path / "inferno.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "kind": "inferno",
                "params": {"alpha_ms": 10, "beta_ms": 1, "gamma_ms": 5, "delta_ms": 0.1},
            }
        )
    )
    args = [
        "step",
        "llama-3-8b",
        "--accelerator",
        "A100",
        "--step-model",
        "inferno",
        "--params",
        str(params),
        "--decode",
        "4@100",
        "--json",
    ]
    out = json.loads(runner.invoke(app, args).output)
    assert out == {"iteration_s": pytest.approx(0.014), "parts": {}}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prefill", "12x"], "TOKENS or TOKENS@CACHED"),
        (["--decode", "32"], "N@CTX"),
        (["--decode", "0@10"], "N >= 1"),
    ],
)
def test_malformed_batches_are_usage_errors(args: list[str], message: str) -> None:
    """Malformed --prefill / --decode values exit 2 naming the expected form."""
    result = runner.invoke(
        app, ["step", "llama-3-8b", "--accelerator", "A100", *args], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 2
    assert message in result.output


def test_an_empty_batch_is_refused() -> None:
    """Without --prefill or --decode there is nothing to time."""
    result = runner.invoke(app, ["step", "llama-3-8b", "--accelerator", "A100"])
    assert isinstance(result.exception, ConfigError)
    assert "at least one --prefill or --decode" in str(result.exception)


def test_a_tp_that_does_not_split_the_heads_is_refused() -> None:
    """`--tp 3` on a 40-head model names the value and the TPs that split the heads."""
    args = ["step", "llama-2-13b", "--accelerator", "A100", "--tp", "3", "--decode", "2@100"]
    result = runner.invoke(app, args)
    assert isinstance(result.exception, ConfigError)
    assert "--tp: tp=3 does not split llama-2-13b's 40 attention heads" in str(result.exception)
    assert "allowed: 1, 2, 4, 5, 8, 10, 20, 40" in str(result.exception)
