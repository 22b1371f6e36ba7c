"""Connection limits at a server's edge: slow or greedy clients cannot hold it.

Between the listening socket and aiohttp's HTTP protocol sits one
:class:`EdgeProtocol` per connection (:class:`EdgeSite` builds them). It

* refuses a connection whose client address already holds
  ``max_connections_per_client`` connections (``429``), or any connection beyond
  ``max_connections`` in all (``503``): a short HTTP error answer, then close;
* times the first request head of a connection from its first byte: a head not
  complete (``CRLF CRLF``) ``header_timeout_s`` later is answered ``408`` and the
  connection closed -- the slow-header ("slowloris") client;
* on a TLS site, admits the TCP connection *before* its handshake (so a client that
  opens connections and never sends a ClientHello holds slots, and is refused past
  the limits like any other: closed, as no HTTP can be spoken yet), and closes one
  whose handshake is not done ``handshake_timeout_s`` after it connected
  (``tls_handshake_timeout``; a failed handshake counts as ``tls_handshake_failed``).

:func:`expect_handler` answers an ``Expect:`` header other than ``100-continue`` with a
JSON 417 (any bytes), and :func:`route_unrouted` puts it in front of the 404 / 405 of
paths and methods no route takes. Every refusal is counted by reason in
:attr:`EdgeLimits.refused`; errors accepting
connections (out of file descriptors) are rate-limited in the log
(:class:`AcceptErrorLog`, the loop's exception handler). The gateway
(:mod:`sincere.serve.gateway.edge`) and the seal proxy
(:mod:`sincere.serve.security.seal_proxy`) both serve through it. A failed bind is
one clear line (:func:`sincere.serve.binding.listen_error`). Per connection the cost
is one extra method call per chunk received, and a byte search only until the first
head is complete.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from aiohttp import web

from sincere.serve.binding import bound_port, listen_error
from sincere.serve.protocol import ProtocolError

_REASONS = {
    408: "Request Timeout",
    413: "Payload Too Large",
    429: "Too Many Requests",
    503: "Service Unavailable",
}


def raw_error(error: ProtocolError) -> bytes:
    """A complete HTTP/1.1 error answer (JSON body, ``Connection: close``) for the socket;
    a 429 or 503 (too many connections) says ``Retry-After: 1``."""
    body = error.to_bytes()
    retry = "Retry-After: 1\r\n" if error.status in (429, 503) else ""
    head = (
        f"HTTP/1.1 {error.status} {_REASONS.get(error.status, 'Error')}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"{retry}Connection: close\r\n\r\n"
    )
    return head.encode() + body


@dataclass(slots=True)
class EdgeLimits:
    """The limits of :class:`EdgeProtocol` and the live counts it keeps."""

    header_timeout_s: float
    max_connections: int
    max_connections_per_client: int
    handshake_timeout_s: float = 10.0  # a TLS handshake must be done this long after connecting
    num_open: int = 0  # connections admitted and not yet closed
    by_client: dict[str, int] = field(default_factory=dict)  # open connections per address
    refused: dict[str, int] = field(default_factory=dict)  # refusals (and timeouts) by reason

    def count(self, reason: str) -> None:
        """Count one refusal or timeout."""
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def admit(self, client: str) -> ProtocolError | None:
        """Take a connection slot for ``client``, or the error to answer it with."""
        if self.num_open >= self.max_connections:
            self.count("max_connections")
            return ProtocolError(
                503,
                f"the gateway holds its limit of {self.max_connections} connections; retry later",
                code="too_many_connections",
            )
        held = self.by_client.get(client, 0)
        if held >= self.max_connections_per_client:
            self.count("max_connections_per_client")
            return ProtocolError(
                429,
                f"this client holds its limit of {self.max_connections_per_client} connections",
                code="too_many_connections",
            )
        self.by_client[client] = held + 1
        self.num_open += 1
        return None

    def release(self, client: str) -> None:
        """Give back ``client``'s connection slot."""
        self.num_open -= 1
        left = self.by_client.get(client, 1) - 1
        if left > 0:
            self.by_client[client] = left
        else:
            self.by_client.pop(client, None)


