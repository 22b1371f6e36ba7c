"""A Python client for confidential mode: seal a request, open the (streamed) answer.

:func:`seal_for` declares a request's metadata the way the seal proxy checks it (the
model, ``stream``, the prompt's tokens counted as :mod:`sincere.serve.protocol`
counts them, ``max_tokens`` or ``default_max_tokens``) and seals the JSON body to the
pinned key. :class:`ConfidentialClient` sends it to any URL that leads to a seal
proxy (the proxy itself, or a gateway relaying sealed bodies) and opens the answer:
:meth:`~ConfidentialClient.create` returns the engine's JSON object,
:meth:`~ConfidentialClient.stream` yields each chunk as it arrives and raises
:class:`ConfidentialError` if the stream was altered or cut short.

Usage::

    pinned = load_public_key("seal.pub")
    async with aiohttp.ClientSession() as http:
        client = ConfidentialClient("http://127.0.0.1:8200", pinned, http)
        answer = await client.create("chat", {"model": "llama-3-8b", "messages": [...]})
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from sincere.serve.protocol import PATHS, Kind, dumps, parse_body, parse_sse_data
from sincere.serve.security.envelope import (
    CONTENT_TYPE,
    DEADLINE_HEADER,
    ERROR_EVENT,
    USAGE_EVENT,
    Declared,
    FrameOpener,
    PinnedKey,
    SealedRequest,
    frame_of_sse,
    seal_request,
)

DEFAULT_MAX_TOKENS = 256


class ConfidentialError(Exception):
    """A sealed exchange failed: an error answer, or a response that does not open."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


def seal_for(
    pinned: PinnedKey,
    kind: Kind,
    body: dict[str, Any],
    *,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
    tier: str | None = None,
    priority: int | None = None,
    now: float | None = None,
    deadline_s: float | None = None,
) -> SealedRequest:
    """Declare ``body``'s metadata and seal it to ``pinned``, stamped ``now`` (Unix seconds;
    None: the current time), which the seal proxy checks against its replay window;
    ``deadline_s`` goes to the gateway as ``x-sincere-deadline-s``."""
    creq = parse_body(body, kind)
    declared = Declared(
        kind=kind,
        key_id=pinned.key_id,
        model=creq.model,
        prompt_tokens=creq.prompt_tokens,
        max_tokens=creq.max_tokens or default_max_tokens,
        stream=creq.stream,
        tier=tier,
        priority=priority,
        sealed_at=int(time.time() if now is None else now),
    )
    sealed = seal_request(pinned, declared, dumps(body))
    if deadline_s is not None:
        sealed.headers[DEADLINE_HEADER] = repr(float(deadline_s))
    return sealed


class ConfidentialClient:
    """Sends sealed requests over an aiohttp session and opens the answers."""

    def __init__(
        self,
        base_url: str,
        pinned: PinnedKey,
        session: aiohttp.ClientSession,
        *,
        api_key: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.pinned = pinned
        self.session = session
        self.api_key = api_key  # the gateway's client key, if a gateway is in between
        self.last_usage: dict[str, Any] | None = None  # plain usage the proxy reported

    def _headers(self, sealed: SealedRequest) -> dict[str, str]:
        headers = dict(sealed.headers)
        if self.api_key is not None:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    async def create(self, kind: Kind, body: dict[str, Any], **declare: Any) -> dict[str, Any]:
        """A non-streamed request; the engine's answer as a JSON object."""
        sealed = seal_for(self.pinned, kind, dict(body, stream=False), **declare)
        url = self.base_url + PATHS[kind]
        async with self.session.post(url, data=sealed.body, headers=self._headers(sealed)) as resp:
            payload = await resp.read()
            answer = _open_answer(resp, payload, sealed.opener())
        if resp.status != 200 or not isinstance(answer, dict):
            raise ConfidentialError(resp.status, _message(answer))
        return answer

    async def stream(
        self, kind: Kind, body: dict[str, Any], **declare: Any
    ) -> AsyncIterator[dict[str, Any]]:
        """A streamed request; yields each chunk (the engine's JSON) as it opens."""
        sealed = seal_for(self.pinned, kind, dict(body, stream=True), **declare)
        opener = sealed.opener()
        url = self.base_url + PATHS[kind]
        async with self.session.post(url, data=sealed.body, headers=self._headers(sealed)) as resp:
            if resp.status != 200:
                answer = _open_answer(resp, await resp.read(), opener)
                raise ConfidentialError(resp.status, _message(answer))
            async for chunk in self._chunks(resp, opener):
                yield chunk
        if not opener.finished:
            raise ConfidentialError(502, "stream truncated: it ended before its final frame")

    async def _chunks(
        self, resp: aiohttp.ClientResponse, opener: FrameOpener
    ) -> AsyncIterator[dict[str, Any]]:
        event_name = ""
        async for raw in resp.content:
            line = raw.decode("utf-8").rstrip("\r\n")
            if line.startswith("event:"):
                event_name = line[6:].strip()
            elif line.startswith("data:") and event_name == USAGE_EVENT:
                self.last_usage = json.loads(line[5:])
            elif line.startswith("data:") and event_name == ERROR_EVENT:
                raise _stream_error(line[5:])
            elif line.startswith("data:"):
                for chunk in _open_event(opener, line[5:]):
                    yield chunk
            elif not line:
                event_name = ""


def _stream_error(data: str) -> ConfidentialError:
    """The gateway's plain ``sincere-error`` event (a deadline that cut the stream)."""
    try:
        error = json.loads(data)["error"]
        message, code = str(error["message"]), str(error.get("code"))
    except (ValueError, KeyError, TypeError):
        return ConfidentialError(502, f"stream ended with an unreadable error: {data[:200]}")
    return ConfidentialError(504 if code == "deadline_exceeded" else 502, message)


def _open_event(opener: FrameOpener, data: str) -> list[dict[str, Any]]:
    try:
        plaintext = opener.open(frame_of_sse(data))
    except ValueError as exc:
        raise ConfidentialError(502, str(exc)) from None
    chunks = []
    for line in plaintext.splitlines():
        chunk = parse_sse_data(line)
        if chunk is not None:
            chunks.append(chunk)
    return chunks


def _open_answer(resp: aiohttp.ClientResponse, payload: bytes, opener: FrameOpener) -> Any:
    """The JSON of an answer: opened if sealed, as is if the proxy answered in the clear."""
    kind = resp.headers.get("Content-Type", "").split(";")[0].strip()
    try:
        plaintext = opener.open(payload) if kind == CONTENT_TYPE else payload
        return json.loads(plaintext)
    except ValueError as exc:
        raise ConfidentialError(502, f"answer does not open: {exc}") from None


def _message(answer: Any) -> str:
    try:
        return str(answer["error"]["message"])
    except (KeyError, TypeError):
        return str(answer)[:200]
