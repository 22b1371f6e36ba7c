"""How the shared books' scripts reach Redis: one pipelined connection per event loop.

A keyed request's admission is one Redis round trip, and on a gateway that round trip is
mostly the client's own work: redis-py's asyncio client packs ~40 arguments through its
generic encoder, takes a connection from a locked pool, and parses the answer through
stream readers -- several hundred microseconds of Python per call, more than Redis takes
to run the script. :class:`PipelinedScripts` does the same call with a fraction of that:

* **one connection, pipelined.** Calls made at once are written one after another on the
  same socket without waiting -- those of one event-loop iteration in one system call --
  and Redis answers in order (it runs one command at a time anyway), so each answer goes
  to the oldest waiting call. No pool, no lock per call.
* **its own encoding and parsing** of the protocol (RESP2): an argument is ``bytes``,
  ``str`` (UTF-8) or a number (its ``str``); an answer is a bulk string (``bytes``), an
  integer, a status (``str``), ``None`` or a list of these; an error answer is raised as
  :class:`RedisReplyError`.
* **scripts by hash**: ``EVALSHA``, and ``EVAL`` (which caches the script again) when Redis
  answers ``NOSCRIPT`` (a restart or ``SCRIPT FLUSH``).

Failures keep :mod:`~sincere.serve.security.shared`'s contract: a call not answered
within ``timeout_s`` raises :class:`TimeoutError` (its late answer, if any, is read and
dropped: the connection stays in step); a connection that cannot be made raises
:class:`ConnectionRefusedError` (or :class:`TimeoutError`); a connection lost with calls
waiting fails each with :class:`ConnectionError`, and the next call opens a new one.
Nothing is sent twice here: the caller decides (the books' scripts apply once by id).

It serves ``redis://HOST[:PORT][/DB]`` and ``unix://PATH[?db=N]`` (with or without a user
and password); other URLs -- ``rediss://`` (TLS), options in a query -- go through
redis-py (:class:`RedisPyScripts`), which reads all of them.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast
from urllib.parse import parse_qs, unquote, urlsplit

CRLF = b"\r\n"


class RedisReplyError(Exception):
    """Redis answered a call with an error (``-ERR ...``, ``-NOSCRIPT ...``)."""


class Scripts(Protocol):
    """What :class:`~sincere.serve.security.shared.RedisState` needs of a client."""

    async def run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """Run script ``name``; its answer."""
        ...

    async def reset(self) -> None:
        """Drop idle connections (Redis restarted: they are stale)."""
        ...

    async def aclose(self) -> None:
        """Close every connection."""
        ...


def make_scripts(url: str, scripts: Mapping[str, str], timeout_s: float) -> Scripts:
    """The client for ``url``: pipelined where :func:`address` reads it, else redis-py."""
    where = address(url)
    if where is None:
        return RedisPyScripts(url, scripts, timeout_s)
    return PipelinedScripts(where, scripts, timeout_s)


@dataclass(frozen=True, slots=True)
class Address:
    """Where a Redis is and how to log in."""

    host: str  # a host name, or the socket's path for ``unix://``
    port: int | None  # None: a Unix socket
    db: int
    username: str | None
    password: str | None

    def hello(self) -> list[tuple[Any, ...]]:
        """The commands a new connection sends first: log in, choose the database."""
        login = (self.password,) if self.username is None else (self.username, self.password)
        out: list[tuple[Any, ...]] = [] if self.password is None else [("AUTH", *login)]
        return out + ([("SELECT", self.db)] if self.db else [])


def address(url: str) -> Address | None:
    """``url`` read as :class:`Address`; ``None`` when it needs redis-py (TLS, options)."""
    parts = urlsplit(url)
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if user is not None and password is None:  # redis://secret@host: the part is a password
        user, password = None, user
    query = parse_qs(parts.query)
    if parts.scheme == "unix" and set(query) <= {"db"}:
        db = query.get("db", ["0"])[0]
        return Address(unquote(parts.path), None, int(db), user, password) if db.isdigit() else None
    if parts.scheme != "redis" or parts.query or not parts.hostname:
        return None
    db = parts.path.strip("/") or "0"
    if not db.isdigit():
        return None
    return Address(parts.hostname, parts.port or 6379, int(db), user, password)


def pack(args: tuple[Any, ...]) -> bytes:
    """One command in the protocol's request form (an array of bulk strings)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def parse(buf: bytes | bytearray, at: int) -> tuple[Any, int] | None:
    """The answer that starts at ``buf[at]`` and where it ends; ``None`` if incomplete."""
    end = buf.find(CRLF, at)
    if end < 0:
        return None
    kind, line = buf[at : at + 1], bytes(buf[at + 1 : end])
    if kind == b"$":
        size = int(line)
        if size < 0:
            return None, end + 2
        stop = end + 2 + size
        return (bytes(buf[end + 2 : stop]), stop + 2) if len(buf) >= stop + 2 else None
    if kind == b"*":
        count = int(line)
        items: list[Any] = []
        at = end + 2
        for _ in range(max(count, 0)):
            got = parse(buf, at)
            if got is None:
                return None
            item, at = got
            items.append(item)
        return (items if count >= 0 else None), at
    if kind == b":":
        return int(line), end + 2
    if kind == b"+":
        return line.decode(), end + 2
    if kind == b"-":
        return RedisReplyError(line.decode(errors="replace")), end + 2
    raise ConnectionError(f"Redis answered in a form this client does not read: {kind!r}")