class EdgeProtocol(asyncio.Protocol):
    """One connection: admission by address, the TLS handshake if any, then aiohttp's
    protocol with a head timer."""

    __slots__ = (
        "_client", "_early", "_handshake", "_head_timer", "_holding", "_inner", "_limits",
        "_lost", "_make", "_tail", "_tls", "_transport",
    )  # fmt: skip

    def __init__(
        self,
        make: Callable[[], asyncio.Protocol],
        limits: EdgeLimits,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._make = make
        self._limits = limits
        self._tls = tls  # the handshake to run before HTTP, when serving HTTPS
        self._inner: asyncio.Protocol | None = None  # aiohttp's protocol, once admitted
        self._client = ""
        self._transport: asyncio.BaseTransport | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._tail: bytes | None = b""  # last bytes of an unfinished first head; None: done
        self._holding = False  # whether this connection holds a slot of the limits
        self._lost = False  # the connection is gone (possibly before aiohttp saw it)
        self._handshake: asyncio.Task[None] | None = None
        self._early: list[bytes | None] = []  # data (None: EOF) decrypted before aiohttp's turn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Admit the connection (or answer 429 / 503 and close), shake hands, hand it to aiohttp.

        The transport is used through its methods only: uvloop's transports are not
        subclasses of :class:`asyncio.Transport`, though they have the same methods.
        """
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self._client = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        refusal = self._limits.admit(self._client)
        if refusal is not None:
            if self._tls is None:
                _write_close(transport, raw_error(refusal))
            else:  # no HTTP before a handshake, and none is spent on a refused connection
                transport.close()
            return
        self._holding = True
        if self._tls is None:
            self._inner = self._make()
            self._inner.connection_made(transport)
            return
        cast(asyncio.ReadTransport, transport).pause_reading()  # the ClientHello waits for TLS
        self._handshake = asyncio.get_running_loop().create_task(self._shake_hands(transport))

    async def _shake_hands(self, raw: asyncio.BaseTransport) -> None:
        """Run the TLS handshake within ``handshake_timeout_s``; then start aiohttp on it."""
        assert self._tls is not None
        loop = asyncio.get_running_loop()
        limit_s = self._limits.handshake_timeout_s
        started = loop.time()
        try:
            wrapped = await loop.start_tls(
                raw,  # type: ignore[arg-type]  # uvloop's transports have the same methods
                self,
                self._tls,
                server_side=True,
                ssl_handshake_timeout=limit_s,
            )
        except (OSError, TimeoutError, ValueError, RuntimeError):
            late = loop.time() - started >= 0.99 * limit_s
            self._limits.count("tls_handshake_timeout" if late else "tls_handshake_failed")
            raw.close()
            self._release()
            return
        if self._lost or wrapped is None:
            self._release()
            return
        self._transport = wrapped
        self._inner = self._make()
        self._inner.connection_made(wrapped)
        early, self._early = self._early, []
        for data in early:
            if data is None:
                self.eof_received()
            else:
                self.data_received(data)

    def _release(self) -> None:
        if self._holding:
            self._holding = False
            self._limits.release(self._client)

    def data_received(self, data: bytes) -> None:
        """Watch the first head (until it is complete), then pass the bytes on."""
        if self._inner is None:
            if self._holding and not self._lost:  # decrypted before aiohttp's turn: kept
                self._early.append(data)
            return
        if self._tail is not None:
            self._watch_head(data)
        self._inner.data_received(data)

    def _watch_head(self, data: bytes) -> None:
        buf = self._tail + data if self._tail else data
        if b"\n\r\n" in buf or b"\n\n" in buf:  # CRLF CRLF, or bare LF LF
            self._tail = None
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            return
        self._tail = buf[-2:]
        if self._head_timer is None and self._inner is not None:
            loop = asyncio.get_running_loop()
            self._head_timer = loop.call_later(self._limits.header_timeout_s, self._head_late)

    def _head_late(self) -> None:
        self._head_timer = None
        transport = self._transport
        if self._tail is None or transport is None or transport.is_closing():
            return
        self._limits.count("header_timeout")
        late = ProtocolError(
            408,
            f"request head not complete within {self._limits.header_timeout_s:g}s "
            "(limits.header_timeout_s)",
            code="header_timeout",
        )
        _write_close(transport, raw_error(late))

    def eof_received(self) -> bool | None:
        """Pass the end of input on (aiohttp closes the connection)."""
        if self._inner is None:
            if self._holding and self._tls is not None:
                self._early.append(None)
            return None
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        """Give back the slot; tell aiohttp."""
        self._lost = True
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if self._inner is not None:
            self._release()
            self._inner.connection_lost(exc)
            self._inner = None
        elif self._handshake is None or self._handshake.done():
            self._release()  # else the handshake's task gives it back
        self._transport = None

    def pause_writing(self) -> None:
        """Flow control, passed on."""
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        """Flow control, passed on."""
        if self._inner is not None:
            self._inner.resume_writing()


def _write_close(transport: asyncio.BaseTransport, data: bytes) -> None:
    """Write ``data`` on a stream transport (asyncio's or uvloop's) and close it."""
    write = getattr(transport, "write", None)
    if write is not None:
        write(data)
    transport.close()


class EdgeSite(web.BaseSite):
    """A TCP site whose connections go through :class:`EdgeProtocol` first."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        limits: EdgeLimits,
        *,
        backlog: int = 2048,
        reuse_port: bool = False,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._tls = ssl_context  # serve HTTPS when given
        self._host = host
        self._port = port
        self._limits = limits
        self._reuse_port = reuse_port

    @property
    def name(self) -> str:
        """The site's URL."""
        port = bound_port(self._runner, self._port)  # the OS's choice once bound to port 0
        return f"{'https' if self._tls else 'http'}://{self._host}:{port}"

    async def start(self) -> None:
        """Bind and listen; a failed bind raises :class:`ConfigError` (see :func:`listen_error`)."""
        await super().start()
        server = self._runner.server
        assert server is not None  # the runner is set up before its sites start
        loop = asyncio.get_running_loop()
        limits = self._limits

        tls = self._tls

        def protocol() -> EdgeProtocol:
            return EdgeProtocol(server, limits, tls)

        try:
            self._server = await loop.create_server(
                protocol,
                self._host,
                self._port,
                backlog=self._backlog,
                reuse_address=True,
                reuse_port=self._reuse_port or None,
                # TLS is not given here: EdgeProtocol admits the connection, then shakes hands
            )
        except OSError as exc:
            raise listen_error(self._host, self._port, exc) from None


class AcceptErrorLog:
    """The event loop's exception handler, with errors accepting connections rate-limited.

    Out of file descriptors, every accept attempt fails and asyncio logs each one with a
    traceback (hundreds of MB a minute). Here such errors give one line per
    ``interval_s`` with the number left out; anything else goes to the default handler.
    """

    def __init__(self, log: logging.Logger, interval_s: float = 5.0) -> None:
        self.log = log
        self.interval_s = interval_s
        self._last_at = -math.inf  # monotonic time of the last line written
        self.num_suppressed = 0  # accept errors not logged since that line

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """Handle one error the loop reports."""
        if not _is_accept_error(context):
            loop.default_exception_handler(context)
            return
        now = time.monotonic()
        if now - self._last_at < self.interval_s:
            self.num_suppressed += 1
            return
        exc = context.get("exception")
        more = f" ({self.num_suppressed} more since the last line)" if self.num_suppressed else ""
        self.log.error("cannot accept connections: %s%s", exc or context.get("message"), more)
        self._last_at, self.num_suppressed = now, 0


def _is_accept_error(context: dict[str, Any]) -> bool:
    message = str(context.get("message", ""))
    exc = context.get("exception")
    if "accept" in message:
        return True
    return isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE)


