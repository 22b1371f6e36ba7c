"""The backend client and an upstream that closes kept-alive connections.

vLLM (uvicorn) closes a connection idle for 5 s; a client that keeps it longer can send a
request down a connection the server is closing and get no answer. A raw asyncio server
on 127.0.0.1 plays such an upstream: it counts connections, answers each request with a
small JSON body, and can close a connection after reading a request without answering.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from sincere.serve.backends.config import BackendConfig
from sincere.serve.backends.openai_api import Backend, UpstreamError
from sincere.serve.protocol import CompletionRequest, parse_request

ANSWER = json.dumps({"choices": [{"text": "hi"}], "usage": {"completion_tokens": 1}}).encode()


class Upstream:
    """HTTP/1.1 on a raw socket: ``drop`` requests are read and then closed unanswered."""

    def __init__(self, drop: int = 0) -> None:
        self.drop = drop  # the first ``drop`` requests get no answer
        self.connections = 0
        self.requests = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Upstream:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                self.requests += 1
                if self.requests <= self.drop:
                    break  # read, then closed without a byte of answer
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(ANSWER), ANSWER)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def _request() -> CompletionRequest:
    body = {"model": "m", "prompt": "hello", "max_tokens": 1}
    return parse_request(json.dumps(body).encode(), "completion")


async def _answer(backend: Backend) -> bytes:
    upstream = await backend.send(_request(), 1)
    try:
        return await upstream.response.read()
    finally:
        upstream.release()


def _backend(url: str, **extra: float) -> Backend:
    return Backend(BackendConfig(name="b", url=url, models=["m"], **extra))


def test_a_request_closed_unanswered_is_sent_once_more() -> None:
    async def body() -> tuple[bytes, int, int]:
        async with Upstream(drop=1) as up:
            backend = _backend(up.url)
            try:
                answer = await _answer(backend)
            finally:
                await backend.close()
            return answer, up.requests, up.connections

    answer, requests, connections = asyncio.run(body())
    assert json.loads(answer)["usage"]["completion_tokens"] == 1
    assert (requests, connections) == (2, 2)


def test_an_upstream_that_closes_every_request_fails_retryably_after_one_resend() -> None:
    async def body() -> int:
        async with Upstream(drop=10) as up:
            backend = _backend(up.url)
            try:
                with pytest.raises(UpstreamError) as err:
                    await _answer(backend)
            finally:
                await backend.close()
            assert err.value.retryable and "connection closed" in str(err.value)
            return up.requests

    assert asyncio.run(body()) == 2  # the first send and one more, no loop


def test_an_idle_connection_is_not_reused_past_idle_keepalive() -> None:
    async def body() -> tuple[int, int]:
        async with Upstream() as up:
            short = _backend(up.url, idle_keepalive_s=0.05)
            try:
                await _answer(short)
                await _answer(short)  # at once: the same connection
                kept = up.connections
                await asyncio.sleep(0.3)  # idle longer than idle_keepalive_s
                await _answer(short)
            finally:
                await short.close()
            return kept, up.connections

    kept, total = asyncio.run(body())
    assert (kept, total) == (1, 2)


def test_idle_keepalive_defaults_below_vllms_five_seconds() -> None:
    config = BackendConfig(name="b", url="http://127.0.0.1:1", models=["m"])
    assert 0 < config.idle_keepalive_s < 5.0
    with pytest.raises(ValueError, match="idle_keepalive_s"):
        BackendConfig(name="b", url="http://127.0.0.1:1", models=["m"], idle_keepalive_s=0)
