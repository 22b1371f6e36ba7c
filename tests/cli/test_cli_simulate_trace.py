"""`sincere simulate CONFIG --trace FILE`: the trace replaces the workload, the cluster stays."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from sincere.cli.app import app

CONFIG = {
    "seed": 0,
    "workload": {
        "num_requests": 50,
        "arrival": {"kind": "poisson", "rate": 1.0},
        "lengths": {"source": "azure-conv-2023"},
        "models": {"llama-3-8b": 1.0},
    },
    "instances": [{"model": "llama-3-8b", "accelerator": "H100-SXM", "count": 2}],
    "router": {"name": "least-outstanding"},
}


def test_simulate_trace_serves_the_trace_with_its_block_ids(tmp_path: Path) -> None:
    """Four Mooncake rows sharing a prefix: 4 requests, hits, and config.yaml names the trace."""
    rows = [
        {"timestamp": 1000 * k, "input_length": 1500, "output_length": 5, "hash_ids": [7, 8, k]}
        for k in range(4)
    ]
    trace = tmp_path / "t.jsonl"
    trace.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["simulate", str(config), "--trace", str(trace), "--out", str(out), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_requests"] == 4
    assert summary["prefix_cache"]["hit_tokens"] > 0
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written["workload"]["trace"]["path"] == str(trace.resolve())
    assert len(written["instances"]) == 1 and written["instances"][0]["count"] == 2


def test_trace_format_without_trace_is_refused(tmp_path: Path) -> None:
    """--trace-format alone is an error naming the option."""
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    result = CliRunner().invoke(
        app, ["simulate", str(config), "--trace-format", "mooncake", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code != 0
    assert "--trace-format needs --trace" in str(result.exception)
