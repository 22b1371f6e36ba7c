"""The emulator's KV offload tier counters: vLLM's names, cumulative, absent without tiers."""

from __future__ import annotations

import re

from sincere.engine.base import EngineLoad
from sincere.engine.kv_tiers import KvTierStats
from sincere.serve.emulator.metrics import EmulatorMetrics

LOAD = EngineLoad(1, 0, 0, 0, 0, 0.1, 0.0)
LABELS = 'engine="0",model_name="m"'


def _stats(scale: int) -> KvTierStats:
    return KvTierStats(
        external_query_tokens=300 * scale, cpu_hit_tokens=64 * scale, disk_hit_tokens=16 * scale,
        gpu_to_cpu_bytes=4e6 * scale, cpu_to_disk_bytes=1e6 * scale, cpu_to_gpu_bytes=2e6 * scale,
        disk_to_gpu_bytes=0.5e6 * scale, load_s=0.01 * scale, delay_s=0.01 * scale,
        num_dropped_blocks=scale,
    )  # fmt: skip


def test_an_engine_without_tiers_exports_no_offload_counters() -> None:
    """No tier stats: the page has no kv_offload series (unchanged for such engines)."""
    text = EmulatorMetrics("m").render(LOAD, 0).decode()
    assert "kv_offload" not in text and "kv_tier_hit_tokens" not in text


def test_tier_counters_follow_the_engine_totals_under_vllm_names() -> None:
    """Bytes by transfer type, hits by tier and the external prefix-cache counters move on
    to the engine's cumulative totals at each render."""
    metrics = EmulatorMetrics("m")
    metrics.render(LOAD, 0, _stats(1))
    text = metrics.render(LOAD, 0, _stats(2)).decode()
    expected = {
        f'vllm:kv_offload_total_bytes_total{{{LABELS},transfer_type="GPU_to_CPU"}}': 8e6,
        f'vllm:kv_offload_total_bytes_total{{{LABELS},transfer_type="CPU_to_GPU"}}': 4e6,
        f'vllm:kv_offload_total_bytes_total{{{LABELS},transfer_type="CPU_to_DISK"}}': 2e6,
        f'vllm:kv_offload_total_bytes_total{{{LABELS},transfer_type="DISK_to_GPU"}}': 1e6,
        f'sincere:kv_tier_hit_tokens_total{{{LABELS},tier="cpu"}}': 128.0,
        f'sincere:kv_tier_hit_tokens_total{{{LABELS},tier="disk"}}': 32.0,
        f"vllm:external_prefix_cache_queries_total{{{LABELS}}}": 600.0,
        f"vllm:external_prefix_cache_hits_total{{{LABELS}}}": 160.0,
    }
    values = {}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name in expected:
            values[name] = float(value)
    assert values == expected


def test_an_emulator_with_kv_offload_serves_the_tier_counters() -> None:
    """engine.kv_offload in the emulator's config: its /metrics page carries the tier series."""
    import aiohttp
    from tests.serve.emulator.test_vllm_api import MODEL, _post, _run

    from sincere.serve.emulator.server import EmulatorServer

    async def check(server: EmulatorServer, session: aiohttp.ClientSession) -> None:
        body = {"model": MODEL, "prompt": "a b c", "max_tokens": 3}
        await _post(session, server.url + "/v1/completions", body)
        async with session.get(server.url + "/metrics") as resp:
            text = await resp.text()
        assert 'transfer_type="GPU_to_CPU"' in text and 'tier="disk"' in text

    _run(check, engine={"num_kv_blocks": 4096, "kv_offload": {"cpu_gib": 1}})


def _by_label(text: str, name: str, label: str) -> dict[str, float]:
    """``name``'s samples in Prometheus text by the value of ``label``."""
    pattern = re.compile(rf'^{re.escape(name)}\{{[^}}]*{label}="([^"]+)"[^}}]*\}} (\S+)$', re.M)
    return {key: float(value) for key, value in pattern.findall(text)}


def test_tier_loads_count_as_external_kv_transfer_not_local_cache_hits() -> None:
    """A prompt whose blocks were evicted to the CPU tier and come back: vLLM counts tokens
    loaded through its offload connector as ``external_kv_transfer`` (cached by source
    ``host``), so local_cache_hit + external_kv_transfer = cached tokens and the external
    part is exactly the CPU tier's hit tokens."""
    import asyncio

    import aiohttp

    from sincere.bench.prompts import BlockTexts, block_prompt
    from sincere.serve.emulator.config import EmulatorConfig
    from sincere.serve.emulator.server import EmulatorServer

    texts = BlockTexts(16)
    first = block_prompt(list(range(64)), 1024, texts)  # 64 blocks of 16 tokens
    other = block_prompt(list(range(200, 264)), 1024, texts)  # evicts most of ``first``
    seen: dict[str, str] = {}

    async def main() -> None:
        config = EmulatorConfig.model_validate({
            "engine": {"num_kv_blocks": 80, "kv_offload": {"cpu_gib": 1}},
            "step_model": {"kind": "inferno", "params": {"alpha_ms": 2, "beta_ms": 0,
                                                         "gamma_ms": 3, "delta_ms": 0.05}},
        })  # fmt: skip
        async with EmulatorServer(config) as server, aiohttp.ClientSession() as session:
            for prompt in (first, other, first):
                body = {"model": server.model_name, "prompt": prompt, "max_tokens": 2,
                        "sincere": {"output_tokens": 2, "prompt_tokens": 1024}}  # fmt: skip
                async with session.post(server.url + "/v1/completions", json=body) as resp:
                    assert resp.status == 200, await resp.text()
            async with session.get(server.url + "/metrics") as resp:
                seen["text"] = await resp.text()

    asyncio.run(asyncio.wait_for(main(), 30))
    text = seen["text"]
    by_source = _by_label(text, "vllm:prompt_tokens_by_source_total", "source")
    cached_by = _by_label(text, "vllm:prompt_tokens_cached_by_source_total", "source")
    tier_hits = _by_label(text, "sincere:kv_tier_hit_tokens_total", "tier")
    # the third prompt finds all but its last token's block: 63 blocks, GPU or CPU
    assert by_source["local_cache_hit"] + by_source["external_kv_transfer"] == 63 * 16
    assert by_source["local_compute"] == 3 * 1024 - 63 * 16
    assert tier_hits["cpu"] > 0 and tier_hits["disk"] == 0
    assert by_source["external_kv_transfer"] == tier_hits["cpu"]
    assert cached_by["host"] == tier_hits["cpu"] and cached_by["disk"] == 0
    assert cached_by["device"] == by_source["local_cache_hit"]
