"""The gateway reads a speculating engine's ``vllm:spec_decode_*`` counters from its
/metrics and shows the observed acceptance rate per instance on /health."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp

from sincere.serve.emulator.config import EmulatorConfig
from sincere.serve.emulator.server import EmulatorServer
from sincere.serve.gateway.config import parse_config
from sincere.serve.gateway.instances import parse_vllm_metrics
from sincere.serve.gateway.server import Gateway

PAGE = """\
# TYPE vllm:spec_decode_num_drafts counter
vllm:spec_decode_num_drafts_total{engine="0",model_name="m"} 10.0
vllm:spec_decode_num_draft_tokens_total{engine="0",model_name="m"} 30.0
vllm:spec_decode_num_accepted_tokens_total{engine="0",model_name="m"} 12.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="m",position="0"} 7.0
vllm:num_requests_running{engine="0",model_name="m"} 2.0
"""


def _total(text: str, name: str) -> float:
    """The sum of ``name``'s samples in Prometheus text."""
    return sum(float(v) for v in re.findall(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$",
                                            text, re.M))  # fmt: skip


def test_spec_decode_counters_give_the_acceptance_rate() -> None:
    """Drafts, drafted and accepted tokens are read (per-position ones are not summed in);
    a page without them has no counts."""
    sample = parse_vllm_metrics(PAGE, 1.0)
    assert sample is not None and sample.spec is not None
    assert (sample.spec.drafts, sample.spec.draft_tokens, sample.spec.accepted_tokens) == (
        10.0, 30.0, 12.0)  # fmt: skip
    assert sample.spec.acceptance_rate == 12.0 / 30.0
    assert sample.load.num_running == 2
    plain = parse_vllm_metrics('vllm:num_requests_running{model_name="m"} 1\n', 1.0)
    assert plain is not None and plain.spec is None


def test_gateway_health_shows_a_speculating_emulators_acceptance() -> None:
    """An emulator drafting k = 3 at acceptance 0.6 behind the gateway, scraped through its
    /metrics: /health's spec_acceptance is its accepted / drafted tokens."""
    seen: dict[str, Any] = {}
    spec = {"method": "eagle", "num_draft_tokens": 3, "acceptance": 0.6, "seed": 7}

    async def main() -> None:
        emu_config = EmulatorConfig.model_validate(
            {"model": "llama-3.1-8b", "engine": {"speculation": spec}}
        )
        async with EmulatorServer(emu_config) as emu, aiohttp.ClientSession() as session:
            config = parse_config({
                "port": 0, "admission": {"enabled": False},
                "backends": [{"name": "e0", "url": emu.url, "models": [emu.model_name]}],
                "scrape": {"enabled": True, "interval_ms": 50, "max_age_s": 5.0},
            })  # fmt: skip
            async with Gateway(config) as gw:
                for _ in range(3):
                    body = {"model": emu.model_name, "prompt": "hi", "max_tokens": 40,
                            "sincere": {"output_tokens": 40, "prompt_tokens": 100}}  # fmt: skip
                    async with session.post(gw.url + "/v1/completions", json=body) as resp:
                        assert resp.status == 200, await resp.text()
                async with session.get(emu.url + "/metrics") as resp:
                    seen["metrics"] = await resp.text()
                await asyncio.sleep(0.3)  # a scrape after the last request
                async with session.get(gw.url + "/health") as resp:
                    seen["health"] = await resp.json()

    asyncio.run(asyncio.wait_for(main(), 30))
    drafted = _total(seen["metrics"], "vllm:spec_decode_num_draft_tokens_total")
    accepted = _total(seen["metrics"], "vllm:spec_decode_num_accepted_tokens_total")
    assert drafted > 0 and 0 < accepted < drafted
    assert seen["health"]["spec_acceptance"] == {"e0": accepted / drafted}
