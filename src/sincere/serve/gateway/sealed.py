"""Confidential mode at the gateway: route a sealed request on what it declares, relay its bytes.

A request with ``Content-Type: application/sincere-sealed`` carries an HPKE ciphertext
(:mod:`sincere.serve.security.envelope`) that only the seal proxy beside the engine can
open. The gateway never parses it: :func:`sealed_request` turns the plain declared
headers (model, prompt tokens, max tokens, stream, tier, priority) into the
:class:`~sincere.serve.protocol.CompletionRequest` the policies route on (no prompt
text, no body), and :func:`relay_sealed` posts the ciphertext byte for byte with the
headers the proxy checks (:data:`~sincere.serve.security.envelope.SEALED_HEADERS`),
then relays the answer as it comes: a sealed body whole, a sealed SSE stream chunk by
chunk. The only things read from the answer are the plain usage counts the proxy adds
for accounting (``x-sincere-usage``, or the ``sincere-usage`` SSE event). A client's
``deadline_s`` (header ``x-sincere-deadline-s``, a hint like the tier: not bound to the
ciphertext) is enforced as for a plain request; a sealed stream it cuts ends with a plain
``sincere-error`` event (``deadline_exceeded``) that the confidential client raises.

Sealed requests go only to the backends named in ``security.sealed_backends`` (seal
proxies), and plain requests only to the others; with the list empty a sealed body is
refused (415): a plain engine never receives one. The usage a proxy reports is capped
by the declared ``max_tokens`` (the cap the proxy enforced); an answer without usage is
charged that cap, and a stream cut short the events relayed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping

import aiohttp
from aiohttp import web

from sincere.serve.content import ImageTokens
from sincere.serve.protocol import (
    CompletionRequest,
    Kind,
    ProtocolError,
    SincereFields,
    dumps,
    error_body,
    parse_request,
    parse_sincere,
)
from sincere.serve.security.envelope import (
    CONTENT_TYPE,
    DEADLINE_HEADER,
    ERROR_EVENT,
    SEALED_HEADERS,
    USAGE_EVENT,
    declared_from_headers,
    is_sealed,
)

_USAGE_MARK = f"event: {USAGE_EVENT}\n".encode()
_TAIL_BYTES = 512  # kept between chunks to find a usage event cut in two


def parse_any(
    headers: Mapping[str, str],
    kind: Kind,
    body: bytes,
    models: set[str],
    max_body_bytes: int,
    confidential: bool,
    image_tokens: ImageTokens | None = None,
) -> tuple[CompletionRequest, dict[str, str] | None]:
    """A sealed body's declared request and relay headers (confidential mode), else the
    plain body parsed and validated (:func:`~sincere.serve.protocol.parse_request`, with
    ``n`` > 1 and batched prompts accepted: the gateway relays them whole)."""
    if confidential and is_sealed(headers):
        return sealed_request(headers, kind, body, models)
    creq = parse_request(
        body, kind, headers=headers, models=models, max_body_bytes=max_body_bytes, multi=True,
        image_tokens=image_tokens,
    )  # fmt: skip
    return creq, None


def sealed_request(
    headers: Mapping[str, str], kind: Kind, body: bytes, models: set[str]
) -> tuple[CompletionRequest, dict[str, str]]:
    """The routable request a sealed body declares, and the headers to forward with it."""
    declared = declared_from_headers(headers, kind)
    if declared.model not in models:
        raise ProtocolError(
            404,
            f"header x-sincere-model: got {declared.model!r}; allowed: {', '.join(sorted(models))}",
            param="x-sincere-model",
            code="model_not_found",
        )
    if not body:
        raise ProtocolError(400, "sealed body: empty", code="bad_sealed_body")
    forward = {"Content-Type": CONTENT_TYPE}
    for name in SEALED_HEADERS:
        value = headers.get(name)
        if value is not None:
            forward[name] = value
    creq = CompletionRequest(
        kind=kind,
        model=declared.model,
        prompt_tokens=declared.prompt_tokens,
        max_tokens=declared.max_tokens,
        stream=declared.stream,
        include_usage=False,
        sincere=SincereFields(
            tier=declared.tier, priority=declared.priority, deadline_s=_deadline_s(headers)
        ),
        prompt=None,
        body={},
        raw=body,
    )
    return creq, forward


def _deadline_s(headers: Mapping[str, str]) -> float | None:
    """The client's ``x-sincere-deadline-s`` (400 naming it when it is not seconds > 0)."""
    value = headers.get(DEADLINE_HEADER)
    return None if value is None else parse_sincere(None, {DEADLINE_HEADER: value}).deadline_s


