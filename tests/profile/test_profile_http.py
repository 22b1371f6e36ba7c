"""``sincere profile http``: streamed timings, sweep bounds, CSV layout, CLI."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from typer.testing import CliRunner

import sincere.cli.profile  # noqa: F401  (registers the sub-app)
from sincere.cli.app import app
from sincere.core.errors import ConfigError
from sincere.profile.http import HttpProfileConfig, HttpProfiler, profile_http

from .conftest import FakeServer

runner = CliRunner()


@pytest.mark.timing
def test_streamed_ttft_and_tpot_match_the_server(fake_server: FakeServer) -> None:
    """TTFT and TPOT measured on the client are the server's delays (within slack)."""
    fake_server.ttft_s, fake_server.gap_s = 0.05, 0.01
    cfg = HttpProfileConfig(
        fake_server.url, prompt_tokens=(8,), output_tokens=(6,), max_concurrency=2
    )
    rows = profile_http(cfg)
    assert [r["batch_size"] for r in rows] == [1, 2]
    for row in rows:
        assert row["model"] == "fake-model"
        assert 0.045 <= row["ttft_p50_s"] < 0.15
        assert 0.007 <= row["tpot_mean_s"] < 0.03
        assert row["measured_prompt_tokens"] == 8
        assert row["measured_output_tokens"] == 6
        assert row["processing time (s)"] >= 0.9 * (0.05 + 5 * 0.01)
        assert row["throughput (qps)"] == pytest.approx(
            row["batch_size"] / row["processing time (s)"]
        )


def test_sweep_stops_at_the_first_failing_concurrency(fake_server: FakeServer) -> None:
    """Past the server's limit the point records errors and larger ones are skipped."""
    fake_server.max_inflight, fake_server.gap_s = 3, 0.0
    cfg = HttpProfileConfig(
        fake_server.url, prompt_tokens=(4,), output_tokens=(2,), max_concurrency=16, warmup=False
    )
    rows = profile_http(cfg)
    assert [r["batch_size"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["num_errors"] == 1 and rows[-1]["processing time (s)"] is None
    assert "503" in rows[-1]["error"]


def test_plan_covers_every_length_pair_on_the_ladder() -> None:
    """The plan is prompts x outputs x SINCERE's ladder, in that nesting."""
    cfg = HttpProfileConfig(
        "http://x", prompt_tokens=(8, 16), output_tokens=(2,), max_concurrency=5
    )
    plan = HttpProfiler(cfg).plan()
    assert plan == [(p, 2, c) for p in (8, 16) for c in (1, 2, 3, 4, 5)]


def test_bad_config_is_rejected() -> None:
    """Empty or non-positive lengths and concurrency raise ConfigError naming them."""
    with pytest.raises(ConfigError, match="prompt_tokens"):
        HttpProfileConfig("http://x", prompt_tokens=())
    with pytest.raises(ConfigError, match="max_concurrency"):
        HttpProfileConfig("http://x", max_concurrency=0)


def test_cli_writes_sincere_columns_first(fake_server: FakeServer, tmp_path: Path) -> None:
    """The CSV starts with data/sincere's columns and carries monitor columns."""
    out = tmp_path / "p.csv"
    result = runner.invoke(
        app,
        ["profile", "http", fake_server.url, "--out", str(out), "--prompt-tokens", "4,8",
         "--output-tokens", "3", "--max-concurrency", "2", "--monitor-interval", "0.05"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with out.open() as fh:
        header = next(csv.reader(fh))
        rows = list(csv.DictReader(out.open()))
    assert header[:4] == ["model", "batch_size", "processing time (s)", "throughput (qps)"]
    assert {"ttft_mean_s", "ttft_p90_s", "tpot_p50_s", "prompt_tokens"} <= set(header)
    assert "memory/used_memory_sys_MB" in header
    assert len(rows) == 4


def test_cli_rejects_a_bad_length_list(tmp_path: Path) -> None:
    """A non-integer length list exits non-zero with the option named."""
    result = runner.invoke(app, ["profile", "http", "http://x", "--prompt-tokens", "a,b"])
    assert result.exit_code != 0
    assert "--prompt-tokens" in str(result.exception)
