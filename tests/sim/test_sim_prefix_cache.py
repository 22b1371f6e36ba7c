"""Prefix caching end to end on Mooncake's conversation trace (shared data; skipped without).

The simulated hit rate with an unbounded cache matches the trace's prefix reuse ratio; a
bounded cache gets less, more blocks never less.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sincere.sim import load_config, simulate
from sincere.workload.config import generate
from sincere.workload.stats import prefix_reuse

NUM_REQUESTS = 600


def _config(trace: Path, num_kv_blocks: int, caching: bool = True) -> dict[str, Any]:
    base = {
        "seed": 0,
        "workload": {"trace": {"path": str(trace)}, "models": {"llama-3.1-8b": 1.0}},
        "instances": [
            {
                "model": "llama-3.1-8b",
                "accelerator": "H100-SXM",
                "engine": {"num_kv_blocks": num_kv_blocks, "enable_prefix_caching": caching},
            }
        ],
    }
    return load_config(base).model_dump(mode="json", exclude_none=True)


@pytest.fixture(scope="module")
def head(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trace's first requests (arrival order), as a Mooncake file."""
    lines = (shared_data / "traces" / "mooncake_conversation_trace.jsonl").read_text().splitlines()
    path = tmp_path_factory.mktemp("mooncake") / "head.jsonl"
    path.write_text("\n".join(lines[:NUM_REQUESTS]) + "\n")
    return path


def test_unbounded_cache_hit_rate_equals_prefix_reuse_ratio(head: Path) -> None:
    """Huge num_kv_blocks: simulated hit_rate within 1 point of the trace's reuse ratio."""
    config = _config(head, 10_000_000)
    reuse = prefix_reuse(generate(load_config(config).workload, 0))
    summary = simulate(config).summary
    assert summary["num_rejected"] == 0
    assert abs(summary["prefix_cache"]["hit_rate"] - reuse) < 0.01
    assert reuse > 0.15


def test_bounded_caches_hit_less_and_more_blocks_never_hit_less(head: Path) -> None:
    """Hit rate against num_kv_blocks is monotone and below the unbounded one."""
    rates = []
    for blocks in (12_000, 48_000, 200_000, 10_000_000):
        summary = simulate(_config(head, blocks)).summary
        assert summary["num_rejected"] == 0
        rates.append(summary["prefix_cache"]["hit_rate"])
    assert rates == sorted(rates)
    assert rates[0] < rates[-1] - 0.03


def test_caching_off_has_no_hits_and_later_first_tokens(head: Path) -> None:
    """enable_prefix_caching false: hit rate 0 and a higher mean TTFT than with caching."""
    off = simulate(_config(head, 10_000_000, caching=False)).summary
    on = simulate(_config(head, 10_000_000)).summary
    assert off["prefix_cache"]["hit_rate"] == 0.0
    assert on["ttft_s"]["mean"] < off["ttft_s"]["mean"]
