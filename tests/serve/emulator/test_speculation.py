"""An emulated engine that speculates streams every accepted token and reports vLLM's
``vllm:spec_decode_*`` counters."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp

from sincere.serve.emulator.config import EmulatorConfig
from sincere.serve.emulator.server import EmulatorServer


def _samples(text: str, name: str) -> dict[str, float]:
    """Every sample of ``name`` in Prometheus text, by its label set."""
    pattern = re.compile(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", re.M)
    return {labels: float(v) for labels, v in pattern.findall(text)}


def _serve(engine: dict[str, Any], max_tokens: int) -> tuple[dict[str, Any], str]:
    """One completion of ``max_tokens`` tokens from an emulator; its reply and /metrics."""
    seen: dict[str, Any] = {}

    async def main() -> None:
        config = EmulatorConfig.model_validate({"model": "llama-3.1-8b", "engine": engine})
        async with EmulatorServer(config) as server, aiohttp.ClientSession() as session:
            body = {"model": server.model_name, "prompt": "hi", "max_tokens": max_tokens,
                    "sincere": {"output_tokens": max_tokens, "prompt_tokens": 100}}  # fmt: skip
            async with session.post(server.url + "/v1/completions", json=body) as resp:
                assert resp.status == 200
                seen["reply"] = await resp.json()
            async with session.get(server.url + "/metrics") as resp:
                seen["metrics"] = await resp.text()

    asyncio.run(asyncio.wait_for(main(), 30))
    return seen["reply"], seen["metrics"]


def test_full_acceptance_streams_every_token_and_counts_vllm_spec_decode() -> None:
    """k = 3 at acceptance 1: 21 tokens are the prefill's one and 5 drafts of 3, all kept;
    the counters say so, per position too."""
    spec = {"method": "eagle", "num_draft_tokens": 3, "acceptance": 1.0}
    reply, metrics = _serve({"speculation": spec}, 21)
    assert reply["usage"]["completion_tokens"] == 21
    label = '{engine="0",model_name="llama-3.1-8b"}'
    assert _samples(metrics, "vllm:spec_decode_num_drafts_total") == {label: 5.0}
    assert _samples(metrics, "vllm:spec_decode_num_draft_tokens_total") == {label: 15.0}
    assert _samples(metrics, "vllm:spec_decode_num_accepted_tokens_total") == {label: 15.0}
    per_pos = _samples(metrics, "vllm:spec_decode_num_accepted_tokens_per_pos_total")
    assert sorted(per_pos.values()) == [5.0, 5.0, 5.0]
    assert all('position="' in labels for labels in per_pos)
    assert _samples(metrics, "vllm:generation_tokens_total") == {label: 21.0}


def test_no_spec_decode_families_without_speculation() -> None:
    """As vLLM, the counters exist only when the engine speculates."""
    reply, metrics = _serve({}, 5)
    assert reply["usage"]["completion_tokens"] == 5
    assert "vllm:spec_decode" not in metrics
