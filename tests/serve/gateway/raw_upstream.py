"""A raw HTTP/1.1 server on 127.0.0.1 that answers as a test tells it: the gateway's
client tests script every answer byte by byte (framings, faults, closes) through it."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable

Answer = Callable[[asyncio.StreamWriter, bytes], Awaitable[bool]]
"""Writes one answer to a request body; returns whether to keep the connection open (False:
the server closes it, answered or not)."""


class RawUpstream:
    """Reads requests (``Content-Length`` bodies) and answers each with ``answer``; counts
    connections and keeps every request's head and body (``len(bodies)``: requests read).
    With ``ssl``, serves over TLS."""

    def __init__(self, answer: Answer, ssl: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.ssl = ssl
        self.connections = 0
        self.bodies: list[bytes] = []
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> RawUpstream:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        assert self.server is not None
        scheme = "http" if self.ssl is None else "https"
        return f"{scheme}://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                body = await reader.readexactly(length)
                self.heads.append(head)
                self.bodies.append(body)
                if not await self.answer(writer, body):
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()
