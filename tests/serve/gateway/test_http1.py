"""The gateway's lean HTTP/1.1 client against a raw server on 127.0.0.1 that answers as it is
told: each body framing (length, chunked in odd pieces, to the connection's end),
keep-alive reuse and what ends it, a connection closed unanswered, timeouts, malformed
answers, a large body read slowly, partial reads, TLS. Run on asyncio's and uvloop's loops."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import aiohttp
import pytest
from tests.serve.gateway.raw_upstream import Answer, RawUpstream
from tests.serve.security.test_tls import _self_signed

from sincere.serve.backends.http1 import HIGH_WATER, Http1Pool


def _pool(url: str, read_s: float = 2.0, keepalive_s: float = 5.0) -> Http1Pool:
    return Http1Pool(url, connect_timeout_s=1.0, read_timeout_s=read_s, keepalive_s=keepalive_s)


def _writes(wire: bytes, keep: bool) -> Answer:
    """An answer that writes ``wire`` whatever the request, then keeps the connection open
    or closes it."""

    async def answer(w: asyncio.StreamWriter, body: bytes) -> bool:
        w.write(wire)
        await w.drain()
        return keep

    return answer


async def _length(w: asyncio.StreamWriter, body: bytes) -> bool:
    w.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % (len(body) + 2) + b"<" + body + b">")  # fmt: skip
    await w.drain()
    return True


def test_length_body_and_keep_alive() -> None:
    """Answers by ``Content-Length`` come back whole; the connection is reused."""

    async def main() -> None:
        async with RawUpstream(_length) as srv:
            pool = _pool(srv.url)
            for k in range(5):
                resp = await pool.post("/v1/x?q=1", b"abc%d" % k, {"X-Key": "v"})
                assert resp.status == 200
                assert resp.headers["content-type"] == "application/json"
                assert "CONTENT-TYPE" in resp.headers and "nope" not in resp.headers
                assert await resp.read() == b"<abc%d>" % k
            assert srv.connections == 1
            assert srv.heads[0].startswith(b"POST /v1/x?q=1 HTTP/1.1\r\n")
            assert b"\r\nX-Key: v\r\n" in srv.heads[0]
            assert b"\r\nHost: 127.0.0.1:" in srv.heads[0]
            pool.close()

    asyncio.run(main())


def test_chunked_body_in_odd_pieces() -> None:
    """A chunked answer written a few bytes at a time, with an extension and a trailer,
    decodes to its data; ``readany`` hands bytes over as they come."""
    data = [b"data: one\n\n", b"data: two\n\n", b"x" * 300, b"data: [DONE]\n\n"]
    wire = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(d), d) for d in data) + b"0\r\nT: 1\r\n\r\n"

    async def answer(w: asyncio.StreamWriter, body: bytes) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(0, len(wire), 7):
            w.write(wire[i : i + 7])
            await w.drain()
            await asyncio.sleep(0)
        return True

    async def main() -> None:
        async with RawUpstream(answer) as srv:
            pool = _pool(srv.url)
            for _ in range(2):  # the connection is reused after a chunked answer
                resp = await pool.post("/", b"{}", {})
                pieces = []
                while piece := await resp.content.readany():
                    pieces.append(piece)
                assert b"".join(pieces) == b"".join(data)
                assert len(pieces) > 1 and resp.content.at_eof()
                resp.release()
            assert srv.connections == 1
            pool.close()

    asyncio.run(main())


def test_close_delimited_body_and_connection_close() -> None:
    """A body without length or chunking runs to the connection's end and the connection
    is not reused; ``Connection: close`` keeps a connection out of the pool too."""

    async def to_end(w: asyncio.StreamWriter, body: bytes) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\n\r\nall of it " + body)
        await w.drain()
        return False

    async def main() -> None:
        async with RawUpstream(to_end) as srv:
            pool = _pool(srv.url)
            for k in range(2):
                resp = await pool.post("/", b"%d" % k, {})
                assert await resp.read() == b"all of it %d" % k
            assert srv.connections == 2
        # the server keeps the connection open: the client must not reuse it anyway
        closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
        async with RawUpstream(_writes(closing, keep=True)) as srv:
            pool = _pool(srv.url)
            for _ in range(2):
                assert await (await pool.post("/", b"", {})).read() == b"ok"
            assert srv.connections == 2

    asyncio.run(main())


def test_closed_unanswered_and_idle_expiry() -> None:
    """A request the server reads and drops gets ``ServerDisconnectedError`` (the caller's
    cue to send again); a connection idle past ``keepalive_s`` is not reused."""
    calls = 0

    async def first_dropped(w: asyncio.StreamWriter, body: bytes) -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            return False  # closed without a byte of answer
        return await _length(w, body)

    async def main() -> None:
        async with RawUpstream(first_dropped) as srv:
            pool = _pool(srv.url, keepalive_s=0.05)
            with pytest.raises(aiohttp.ServerDisconnectedError):
                await pool.post("/", b"a", {})
            assert await (await pool.post("/", b"b", {})).read() == b"<b>"
            await asyncio.sleep(0.1)  # idle past keepalive_s
            assert await (await pool.post("/", b"c", {})).read() == b"<c>"
            assert srv.connections == 3

    asyncio.run(main())


def test_timeouts_and_refused_connections() -> None:
    """No answer within the read timeout raises ``TimeoutError`` (and drops the
    connection); a port nobody listens on raises an ``OSError``."""

    async def silent(w: asyncio.StreamWriter, body: bytes) -> bool:
        await asyncio.sleep(5)
        return False

    async def slow_body(w: asyncio.StreamWriter, body: bytes) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
        await w.drain()
        await asyncio.sleep(5)
        return False

    async def main() -> None:
        async with RawUpstream(silent) as srv:
            with pytest.raises(TimeoutError):
                await _pool(srv.url).post("/", b"", {}, read_timeout_s=0.1)
        async with RawUpstream(slow_body) as srv:
            resp = await _pool(srv.url).post("/", b"", {}, read_timeout_s=0.1)
            assert await resp.content.readany() == b"half"
            with pytest.raises(TimeoutError):
                await resp.content.readany()
            resp.close()
        async with RawUpstream(silent) as srv:
            url = srv.url
        with pytest.raises(OSError):
            await _pool(url).post("/", b"", {})

    asyncio.run(main())


@pytest.mark.parametrize(
    "wire",
    [
        b"HTTQ/1.1 200 OK\r\n\r\n",  # not HTTP
        b"HTTP/1.1 2x0 OK\r\n\r\n",  # no status code
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n",
    ],
)
def test_malformed_answers_are_refused(wire: bytes) -> None:
    """A bad status line or header raises ``aiohttp.ClientResponseError``."""

    async def main() -> None:
        async with RawUpstream(_writes(wire, keep=True)) as srv:
            with pytest.raises(aiohttp.ClientResponseError):
                await _pool(srv.url).post("/", b"", {})

    asyncio.run(main())


@pytest.mark.parametrize(
    "wire",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",  # ends before its length
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n",  # bad size
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY",  # no CRLF after
    ],
)
def test_bodies_cut_or_malformed_raise_payload_errors(wire: bytes) -> None:
    """A body that ends early or whose chunking is broken raises ``ClientPayloadError``
    and its connection is not reused."""

    async def main() -> None:
        async with RawUpstream(_writes(wire, keep=False)) as srv:
            pool = _pool(srv.url)
            resp = await pool.post("/", b"", {})
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()
            resp.release()  # after a failed read: the connection is closed, not pooled
            assert pool.num_idle == 0

    asyncio.run(main())


def test_large_body_read_slowly_and_partial_reads() -> None:
    """A body several times the high-water mark arrives whole when read slowly (the socket
    paused and resumed); ``read(n)`` returns at most ``n`` bytes and keeps the rest."""
    big = bytes(range(256)) * (3 * HIGH_WATER // 256)

    async def answer(w: asyncio.StreamWriter, body: bytes) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(big) + big)
        await w.drain()
        return True

    async def main() -> None:
        async with RawUpstream(answer) as srv:
            pool = _pool(srv.url)
            resp = await pool.post("/", b"", {})
            await asyncio.sleep(0.2)  # let the server fill the client's buffer
            head = await resp.content.read(1000)
            assert head == big[:1000]
            rest = bytearray()
            while piece := await resp.content.readany():
                rest += piece
                await asyncio.sleep(0)
            assert bytes(rest) == big[1000:] and resp.content.at_eof()
            resp.release()
            again = await pool.post("/", b"", {})
            assert await again.read() == big
            assert srv.connections == 1
            pool.close()

    asyncio.run(main())


def test_closed_pool_and_bad_urls_are_refused() -> None:
    """A closed pool refuses requests; a URL that is not http(s) with a host is refused."""

    async def main() -> None:
        async with RawUpstream(_length) as srv:
            pool = _pool(srv.url)
            pool.close()
            with pytest.raises(aiohttp.ClientConnectionError):
                await pool.post("/", b"", {})

    asyncio.run(main())
    for url in ("ftp://host/", "http:///path"):
        with pytest.raises(ValueError, match="http"):
            _pool(url)


def test_https_verifies_the_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An ``https`` instance is reached over TLS, its certificate checked against the trust
    store: refused (an ``OSError``) while untrusted, answered once trusted
    (``SSL_CERT_FILE``, read by the system's default context)."""
    cert, key = _self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    async def main(trusted: bool) -> bytes:
        async with RawUpstream(_length, ssl=context) as srv:
            if trusted:
                monkeypatch.setenv("SSL_CERT_FILE", str(cert))
            return await (await _pool(srv.url).post("/", b"tls", {})).read()

    with pytest.raises(ssl.SSLCertVerificationError):  # an OSError, as the gateway catches
        asyncio.run(main(trusted=False))
    assert asyncio.run(main(trusted=True)) == b"<tls>"


def test_a_burst_s_connections_do_not_linger() -> None:
    """After a burst of concurrent requests the pool keeps their connections; while
    requests come one at a time (reusing the newest), the others are closed once idle past
    ``keepalive_s`` instead of lingering under it."""

    async def main() -> None:
        async with RawUpstream(_length) as srv:
            pool = _pool(srv.url, keepalive_s=0.1)
            answers = await asyncio.gather(*(pool.post("/", b"%d" % k, {}) for k in range(20)))
            for k, resp in enumerate(answers):
                assert await resp.read() == b"<%d>" % k
            assert srv.connections == 20 and pool.num_idle == 20
            for _ in range(10):  # one at a time, faster than the keep-alive expires
                assert await (await pool.post("/", b"x", {})).read() == b"<x>"
                await asyncio.sleep(0.03)
            assert pool.num_idle == 1 and srv.connections == 20
            pool.close()

    asyncio.run(main())
