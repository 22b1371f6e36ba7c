"""``sincere estimate``: single configuration, batch CSV, roofline fallback, fit."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sincere.cli.app import _register, app
from sincere.estimate import ConfigKey, FingerprintBank, load_exponents

from .conftest import write_csv

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


def test_batch_mode_refuses_a_blank_line_inside_the_configs(tmp_path: Path) -> None:
    """A blank line between configuration rows is refused with its line (later rows' line
    numbers would be wrong otherwise), as in every other CSV input."""
    configs = tmp_path / "configs.csv"
    configs.write_text(
        "Model,TP,PP,DTYPE,INT8_KV_Cache,Output_Lenght,Batch_Size\n"
        "llama-2-7b,1,1,float16,False,10,1\n"
        "\n"
        "llama-2-7b,one,1,float16,False,10,1\n"
    )
    res = runner.invoke(
        app, ["estimate", "--configs", str(configs), "--out", str(tmp_path / "o.csv")]
    )
    assert res.exit_code != 0
    assert "blank line" in str(res.exception) and "configs.csv:3" in str(res.exception)


def test_fit_writes_exponents(synthetic_csv: Callable[..., Path], tmp_path: Path) -> None:
    """`estimate fit` on fingerprints only writes exponents and the TP 2 decode overhead."""
    data = tmp_path / "data"
    data.mkdir()
    src = synthetic_csv()
    (data / "fingerprint_data_collection.csv").write_text(src.read_text())
    out = tmp_path / "ex.yaml"
    res = runner.invoke(app, ["estimate", "fit", "--data", str(data), "--out", str(out)])
    assert res.exit_code == 0, res.output
    table = load_exponents(out)
    assert "--target fingerprint" in table.source
    # the synthetic TP 2 fingerprint adds 0.0004 - 0.0007/2 s per layer and token
    assert table.decode_s_per_layer[2] == pytest.approx(0.00005 + (0.0012 - 0.0008 / 2) / 32)
    assert "decode overhead per layer" in res.output


def _local_profile_rows(ttft_layer: float, tpot_layer: float) -> list[list[object]]:
    """Rows as `sincere profile local` writes them: bfloat16, TP 1, batches 1 to 8."""
    rows: list[list[object]] = []
    for layers in (1, 2):
        for batch in (1, 2, 4, 8):
            for out in (10, 20):
                lat = 0.004 + layers * ttft_layer + out * (0.002 + layers * tpot_layer) * batch
                rows.append(
                    ["tiny-llama", 1, 1, layers, "bfloat16", False, out, batch, lat, 0.5, 0.6]
                )
    return rows


def test_estimate_reads_local_profile_fingerprints(tmp_path: Path) -> None:
    """`profile local` fingerprints (bfloat16) need no --dtype and print a millisecond TTFT."""
    fp = write_csv(tmp_path / "fingerprints.csv", _local_profile_rows(0.0015, 0.01))
    res = runner.invoke(app, ["estimate", "tiny-llama", "--fingerprints", str(fp), "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.output)
    n = 2  # tiny-llama's catalog depth
    assert got["precision"] == "bf16"
    assert got["ttft_s"] == pytest.approx(0.004 + n * 0.0015)
    assert got["below_noise"] == []
    table = runner.invoke(app, ["estimate", "tiny-llama", "--fingerprints", str(fp)])
    assert table.exit_code == 0, table.output
    assert "0.007" in table.output and "0.0000" not in table.output


def test_estimate_warns_when_a_fingerprint_is_below_noise(tmp_path: Path) -> None:
    """A TTFT that solves negative (noisy 1/2-layer timings) is shown as 0 with a warning."""
    fp = write_csv(tmp_path / "fingerprints.csv", _local_profile_rows(-0.01, 0.01))
    res = runner.invoke(app, ["estimate", "tiny-llama", "--fingerprints", str(fp)])
    assert res.exit_code == 0, res.output
    assert "TTFT at batch 1 solves to -0.016 s" in res.output
    assert "less than their noise" in " ".join(res.output.split())


def test_estimate_asks_for_dtype_when_ambiguous(tmp_path: Path) -> None:
    """Fingerprints in two precisions and no fp16: the CLI names them and exits non-zero."""
    rows = _local_profile_rows(0.0015, 0.01)
    rows += [[*r[:4], "float32", *r[5:]] for r in rows]
    fp = write_csv(tmp_path / "fingerprints.csv", rows)
    res = runner.invoke(app, ["estimate", "tiny-llama", "--fingerprints", str(fp)])
    assert res.exit_code != 0
    assert "pick one with --dtype" in str(res.exception)
    assert "bf16" in str(res.exception) and "fp32" in str(res.exception)
    ok = runner.invoke(
        app, ["estimate", "tiny-llama", "--dtype", "float32", "--fingerprints", str(fp)]
    )
    assert ok.exit_code == 0, ok.output
    assert "fp32" in ok.output


def test_new_dense_model_is_estimated_from_its_fingerprints(
    synthetic_csv: Callable[..., Path],
) -> None:
    """A new catalog model with fingerprints (qwen3-8b) goes through MaverIQ's method."""
    fp = synthetic_csv("qwen3-8b")
    res = runner.invoke(app, ["estimate", "qwen3-8b", "--tp", "2", "--fingerprints", str(fp)])
    assert res.exit_code == 0, res.output
    assert "fingerprint-law" in res.output


def test_moe_model_says_the_method_cannot_estimate_it(synthetic_csv: Callable[..., Path]) -> None:
    """An MoE model has no fingerprints: the output says so plainly and uses the roofline."""
    fp = synthetic_csv()
    res = runner.invoke(
        app,
        ["estimate", "gpt-oss-20b", "--fingerprints", str(fp), "--accelerator", "H100", "--json"],
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["source"] == "roofline"
    assert "mixture of experts" in out["notes"][0]


def test_a_tp_that_does_not_split_the_heads_is_refused() -> None:
    """`estimate --tp 3` on a 40-head catalog model names the value and the allowed TPs."""
    res = runner.invoke(app, ["estimate", "llama-2-13b", "--tp", "3"])
    assert res.exit_code != 0
    assert "--tp: tp=3 does not split llama-2-13b's 40 attention heads" in str(res.exception)
    assert "allowed: 1, 2, 4, 5, 8, 10, 20, 40" in str(res.exception)
