"""Admission through HTTP judges a request on its own prompt, not other tenants' TTFTs.

A fake engine whose first token takes time in proportion to the prompt (as a prefill
does): one tenant's long batch prompts must not close the interactive tier to another
tenant's short prompts, while a long interactive prompt that truly cannot meet its
target is still refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from sincere.serve.backends.fake_upstream import FakeUpstream
from sincere.serve.gateway.config import parse_config
from sincere.serve.gateway.server import Gateway

LONG_PROMPT = "x" * 30_000  # ~7,500 tokens at the gateway's estimate
LONG_TTFT_S = 1.6  # the fake's prefill of the long prompt: beyond interactive's 1 s


def run(factory: Callable[[], Awaitable[None]]) -> None:
    """One async test body with a hard time bound."""
    asyncio.run(asyncio.wait_for(factory(), 40))


def config(url: str) -> Any:
    return parse_config(
        {
            "port": 0,
            "backends": [{"name": "b0", "url": url, "models": ["m"], "metrics_path": None}],
            "scrape": {"enabled": False},
            "tiers": {
                "interactive": {"ttft_s": 1.0, "priority": 0},
                "batch": {"ttlt_s": 600, "priority": 2},
            },
            "default_tier": "interactive",
            "admission": {"enabled": True, "shed_factor": 1.0},
        }
    )


async def stream(s: aiohttp.ClientSession, url: str, prompt: str, tier: str) -> int:
    """Send one ``max_tokens: 1`` stream in ``tier``; its status once read whole."""
    body = {"model": "m", "prompt": prompt, "max_tokens": 1, "stream": True}
    body["sincere"] = {"tier": tier}
    async with s.post(url + "/v1/completions", json=body) as r:
        await r.read()
        return r.status


def test_long_batch_prompts_do_not_lock_out_short_interactive_ones() -> None:
    """After long batch prompts measured 1.6 s TTFTs, short interactive requests are all
    admitted (and served in time); a long interactive prompt is still refused (429)."""

    async def main() -> None:
        up = FakeUpstream(num_tokens=1, ttft_per_prompt_char_s=LONG_TTFT_S / len(LONG_PROMPT))
        async with up, Gateway(config(up.url)) as gw, aiohttp.ClientSession() as s:
            batch = [stream(s, gw.url, LONG_PROMPT, "batch") for _ in range(4)]
            assert await asyncio.gather(*batch) == [200] * 4
            short = [await stream(s, gw.url, "hi", "interactive") for _ in range(10)]
            long_interactive = await stream(s, gw.url, LONG_PROMPT, "interactive")
        assert short == [200] * 10
        assert long_interactive == 429

    run(main)
