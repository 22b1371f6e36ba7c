"""The connection edge on its own: an aiohttp app behind :class:`EdgeSite` on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web
from tests.serve.security.test_tls import _self_signed

from sincere.serve.security.connections import EdgeLimits, EdgeSite, expect_handler
from sincere.serve.security.tls import server_context


@contextlib.asynccontextmanager
async def edge_app(limits: EdgeLimits, tls: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    """A one-route app (``GET /``: ok) served through the edge; yields its port."""

    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await EdgeSite(runner, "127.0.0.1", 0, limits, ssl_context=tls).start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


def test_per_client_limit_answers_429_and_slots_come_back() -> None:
    """Two connections allowed per address: the third gets a raw 429 (with Retry-After) and
    is closed; once the first two close, a new one is served."""

    async def main() -> None:
        limits = EdgeLimits(5.0, max_connections=10, max_connections_per_client=2)
        async with edge_app(limits) as port:
            held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            answer = await asyncio.wait_for(reader.read(), 5)
            assert answer.startswith(b"HTTP/1.1 429") and b"too_many_connections" in answer
            assert b"\r\nRetry-After: 1\r\n" in answer
            writer.close()
            for _, w in held:
                w.close()
            for _ in range(50):
                if limits.num_open == 0:
                    break
                await asyncio.sleep(0.02)
            async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/") as r:
                assert r.status == 200 and await r.text() == "ok"
            assert limits.refused == {"max_connections_per_client": 1}

    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_tls_handshake_that_never_starts_is_closed_at_its_timeout(tmp_path: Path) -> None:
    """A TLS client that sends nothing holds a slot until ``handshake_timeout_s``, then is
    closed and counted; a real TLS client is served meanwhile."""
    cert, key = _self_signed(tmp_path)

    async def main() -> None:
        limits = EdgeLimits(5.0, 10, 10, handshake_timeout_s=0.5)
        async with edge_app(limits, server_context(cert, key)) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            started = time.monotonic()
            await asyncio.sleep(0.1)
            assert limits.num_open == 1
            trusting = ssl.create_default_context(cafile=str(cert))
            async with (
                aiohttp.ClientSession() as s,
                s.get(f"https://127.0.0.1:{port}/", ssl=trusting) as r,
            ):
                assert await r.text() == "ok"
            with contextlib.suppress(ConnectionError):
                assert await asyncio.wait_for(reader.read(), 5) == b""
            assert 0.4 <= time.monotonic() - started < 3.0
            assert limits.refused == {"tls_handshake_timeout": 1}
            writer.close()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_expect_100_continue_is_answered_before_the_body_is_sent() -> None:
    """``Expect: 100-continue``: the client hears ``100 Continue`` with no body sent, then
    sends it and gets the route's answer; another value is a JSON 417."""

    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=await request.read())

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/", echo, expect_handler=expect_handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = int(runner.addresses[0][1])
        head = (
            "POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n"
            "Expect: {}\r\n\r\n"
        )
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(head.format("100-continue").encode())
            interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(b"hi")
            answer = await asyncio.wait_for(reader.readuntil(b"hi"), 5)
            assert answer.startswith(b"HTTP/1.1 200 OK")
            writer.close()
            await writer.wait_closed()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(head.format("later").encode())
            answer = await asyncio.wait_for(reader.readuntil(b"}}"), 5)
            assert answer.startswith(b"HTTP/1.1 417") and b"expectation_failed" in answer
            writer.close()
            await writer.wait_closed()
        finally:
            await runner.cleanup()

    asyncio.run(main())
