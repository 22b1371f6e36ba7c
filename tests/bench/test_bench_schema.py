"""The load generator's outputs share the simulator's schema; prompt and URL helpers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sincere.bench import BenchOptions, CallTiming, endpoint_url, run_bench, synthetic_prompt
from sincere.bench.results import itl_table
from sincere.core.errors import ConfigError
from sincere.core.records import REQUEST_COLUMNS
from sincere.core.request import RequestArrays
from sincere.sim.api import simulate

FakeServer = Any  # tests/bench/conftest.py

_SIM_CONFIG = {
    "seed": 1,
    "workload": {
        "num_requests": 5,
        "arrival": {"kind": "poisson", "rate": 2.0},
        "lengths": {
            "prompt": {"kind": "fixed", "tokens": 8},
            "output": {"kind": "fixed", "tokens": 4},
        },
        "models": {"llama-3-8b": 1.0},
    },
    "instances": [{"model": "llama-3-8b", "accelerator": "A100-80GB"}],
}


def test_summary_keys_equal_the_simulators(fake_server: FakeServer, tmp_path: Path) -> None:
    """summary.json has the simulator's keys (plus 'client'), and the same per-tier keys."""
    sim = simulate(_SIM_CONFIG)
    reqs = RequestArrays.build([0.0, 0.01, 0.02], [8, 8, 8], [3, 4, 5], models=("m",))
    result = run_bench(fake_server.url, reqs, BenchOptions(stream=True))
    assert set(result.summary) - {"client"} == set(sim.summary)
    tier_keys = set(next(iter(sim.summary["tiers"].values())))
    assert set(result.summary["tiers"]["default"]) == tier_keys
    for key in ("ttft_s", "tpot_s", "itl_s", "e2e_s"):
        assert set(result.summary[key]) == set(sim.summary[key])
    out = result.write(tmp_path / "run")
    table = pq.read_table(out / "requests.parquet")
    assert table.column_names[: len(REQUEST_COLUMNS)] == list(REQUEST_COLUMNS)
    assert pq.read_table(out / "itl.parquet").num_rows == 2 + 3 + 4
    saved = json.loads((out / "summary.json").read_text())
    assert saved["num_completed"] == 3 and saved["queue_s"]["p50"] is None


@given(st.integers(1, 3000), st.integers(0, 10**6))
@settings(max_examples=40, deadline=None)
def test_synthetic_prompt_has_one_word_per_token(num_tokens: int, index: int) -> None:
    """A synthetic prompt of n tokens is n short words, about 4 characters per token."""
    text = synthetic_prompt(num_tokens, index)
    assert len(text.split(" ")) == num_tokens
    assert 4 * num_tokens - 2 <= len(text) <= 4 * num_tokens


def test_synthetic_prompts_differ_by_index() -> None:
    """Different request indices give different texts (no accidental prefix sharing)."""
    assert synthetic_prompt(50, 1)[:40] != synthetic_prompt(50, 2)[:40]
    with pytest.raises(ConfigError, match="prompt length must be >= 1"):
        synthetic_prompt(0)


@pytest.mark.parametrize(
    ("url", "api", "want"),
    [
        ("http://h:1", "completions", "http://h:1/v1/completions"),
        ("http://h:1/", "chat", "http://h:1/v1/chat/completions"),
        ("http://h:1/v1", "chat", "http://h:1/v1/chat/completions"),
        ("https://h/x/v1/completions", "chat", "https://h/x/v1/completions"),
    ],
)
def test_endpoint_url_completes_the_path(url: str, api: Any, want: str) -> None:
    """A root, a /v1 or a full endpoint URL resolve to the endpoint to POST to."""
    assert endpoint_url(url, api) == want


def test_bad_url_and_options_raise_config_errors() -> None:
    """A URL without a scheme and a non-positive time limit name the bad value."""
    with pytest.raises(ConfigError, match="must start with http"):
        endpoint_url("localhost:8000", "completions")
    with pytest.raises(ConfigError, match="time_limit_s must be a positive"):
        BenchOptions(time_limit_s=0)
    with pytest.raises(ConfigError, match="max_concurrency must be >= 1"):
        BenchOptions(max_concurrency=0)


@given(st.lists(st.lists(st.floats(0, 100), max_size=8), max_size=12))
@settings(max_examples=60, deadline=None)
def test_itl_table_has_one_row_per_gap(chunks: list[list[float]]) -> None:
    """Every request with c chunks gives c-1 gaps, each the difference of its own times."""
    timings = [CallTiming(chunk_at=sorted(c)) for c in chunks]
    table = itl_table(timings).to_pydict()
    assert len(table["gap_s"]) == sum(max(len(c) - 1, 0) for c in chunks)
    for rid, gi, gap in zip(table["request_id"], table["gap_index"], table["gap_s"], strict=True):
        times = sorted(chunks[rid])
        assert gap == pytest.approx(times[gi + 1] - times[gi])
    assert np.all(np.asarray(table["gap_s"]) >= 0)
