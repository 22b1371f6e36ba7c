"""A tiny OpenAI-ish server with known delays, run in a thread for the load generator's tests.

Model names choose behaviour: any name streams tokens after ``TTFT_S`` and then one
every ``ITL_S``; ``slow`` waits 30 s before answering; ``error`` answers HTTP 500.
The server keeps the monotonic time at which each request arrived.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

TTFT_S = 0.05
ITL_S = 0.01


@dataclass
class FakeServer:
    """Handle on the running fake server."""

    url: str
    ttft_s: float = TTFT_S  # delay before the first token
    itl_s: float = ITL_S  # delay between tokens
    received_at: list[float] = field(default_factory=list)  # perf_counter at arrival
    bodies: list[dict[str, object]] = field(default_factory=list)


def _chunk(kind: str, text: str, usage: dict[str, int] | None = None) -> bytes:
    choice = {"index": 0, "delta": {"content": text}} if kind == "chat" else {"text": text}
    payload: dict[str, object] = {"choices": [choice] if text else []}
    if usage is not None:
        payload["usage"] = usage
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


async def _handle(request: web.Request, server: FakeServer, kind: str) -> web.StreamResponse:
    server.received_at.append(time.perf_counter())
    body = await request.json()
    server.bodies.append(body)
    if body["model"] == "error":
        return web.json_response({"error": {"message": "boom"}}, status=500)
    if body["model"] == "slow":
        await asyncio.sleep(30)
    n = int(body["sincere"]["output_tokens"]) if "sincere" in body else int(body["max_tokens"])
    usage = {"prompt_tokens": 1, "completion_tokens": n, "total_tokens": n + 1}
    if not body.get("stream"):
        await asyncio.sleep(TTFT_S + (n - 1) * ITL_S)
        text = "abc " * n
        choice = {"message": {"content": text}} if kind == "chat" else {"text": text}
        return web.json_response({"choices": [choice], "usage": usage})
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    await asyncio.sleep(TTFT_S)
    per_chunk = 2 if body["model"] == "coalesce" else 1  # "coalesce": two tokens a chunk
    for k in range(0, n, per_chunk):
        if k:
            await asyncio.sleep(ITL_S * per_chunk)
        await resp.write(_chunk(kind, "tok " * min(per_chunk, n - k)))
    await resp.write(_chunk(kind, "", usage))
    await resp.write(b"data: [DONE]\n\n")
    return resp


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeServer]:
    """Start the fake server on 127.0.0.1 (a free port) in a background thread."""
    loop = asyncio.new_event_loop()
    server = FakeServer(url="")
    app = web.Application()

    async def completions(request: web.Request) -> web.StreamResponse:
        return await _handle(request, server, "completion")

    async def chat(request: web.Request) -> web.StreamResponse:
        return await _handle(request, server, "chat")

    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    server.url = f"http://127.0.0.1:{port}"
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    _warm_up(server)
    yield server
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=5)


def _warm_up(server: FakeServer) -> None:
    """One streamed and one plain request through the load generator before any test
    times one: the process's first pays one-time costs (lazy imports, modules compiled
    from source where no bytecode is kept) that are not the server's delays. The tests
    read the server's records relative to their own start."""
    from sincere.bench import BenchOptions, run_bench
    from sincere.core.request import RequestArrays

    one = RequestArrays.build([0.0], [16], [2], models=("m",))
    for stream in (True, False):
        run_bench(server.url, one, BenchOptions(stream=stream, timeout_s=10))
