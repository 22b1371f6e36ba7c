"""The gateway's pass-through, routing and fault handling, against in-process upstreams."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import numpy as np

from sincere.core.request import Request
from sincere.policy.router_base import InstanceView
from sincere.policy.routers import make_router
from sincere.serve.backends.fake_upstream import FakeUpstream
from sincere.serve.gateway.config import GatewayConfig, parse_config
from sincere.serve.gateway.server import Gateway

TIMEOUT_S = 20.0


def run(factory: Callable[[], Awaitable[None]]) -> None:
    """Run one async test body with a hard time bound."""
    asyncio.run(asyncio.wait_for(factory(), TIMEOUT_S))


def config(ups: list[FakeUpstream], **extra: Any) -> GatewayConfig:
    backends = [
        {
            "name": f"b{i}",
            "url": u.url,
            "models": ["m"],
            "metrics_path": None,
            **extra.pop(f"b{i}", {}),
        }
        for i, u in enumerate(ups)
    ]
    raw: dict[str, Any] = {"port": 0, "backends": backends, "scrape": {"enabled": False}}
    raw.update(extra)
    return parse_config(raw)


async def post(
    s: aiohttp.ClientSession, url: str, body: dict[str, Any], path: str = "/v1/completions"
) -> tuple[int, dict[str, Any], str]:
    async with s.post(url + path, json=body) as r:
        return r.status, await r.json(), r.headers.get("x-sincere-instance", "")


async def stream(
    s: aiohttp.ClientSession, url: str, body: dict[str, Any], path: str = "/v1/completions"
) -> tuple[int, list[bytes]]:
    async with s.post(url + path, json={**body, "stream": True}) as r:
        lines = [line.strip() async for line in r.content if line.strip()]
        return r.status, lines


BODY = {"model": "m", "prompt": "hello there", "max_tokens": 5}
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


def test_non_streaming_pass_through() -> None:
    """A completion is relayed with the upstream's body and the serving instance named."""

    async def body() -> None:
        async with (
            FakeUpstream(num_tokens=4) as up,
            Gateway(config([up])) as gw,
            aiohttp.ClientSession() as s,
        ):
            status, out, inst = await post(s, gw.url, BODY)
        assert status == 200 and inst == "b0"
        assert out["usage"]["completion_tokens"] == 4
        assert up.bodies[0]["prompt"] == "hello there" and "sincere" not in up.bodies[0]

    run(body)


def test_streaming_pass_through_token_by_token() -> None:
    """An SSE stream arrives as one data event per token, then [DONE]."""

    async def body() -> None:
        async with (
            FakeUpstream(num_tokens=5) as up,
            Gateway(config([up])) as gw,
            aiohttp.ClientSession() as s,
        ):
            status, lines = await stream(s, gw.url, CHAT, "/v1/chat/completions")
        assert status == 200
        assert lines[-1] == b"data: [DONE]"
        tokens = [json.loads(x[5:]) for x in lines[:-1]]
        assert [t["choices"][0]["delta"]["content"] for t in tokens] == [" tok"] * 5

    run(body)


def test_round_robin_sequence_equals_router() -> None:
    """Sequential requests go where a fresh round-robin router sends them."""

    async def body() -> None:
        ups = [FakeUpstream() for _ in range(3)]
        for u in ups:
            await u.start()
        cfg = config(ups, router={"name": "round-robin"})
        async with Gateway(cfg) as gw, aiohttp.ClientSession() as s:
            got = [(await post(s, gw.url, BODY))[2] for _ in range(7)]
        for u in ups:
            await u.close()
        router = make_router("round-robin", np.random.default_rng(0))
        views = [InstanceView(f"b{i}", "m", "x") for i in range(3)]
        req = Request(0, 0.0, "m", 1, 1)
        assert got == [router.route(req, views, 0.0).instance for _ in range(7)]

    run(body)


def test_least_outstanding_avoids_held_instances() -> None:
    """With requests held on two instances, the next goes to the idle third."""

    async def body() -> None:
        ups = [FakeUpstream() for _ in range(3)]
        for u in ups:
            await u.start()
        ups[0].hold, ups[1].hold = asyncio.Event(), asyncio.Event()
        async with (
            Gateway(config(ups, router={"name": "least-outstanding"})) as gw,
            aiohttp.ClientSession() as s,
        ):
            held = [asyncio.create_task(post(s, gw.url, BODY)) for _ in range(2)]
            while ups[0].num_active + ups[1].num_active < 2:
                await asyncio.sleep(0.005)
            third = await post(s, gw.url, BODY)
            assert third[2] == "b2"
            ups[0].hold.set()
            ups[1].hold.set()
            assert sorted([(await t)[2] for t in held]) == ["b0", "b1"]
        for u in ups:
            await u.close()

    run(body)


def test_retry_before_first_byte_on_other_instance() -> None:
    """A 500 from one instance is retried on another; the client sees a success."""

    async def body() -> None:
        async with FakeUpstream() as bad, FakeUpstream() as good:
            bad.fail_status = 500
            cfg = config([bad, good], router={"name": "round-robin"})
            async with Gateway(cfg) as gw, aiohttp.ClientSession() as s:
                results = [await post(s, gw.url, BODY) for _ in range(4)]
                metrics = await (await s.get(gw.url + "/metrics")).text()
        assert all(r[0] == 200 and r[2] == "b1" for r in results)
        assert len(bad.bodies) >= 1
        assert 'sincere_gateway_retries_total{instance="b0"}' in metrics

    run(body)


