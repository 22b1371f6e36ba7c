"""Long answers, read timeouts and client deadlines through HTTP.

A whole (non-streamed) answer's read wait grows with the tokens asked for; a read
timeout is a slow answer, not a failed instance (no breaker failure); a client's
``sincere.deadline_s`` ends the request when it passes -- 504 before the answer
started, an error event mid-stream.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from sincere.serve.backends.fake_upstream import FakeUpstream
from sincere.serve.gateway.config import GatewayConfig, parse_config
from sincere.serve.gateway.server import Gateway


def run(factory: Callable[[], Awaitable[None]]) -> None:
    """One async test body with a hard time bound."""
    asyncio.run(asyncio.wait_for(factory(), 30))


def config(ups: list[FakeUpstream], **backend: Any) -> GatewayConfig:
    backends = [
        {"name": f"b{i}", "url": u.url, "models": ["m"], "metrics_path": None, **backend}
        for i, u in enumerate(ups)
    ]
    return parse_config(
        {
            "port": 0,
            "backends": backends,
            "scrape": {"enabled": False},
            "admission": {"enabled": False},
            "breaker": {"failure_threshold": 2, "cooldown_s": 60},
        }
    )


async def post(s: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with s.post(url + "/v1/completions", json=body) as r:
        return r.status, await r.json()


def test_a_long_whole_answer_gets_a_read_wait_that_grows_with_max_tokens() -> None:
    """A 0.6 s whole answer of 40 tokens passes a 0.3 s read timeout (+0.02 s per token)."""

    async def main() -> None:
        up = FakeUpstream(num_tokens=40, ttft_s=0.6)
        async with up:
            cfg = config([up], read_timeout_s=0.3, read_timeout_per_token_s=0.02)
            async with Gateway(cfg) as gw, aiohttp.ClientSession() as s:
                status, answer = await post(
                    s, gw.url, {"model": "m", "prompt": "hi", "max_tokens": 40}
                )
        assert status == 200 and answer["usage"]["completion_tokens"] == 40

    run(main)


def test_read_timeouts_do_not_open_a_healthy_instances_breaker() -> None:
    """Answers slower than the read timeout fail (502) but leave the breaker closed."""

    async def main() -> None:
        up = FakeUpstream(num_tokens=2, ttft_s=0.5)
        async with up:
            cfg = config([up], read_timeout_s=0.1, read_timeout_per_token_s=0.0)
            async with Gateway(cfg) as gw, aiohttp.ClientSession() as s:
                body = {"model": "m", "prompt": "hi", "max_tokens": 2}
                statuses = [(await post(s, gw.url, body))[0] for _ in range(3)]
                async with s.get(gw.url + "/health") as r:
                    health = await r.json()
        assert statuses == [502] * 3
        assert health["instances"] == {"b0": "closed"}

    run(main)


def test_deadline_ends_a_whole_answer_with_504() -> None:
    """deadline_s 0.3 on a 3 s answer: 504 deadline_exceeded within about the deadline."""

    async def main() -> None:
        up = FakeUpstream(num_tokens=5, ttft_s=3.0)
        async with up, Gateway(config([up])) as gw, aiohttp.ClientSession() as s:
            started = time.monotonic()
            body = {"model": "m", "prompt": "hi", "max_tokens": 5, "sincere": {"deadline_s": 0.3}}
            status, answer = await post(s, gw.url, body)
            took = time.monotonic() - started
        assert status == 504 and answer["error"]["code"] == "deadline_exceeded"
        assert "deadline_s of 0.3s" in answer["error"]["message"]
        assert took < 2.0

    run(main)


def test_deadline_ends_a_stream_with_an_error_event() -> None:
    """deadline_s 0.3 on a 100-token stream at 20 ms per token: an error event, then [DONE]."""

    async def main() -> None:
        up = FakeUpstream(num_tokens=100, token_delay_s=0.02)
        async with up, Gateway(config([up])) as gw, aiohttp.ClientSession() as s:
            body = {
                "model": "m", "prompt": "hi", "max_tokens": 100, "stream": True,
                "sincere": {"deadline_s": 0.3},
            }  # fmt: skip
            started = time.monotonic()
            async with s.post(gw.url + "/v1/completions", json=body) as r:
                lines = [line.strip() async for line in r.content if line.strip()]
            took = time.monotonic() - started
        assert lines[-1] == b"data: [DONE]"
        error = json.loads(lines[-2][len(b"data: ") :])
        assert error["error"]["code"] == "deadline_exceeded"
        assert 1 <= len(lines) - 2 < 100 and took < 2.0

    run(main)
