"""``sincere estimate``: single configuration, batch CSV, roofline fallback, fit."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sincere.cli.app import _register, app
from sincere.estimate import ConfigKey, FingerprintBank

_register()
runner = CliRunner()


def test_single_configuration_json(synthetic_csv: Callable[..., Path]) -> None:
    """The CLI prints what FingerprintBank estimates for the same inputs."""
    fp = synthetic_csv()
    res = runner.invoke(
        app,
        [
            "estimate",
            "llama-2-7b",
            "--tp",
            "2",
            "--pp",
            "2",
            "--batch",
            "1",
            "--output-len",
            "50",
            "--fingerprints",
            str(fp),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    got = json.loads(res.output)
    want = FingerprintBank.from_files(fp).estimate(
        ConfigKey("llama-2-7b", "fp16", "fp16", 2, 2, 1), 50
    )
    assert got["latency_s"] == pytest.approx(want.latency_s)
    assert got["memory_gb"] == pytest.approx(want.memory_gb)
    assert got["source"] == "fingerprint-law"


def test_single_configuration_table_shows_inputs(synthetic_csv: Callable[..., Path]) -> None:
    """The table lists the parallelism, precision and source used."""
    res = runner.invoke(
        app,
        [
            "estimate",
            "llama-2-7b",
            "--tp",
            "2",
            "--dtype",
            "float16",
            "--fingerprints",
            str(synthetic_csv()),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "2 x 1 (2)" in res.output and "fingerprint-law" in res.output


def test_unknown_model_falls_back_to_roofline(synthetic_csv: Callable[..., Path]) -> None:
    """A model missing from the fingerprints is estimated by the roofline, and it says so."""
    res = runner.invoke(app, ["estimate", "mistral-7b", "--fingerprints", str(synthetic_csv())])
    assert res.exit_code == 0, res.output
    assert "no fingerprint of mistral-7b" in res.output and "roofline" in res.output


def test_batch_mode_writes_predictions(synthetic_csv: Callable[..., Path], tmp_path: Path) -> None:
    """Every config row comes back with predicted latency and memory, in order."""
    configs = tmp_path / "configs.csv"
    configs.write_text(
        "Model,TP,PP,DTYPE,INT8_KV_Cache,Output_Lenght,Batch_Size\n"
        "llama-2-7b,1,1,float16,False,10,1\n"
        "llama-2-7b,4,1,float16,False,200,1\n"
        "mistral-7b,1,1,float16,False,10,1\n"
    )
    out = tmp_path / "out.csv"
    res = runner.invoke(
        app,
        [
            "estimate",
            "--fingerprints",
            str(synthetic_csv()),
            "--configs",
            str(configs),
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(out.open()))
    assert [r["Model"] for r in rows] == ["llama-2-7b", "llama-2-7b", "mistral-7b"]
    lat = [float(r["Predicted_Latency (s)"]) for r in rows]
    assert lat[1] > lat[0] > 0
    assert [r["Estimate_Source"] for r in rows] == ["fingerprint-law"] * 2 + ["roofline"]


def test_batch_mode_bad_row(tmp_path: Path) -> None:
    """A bad configuration row fails with its line number."""
    configs = tmp_path / "configs.csv"
    configs.write_text(
        "Model,TP,PP,DTYPE,INT8_KV_Cache,Output_Lenght,Batch_Size\n"
        "llama-2-7b,one,1,float16,False,10,1\n"
    )
    res = runner.invoke(
        app, ["estimate", "--configs", str(configs), "--out", str(tmp_path / "o.csv")]
    )
    assert res.exit_code != 0
    assert "configs.csv:2" in str(res.exception)


def test_fit_writes_exponents(synthetic_csv: Callable[..., Path], tmp_path: Path) -> None:
    """`estimate fit` fits on a folder's fingerprints and writes a readable table."""
    data = tmp_path / "data"
    data.mkdir()
    src = synthetic_csv()
    (data / "fingerprint_data_collection.csv").write_text(src.read_text())
    out = tmp_path / "ex.yaml"
    res = runner.invoke(app, ["estimate", "fit", "--data", str(data), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "fp16" in out.read_text() and "alpha" in out.read_text()