def test_dead_backend_gives_error_when_alone() -> None:
    """With its only instance down, a request ends with a 502 naming the failure."""

    async def body() -> None:
        up = FakeUpstream()
        await up.start()
        cfg = config([up])
        await up.close()  # nothing listens there any more
        async with Gateway(cfg) as gw, aiohttp.ClientSession() as s:
            status, out, _ = await post(s, gw.url, BODY)
        assert status == 502
        assert "every instance tried failed" in out["error"]["message"]

    run(body)


def test_mid_stream_failure_gives_error_event() -> None:
    """An upstream cut after two tokens ends the client stream with an error event and [DONE]."""

    async def body() -> None:
        async with FakeUpstream(num_tokens=6) as up:
            up.die_after_tokens = 2
            async with Gateway(config([up])) as gw, aiohttp.ClientSession() as s:
                status, lines = await stream(s, gw.url, BODY)
        assert status == 200
        assert len(lines) == 4 and lines[-1] == b"data: [DONE]"
        err = json.loads(lines[-2][5:])
        assert "mid-stream" in err["error"]["message"]

    run(body)


def test_breaker_opens_routes_around_half_opens_and_closes() -> None:
    """After K failures an instance leaves routing, then a probe after the cool-down closes it."""

    async def body() -> None:
        async with FakeUpstream() as flaky, FakeUpstream() as good:
            flaky.fail_status = 500
            cfg = config(
                [flaky, good],
                router={"name": "round-robin"},
                breaker={"failure_threshold": 2, "cooldown_s": 0.3},
            )
            async with Gateway(cfg) as gw, aiohttp.ClientSession() as s:
                for _ in range(4):
                    assert (await post(s, gw.url, BODY))[0] == 200
                tried = len(flaky.bodies)
                assert tried == 2
                health = await (await s.get(gw.url + "/health")).json()
                assert health["instances"]["b0"] == "open"
                for _ in range(3):  # routed around: the flaky one sees nothing
                    await post(s, gw.url, BODY)
                assert len(flaky.bodies) == tried
                flaky.fail_status = None
                await asyncio.sleep(0.35)
                served = {(await post(s, gw.url, BODY))[2] for _ in range(4)}
                health = await (await s.get(gw.url + "/health")).json()
        assert "b0" in served and health["instances"]["b0"] == "closed"

    run(body)


def test_stale_scraped_metrics_are_ignored() -> None:
    """A fresh scrape shapes the router's view; once older than max_age_s it is unknown."""

    async def body() -> None:
        text = (
            'vllm:num_requests_running{model_name="m"} 3\n'
            'vllm:num_requests_waiting{model_name="m"} 7\n'
            'vllm:kv_cache_usage_perc{model_name="m"} 0.5\n'
        )
        async with FakeUpstream(metrics_text=text) as up:
            cfg = config(
                [up], scrape={"enabled": False, "max_age_s": 0.2}, b0={"metrics_path": "/metrics"}
            )
            async with Gateway(cfg) as gw:
                state = gw.dispatcher.instances["b0"]
                await gw.scrape(state)
                fresh = state.view("m", gw.loop.time(), 0.2)
                await asyncio.sleep(0.25)
                stale = state.view("m", gw.loop.time(), 0.2)
        assert (fresh.num_running, fresh.num_waiting, fresh.kv_usage) == (3, 7, 0.5)
        assert fresh.waiting_prefill_tokens is None  # vLLM's gauges carry no token counts
        assert (stale.num_running, stale.num_waiting, stale.kv_usage) == (None, None, None)

    run(body)


def test_ollama_backend_translated_to_openai() -> None:
    """Ollama's NDJSON becomes an OpenAI body (usage from eval counts) and an OpenAI SSE stream."""

    async def body() -> None:
        async with FakeUpstream(num_tokens=4) as up:
            cfg = config([up], b0={"kind": "ollama", "models": {"m": "llama3:8b"}})
            async with Gateway(cfg) as gw, aiohttp.ClientSession() as s:
                status, out, _ = await post(
                    s, gw.url, {**CHAT, "max_tokens": 3}, "/v1/chat/completions"
                )
                _, lines = await stream(s, gw.url, BODY)
        assert status == 200 and out["model"] == "m"
        assert out["choices"][0]["message"]["content"] == " tok" * 3
        assert out["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
        assert up.bodies[0]["model"] == "llama3:8b" and up.bodies[0]["stream"] is True
        assert up.bodies[0]["options"]["num_predict"] == 3 and "messages" in up.bodies[0]
        texts = [json.loads(x[5:])["choices"][0]["text"] for x in lines[:-1]]
        assert texts == [" tok"] * 4 + [""] and lines[-1] == b"data: [DONE]"

    run(body)


def test_backend_dying_mid_run_loses_no_request() -> None:
    """With one backend killed during a burst, every request still ends with an answer."""

    async def body() -> None:
        async with FakeUpstream(num_tokens=3, token_delay_s=0.01) as good:
            doomed = FakeUpstream(num_tokens=3, token_delay_s=0.01)
            await doomed.start()
            cfg = config([doomed, good], router={"name": "round-robin"})
            async with Gateway(cfg) as gw, aiohttp.ClientSession() as s:
                tasks = [asyncio.create_task(stream(s, gw.url, BODY)) for _ in range(20)]
                await asyncio.sleep(0.02)
                await doomed.close()
                tasks += [asyncio.create_task(post(s, gw.url, BODY)) for _ in range(10)]
                results = await asyncio.gather(*tasks)
        for r in results:
            if isinstance(r[1], list):  # a stream: ends with [DONE]
                assert r[0] in (200, 502) and (r[0] != 200 or r[1][-1] == b"data: [DONE]")
            else:
                assert r[0] == 200

    run(body)
