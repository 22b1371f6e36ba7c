"""`sincere predict train / eval / show` on simulated records, and their bad-input errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sincere.cli.app import _register, app

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    _register()
    return CliRunner()


def test_train_eval_and_show_a_latency_model(
    runner: CliRunner, hetero_runs: list[Path], tmp_path: Path
) -> None:
    """Train on one run, evaluate on the other with its config: every baseline is scored."""
    model = tmp_path / "lat.npz"
    train = [str(hetero_runs[0] / "requests.parquet")]
    res = runner.invoke(
        app, ["predict", "train", "latency", *train, "--out", str(model), "--epochs", "2",
              "--hidden", "8", "--quiet"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "trained latency on" in res.output and model.is_file()
    held_out = hetero_runs[1]
    res = runner.invoke(
        app, ["predict", "eval", str(model), str(held_out / "requests.parquet"),
              "--config", str(held_out / "config.yaml"), "--json"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    names = [row["name"] for row in json.loads(res.output)]
    assert names == ["recent-window (EWMA)", "linear (ridge)", "step model", "lstm"]
    res = runner.invoke(app, ["predict", "show", str(model)])
    header = json.loads(res.output)
    assert header["kind"] == "latency-lstm" and header["params"]["hidden"] == 8
    assert header["provenance"]["records"] == train


def test_train_and_eval_a_length_model(
    runner: CliRunner, hetero_runs: list[Path], tmp_path: Path
) -> None:
    """The length model trains without torch's help and is scored beside its baselines."""
    model = tmp_path / "len.npz"
    records = str(hetero_runs[0] / "requests.parquet")
    res = runner.invoke(app, ["predict", "train", "length", records, "-o", str(model), "-q"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["predict", "eval", str(model), records])
    assert res.exit_code == 0, res.output
    assert "quantile model" in res.output and "prompt-bucket" in res.output


def test_bad_input_exits_non_zero_with_a_reason(
    runner: CliRunner, hetero_runs: list[Path], tmp_path: Path
) -> None:
    """Unknown kind, missing records and a model of another kind each give a one-line reason."""
    records = str(hetero_runs[0] / "requests.parquet")
    cases = [
        (["predict", "train", "quality", records, "--out", str(tmp_path / "m.npz")],
         "unknown predictor kind"),
        (["predict", "train", "length", str(tmp_path / "none.parquet"), "--out",
          str(tmp_path / "m.npz")], "no such records file"),
        (["predict", "train", "length", records, "--out", str(tmp_path / "m.npz"),
          "--history", "8"], "unknown LengthParams option"),
        (["predict", "eval", str(tmp_path / "none.npz"), records], "no such model file"),
    ]  # fmt: skip
    for args, reason in cases:
        res = runner.invoke(app, args)
        assert res.exit_code != 0
        assert isinstance(res.exception, Exception)
        assert reason in str(res.exception)
