"""``sincere validate inferencex FILE``: the tables, the files, filters, and one-line errors."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sincere.cli.app import _register, app, main
from sincere.workload.inferencex import REQUIRED_COLUMNS

LLAMA = {
    "id": "llama_fp8_c2", "silicon_data_source": "silicon_concurrency=2", "backend": "vllm",
    "backend_version": "0.19.0", "model_path": "meta-llama/Llama-3.1-70B", "system": "b200_sxm",
    "precision": "fp8", "mode": "agg", "isl": "128", "osl": "16", "batch_size": "2",
    "tp_size": "8", "pp_size": "1", "attention_dp_size": "1", "moe_tp_size": "8",
    "moe_ep_size": "1", "silicon_ttft_ms": "30", "silicon_tpot_ms": "5",
}  # fmt: skip
"""A small representable point: 2 clients, 128 tokens in, 16 out, on 8 B200s."""
ROWS = [
    LLAMA,
    LLAMA | {"id": "llama_fp4_c2", "precision": "fp4", "backend": "trtllm"},
    LLAMA | {"id": "llama_disagg", "mode": "disagg", "batch_size": "", "tp_size": ""},
]


def _file(tmp_path: Path, rows: list[dict[str, str]]) -> Path:
    path = tmp_path / "points.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(REQUIRED_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_the_cli_prints_the_scoreboard_and_the_skips_and_writes_the_files(tmp_path: Path) -> None:
    """Two points simulated (fp8, and NVFP4 weights for the fp4 row), one skipped
    (disaggregated), every output written."""
    _register()
    out = tmp_path / "out"
    args = ["validate", "inferencex", str(_file(tmp_path, ROWS)), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "2 of 3 points simulated" in result.output
    assert "prefill/decode split" in result.output
    assert "backend_tp" in result.output and "trtllm TP" in result.output  # by TP degree
    for name in ("points.csv", "skipped.csv", "scoreboard.csv", "report.md",
                 "figures/sim_vs_real.png", "figures/ape_cdf.png",
                 "figures/tp_trend.png"):  # fmt: skip
        assert (out / name).exists(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_simulated"] == 2 and summary["num_skipped"] == 1
    assert set(summary["skipped"]) == {"pd-workers"}


def test_filter_and_sample_narrow_the_points(tmp_path: Path) -> None:
    """--filter backend=trtllm keeps the fp4 row only (simulated); --sample 1 draws one."""
    _register()
    path = _file(tmp_path, ROWS)
    runner = CliRunner()
    only = runner.invoke(app, ["validate", "inferencex", str(path), "--out",
                               str(tmp_path / "a"), "--filter", "backend=trtllm"])  # fmt: skip
    assert only.exit_code == 0, only.output
    assert "1 of 1 points simulated" in only.output
    two = [*ROWS, LLAMA | {"id": "llama_fp8_c2_again"}]
    sampled = runner.invoke(app, ["validate", "inferencex", str(_file(tmp_path, two)),
                                  "--out", str(tmp_path / "b"), "--sample", "1"])  # fmt: skip
    assert sampled.exit_code == 0, sampled.output
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["num_sampled"] == 1


@pytest.mark.parametrize(
    ("extra", "rows", "words"),
    [
        ([], [LLAMA | {"system": ""}], "points.csv:2 column 'system': missing"),
        (["--filter", "gpu=b200"], ROWS, "--filter: unknown filter key"),
    ],
)
def test_bad_input_ends_with_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    rows: list[dict[str, str]],
    words: str,
) -> None:
    """Exit 2, one line naming what was wrong; nothing written."""
    out = tmp_path / "out"
    argv = ["sincere", "validate", "inferencex", str(_file(tmp_path, rows)), "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv + extra)
    with pytest.raises(SystemExit) as stop:
        main()
    assert stop.value.code == 2
    assert words in " ".join(capsys.readouterr().err.split())
    assert not out.exists()
