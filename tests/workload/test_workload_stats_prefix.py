"""Prefix reuse of a trace with block ids: the unbounded ratio, the LRU curve, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from sincere.cli.app import app
from sincere.core.request import RequestArrays
from sincere.workload.stats import prefix_reuse, reuse_curve, trace_stats


def _trace(prompts: list[int], ids: list[list[int]]) -> RequestArrays:
    n = len(prompts)
    return RequestArrays.build(
        arrival_at=[float(k) for k in range(n)],
        prompt_tokens=prompts,
        output_tokens=[1] * n,
        models=["m"],
        block_ids=ids,
        block_tokens=10,
    )


def test_reuse_counts_leading_seen_blocks_with_partial_tails() -> None:
    """Leading seen blocks count (a partial last block by its tokens); the walk stops at a miss."""
    req = _trace([25, 25, 35, 12], [[1, 2, 3], [1, 2, 3], [1, 9, 3, 4], [1]])
    # second: all 25; third: block 1 only (10), block 2 differs in its chain; fourth: 10 of 12
    assert prefix_reuse(req) == (25 + 10 + 10) / (25 + 25 + 35 + 12)


def test_bounded_cache_reuses_less_and_the_curve_is_monotone() -> None:
    """An LRU of 2 blocks loses reuse a larger one keeps; the curve never decreases."""
    req = _trace([30, 30, 30], [[1, 2, 3], [7, 8, 9], [1, 2, 3]])
    assert prefix_reuse(req, capacity_blocks=2) == 0.0
    assert prefix_reuse(req, capacity_blocks=6) == prefix_reuse(req) == 30 / 90
    rates = [p.hit_rate for p in reuse_curve(req)]
    assert rates == sorted(rates) and rates[-1] == prefix_reuse(req)


def test_trace_without_block_ids_has_no_prefix_fields() -> None:
    """A trace with no block ids keeps the old statistics, with no prefix fields."""
    req = RequestArrays.build(arrival_at=[0.0, 1.0], prompt_tokens=[5, 6], output_tokens=[1, 1],
                              models=["m"])  # fmt: skip
    assert "prefix_reuse_ratio" not in trace_stats(req).to_dict()


def test_cli_reports_prefix_reuse_ratio(tmp_path: Path) -> None:
    """`trace stats --json` on a Mooncake file reports prefix_reuse_ratio and the curve."""
    rows = [
        {"timestamp": 0, "input_length": 1024, "output_length": 3, "hash_ids": [0, 1]},
        {"timestamp": 10, "input_length": 1024, "output_length": 3, "hash_ids": [0, 2]},
    ]
    path = tmp_path / "mc.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = CliRunner().invoke(app, ["trace", "stats", str(path), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["prefix_reuse_ratio"] == 0.25
    assert out["reuse_curve"][-1]["hit_rate"] == 0.25


def test_mooncake_trace_reuse_is_about_37_percent(shared_data: Path) -> None:
    """Mooncake's conversation trace: about 37 % of prompt tokens in seen leading blocks."""
    from sincere.workload.traces import read_trace

    req = read_trace(shared_data / "traces" / "mooncake_conversation_trace.jsonl")
    assert 0.36 < prefix_reuse(req) < 0.38
