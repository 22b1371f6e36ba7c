"""A lean HTTP/1.1 client for the gateway's inference requests to its instances.

The gateway sends every inference request to an instance as one ``POST`` with a JSON body
and relays what comes back: a whole JSON body or a stream of server-sent events. That is a
small part of HTTP, and a general client's machinery (aiohttp's request and response
objects, its tracing hooks, cookie jar and timeout contexts) cost more CPU per request
than the gateway's own work: measured on the project's 2-core VM, a sequential ``POST``
to a local server took 175 us of client CPU through ``aiohttp.ClientSession`` against
59 us through this client (``benchmarks/http_client_cost.py``; ``benchmarks/README.md``,
"The gateway's own HTTP/1.1 client"). This module is an asyncio protocol made complete
for the gateway's use:

* **connections**: one pool per instance (scheme, host, port), idle keep-alive
  connections reused most recently used first and closed after ``keepalive_s`` idle; a
  connection the instance closed while idle is dropped when found; ``https`` instances go
  through TLS with the system's trust store (``ssl.create_default_context``);
* **requests**: ``POST`` with ``Content-Length`` (the body is always whole), the headers
  given plus ``Host``, written in one call;
* **responses**: the status line and headers (read case-insensitively), then the body
  framed by ``Content-Length``, ``Transfer-Encoding: chunked`` (decoded as it arrives) or
  the connection's end; ``Connection: close`` or HTTP/1.0 keeps the connection out of the
  pool; a body read at the pace it arrives (:meth:`Http1Body.readany`), whole
  (:meth:`Http1Response.read`) or up to a size; reading pauses the socket when more than
  :data:`HIGH_WATER` bytes wait unread (a slow client of a stream);
* **timeouts**: connecting within ``connect_timeout_s``; each wait for more bytes within
  the request's read timeout (``TimeoutError``), as aiohttp's ``sock_read``;
* **errors**: aiohttp's exception classes, so the gateway's handling is the same whichever
  client a path uses: a connection refused or failing is an ``OSError`` (``TimeoutError``
  when it timed out), a connection closed before any byte of the answer
  ``aiohttp.ServerDisconnectedError`` (the caller sends once more, as with a pooled
  connection the instance closed as the request went out), a body cut short or malformed
  ``aiohttp.ClientPayloadError``, a malformed status line or header
  ``aiohttp.ClientResponseError``.

What it does not do, because the gateway's inference path needs none of it: redirects,
proxies, cookies, compression (no ``Accept-Encoding`` is sent, and bytes are relayed as
they come), ``Expect: 100-continue``, pipelining. Scrapes, sealed requests and the other
endpoints keep aiohttp (:mod:`sincere.serve.backends.openai_api`).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Mapping
from typing import cast
from urllib.parse import urlsplit

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

HIGH_WATER = 1 << 20
"""Unread body bytes above which a connection stops reading its socket until some are read."""

MAX_HEAD_BYTES = 64 * 1024
"""Longest status line plus headers accepted (a longer head is malformed)."""

_CRLF = b"\r\n"
_HEAD_END = b"\r\n\r\n"


class _Headers(dict[str, str]):
    """Response headers by lower-case name, read with any case (the last of repeats)."""

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return super().get(name.lower(), default)


class _Connection(asyncio.Protocol):
    """One connection to an instance: bytes received wait in ``buffer`` for the response
    being read (one at a time); ``wait`` returns when more come or the connection ends."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.ended = False  # the instance closed its side (or the connection was lost)
        self.error: BaseException | None = None
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport (uvloop's is not a subclass of asyncio.Transport)
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.ended = True
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended = True
        self.error = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def take(self, n: int) -> bytes:
        """The first ``n`` buffered bytes (removed); reading resumes below the high water."""
        out = bytes(self.buffer[:n])
        del self.buffer[:n]
        if self._paused and len(self.buffer) <= HIGH_WATER // 2 and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return out

    async def wait(self, timeout_s: float | None) -> None:
        """Until more bytes arrive or the connection ends; ``TimeoutError`` after
        ``timeout_s`` (None: no limit). One timer handle per wait (cheaper than a timeout
        context, which a stream's every event would pay)."""
        if self.ended:
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiter = waiter
        timer = None if timeout_s is None else loop.call_later(timeout_s, _expire, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    @property
    def usable(self) -> bool:
        """Open, nothing unread left from an earlier answer."""
        t = self.transport
        return not self.ended and t is not None and not t.is_closing() and not self.buffer

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.ended = True


def _expire(waiter: asyncio.Future[None]) -> None:
    """A wait's time is up: it raises ``TimeoutError`` (unless bytes came first)."""
    if not waiter.done():
        waiter.set_exception(TimeoutError("no bytes from the instance within the read timeout"))


class Http1Body:
    """A response's body as it arrives (the part of aiohttp's ``StreamReader`` the
    gateway reads): :meth:`readany`, :meth:`read`, :meth:`at_eof`."""

    def __init__(self, conn: _Connection, framing: str, length: int, timeout_s: float | None):
        self._conn = conn
        self._framing = framing  # "length", "chunked" or "close"
        self._left = length  # "length": bytes still due; "chunked": of the current chunk
        self._timeout_s = timeout_s
        self._eof = framing == "length" and length == 0
        self._trailers = False  # chunked: the last chunk seen, its trailers being read
        self._held = b""  # decoded bytes read beyond a size, returned first
        self._done_after_held = False  # the body ended; only the held bytes are left

    def at_eof(self) -> bool:
        """Whether the whole body was read."""
        return self._eof

    async def readany(self) -> bytes:
        """The next bytes of the body as soon as some are in (b"": the body is done)."""
        while not self._eof:
            out = self._next()
            if out:
                return out
            if self._eof:
                break
            conn = self._conn
            if conn.ended:
                if self._framing == "close":
                    self._eof = True
                    break
                raise aiohttp.ClientPayloadError(
                    "the connection ended before the body did"
                ) from conn.error
            await conn.wait(self._timeout_s)
        return b""

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes of the body (-1: all of it) as they come."""
        parts: list[bytes] = []
        got = 0
        while n < 0 or got < n:
            piece = await self.readany()
            if not piece:
                break
            parts.append(piece)
            got += len(piece)
        out = b"".join(parts)
        if 0 <= n < len(out):  # more than asked: keep the rest for the next read
            self._push_back(out[n:])
            out = out[:n]
        return out

    def _push_back(self, data: bytes) -> None:
        """Bytes read beyond a size come back first (decoded body bytes)."""
        self._held = data + self._held
        if self._eof:  # not the end while bytes wait
            self._eof = False
            self._done_after_held = True

    def _next(self) -> bytes:
        """Body bytes decodable from the buffer now (b"" when none yet, or at the end)."""
        held = self._held
        if held:
            self._held = b""
            if self._done_after_held:
                self._eof = True
            return held
        buf = self._conn.buffer
        if self._framing == "length":
            if not buf:
                return b""
            n = min(len(buf), self._left)
            self._left -= n
            if self._left == 0:
                self._eof = True
            return self._conn.take(n)
        if self._framing == "close":
            return self._conn.take(len(buf)) if buf else b""
        return self._chunked(buf)

    def _chunked(self, buf: bytearray) -> bytes:
        """Decode what the buffer holds of a chunked body."""
        parts: list[bytes] = []
        conn = self._conn
        while True:
            if self._trailers:  # after the last chunk: trailer lines up to an empty one
                end = buf.find(_CRLF)
                if end < 0:
                    break
                conn.take(end + 2)
                if end == 0:
                    self._eof = True
                    break
                continue
            if self._left > 0:  # inside a chunk's data
                if not buf:
                    break
                n = min(len(buf), self._left)
                parts.append(conn.take(n))
                self._left -= n
                if self._left > 0:
                    break
                self._left = -1  # the chunk's closing CRLF is due
            if self._left == -1:
                if len(buf) < 2:
                    break
                if buf[:2] != _CRLF:
                    raise aiohttp.ClientPayloadError("a chunk of the body does not end in CRLF")
                conn.take(2)
                self._left = 0
            end = buf.find(_CRLF)  # a chunk size line
            if end < 0:
                if len(buf) > 1024:
                    raise aiohttp.ClientPayloadError("a chunk size line is too long")
                break
            line = bytes(buf[:end]).split(b";", 1)[0].strip()
            try:
                size = int(line, 16)
            except ValueError:
                raise aiohttp.ClientPayloadError(f"bad chunk size {line[:32]!r}") from None
            if size < 0:
                raise aiohttp.ClientPayloadError(f"bad chunk size {line[:32]!r}")
            conn.take(end + 2)
            if size == 0:
                self._trailers = True
            else:
                self._left = size
        return b"".join(parts)


class Http1Response:
    """An instance's answer: status and headers read, the body to come (``content``)."""

    def __init__(
        self, pool: Http1Pool, conn: _Connection, status: int, headers: _Headers,
        keep_alive: bool, content: Http1Body,
    ) -> None:  # fmt: skip
        self._pool = pool
        self._conn: _Connection | None = conn
        self.status = status
        self.headers = headers
        self._keep_alive = keep_alive
        self.content = content

    async def read(self) -> bytes:
        """The whole body; the connection goes back to the pool once it is read (and is
        closed if reading fails)."""
        try:
            body = await self.content.read()
        except BaseException:
            self.close()
            raise
        self.release()
        return body

    def release(self) -> None:
        """Give the connection back to the pool if the body was read whole and the instance
        keeps it alive; otherwise close it (an unread body cannot be skipped cheaply)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._keep_alive and self.content.at_eof() and conn.usable:
            self._pool.put_back(conn)
        else:
            conn.close()

    def close(self) -> None:
        """Drop the connection, whatever was read."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class Http1Pool:
    """Keep-alive connections to one instance (``url``'s scheme, host and port)."""

    def __init__(
        self, url: str, *, connect_timeout_s: float, read_timeout_s: float, keepalive_s: float
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL with a host: {url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        default_port = self.port == (443 if parts.scheme == "https" else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = host if default_port else f"{host}:{self.port}"
        self.ssl: ssl.SSLContext | None = (
            ssl.create_default_context() if parts.scheme == "https" else None
        )
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.keepalive_s = keepalive_s
        self._idle: deque[_Connection] = deque()  # oldest first
        self.closed = False

    async def post(
        self,
        target: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        read_timeout_s: float | None = None,
    ) -> Http1Response:
        """Send ``POST target`` with ``body`` and return the answer once its headers are in.

        ``read_timeout_s``: the longest wait for more bytes of this answer (None: the
        pool's). Errors: see the module docstring.
        """
        if self.closed:
            raise aiohttp.ClientConnectionError("the instance's connections are closed")
        timeout = self.read_timeout_s if read_timeout_s is None else read_timeout_s
        conn = self._reuse() or await self._connect()
        head = [f"POST {target} HTTP/1.1\r\nHost: {self.host_header}\r\n"]
        head.extend(f"{name}: {value}\r\n" for name, value in headers.items())
        head.append(f"Content-Length: {len(body)}\r\n\r\n")
        transport = conn.transport
        if transport is None:  # (set when the connection is made)
            raise aiohttp.ClientConnectionError("no transport for the connection")
        transport.write("".join(head).encode("latin-1") + body)
        try:
            return await self._answer(conn, timeout)
        except BaseException:
            conn.close()
            raise

    def _reuse(self) -> _Connection | None:
        """The most recently used idle connection still open and fresh enough."""
        now = asyncio.get_running_loop().time()
        idle = self._idle
        while idle:
            conn = idle.pop()
            if conn.usable and now - conn.idle_since < self.keepalive_s:
                return conn
            conn.close()
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.connect_timeout_s):
            _, conn = await loop.create_connection(
                _Connection, self.host, self.port, ssl=self.ssl,
                server_hostname=self.host if self.ssl is not None else None,
            )  # fmt: skip
        return conn

    async def _answer(self, conn: _Connection, timeout_s: float) -> Http1Response:
        """Read the status line and headers; the body is left to the response."""
        buf = conn.buffer
        while True:
            end = buf.find(_HEAD_END)
            if end >= 0:
                break
            if len(buf) > MAX_HEAD_BYTES:
                raise _malformed("the answer's headers are too long")
            if conn.ended:
                if not buf:
                    raise aiohttp.ServerDisconnectedError()
                raise aiohttp.ClientPayloadError("the connection ended inside the headers")
            await conn.wait(timeout_s)
        lines = conn.take(end + 4)[:end].decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise _malformed(f"bad status line {lines[0][:64]!r}")
        status = int(code)
        headers = _Headers()
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise _malformed(f"bad header line {line[:64]!r}")
            headers[name.lower()] = value.strip()
        connection = headers.get("connection", "") or ""
        keep_alive = version == "HTTP/1.1" and "close" not in connection.lower()
        coding = (headers.get("transfer-encoding") or "").lower()
        length_text = headers.get("content-length")
        if status in (204, 304) or 100 <= status < 200:
            content = Http1Body(conn, "length", 0, timeout_s)
        elif "chunked" in coding:
            content = Http1Body(conn, "chunked", 0, timeout_s)
        elif length_text is not None:
            if not length_text.isdigit():
                raise _malformed(f"bad Content-Length {length_text[:32]!r}")
            content = Http1Body(conn, "length", int(length_text), timeout_s)
        else:
            content = Http1Body(conn, "close", 0, timeout_s)
            keep_alive = False
        return Http1Response(self, conn, status, headers, keep_alive, content)

    def put_back(self, conn: _Connection) -> None:
        """An answered connection, idle from now; the oldest idle ones past ``keepalive_s``
        (or closed by the instance) are closed on the way, so a burst's connections do not
        linger once the load falls."""
        if self.closed:
            conn.close()
            return
        now = asyncio.get_running_loop().time()
        idle = self._idle
        while idle and (not idle[0].usable or now - idle[0].idle_since >= self.keepalive_s):
            idle.popleft().close()
        conn.idle_since = now
        idle.append(conn)

    @property
    def num_idle(self) -> int:
        """Idle connections kept (some may have expired since the last request)."""
        return len(self._idle)

    def close(self) -> None:
        """Close the idle connections; later requests are refused."""
        self.closed = True
        for conn in self._idle:
            conn.close()
        self._idle.clear()


def _malformed(message: str) -> aiohttp.ClientResponseError:
    """A malformed answer, as aiohttp reports one."""
    info = aiohttp.RequestInfo(url=_NO_URL, method="POST", headers=_NO_HEADERS, real_url=_NO_URL)
    return aiohttp.ClientResponseError(info, (), status=502, message=message)


_NO_URL = URL("http://instance")
_NO_HEADERS: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())