async def expect_handler(request: web.Request) -> None:
    """``Expect: 100-continue`` answered ``100 Continue`` (HTTP/1.1); any other value a
    JSON 417.

    aiohttp's own handler quotes the value in a text answer, and a value with bytes that
    are not UTF-8 made that answer fail (500).
    """
    expect = request.headers.get("Expect", "")
    if expect.lower() != "100-continue" and request.version >= (1, 1):
        error = ProtocolError(
            417, f"header Expect: got {ascii(expect)[:80]}; allowed: 100-continue",
            param="Expect", code="expectation_failed",
        )  # fmt: skip
        text = error.to_bytes().decode()
        raise web.HTTPExpectationFailed(text=text, content_type="application/json")
    if request.version == (1, 1):  # the client waits for this before its body
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the interim answer is no part of the answer's size


UNROUTED_PATH = "/{unrouted:.*}"


def route_unrouted(app: web.Application) -> None:
    """Answer requests no route takes (404, or 405 naming the allowed methods) as aiohttp
    does, but behind :func:`expect_handler`: aiohttp checks ``Expect:`` before routing, so a
    path or method no route takes would otherwise get aiohttp's own check (a 500 for bytes
    that are not UTF-8). Matched last, whatever is added after it."""
    app.router.add_route("*", UNROUTED_PATH, _unrouted, expect_handler=expect_handler)


async def _unrouted(request: web.Request) -> web.StreamResponse:
    allowed: set[str] = set()
    itself = request.match_info.route.resource
    for resource in request.app.router.resources():
        if resource is not itself:
            allowed |= (await resource.resolve(request))[1]
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()
