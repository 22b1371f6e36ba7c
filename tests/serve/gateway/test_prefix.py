"""The gateway's prompt content for prefix routers: block ids from text, sessions from headers."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from sincere.core.prefix import text_block_ids
from sincere.policy.decision_log import DecisionLog, read_log
from sincere.serve.backends.fake_upstream import FakeUpstream
from sincere.serve.content import prompt_block_ids
from sincere.serve.gateway.config import PrefixConfig, parse_config
from sincere.serve.gateway.requests import session_of
from sincere.serve.gateway.server import Gateway
from sincere.serve.protocol import parse_body

TIMEOUT_S = 20.0
LONG = "the cat sat on the big red box and saw the sun " * 40  # ~480 pseudo-tokens


def run(factory: Callable[[], Awaitable[None]]) -> None:
    """Run one async test body with a hard time bound."""
    asyncio.run(asyncio.wait_for(factory(), TIMEOUT_S))


def test_block_ids_follow_text_block_ids() -> None:
    """A completion's block ids are text_block_ids of its prompt, cut to its counted tokens."""
    creq = parse_body({"model": "m", "prompt": LONG}, "completion")
    got = prompt_block_ids(creq.prompt, creq.body, creq.prompt_tokens, 16)
    assert got == text_block_ids(LONG, 16)[: -(-creq.prompt_tokens // 16)]
    assert prompt_block_ids(creq.prompt, creq.body, 20, 16) == got[:2]
    ids = [7] * 40
    by_ids = parse_body({"model": "m", "prompt": ids}, "completion")
    assert prompt_block_ids(None, by_ids.body, 40, 16) == text_block_ids("", 16, token_ids=ids)
    chat = parse_body({"model": "m", "messages": [{"role": "user", "content": LONG}]}, "chat")
    want = text_block_ids(f"user: {LONG}", 16)[: -(-chat.prompt_tokens // 16)]
    assert prompt_block_ids(chat.prompt, chat.body, chat.prompt_tokens, 16) == want


def test_session_from_header_then_user() -> None:
    """The session header wins over the body's user; nothing when disabled or absent."""
    creq = parse_body({"model": "m", "prompt": "x", "user": "alice"}, "completion")
    on = PrefixConfig()
    assert session_of({"x-session-id": "s1"}, creq, on) == "s1"
    assert session_of({}, creq, on) == "alice"
    assert session_of({}, creq, PrefixConfig(session_from_user=False)) is None
    assert session_of({"x-session-id": "s1"}, creq, PrefixConfig(enabled=False)) is None


def test_prefix_aware_gateway_routes_a_shared_prefix_together() -> None:
    """Live, prompts sharing a long prefix go to the instance that saw it, and the decision
    log carries their block ids and session."""
    lines: list[str] = []

    async def body() -> None:
        async with (
            FakeUpstream(num_tokens=2, ttft_s=0.3) as u0,
            FakeUpstream(num_tokens=2, ttft_s=0.3) as u1,
        ):
            raw: dict[str, Any] = {
                "port": 0,
                "router": {"name": "prefix-aware"},
                "backends": [
                    {"name": f"b{i}", "url": u.url, "models": ["m"], "metrics_path": None}
                    for i, u in enumerate((u0, u1))
                ],
                "scrape": {"enabled": False},
                "admission": {"enabled": False},
                "prefix": {"block_tokens": 32},
            }
            async with (
                Gateway(parse_config(raw), decisions=DecisionLog(lines.append)) as gw,
                aiohttp.ClientSession() as s,
            ):

                async def send(k: int, prompt: str) -> None:
                    req = {"model": "m", "prompt": prompt, "max_tokens": 2}
                    headers = {"x-session-id": f"s{k}"}
                    async with s.post(gw.url + "/v1/completions", json=req, headers=headers) as r:
                        assert r.status == 200

                busy = asyncio.create_task(send(0, "unrelated " * 60))  # holds b0 a while
                await asyncio.sleep(0.05)
                await send(1, LONG + "one")  # b0 busy: to b1, which now holds the prefix
                await busy
                await send(2, LONG + "two")  # both idle: the prefix decides

    run(body)
    calls = [r for r in read_log(lines) if r["event"] == "decide"]
    routed = [c["decision"]["instance"] for c in calls]
    assert routed == ["b0", "b1", "b1"]
    matched = re.match(r"prefix (\d+)/(\d+) tokens", calls[2]["decision"]["reason"])
    assert matched is not None and int(matched[1]) == int(matched[2]) >= 32 * 10
    assert calls[1]["request"]["block_tokens"] == 32 and calls[1]["request"]["session"] == "s1"


def test_scraper_reads_prefix_cache_counters() -> None:
    """vLLM's prefix-cache counters and the emulator's JSON fields give a hit rate."""
    from sincere.serve.gateway.instances import parse_engine_load, parse_vllm_metrics

    page = (
        'vllm:num_requests_running{model_name="m"} 2.0\n'
        'vllm:prefix_cache_queries_total{model_name="m"} 400.0\n'
        'vllm:prefix_cache_hits_total{model_name="m"} 100.0\n'
    )
    sample = parse_vllm_metrics(page, 1.0)
    assert sample is not None and sample.prefix_hit_rate == 0.25
    assert sample.load.num_running == 2
    only = parse_vllm_metrics('vllm:prefix_cache_hits_total{model_name="m"} 3\n', 1.0)
    assert only is not None and only.prefix_cache_hits == 3 and only.prefix_hit_rate is None
    js = parse_engine_load('{"num_running": 1, "prefix_cache_queries": 10, '
                           '"prefix_cache_hits": 5}', 1.0)  # fmt: skip
    assert js is not None and js.prefix_hit_rate == 0.5
    plain = parse_engine_load('{"num_running": 1}', 1.0)
    assert plain is not None and plain.prefix_hit_rate is None


def test_emulator_exports_prefix_counters_under_vllm_names() -> None:
    """The emulator's /metrics count prefix-cache tokens from its load's cumulative totals."""
    from dataclasses import dataclass

    from sincere.engine.base import EngineLoad
    from sincere.serve.emulator.metrics import EmulatorMetrics
    from sincere.serve.gateway.instances import parse_vllm_metrics

    @dataclass(frozen=True, slots=True)
    class Load(EngineLoad):
        prefix_cache_queries: int = 0
        prefix_cache_hits: int = 0

    metrics = EmulatorMetrics("m")
    base = (1, 0, 0, 0, 0, 0.1, 0.0)
    first = metrics.render(EngineLoad(*base), 0).decode()
    assert 'vllm:prefix_cache_hits_total{engine="0",model_name="m"} 0.0' in first
    metrics.render(Load(*base, prefix_cache_queries=300, prefix_cache_hits=100), 0)
    text = metrics.render(Load(*base, prefix_cache_queries=500, prefix_cache_hits=260), 0)
    sample = parse_vllm_metrics(text.decode(), 0.0)
    assert sample is not None
    assert (sample.prefix_cache_queries, sample.prefix_cache_hits) == (500.0, 260.0)
