"""Speculative decoding in a simulated run: TPOT falls by the priced speed-up at small batch."""

from __future__ import annotations

from typing import Any

import pytest

from sincere.catalog import get_accelerator, get_model
from sincere.perf.base import Deployment
from sincere.perf.factory import make_step_model
from sincere.perf.speculation import SpeculationParams, SpeculativeDecode
from sincere.sim import simulate

PROMPT, OUTPUT = 256, 512


def _config(speculation: dict[str, Any] | None, seed: int = 0) -> dict[str, Any]:
    engine: dict[str, Any] = {"scheduler": "fcfs"}
    if speculation is not None:
        engine["speculation"] = speculation
    fixed = {"kind": "fixed"}
    return {
        "seed": seed,
        "workload": {
            "num_requests": 30,
            "arrival": {"kind": "poisson", "rate": 0.05},  # about one request at a time
            "lengths": {
                "prompt": {**fixed, "tokens": PROMPT},
                "output": {**fixed, "tokens": OUTPUT},
            },
            "models": {"llama-3.1-8b": 1.0},
        },
        "instances": [{"model": "llama-3.1-8b", "accelerator": "H100-SXM", "engine": engine}],
    }


def test_decode_heavy_tpot_falls_by_the_expected_speedup_at_small_batch() -> None:
    """EAGLE, k = 3 at 0.7: mean TPOT over plain decoding's is SpeculativeDecode's
    speed-up at one sequence (mid-request context) within 5 %; the summary carries vLLM's
    counters at the configured rate."""
    spec = {"method": "eagle", "num_draft_tokens": 3, "acceptance": 0.7}
    plain = simulate(_config(None)).summary
    fast = simulate(_config(spec)).summary
    dep = Deployment(get_model("llama-3.1-8b"), get_accelerator("H100-SXM"))
    decode = SpeculativeDecode(
        make_step_model("roofline", dep, {}), SpeculationParams("eagle", 3, (0.7,)), 32
    )
    expected = decode.speedup(1, PROMPT + OUTPUT // 2)
    assert expected > 1.5
    measured = plain["tpot_s"]["mean"] / fast["tpot_s"]["mean"]
    assert measured == pytest.approx(expected, rel=0.05)
    counters = fast["spec_decode"]
    assert counters["num_draft_tokens"] == 3 * counters["num_drafts"]
    assert counters["acceptance_rate"] == pytest.approx((0.7 + 0.49 + 0.343) / 3, abs=0.02)
    assert "spec_decode" not in plain
    assert fast["instances"]["llama-3.1-8b-0"]["spec_decode"] == counters


def test_same_seed_same_summary() -> None:
    """A run with speculation repeats byte for byte under its seed and moves with it."""
    spec = {"method": "mtp"}
    first = simulate(_config(spec, seed=4)).summary
    assert simulate(_config(spec, seed=4)).summary == first
    assert simulate(_config(spec, seed=5)).summary != first
