"""Helpers of the gateway's outsider tests: servers on 127.0.0.1, raw HTTP, bounded runs.

Every server here binds 127.0.0.1 on a port the OS picks; every helper that waits
has a time bound, so a regression shows up as a failure, never as a hung suite.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from sincere.serve.app import compose
from sincere.serve.backends.fake_upstream import FakeUpstream
from sincere.serve.gateway.config import GatewayConfig, parse_config

ROOT = Path(__file__).resolve().parents[2]
BODY: dict[str, Any] = {"model": "m", "prompt": "hello", "max_tokens": 3}


def run(factory: Callable[[], Awaitable[Any]], limit_s: float = 30.0) -> Any:
    """Run one async test body to completion within ``limit_s`` seconds."""
    return asyncio.run(asyncio.wait_for(factory(), limit_s))


def gateway_config(
    urls: list[str], backend: dict[str, Any] | None = None, **extra: Any
) -> GatewayConfig:
    """A gateway on an OS-chosen port of 127.0.0.1 over backends ``b0, b1, ...`` serving m.

    ``backend``: more fields for every backend (prices, limits); ``extra``: gateway fields.
    """
    backends = [
        {"name": f"b{k}", "url": url, "models": ["m"], "metrics_path": None, **(backend or {})}
        for k, url in enumerate(urls)
    ]
    raw: dict[str, Any] = {"port": 0, "scrape": {"enabled": False}, "backends": backends}
    raw.update(extra)
    return parse_config(raw)


async def call(
    s: aiohttp.ClientSession,
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """One JSON call: (status, decoded body or text)."""
    async with s.request(method, url, json=body, headers=headers) as r:
        text = await r.text()
    try:
        return r.status, json.loads(text)
    except ValueError:
        return r.status, text


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of a Prometheus metric's samples whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def free_port() -> int:
    """A port of 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SecretUpstream:
    """An upstream that answers every completion with a 500 whose body quotes a secret."""

    SECRET = "DATABASE_URL=postgres://app:hunter2@db.internal:5432/prod"

    def __init__(self) -> None:
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """Base URL once started."""
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> SecretUpstream:
        async def fail(request: web.Request) -> web.Response:
            return web.Response(status=500, text=f"crashed; env: {self.SECRET}")

        app = web.Application()
        app.router.add_post("/v1/completions", fail)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


@contextmanager
def threaded_gateway(backend: dict[str, Any] | None = None, **extra: Any) -> Iterator[int]:
    """A gateway over one :class:`FakeUpstream` served by a background thread; yields its port.

    For synchronous callers (hypothesis, raw sockets). Stopped, and the thread joined,
    on exit.
    """
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop = asyncio.Event()
    port: list[int] = []
    failure: list[BaseException] = []

    async def main() -> None:
        async with (
            FakeUpstream() as up,
            compose(gateway_config([up.url], backend, **extra)) as gw,
        ):
            port.append(gw.port)
            ready.set()
            await stop.wait()

    def serve() -> None:
        try:
            loop.run_until_complete(main())
        except BaseException as exc:  # reported by the caller
            failure.append(exc)
            ready.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10.0), "the gateway did not start within 10 s"
    if failure:
        raise failure[0]
    try:
        yield port[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10.0)
        loop.close()


def raw_exchange(port: int, data: bytes, limit_s: float = 5.0) -> bytes:
    """Send ``data`` on a fresh connection to 127.0.0.1:``port`` and read until it closes.

    ``data`` should ask for ``Connection: close`` (see :func:`http_request`); the
    sending side stays open, since aiohttp drops a connection whose client half-closes.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=limit_s) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def http_request(path: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    """The bytes of one HTTP/1.1 POST with a known length (``Connection: close``)."""
    head = [b"POST " + path.encode() + b" HTTP/1.1", b"Host: 127.0.0.1"]
    head += [name + b": " + value for name, value in headers]
    head += [b"Content-Type: application/json", b"Content-Length: %d" % len(body)]
    head += [b"Connection: close"]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def status_of(answer: bytes) -> int:
    """The status code of a raw HTTP answer (0 when there is none)."""
    line = answer.split(b"\r\n", 1)[0].split()
    return int(line[1]) if len(line) >= 2 and line[1].isdigit() else 0
