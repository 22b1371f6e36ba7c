"""KV offload tiers through the simulator: config in, tier hits and counters in summary.json."""

from __future__ import annotations

from typing import Any

from sincere.core.request import RequestArrays
from sincere.sim import simulate


def _config(offload: dict[str, Any] | None) -> dict[str, Any]:
    engine: dict[str, Any] = {"num_kv_blocks": 80, "watermark": 0}
    if offload is not None:
        engine["kv_offload"] = offload
    workload = {
        "num_requests": 1,
        "arrival": {"kind": "poisson", "rate": 1.0},
        "lengths": {"source": "azure-conv-2023"},
        "models": {"llama-3.1-8b": 1.0},
    }
    instance = {"model": "llama-3.1-8b", "step_model": {"kind": "roofline"}, "engine": engine}
    return {"seed": 1, "workload": workload, "instances": [instance], "router": {"name": "random"}}


def _requests() -> RequestArrays:
    """Four 1,024-token prompts (64 blocks each, 80 in the pool) one second apart: the
    fourth repeats the first, long evicted from the GPU by the two between."""
    ids = [[1, 2], [3, 4], [5, 6], [1, 2]]
    return RequestArrays.build(
        [0.0, 1.0, 2.0, 3.0],
        [1024] * 4,
        [4] * 4,
        models=("llama-3.1-8b",),
        block_ids=ids,
        block_tokens=512,
    )


def test_a_cpu_tier_turns_an_evicted_prompt_into_a_hit_and_reports_it() -> None:
    """GPU only: the repeat finds nothing; with a 1 GiB CPU tier (512 blocks of 2 MiB) it
    finds all but its last block there, 63 blocks = 1,008 tokens loaded back over PCIe."""
    plain = simulate(_config(None), requests=_requests()).summary
    assert plain["prefix_cache"]["hit_tokens"] == 0 and "kv_tiers" not in plain
    tiered = simulate(_config({"cpu_gib": 1}), requests=_requests()).summary
    assert tiered["prefix_cache"]["hit_tokens"] == 1008
    tiers = tiered["kv_tiers"]
    assert tiers["cpu_hit_tokens"] == 1008 and tiers["external_hit_tokens"] == 1008
    assert tiers["cpu_to_gpu_bytes"] == 63 * 16 * 128 * 1024
    assert tiers["load_s"] == tiers["cpu_to_gpu_bytes"] / 64e9  # H100's PCIe Gen5 x16
    assert tiered["ttft_s"]["mean"] < plain["ttft_s"]["mean"]
