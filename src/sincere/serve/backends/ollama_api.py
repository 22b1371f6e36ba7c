"""Ollama's native API behind the OpenAI front: ``/api/generate`` and ``/api/chat``.

Ollama answers in one piece unless asked to stream, which hides the time to first
token (the reference router's note). So the gateway always asks Ollama to stream
(newline-delimited JSON, one object per token: ``{"response": "..."}`` for generate,
``{"message": {"content": "..."}}`` for chat, and a last object with ``"done": true``,
``done_reason``, ``prompt_eval_count`` and ``eval_count``) and translates it: to
OpenAI SSE chunks token by token for streaming clients, or to one OpenAI completion
object for the others, measuring TTFT either way. OpenAI's ``max_tokens``,
``temperature``, ``top_p``, ``seed`` and ``stop`` map to Ollama's ``options``
(``num_predict``, ...), as numbers even when the client wrote them as strings (the gateway
reads them leniently, as vLLM does). API reference: github.com/ollama/ollama, docs/api.md.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from yarl import URL

from sincere.serve.backends.config import BackendConfig
from sincere.serve.backends.openai_api import Backend, Upstream, UpstreamError, upstream_error
from sincere.serve.lax import lax_int, lax_number
from sincere.serve.protocol import (
    SSE_DONE,
    CompletionRequest,
    dumps,
    error_body,
    full_response,
    response_id,
    sse_event,
    stream_chunk,
    usage_chunk,
)

OLLAMA_PATHS = {"completion": "/api/generate", "chat": "/api/chat"}
"""Ollama endpoint of each request kind."""

_OPTIONS = {"temperature": "temperature", "top_p": "top_p", "seed": "seed", "stop": "stop"}
# how each option is read: leniently, as the gateway's parser accepted it ("seed": "42")
_READERS: dict[str, Callable[[Any], Any]] = {
    "temperature": lax_number, "top_p": lax_number, "seed": lax_int, "stop": lambda v: v,
}  # fmt: skip


def ollama_body(req: CompletionRequest, model: str, max_tokens: int | None) -> dict[str, Any]:
    """Ollama's request for an OpenAI request (always streamed)."""
    options = {
        dst: _READERS[src](req.body[src])
        for src, dst in _OPTIONS.items()
        if req.body.get(src) is not None
    }
    if max_tokens is not None:
        options["num_predict"] = max_tokens
    body: dict[str, Any] = {"model": model, "stream": True, "options": options}
    if req.kind == "chat":
        body["messages"] = [
            {"role": m["role"], "content": _text(m.get("content"))} for m in req.body["messages"]
        ]
    else:
        body["prompt"] = req.prompt or ""
    return body


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return content or ""


def token_text(obj: dict[str, Any]) -> str:
    """The text one NDJSON object carries (generate: ``response``; chat: ``message``)."""
    message = obj.get("message")
    if isinstance(message, dict):
        return str(message.get("content") or "")
    return str(obj.get("response") or "")


class OllamaUpstream(Upstream):
    """An open Ollama stream, read as OpenAI events or one OpenAI body."""

    def __init__(self, response: aiohttp.ClientResponse, backend: Backend, req: CompletionRequest):
        super().__init__(response, backend)
        self._lines = response.content  # NDJSON lines (Ollama's answers come through aiohttp)
        self.req = req
        self.id = response_id(req.kind, id(response) & 0xFFFFFFFFFFFF)
        self.created = int(time.time())
        self.prompt_tokens = req.prompt_tokens
        self.finish_reason = "stop"

    async def _objects(self) -> AsyncIterator[dict[str, Any]]:
        """NDJSON objects up to the ``done`` one; errors raise UpstreamError."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                line = await self._lines.readline()
                if not line:
                    raise UpstreamError(
                        f"{self.backend.name}: Ollama stream ended before done", retryable=False
                    )
                if not line.strip():
                    continue
                obj = json.loads(line)
                if not isinstance(obj, dict) or "error" in obj:
                    raise UpstreamError(
                        f"{self.backend.name}: Ollama reported an error",
                        retryable=False,
                        detail=str(obj)[:200],
                    )
                if obj.get("done"):
                    self._finish(obj)
                    return
                if self.stats.first_event_at is None:
                    self.stats.first_event_at = loop.time()
                self.stats.num_events += 1
                yield obj
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise upstream_error(
                self.backend.name, "Ollama stream broken: ", exc, retryable=False
            ) from None

    def _finish(self, obj: dict[str, Any]) -> None:
        self.prompt_tokens = int(obj.get("prompt_eval_count") or self.prompt_tokens)
        self.stats.num_events = int(obj.get("eval_count") or self.stats.num_events)
        self.finish_reason = "length" if obj.get("done_reason") == "length" else "stop"

    async def events(self) -> AsyncIterator[bytes]:
        """OpenAI SSE chunks, one per Ollama token, then the finish chunk and [DONE]."""
        first = True
        async for obj in self._objects():
            yield sse_event(
                stream_chunk(self.req, self.id, self.created, token_text(obj), first=first)
            )
            first = False
        yield sse_event(stream_chunk(self.req, self.id, self.created, "", self.finish_reason))
        if self.req.include_usage:
            yield sse_event(usage_chunk(self.req, self.id, self.created, self.stats.num_events))
        yield SSE_DONE

    async def read_all(self) -> bytes:
        """One OpenAI completion object (or an OpenAI error body for a non-200 status)."""
        if self.status != 200:
            return await self._error_bytes()
        parts = [token_text(obj) async for obj in self._objects()]
        out = full_response(
            self.req,
            self.id,
            self.created,
            "".join(parts),
            self.finish_reason,
            self.stats.num_events,
        )
        out["usage"]["prompt_tokens"] = self.prompt_tokens
        out["usage"]["total_tokens"] = self.prompt_tokens + self.stats.num_events
        return dumps(out)

    async def _error_bytes(self) -> bytes:
        try:
            raw = json.loads(await self.response.read())
            message = raw.get("error") if isinstance(raw, dict) else None
        except (ValueError, aiohttp.ClientError):
            message = None
        text = f"{self.backend.name} (ollama): {message or f'status {self.status}'}"
        return dumps(error_body(text, code="upstream_error"))

    def output_tokens(self, body: bytes | None, cap: int | None = None) -> int:
        """Generated tokens (Ollama's ``eval_count``, else the tokens relayed), at most ``cap``."""
        used = self.stats.num_events
        return used if cap is None else min(used, cap)


class OllamaBackend(Backend):
    """An Ollama server, spoken to through its native streaming API."""

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        self.urls = {kind: URL(self.url + path) for kind, path in OLLAMA_PATHS.items()}

    async def send(self, req: CompletionRequest, max_tokens: int | None) -> Upstream:
        """Open the (always streamed) Ollama request."""
        body = ollama_body(req, self.models.get(req.model, req.model), max_tokens)
        response = await self._post(self.urls[req.kind], dumps(body))
        return OllamaUpstream(response, self, req)
