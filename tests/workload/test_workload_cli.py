"""``sincere trace stats`` and ``sincere trace convert`` through the typer app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import sincere.cli.trace  # noqa: F401  (registers the trace commands)
from sincere.cli.app import app
from sincere.core.errors import ConfigError
from sincere.workload.traces import read_trace

runner = CliRunner()


def test_stats_json_and_plot(shared_data: Path, tmp_path: Path) -> None:
    """stats prints JSON statistics of a real trace and writes a PNG."""
    png = tmp_path / "conv.png"
    trace = shared_data / "traces" / "AzureLLMInferenceTrace_conv.csv"
    result = runner.invoke(app, ["trace", "stats", str(trace), "--json", "--plot", str(png)])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    assert stats["num_requests"] == 19_366
    assert 5.0 < stats["mean_rate"] < 6.0 and stats["prompt"]["p50"] == 1020
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_stats_sample_table(tmp_path: Path) -> None:
    """stats --sample needs no data file and prints a table."""
    result = runner.invoke(app, ["trace", "stats", "--sample", "--num-requests", "500"])
    assert result.exit_code == 0, result.output
    assert "mean rate (req/s)" in result.output and "500" in result.output


def test_stats_needs_file_or_sample() -> None:
    """stats with neither a file nor --sample fails with a reason."""
    result = runner.invoke(app, ["trace", "stats"])
    assert isinstance(result.exception, ConfigError)
    assert "give a trace FILE or --sample" in str(result.exception)


def test_convert_round_trip(shared_data: Path, tmp_path: Path) -> None:
    """convert rewrites the Azure code trace as Parquet and as Mooncake JSONL."""
    src = shared_data / "traces" / "AzureLLMInferenceTrace_code.csv"
    out = tmp_path / "code.parquet"
    result = runner.invoke(app, ["trace", "convert", str(src), str(out)])
    assert result.exit_code == 0, result.output
    assert len(read_trace(out)) == 8_819
    mc = tmp_path / "code.jsonl"
    result = runner.invoke(app, ["trace", "convert", str(out), str(mc), "--to", "mooncake"])
    assert result.exit_code == 0, result.output
    assert read_trace(mc).prompt_tokens.sum() == read_trace(out).prompt_tokens.sum()


def test_convert_unknown_format(tmp_path: Path, shared_data: Path) -> None:
    """An unknown output extension is refused, listing the writable formats."""
    src = shared_data / "traces" / "AzureLLMInferenceTrace_code.csv"
    result = runner.invoke(app, ["trace", "convert", str(src), str(tmp_path / "x.txt")])
    with pytest.raises(ConfigError, match="allowed: azure, burstgpt, mooncake"):
        raise result.exception  # type: ignore[misc]
