"""A backend declaring a speculating deployment: the routers' step model runs at the declared
acceptance until the engine's scraped counters hold MIN_DRAFTS drafts, then at the measured
one; the gateway's /health and /metrics show the measured figures."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp
import pytest

from sincere.perf.speculation import PerTokenDecode
from sincere.serve.emulator.config import EmulatorConfig
from sincere.serve.emulator.server import EmulatorServer
from sincere.serve.gateway.config import parse_config
from sincere.serve.gateway.server import Gateway
from sincere.serve.gateway.spec_decode import MIN_DRAFTS, SpecCounts, spec_metrics_lines

MODEL = "llama-3.1-8b"
REAL = {"method": "eagle", "num_draft_tokens": 3, "acceptance": 0.6, "seed": 3}
DECLARED = {**REAL, "acceptance": 0.2}  # what the operator planned with


def _total(text: str, name: str) -> float:
    """The sum of ``name``'s samples in Prometheus text."""
    pattern = rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$"
    return sum(float(v) for v in re.findall(pattern, text, re.M))


def test_metrics_lines_by_hand() -> None:
    """10 drafts of 3, 12 accepted: rate 0.4, mean length 2.2; an instance without drafts
    shows no rate or length."""
    text = spec_metrics_lines([("b", SpecCounts(0, 0, 0)), ("a", SpecCounts(10, 30, 12))])
    assert 'sincere_gateway_spec_acceptance_rate{instance="a"} 0.4\n' in text
    assert 'sincere_gateway_spec_mean_acceptance_length{instance="a"} 2.2\n' in text
    assert 'sincere_gateway_spec_drafts{instance="b"} 0\n' in text
    assert 'acceptance_rate{instance="b"}' not in text
    assert spec_metrics_lines([]) == ""


async def _complete(session: aiohttp.ClientSession, url: str, num_tokens: int) -> None:
    body = {"model": MODEL, "prompt": "hi", "max_tokens": num_tokens,
            "sincere": {"output_tokens": num_tokens, "prompt_tokens": 100}}  # fmt: skip
    async with session.post(url + "/v1/completions", json=body) as resp:
        assert resp.status == 200, await resp.text()


async def _observe(gw: Gateway, session: aiohttp.ClientSession, emu: EmulatorServer) -> Any:
    """Scrape the emulator once; what the gateway and the emulator then show."""
    state = gw.dispatcher.instances["e0"]
    await gw.scrape(state)
    async with session.get(emu.url + "/metrics") as resp:
        engine = await resp.text()
    async with session.get(gw.url + "/health") as resp:
        health = await resp.json()
    async with session.get(gw.url + "/metrics") as resp:
        page = await resp.text()
    model = state.view(MODEL, gw.loop.time(), 5.0).step_model
    assert isinstance(model, PerTokenDecode)
    return engine, health["spec_decode"]["e0"], page, model.spec.params.tokens_per_step()


@pytest.mark.parametrize("load_path", [None, "/sincere/load"])
def test_the_estimate_moves_from_declared_to_measured_acceptance(load_path: str | None) -> None:
    """One short request (under MIN_DRAFTS drafts) keeps the declared k = 3 at 0.2 (1.248
    tokens a step); after 4 x 150 tokens the view's step model yields the emulator's
    measured 1 + accepted / drafts, as its /metrics counters say; read from its Prometheus
    page or from its JSON load alike."""
    seen: dict[str, Any] = {}

    async def main() -> None:
        emu_config = EmulatorConfig.model_validate(
            {"model": MODEL, "engine": {"speculation": REAL}}
        )
        async with EmulatorServer(emu_config) as emu, aiohttp.ClientSession() as session:
            config = parse_config({
                "port": 0, "admission": {"enabled": False}, "scrape": {"enabled": False},
                "backends": [{"name": "e0", "url": emu.url, "models": [MODEL],
                              "load_path": load_path,
                              "deployment": {"model": MODEL,
                                             "engine": {"speculation": DECLARED}}}],
            })  # fmt: skip
            async with Gateway(config) as gw:
                await _complete(session, gw.url, 20)
                seen["short"] = await _observe(gw, session, emu)
                await asyncio.gather(*(_complete(session, gw.url, 150) for _ in range(4)))
                seen["long"] = await _observe(gw, session, emu)

    asyncio.run(asyncio.wait_for(main(), 60))
    engine, health, _, tokens_per_step = seen["short"]
    drafts = _total(engine, "vllm:spec_decode_num_drafts_total")
    assert 0 < drafts < MIN_DRAFTS and health["num_drafts"] == drafts
    assert health["estimate_acceptance"] == "declared"
    assert tokens_per_step == pytest.approx(1 + 0.2 + 0.04 + 0.008)

    engine, health, page, tokens_per_step = seen["long"]
    drafts = _total(engine, "vllm:spec_decode_num_drafts_total")
    drafted = _total(engine, "vllm:spec_decode_num_draft_tokens_total")
    accepted = _total(engine, "vllm:spec_decode_num_accepted_tokens_total")
    assert drafts >= MIN_DRAFTS and drafted == 3 * drafts
    assert health["estimate_acceptance"] == "measured"
    assert health["acceptance_rate"] == pytest.approx(accepted / drafted)
    assert health["mean_acceptance_length"] == pytest.approx(1 + accepted / drafts)
    assert tokens_per_step == pytest.approx(1 + accepted / drafts, abs=1e-9)
    rate = _total(page, "sincere_gateway_spec_acceptance_rate")
    length = _total(page, "sincere_gateway_spec_mean_acceptance_length")
    assert rate == pytest.approx(accepted / drafted, rel=1e-5)
    assert length == pytest.approx(1 + accepted / drafts, rel=1e-5)