class _Connection(asyncio.Protocol):
    """One socket: calls written in order, answers handed to the calls in order."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.lost = False
        self._buf = bytearray()
        self._unsent: list[bytes] = []  # calls of this loop iteration, written together

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self._buf += data
        at = 0
        while self.waiting:
            try:
                got = parse(self._buf, at)
            except (ValueError, ConnectionError):
                self.fail(ConnectionError("Redis answered in a form this client does not read"))
                return
            if got is None:
                break
            answer, at = got
            call = self.waiting.popleft()
            if not call.done():  # else it timed out or was cancelled: the answer is dropped
                call.set_result(answer)
        del self._buf[:at]

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(ConnectionError("connection closed by the server"))

    def fail(self, error: Exception) -> None:
        self.lost = True
        while self.waiting:
            call = self.waiting.popleft()
            if not call.done():
                call.set_exception(error)
        if self.transport is not None:
            self.transport.close()

    def send(self, loop: asyncio.AbstractEventLoop, data: bytes) -> asyncio.Future[Any]:
        call = loop.create_future()
        self.waiting.append(call)
        if not self._unsent:
            loop.call_soon(self._write)
        self._unsent.append(data)
        return call

    def _write(self) -> None:
        """Write the calls made since the last write in one system call."""
        data, self._unsent = b"".join(self._unsent), []
        if self.transport is not None and not self.lost:
            self.transport.write(data)


def _usable(conn: _Connection | None) -> bool:
    """Whether calls may be sent on ``conn`` (open, not lost)."""
    return (
        conn is not None
        and not conn.lost
        and conn.transport is not None
        and (not conn.transport.is_closing())
    )


def _expire(call: asyncio.Future[Any], timeout_s: float) -> None:
    if not call.done():
        call.set_exception(TimeoutError(f"Redis did not answer within {timeout_s} s (timed out)"))


class PipelinedScripts:
    """The books' scripts over one pipelined connection (see the module docstring)."""

    def __init__(self, where: Address, scripts: Mapping[str, str], timeout_s: float) -> None:
        self.where = where
        self.timeout_s = timeout_s
        self._scripts = {k: (hashlib.sha1(v.encode()).hexdigest(), v) for k, v in scripts.items()}
        self._conn: _Connection | None = None
        self._connecting: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop they belong to

    async def run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """Run script ``name`` by its hash; by its text if Redis does not hold it."""
        sha, text = self._scripts[name]
        try:
            return await self.call("EVALSHA", sha, len(keys), *keys, *args)
        except RedisReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self.call("EVAL", text, len(keys), *keys, *args)

    async def call(self, *command: Any) -> Any:
        """Send one command and wait for its answer (raised if an error)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a connection of another (ended) loop is left alone
            self._conn, self._connecting, self._loop = None, None, loop
        conn = self._conn
        if conn is None or not _usable(conn):
            conn = await self._connect()
        answer = conn.send(loop, pack(command))
        timer = loop.call_later(self.timeout_s, _expire, answer, self.timeout_s)
        try:
            out = await answer
        finally:
            timer.cancel()
        if isinstance(out, RedisReplyError):
            raise out
        return out

    async def _connect(self) -> _Connection:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:  # calls arriving meanwhile share the new connection
            if _usable(self._conn):
                assert self._conn is not None
                return self._conn  # another call opened it meanwhile
            self._conn = None
            conn = await asyncio.wait_for(self._open(), self.timeout_s)
            try:
                await self._hello(conn)
            except BaseException:
                conn.fail(ConnectionError("connection closed while logging in"))
                raise
            self._conn = conn
            return conn

    async def _hello(self, conn: _Connection) -> None:
        """Log in and choose the database on a new connection."""
        loop = asyncio.get_running_loop()
        hello = [conn.send(loop, pack(command)) for command in self.where.hello()]
        for answer in await asyncio.wait_for(asyncio.gather(*hello), self.timeout_s):
            if isinstance(answer, RedisReplyError):
                raise RedisReplyError(f"authentication failed: {answer}")

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        if self.where.port is None:
            _, conn = await loop.create_unix_connection(_Connection, self.where.host)
        else:
            _, conn = await loop.create_connection(_Connection, self.where.host, self.where.port)
        return conn

    async def reset(self) -> None:
        """Drop the connection: the next call opens a new one."""
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection (calls waiting on it fail); one of an ended loop is dropped."""
        conn, self._conn = self._conn, None
        mine = self._loop is asyncio.get_running_loop()
        if conn is not None and conn.transport is not None and mine:
            conn.transport.close()


class RedisPyScripts:
    """The books' scripts through redis-py's asyncio client (URLs it alone reads)."""

    def __init__(self, url: str, scripts: Mapping[str, str], timeout_s: float) -> None:
        import redis.asyncio
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        from sincere.serve.security.shared import MAX_CONNECTIONS

        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url, max_connections=MAX_CONNECTIONS, timeout=timeout_s, socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0),
        )  # fmt: skip
        self._client = redis.asyncio.Redis(connection_pool=pool)
        self._scripts = {k: self._client.register_script(v) for k, v in scripts.items()}

    async def run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """Run script ``name`` (redis-py loads it when Redis does not hold it)."""
        return await self._scripts[name](keys=keys, args=args)

    async def reset(self) -> None:
        """Drop the pool's idle connections."""
        await self._client.connection_pool.disconnect(inuse_connections=False)

    async def aclose(self) -> None:
        """Close the pool."""
        await self._client.aclose()