def usage_of_header(value: str | None) -> tuple[int, int] | None:
    """``(prompt, completion)`` of an ``x-sincere-usage`` header, if well formed."""
    if not value:
        return None
    fields: dict[str, int] = {}
    for part in value.split(","):
        name, _, number = part.strip().partition("=")
        if number.isdigit():
            fields[name] = int(number)
    if "prompt_tokens" in fields and "completion_tokens" in fields:
        return fields["prompt_tokens"], fields["completion_tokens"]
    return None


class UsageScanner:
    """Finds the proxy's ``sincere-usage`` event in a relayed stream, chunk by chunk.

    It also counts the events relayed (``num_events``: each ends with a blank line; the
    usage event not counted): the seal proxy seals the engine's stream event by event,
    so for a stream cut short that is an upper bound of the tokens the client got.
    """

    __slots__ = ("_end", "_last", "_tail", "num_events", "usage")

    def __init__(self) -> None:
        self._tail = b""
        self._last = b""  # the last byte seen (a blank line cut between two chunks)
        self._end = b""  # the last two bytes seen
        self.num_events = 0  # events relayed, the usage event not counted
        self.usage: tuple[int, int] | None = None

    def feed(self, chunk: bytes) -> None:
        """Look at the next bytes of the stream."""
        if not chunk:
            return
        ends = (self._last + chunk).count(b"\n\n")
        self._last = chunk[-1:]
        self._end = (self._end + chunk)[-2:]
        if self.usage is not None:
            self.num_events += ends
            return
        self.num_events += ends
        buf = self._tail + chunk
        at = buf.find(_USAGE_MARK)
        if at < 0:
            self._tail = buf[-_TAIL_BYTES:]
            return
        end = buf.find(b"\n\n", at)
        if end < 0:
            self._tail = buf[at:]
            return
        for line in buf[at:end].splitlines():
            if line.startswith(b"data:"):
                self.usage = _usage_json(line[5:])
        self.num_events -= 1  # the usage event itself
        self._tail = b""

    @property
    def at_boundary(self) -> bool:
        """Whether the bytes so far end between two events (or none came)."""
        return self._end in (b"", b"\n\n")


def _usage_json(data: bytes) -> tuple[int, int] | None:
    try:
        obj = json.loads(data)
        return int(obj["prompt_tokens"]), int(obj["completion_tokens"])
    except (ValueError, KeyError, TypeError):
        return None


async def relay_stream(
    http_req: web.Request,
    upstream: aiohttp.ClientResponse,
    headers: Mapping[str, str],
    scanner: UsageScanner,
    deadline_at: float | None = None,
) -> tuple[web.StreamResponse, float | None, str]:
    """Relay a sealed SSE stream as it comes: the response, when its first bytes came, how it
    ended (``"done"``, ``"broken"``: the upstream failed -- the client's opener reports a
    truncated stream --, ``"client_left"``, or ``"deadline"``: the client's ``deadline_s``
    passed, at loop time ``deadline_at``, before the stream ended)."""
    loop = asyncio.get_running_loop()
    resp = web.StreamResponse(headers=headers)
    first_at = None
    # Whether the deadline cut the stream is the timeout's own record, not a clock reading:
    # under load on uvloop, ``loop.time()`` read after the cut came out short of
    # ``deadline_at`` (its millisecond timers, most likely), and the cut passed for a break.
    cut = asyncio.timeout_at(deadline_at)
    try:
        await resp.prepare(http_req)
        async with cut:
            async for chunk in upstream.content.iter_any():
                if first_at is None:
                    first_at = loop.time()
                scanner.feed(chunk)
                await resp.write(chunk)
    except TimeoutError:  # the deadline, or the upstream session's own read timeout
        return resp, first_at, "deadline" if cut.expired() else "broken"
    except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
        return resp, first_at, "broken"
    except ConnectionResetError:
        return resp, first_at, "client_left"
    return resp, first_at, "done"


def error_event(message: str, code: str, at_boundary: bool) -> bytes:
    """A plain ``sincere-error`` SSE event ending a sealed stream the gateway cut (the
    gateway cannot seal; the client raises it), after a blank line when cut mid-event."""
    data = dumps(error_body(message, type="timeout_error", code=code))
    head = b"" if at_boundary else b"\n\n"
    return head + b"event: " + ERROR_EVENT.encode() + b"\ndata: " + data + b"\n\n"
