"""Clients of the serving instances behind the gateway.

A :class:`Backend` is one instance: an OpenAI-compatible server (vLLM, SGLang, TGI,
llama.cpp server, ``sincere emulate``; ``kind: openai``) or Ollama's native API
(``kind: ollama``, translated in :mod:`sincere.serve.backends_ollama`). Each keeps one
``aiohttp.ClientSession`` with keep-alive connections (at most ``max_in_flight`` + a
few) and connect / read timeouts from its config.

:meth:`Backend.send` opens the upstream request and returns an :class:`Upstream`
once the status line is in. Failures *before the first byte* (connect error, timeout,
a 5xx or 429 status) raise :class:`UpstreamError` with ``retryable=True`` so the
gateway can try another instance; failures while reading a stream raise it with
``retryable=False``. Streams are re-framed as Server-Sent Events one event (token)
at a time; OpenAI bodies are passed through byte for byte otherwise.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from sincere.serve.config import BackendConfig
from sincere.serve.protocol import SSE_DONE, CompletionRequest

PATHS = {"completion": "/v1/completions", "chat": "/v1/chat/completions"}
"""Upstream path of each request kind on OpenAI-compatible servers."""

_EMPTY_CHOICES = b'"choices":[]'  # the usage-only chunk of a stream


class UpstreamError(Exception):
    """An instance failed; ``retryable`` when nothing has reached the client yet."""

    def __init__(self, message: str, *, retryable: bool, status: int = 502) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.status = status  # what the gateway answers if it cannot retry


@dataclass(slots=True)
class StreamStats:
    """What the gateway learns while relaying a stream."""

    num_events: int = 0  # token events relayed
    first_event_at: float | None = None  # loop time of the first token event


class Upstream:
    """An open upstream response of an OpenAI-compatible server."""

    def __init__(self, response: aiohttp.ClientResponse, backend: Backend) -> None:
        self.response = response
        self.status = response.status
        self.backend = backend
        self.stats = StreamStats()

    async def read_all(self) -> bytes:
        """The whole (non-streamed) body; a broken connection raises UpstreamError."""
        try:
            return await self.response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise UpstreamError(f"{self.backend.name}: {_describe(exc)}", retryable=True) from None

    async def events(self) -> AsyncIterator[bytes]:
        """SSE events, one per upstream ``data:`` line, ending with ``[DONE]``."""
        loop = asyncio.get_running_loop()
        content = self.response.content
        done = False
        try:
            while True:
                line = await content.readline()
                if not line:
                    break
                if not line.startswith(b"data:"):
                    continue
                if line.startswith(b"data: [DONE]"):
                    done = True
                    break
                if self.stats.first_event_at is None:
                    self.stats.first_event_at = loop.time()
                if _EMPTY_CHOICES not in line:
                    self.stats.num_events += 1
                yield line.rstrip(b"\r\n") + b"\n\n"
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise UpstreamError(
                f"{self.backend.name}: stream broken: {_describe(exc)}", retryable=False
            ) from None
        if not done:
            raise UpstreamError(
                f"{self.backend.name}: stream ended without [DONE]", retryable=False
            )
        yield SSE_DONE

    def output_tokens(self, body: bytes | None) -> int:
        """Generated tokens: the usage of a body, or the events of a stream."""
        if body is None:
            return self.stats.num_events
        return usage_tokens(body)

    def release(self) -> None:
        """Return the connection to the pool (or drop a broken one)."""
        self.response.release()


def usage_tokens(body: bytes) -> int:
    """``usage.completion_tokens`` of a JSON body (0 when absent or unreadable)."""
    try:
        usage = json.loads(body).get("usage") or {}
        return int(usage.get("completion_tokens") or 0)
    except (ValueError, AttributeError, TypeError):
        return 0


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class Backend:
    """One OpenAI-compatible serving instance."""

    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        self.name = config.name
        self.url = config.url.rstrip("/")
        self.models = dict(config.models)  # public name -> upstream name
        self.price_in_per_token_usd = config.price_in_per_1m_usd / 1e6
        self.price_out_per_token_usd = config.price_out_per_1m_usd / 1e6
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The keep-alive session (created on first use, inside the event loop)."""
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.config.max_in_flight + 8,
                keepalive_timeout=30.0,
                ttl_dns_cache=300,
            )
            timeout = aiohttp.ClientTimeout(
                total=None,
                connect=self.config.connect_timeout_s,
                sock_connect=self.config.connect_timeout_s,
                sock_read=self.config.read_timeout_s,
            )
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=timeout, auto_decompress=False
            )
        return self._session

    async def close(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def upstream_body(self, req: CompletionRequest, max_tokens: int | None) -> dict[str, Any]:
        """The body to send: the client's, with the upstream model name and token cap."""
        body = dict(req.body)
        body["model"] = self.models.get(req.model, req.model)
        body.pop("sincere", None)
        if max_tokens is not None:
            body.pop("max_completion_tokens", None)
            body["max_tokens"] = max_tokens
        return body

    async def send(self, req: CompletionRequest, max_tokens: int | None) -> Upstream:
        """Open the upstream request; raise UpstreamError(retryable) before the first byte."""
        body = self.upstream_body(req, max_tokens)
        response = await self._post(PATHS[req.kind], body)
        return Upstream(response, self)

    async def _post(self, path: str, body: dict[str, Any]) -> aiohttp.ClientResponse:
        try:
            response = await self.session.post(
                self.url + path,
                data=json.dumps(body, separators=(",", ":")).encode(),
                headers={"Content-Type": "application/json"},
            )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise UpstreamError(f"{self.name}: {_describe(exc)}", retryable=True) from None
        if response.status >= 500 or response.status == 429:
            text = (await _safe_read(response))[:200]
            response.release()
            raise UpstreamError(
                f"{self.name}: upstream status {response.status}: {text!r}",
                retryable=True,
                status=503 if response.status == 429 else 502,
            )
        return response

    async def get_text(self, path: str, timeout_s: float) -> str:
        """``GET path`` as text (metrics scraping); errors propagate."""
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with self.session.get(self.url + path, timeout=timeout) as response:
            response.raise_for_status()
            return await response.text()


async def _safe_read(response: aiohttp.ClientResponse) -> str:
    try:
        return (await response.read()).decode(errors="replace")
    except (TimeoutError, aiohttp.ClientError):
        return ""


def make_backend(config: BackendConfig) -> Backend:
    """The client for ``config.kind``."""
    if config.kind == "ollama":
        from sincere.serve.backends_ollama import OllamaBackend

        return OllamaBackend(config)
    return Backend(config)
