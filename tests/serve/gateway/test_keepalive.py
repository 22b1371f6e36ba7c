"""The backend client and an upstream that closes kept-alive connections.

vLLM (uvicorn) closes a connection idle for 5 s; a client that keeps it longer can send a
request down a connection the server is closing and get no answer. A raw asyncio server
on 127.0.0.1 plays such an upstream: it counts connections, answers each request with a
small JSON body, and can close a connection after reading a request without answering
(``tests/serve/gateway/raw_upstream.py``, which the lean client's tests script too).
"""

from __future__ import annotations

import asyncio
import json

import pytest
from tests.serve.gateway.raw_upstream import RawUpstream

from sincere.serve.backends.config import BackendConfig
from sincere.serve.backends.openai_api import Backend, UpstreamError
from sincere.serve.protocol import CompletionRequest, parse_request

ANSWER = json.dumps({"choices": [{"text": "hi"}], "usage": {"completion_tokens": 1}}).encode()


def _upstream(drop: int = 0) -> RawUpstream:
    """The upstream: the first ``drop`` requests are read and then closed unanswered, the
    others answered with a small JSON body (``len(up.bodies)``: the requests read)."""

    async def answer(writer: asyncio.StreamWriter, body: bytes) -> bool:
        if len(up.bodies) <= drop:
            return False  # read, then closed without a byte of answer
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(ANSWER), ANSWER)
        )
        await writer.drain()
        return True

    up = RawUpstream(answer)
    return up


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
        async with _upstream(drop=1) as up:
            backend = _backend(up.url)
            try:
                answer = await _answer(backend)
            finally:
                await backend.close()
            return answer, len(up.bodies), up.connections

    answer, requests, connections = asyncio.run(body())
    assert json.loads(answer)["usage"]["completion_tokens"] == 1
    assert (requests, connections) == (2, 2)


def test_an_upstream_that_closes_every_request_fails_retryably_after_one_resend() -> None:
    async def body() -> int:
        async with _upstream(drop=10) as up:
            backend = _backend(up.url)
            try:
                with pytest.raises(UpstreamError) as err:
                    await _answer(backend)
            finally:
                await backend.close()
            assert err.value.retryable and "connection closed" in str(err.value)
            return len(up.bodies)

    assert asyncio.run(body()) == 2  # the first send and one more, no loop


def test_an_idle_connection_is_not_reused_past_idle_keepalive() -> None:
    async def body() -> tuple[int, int]:
        async with _upstream() as up:
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
