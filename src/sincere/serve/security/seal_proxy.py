"""``sincere seal``: the proxy in front of an engine that opens sealed requests.

Where a trusted execution environment (TEE) would run it, beside the engine: it holds
the private key, opens each sealed request (:mod:`~sincere.serve.security.envelope`),
checks that the plaintext honours what was declared in the clear (same model, same
``stream``, a prompt no longer than declared plus ``prompt_slack``, ``max_tokens``
no larger than declared -- and set to the declared value when absent, so a budget
reserved on the declared figures holds), drops the fields only a front end may set on
an engine (``kv_transfer_params``: :mod:`~sincere.serve.security.engine_fields`),
forwards it to the engine's OpenAI endpoint, and seals the answer back: a non-streamed
body as one frame, a stream event by event. It adds plain usage counts for the gateway's
accounting (the ``x-sincere-usage`` header, or a ``sincere-usage`` SSE event before the
final frame).

Errors before the body opens (not sealed, bad headers, wrong key, altered body) are
plain OpenAI error bodies: they hold nothing of the request. Errors after it opens
(the plaintext fails validation, the engine answers 4xx/5xx) are sealed, since they
may quote the prompt. ``GET`` of ``/health``, ``/v1/models``, ``/metrics`` and
``/sincere/load`` pass through to the engine (metadata only), so a gateway can scrape
the engine through the proxy; ``GET /sincere/seal/key`` shows the public key and id.

Edges: with an inbound key (``inbound_key``; the gateway sends it as its upstream
credential for this backend) every call but ``/sincere/seal/key`` needs it (401); the
gateway's connection limits (:mod:`~sincere.serve.security.connections`): a request head
must be complete ``header_timeout_s`` after its first byte (408, the slow-header client),
at most ``max_connections`` connections (``max_connections_per_client`` per address),
a TLS handshake within ``handshake_timeout_s``; a kept-alive connection idle
``idle_timeout_s`` is closed and a body must arrive within ``body_timeout_s`` (408).

A caller that gives up (the gateway past a request's deadline, or its client gone)
closes its connection; the handler is then cancelled and the engine's connection closed
with it, so the engine aborts the request instead of generating an answer nobody reads
(``handler_cancellation``).

Replays: a sealed body received twice within ``replay_window_s`` is refused (409
``replayed``: :mod:`~sincere.serve.security.replays`) -- by this process alone, or, with
``replay_redis``, by every proxy sharing that Redis (proxies of one key pair that do not
share one each accept the same bytes once) --, and so is one sealed more than ``replay_window_s``
before (or after) the proxy's clock, whatever the proxy remembers (409
``sealed_request_stale``): the client puts the time it sealed the request in
``x-sincere-sealed-at``, bound to the ciphertext, so it cannot be changed. A request
without that header (sealed by an older client) is refused (400
``sealed_at_missing``): a timestamp-free envelope could be replayed once the window has
forgotten it. ``replay_window_s=0`` turns replay protection off (a benchmark replaying
one body).

No attestation: nothing here proves to a client that this code runs in a TEE. The
client trusts the public key it was given as a file (see docs/security.md).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web

from sincere.serve.binding import Served, bound_port
from sincere.serve.protocol import (
    PATHS,
    Kind,
    ProtocolError,
    dumps,
    error_body,
    loads,
    parse_request,
)
from sincere.serve.security.connections import (
    AcceptErrorLog,
    EdgeLimits,
    EdgeSite,
    expect_handler,
    route_unrouted,
)
from sincere.serve.security.credentials import Secret
from sincere.serve.security.engine_fields import engine_fields_in, without_engine_fields
from sincere.serve.security.envelope import (
    CONTENT_TYPE,
    SEALED_AT_HEADER,
    USAGE_HEADER,
    Declared,
    FrameSealer,
    SealKeyPair,
    declared_from_headers,
    is_sealed,
    open_request,
    sse_frame,
    usage_event,
)
from sincere.serve.security.replays import ReplayWindow, SharedReplays

PASS_THROUGH = ("/health", "/v1/models", "/metrics", "/sincere/load")
MAX_SEALED_BYTES = 4 * 1024 * 1024 + 64


class SealProxy(Served):
    """An aiohttp server opening sealed requests for one engine; ``async with`` runs it."""

    def __init__(
        self,
        pair: SealKeyPair,
        upstream: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        prompt_slack: float = 0.1,
        timeout_s: float = 600.0,
        ssl_context: ssl.SSLContext | None = None,
        upstream_key: Secret | None = None,
        inbound_key: Secret | None = None,
        replay_window_s: float = 600.0,
        replay_redis: str | None = None,
        idle_timeout_s: float = 15.0,
        body_timeout_s: float = 30.0,
        header_timeout_s: float = 10.0,
        handshake_timeout_s: float = 10.0,
        max_connections: int = 1024,
        max_connections_per_client: int = 1024,
    ) -> None:
        self.pair = pair
        self.edge = EdgeLimits(
            header_timeout_s, max_connections, max_connections_per_client, handshake_timeout_s
        )
        self._inbound = None if inbound_key is None else inbound_key.reveal().encode()
        # sealed bodies accepted lately: this process's, or every proxy's sharing the Redis
        self.replays: ReplayWindow | SharedReplays = (
            ReplayWindow(replay_window_s)
            if replay_redis is None or replay_window_s <= 0
            else SharedReplays(replay_redis, pair.key_id, replay_window_s)
        )
        self.idle_timeout_s = idle_timeout_s  # a kept-alive connection's silence, then closed
        self.body_timeout_s = body_timeout_s  # the longest a sealed body may take to arrive
        self.upstream = upstream.rstrip("/")  # the engine's base URL
        self.host = host
        self.port = port
        self.prompt_slack = prompt_slack  # share a prompt may exceed its declared tokens
        self.timeout_s = timeout_s  # per upstream call
        self.ssl_context = ssl_context  # serve over TLS when given (see security.tls)
        self._upstream_headers = dict(_JSON)  # sent with every forwarded request
        if upstream_key is not None:
            self._upstream_headers["Authorization"] = f"Bearer {upstream_key.reveal()}"
        self.app = web.Application(client_max_size=MAX_SEALED_BYTES)
        routes = self.app.router
        routes.add_post(PATHS["completion"], self._completions, expect_handler=expect_handler)
        routes.add_post(PATHS["chat"], self._chat, expect_handler=expect_handler)
        routes.add_get("/sincere/seal/key", self._key, expect_handler=expect_handler)
        for path in PASS_THROUGH:
            routes.add_get(path, self._pass_through, expect_handler=expect_handler)
        route_unrouted(self.app)  # a bad Expect: 417 on any path and method
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    async def start(self) -> None:
        """Bind and serve."""
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(AcceptErrorLog(logging.getLogger("sincere.seal")))
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        self._session = aiohttp.ClientSession(timeout=timeout)
        self._runner = web.AppRunner(
            self.app,
            access_log=None,
            handle_signals=False,
            handler_cancellation=True,  # a caller gone: the engine's request is closed too
            keepalive_timeout=self.idle_timeout_s,
            lingering_time=min(10.0, self.body_timeout_s),
        )
        await self._runner.setup()
        site = EdgeSite(self._runner, self.host, self.port, self.edge, ssl_context=self.ssl_context)
        await site.start()
        self.port = bound_port(self._runner, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self.replays.close()

    # ------------------------------------------------------------------ handlers
    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "completion")

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "chat")

    def _refused_caller(self, request: web.Request) -> web.Response | None:
        """401 unless the caller sends the inbound key (``Authorization: Bearer``), when set."""
        if self._inbound is None:
            return None
        given = request.headers.get("Authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), self._inbound
        ):
            return None
        error = ProtocolError(401, "this seal proxy needs its inbound key", code="invalid_api_key")
        return _plain_error(error)

    async def _read_body(self, request: web.Request) -> bytes:
        try:
            async with asyncio.timeout(self.body_timeout_s):
                return await request.read()
        except TimeoutError:
            late = f"sealed body not complete within {self.body_timeout_s:g}s"
            raise ProtocolError(408, late, code="body_timeout") from None

    async def _handle(self, request: web.Request, kind: Kind) -> web.StreamResponse:
        refused = self._refused_caller(request)
        if refused is not None:
            return refused
        if not is_sealed(request.headers):
            message = f"this endpoint takes sealed bodies only (Content-Type: {CONTENT_TYPE})"
            return _plain_error(ProtocolError(415, message, code="not_sealed"))
        try:
            declared = declared_from_headers(request.headers, kind)
            raw = await self._read_body(request)
            plaintext, sealer = open_request(self.pair, declared, raw)
            self._check_fresh(declared.sealed_at, time.time())
            if self.replays.window_s > 0 and not await self.replays.accept(raw):
                raise ProtocolError(
                    409, "this sealed request was already received: replays are refused",
                    code="replayed",
                )  # fmt: skip
        except ProtocolError as exc:
            return _plain_error(exc)
        except web.HTTPRequestEntityTooLarge:
            too_big = f"sealed body: allowed: at most {MAX_SEALED_BYTES} bytes"
            return _plain_error(ProtocolError(413, too_big, code="body_too_large"))
        try:
            body, prompt_tokens = self._checked(plaintext, declared, kind)
        except ProtocolError as exc:
            return _sealed_body(exc.status, exc.to_bytes(), sealer)
        path = PATHS[kind]
        if declared.stream:
            return await self._relay_stream(request, path, body, sealer, prompt_tokens)
        return await self._relay_once(path, body, sealer)

    def _check_fresh(self, sealed_at: int | None, now: float) -> None:
        """409 for a request sealed outside the replay window; 400 for one without a time
        (a window of 0 turns replay protection off, timestamps included)."""
        window = self.replays.window_s
        if window <= 0:
            return
        if sealed_at is None:
            raise ProtocolError(
                400,
                f"header {SEALED_AT_HEADER} missing: sealed requests must carry the time they "
                "were sealed (replay protection); seal it with a current client",
                param=SEALED_AT_HEADER,
                code="sealed_at_missing",
            )
        if abs(now - sealed_at) > window:
            raise ProtocolError(
                409,
                f"sealed {now - sealed_at:+.0f}s from this proxy's clock; accepted: within "
                f"{window:g}s (replay protection); seal it again",
                param=SEALED_AT_HEADER,
                code="sealed_request_stale",
            )

    def _checked(self, plaintext: bytes, declared: Declared, kind: Kind) -> tuple[bytes, int]:
        """The body to forward (checked against what was declared) and its prompt tokens."""
        creq = parse_request(plaintext, kind)
        if creq.model != declared.model:
            raise _mismatch("model", creq.model, declared.model)
        if creq.stream != declared.stream:
            raise _mismatch("stream", creq.stream, declared.stream)
        allowed = max(math.ceil(declared.prompt_tokens * (1 + self.prompt_slack)), 16)
        if creq.prompt_tokens > allowed:
            message = (
                f"prompt: {creq.prompt_tokens} tokens, declared {declared.prompt_tokens} "
                f"(allowed up to {allowed}); declare the prompt's length"
            )
            raise ProtocolError(400, message, param="prompt", code="declared_mismatch")
        if creq.max_tokens is not None and creq.max_tokens > declared.max_tokens:
            raise _mismatch("max_tokens", creq.max_tokens, declared.max_tokens)
        if creq.max_tokens is not None and not engine_fields_in(creq.body):
            return plaintext, creq.prompt_tokens
        patched = without_engine_fields(creq.body)  # only the P/D front end speaks KV
        if creq.max_tokens is None:
            patched["max_tokens"] = declared.max_tokens
        return dumps(patched), creq.prompt_tokens

    async def _relay_once(self, path: str, body: bytes, sealer: FrameSealer) -> web.Response:
        try:
            url, headers = self.upstream + path, self._upstream_headers
            async with self._client.post(url, data=body, headers=headers) as up:
                answer = await up.read()
                status = up.status
        except (aiohttp.ClientError, TimeoutError):
            return _sealed_body(502, _engine_unreachable(), sealer)
        response = _sealed_body(status, answer, sealer)
        usage = _usage_of(answer) if status == 200 else None
        if usage is not None:
            response.headers[USAGE_HEADER] = (
                f"prompt_tokens={usage[0]}, completion_tokens={usage[1]}"
            )
        return response

    async def _relay_stream(
        self,
        request: web.Request,
        path: str,
        body: bytes,
        sealer: FrameSealer,
        prompt_tokens: int,
    ) -> web.StreamResponse:
        try:
            url, headers = self.upstream + path, self._upstream_headers
            up = await self._client.post(url, data=body, headers=headers)
        except (aiohttp.ClientError, TimeoutError):
            return _sealed_body(502, _engine_unreachable(), sealer)
        async with up:
            if up.status != 200:
                return _sealed_body(up.status, await up.read(), sealer)
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            counter = _UsageCounter(prompt_tokens)
            try:
                async for event in _sse_events(up.content):
                    counter.see(event)
                    await response.write(sse_frame(sealer.seal(event)))
            except (aiohttp.ClientError, TimeoutError, ConnectionResetError):
                return response  # no final frame: the client reports a truncated stream
            prompt, completion, source = counter.result()
            await response.write(usage_event(prompt, completion, source))
            await response.write(sse_frame(sealer.seal(b"", final=True)))
            await response.write_eof()
            return response

    async def _key(self, request: web.Request) -> web.Response:
        public = self.pair.pinned
        return web.json_response(
            {"key_id": public.key_id, "public_key": public.public_bytes.hex(), "attested": False}
        )

    async def _pass_through(self, request: web.Request) -> web.Response:
        refused = self._refused_caller(request)
        if refused is not None:
            return refused
        return await self._passed(request)

    async def _passed(self, request: web.Request) -> web.Response:
        try:
            url = self.upstream + request.path
            async with self._client.get(url, headers=self._upstream_headers) as up:
                body = await up.read()
                kind = up.headers.get("Content-Type", "application/octet-stream")
                return web.Response(status=up.status, body=body, headers={"Content-Type": kind})
        except (aiohttp.ClientError, TimeoutError):
            return _plain_error(ProtocolError(502, "engine unreachable", code="upstream_error"))

    @property
    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("SealProxy is not started")
        return self._session


_JSON = {"Content-Type": "application/json"}


def _plain_error(exc: ProtocolError) -> web.Response:
    return web.Response(status=exc.status, body=exc.to_bytes(), content_type="application/json")


def _sealed_body(status: int, body: bytes, sealer: FrameSealer) -> web.Response:
    frame = sealer.seal(body, final=True)
    return web.Response(status=status, body=frame, headers={"Content-Type": CONTENT_TYPE})


def _engine_unreachable() -> bytes:
    return dumps(error_body("engine unreachable", type="server_error", code="upstream_error"))


def _mismatch(field: str, got: Any, declared: Any) -> ProtocolError:
    message = f"{field}: the sealed body has {got!r}, the headers declared {declared!r}"
    return ProtocolError(400, message, param=field, code="declared_mismatch")


def _usage_of(answer: bytes) -> tuple[int, int] | None:
    try:
        return _usage_from(loads(answer))
    except ValueError:
        return None


def _usage_from(obj: Any) -> tuple[int, int] | None:
    """``(prompt, completion)`` tokens of an answer or chunk with a usage object."""
    try:
        usage = obj.get("usage") or {}
        return int(usage["prompt_tokens"]), int(usage["completion_tokens"])
    except (KeyError, TypeError, AttributeError, ValueError):
        return None


async def _sse_events(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """The upstream stream cut into whole SSE events (each ending with a blank line)."""
    event = bytearray()
    async for line in content:
        event += line
        if line in (b"\n", b"\r\n"):
            yield bytes(event)
            event.clear()
    if event.strip():
        yield bytes(event)


class _UsageCounter:
    """Usage of a stream: the engine's usage chunk if it sent one, else chunks counted."""

    def __init__(self, prompt_tokens: int) -> None:
        self.prompt_tokens = prompt_tokens  # counted by the proxy, if the engine says nothing
        self.usage: tuple[int, int] | None = None
        self.num_chunks = 0

    def see(self, event: bytes) -> None:
        for line in event.splitlines():
            if not line.startswith(b"data:") or line[5:].strip() == b"[DONE]":
                continue
            try:
                chunk = json.loads(line[5:])
            except ValueError:
                continue
            usage = _usage_from(chunk)
            if usage is not None:
                self.usage = usage
            elif isinstance(chunk, dict) and chunk.get("choices"):
                self.num_chunks += 1

    def result(self) -> tuple[int, int, str]:
        if self.usage is not None:
            return self.usage[0], self.usage[1], "engine"
        return self.prompt_tokens, self.num_chunks, "counted"
