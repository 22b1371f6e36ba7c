"""The emulator's engine caches prompt prefixes it sees as text, and says so under vLLM's names."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp

from sincere.bench.prompts import BlockTexts, block_prompt
from sincere.serve.emulator.config import EmulatorConfig
from sincere.serve.emulator.server import EmulatorServer

# 2 ms decode steps, 3 ms prefills (plus 0.05 ms a prompt token)
STEP = {"kind": "inferno", "params": {"alpha_ms": 2, "beta_ms": 0, "gamma_ms": 3,
                                      "delta_ms": 0.05}}  # fmt: skip


def _metric(text: str, name: str) -> float:
    """Sum of every sample of ``name`` in Prometheus text."""
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$", re.M)
    return sum(float(v) for v in pattern.findall(text))


def test_shared_prefix_hits_the_emulated_cache() -> None:
    """A second prompt sharing 60 of its 64 blocks is served 960 tokens from the cache."""
    texts = BlockTexts(16)
    first = block_prompt(list(range(64)), 1024, texts)
    second = block_prompt([*range(60), 100, 101, 102, 103], 1024, texts)
    seen: dict[str, Any] = {}

    async def main() -> None:
        config = EmulatorConfig.model_validate(
            {"step_model": STEP, "engine": {"num_kv_blocks": 4096}}
        )
        async with EmulatorServer(config) as server, aiohttp.ClientSession() as session:
            for key, prompt in (("first", first), ("second", second)):
                body = {"model": server.model_name, "prompt": prompt, "max_tokens": 2,
                        "sincere": {"output_tokens": 2, "prompt_tokens": 1024}}  # fmt: skip
                async with session.post(server.url + "/v1/completions", json=body) as resp:
                    assert resp.status == 200
                async with session.get(server.url + "/metrics") as resp:
                    seen[key] = await resp.text()

    asyncio.run(asyncio.wait_for(main(), 30))
    assert _metric(seen["first"], "vllm:prefix_cache_hits_total") == 0
    assert _metric(seen["second"], "vllm:prefix_cache_queries_total") == 2048
    assert _metric(seen["second"], "vllm:prefix_cache_hits_total") == 960
