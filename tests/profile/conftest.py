"""A tiny OpenAI-ish streaming server for the profiler tests (real HTTP on 127.0.0.1).

It streams ``max_tokens`` completion chunks: the first after ``ttft_s``, the rest
``gap_s`` apart, then a usage chunk and ``[DONE]``. More than ``max_inflight``
concurrent requests get HTTP 503, as an overloaded engine would answer.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from aiohttp import web


@dataclass
class FakeServer:
    """Knobs and the URL of the running fake server."""

    url: str = ""
    ttft_s: float = 0.02
    gap_s: float = 0.004
    max_inflight: int = 1000
    inflight: int = 0
    num_requests: int = 0


FAKE = web.AppKey("fake", FakeServer)


async def _completions(request: web.Request) -> web.StreamResponse:
    fake = request.app[FAKE]
    fake.num_requests += 1
    if fake.inflight >= fake.max_inflight:
        return web.json_response({"error": "overloaded"}, status=503)
    fake.inflight += 1
    try:
        body = await request.json()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await asyncio.sleep(fake.ttft_s)
        for i in range(int(body["max_tokens"])):
            if i:
                await asyncio.sleep(fake.gap_s)
            chunk = {"choices": [{"index": 0, "text": f" t{i}"}]}
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
        prompt_tokens = len(str(body["prompt"]).split())
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": int(body["max_tokens"])}
        await resp.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        return resp
    finally:
        fake.inflight -= 1


async def _models(request: web.Request) -> web.Response:
    return web.json_response({"data": [{"id": "fake-model"}]})


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    """A running fake server on a free 127.0.0.1 port, stopped after the test."""
    fake = FakeServer()
    app = web.Application()
    app[FAKE] = fake
    app.router.add_post("/v1/completions", _completions)
    app.router.add_get("/v1/models", _models)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    fake.url = f"http://127.0.0.1:{port}"
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield fake
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=5)
    loop.run_until_complete(runner.cleanup())
    loop.close()
