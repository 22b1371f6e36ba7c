"""Slow and greedy clients at the edge: header, body and idle timeouts, connection caps."""

from __future__ import annotations

import asyncio
import time

import aiohttp
from tests.outsider._gateway import call, gateway_config, metric, run

from sincere.serve.backends.fake_upstream import FakeUpstream
from sincere.serve.gateway.server import Gateway

LIMITS = {
    "header_timeout_s": 0.3,
    "body_timeout_s": 0.3,
    "idle_timeout_s": 0.6,
    "max_connections_per_client": 3,
}
HEAD = b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"


async def _answer(reader: asyncio.StreamReader, limit_s: float = 5.0) -> tuple[bytes, float]:
    """Everything the gateway sends until it closes the connection, and when it closed."""
    began = time.perf_counter()
    data = await asyncio.wait_for(reader.read(), limit_s)
    return data, time.perf_counter() - began


async def _connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


def test_idle_connections_are_closed_after_the_idle_timeout() -> None:
    """A connection that never sends a request is closed after idle_timeout_s (not hours later)."""

    async def body() -> tuple[bytes, float]:
        async with FakeUpstream() as up, Gateway(gateway_config([up.url], limits=LIMITS)) as gw:
            reader, writer = await _connect(gw.port)
            try:
                return await _answer(reader)
            finally:
                writer.close()

    data, took = run(body)
    assert data == b"" and 0.4 < took < 3.0, took


def test_a_slow_request_head_gets_408_after_the_header_timeout() -> None:
    """A head sent a line at a time (slowloris) is answered 408 and closed at header_timeout_s."""

    async def body() -> tuple[bytes, float, str]:
        async with (
            FakeUpstream() as up,
            Gateway(gateway_config([up.url], limits=LIMITS)) as gw,
            aiohttp.ClientSession() as s,
        ):
            reader, writer = await _connect(gw.port)

            async def drip() -> None:
                writer.write(HEAD)
                for k in range(40):  # one header line every 0.1 s: never done in time
                    await asyncio.sleep(0.1)
                    if writer.is_closing():
                        return
                    writer.write(b"X-Slow-%d: yes\r\n" % k)

            dripping = asyncio.create_task(drip())
            data, took = await _answer(reader)
            dripping.cancel()
            writer.close()
            text = str((await call(s, "GET", gw.url + "/metrics"))[1])
        return data, took, text

    data, took, text = run(body)
    assert data.startswith(b"HTTP/1.1 408") and b"header_timeout" in data
    assert took < 2.0, took
    assert metric(text, "sincere_gateway_edge_refusals_total", reason="header_timeout") == 1


def test_a_slow_request_body_gets_408_after_the_body_timeout() -> None:
    """A body that stops short of its Content-Length is answered 408 at body_timeout_s."""

    async def body() -> tuple[bytes, float]:
        async with FakeUpstream() as up, Gateway(gateway_config([up.url], limits=LIMITS)) as gw:
            reader, writer = await _connect(gw.port)
            writer.write(HEAD + b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
            try:
                return await _answer(reader)
            finally:
                writer.close()

    data, took = run(body)
    assert data.startswith(b"HTTP/1.1 408") and b"body_timeout" in data
    assert took < 2.0, took


def test_connections_per_client_are_capped() -> None:
    """Past max_connections_per_client a connection gets 429 and is closed; a freed slot serves."""

    async def body() -> tuple[bytes, float, int, str]:
        async with (
            FakeUpstream() as up,
            Gateway(gateway_config([up.url], limits=LIMITS)) as gw,
        ):
            held = [await _connect(gw.port) for _ in range(3)]
            extra_reader, extra_writer = await _connect(gw.port)
            refused, took = await _answer(extra_reader, 2.0)
            extra_writer.close()
            held[0][1].close()
            await asyncio.sleep(0.05)
            async with aiohttp.ClientSession() as s:
                status, _ = await call(s, "GET", gw.url + "/health")
                text = str((await call(s, "GET", gw.url + "/metrics"))[1])
            for _, writer in held[1:]:
                writer.close()
        return refused, took, status, text

    refused, took, status, text = run(body)
    assert refused.startswith(b"HTTP/1.1 429") and b"too_many_connections" in refused
    assert took < 0.5 and status == 200
    assert (
        metric(text, "sincere_gateway_edge_refusals_total", reason="max_connections_per_client")
        == 1
    )
