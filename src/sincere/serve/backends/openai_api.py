"""Clients of the serving instances behind the gateway.

A :class:`Backend` is one instance: an OpenAI-compatible server (vLLM, SGLang, TGI,
llama.cpp server, ``sincere emulate``; ``kind: openai``) or Ollama's native API
(``kind: ollama``, translated in :mod:`sincere.serve.backends.ollama_api`). Inference
requests to an OpenAI-compatible instance go through the gateway's own HTTP/1.1 client
(:mod:`sincere.serve.backends.http1`: a pool of keep-alive connections, an idle one kept
``idle_keepalive_s``, below the upstream's own keep-alive); scrapes, sealed requests and
Ollama's API through one ``aiohttp.ClientSession`` per backend (at most ``max_in_flight``
+ a few connections). Both take their connect / read timeouts from the config. A request
the upstream closes before any answer (a kept-alive connection it closed as the request
went out) is sent once more.

:meth:`Backend.send` opens the upstream request and returns an :class:`Upstream`
once the status line is in. Failures *before the first byte* (connect error, timeout,
a 5xx or 429 status) raise :class:`UpstreamError` with ``retryable=True`` so the
gateway can try another instance (a 5xx keeps its status and the start of its body,
``upstream_status`` / ``body``: the gateway passes them on when the request itself is at
fault, :mod:`sincere.serve.gateway.faults`); failures while reading a stream raise it with
``retryable=False``. An error's ``message`` goes to clients, so it names the
instance and what went wrong in general terms only (``timed out``, ``connection
failed``, ``upstream status 502``): never an address, and never the upstream's own
error text, which may quote its configuration; ``detail`` keeps the exception's own
words for the gateway's debug log. OpenAI streams are relayed as the bytes arrive, cut at line
ends, without parsing their JSON (:class:`SseScanner` finds ``[DONE]`` and counts
token events by byte search); OpenAI bodies are passed through byte for byte.

Per request the client's JSON bytes go upstream unchanged unless a field must change
(the upstream model name, the ``sincere`` extension, a lower ``max_tokens`` cap); only
then is the body re-encoded (:meth:`Backend.upstream_payload`). URLs and headers are
built once per backend, and the session's connector keeps connections alive.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from yarl import URL

from sincere.serve.backends.config import BackendConfig
from sincere.serve.backends.http1 import Http1Pool, Http1Response
from sincere.serve.protocol import PATHS, SSE_DONE, CompletionRequest, dumps_compact, loads

_EMPTY_CHOICES = b'"choices":[]'  # the usage-only chunk of a stream
# chunks that carry no token: a role-only first chunk, a finish-reason-only last chunk
_NO_TEXT = (b'"text":""', b'"text": ""', b'"content":""', b'"content": ""')
_COMPLETION_TOKENS = b'"completion_tokens":'
_DONE_LINE = b"data: [DONE]"
_JSON_HEADERS = {"Content-Type": "application/json"}
R = TypeVar("R", aiohttp.ClientResponse, Http1Response)
"""An upstream answer from either client (:meth:`Backend._opened`)."""


class UpstreamError(Exception):
    """An instance failed; ``retryable`` when nothing has reached the client yet."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status: int = 502,
        detail: str = "",
        timed_out: bool = False,
        upstream_status: int | None = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(message)
        self.message = message  # safe to show a client: no address, no upstream text
        self.retryable = retryable
        self.status = status  # what the gateway answers if it cannot retry
        self.detail = detail  # the underlying error, for the gateway's own debug log
        self.timed_out = timed_out  # a read timeout: slow, not failed (no breaker failure)
        # the error status the instance answered (None: no answer: connection, timeout)
        self.upstream_status = upstream_status
        self.body = body  # that answer's body (at most MAX_ERROR_BYTES), for a request fault


@dataclass(slots=True)
class StreamStats:
    """What the gateway learns while relaying a stream."""

    num_events: int = 0  # token events relayed (kept current while relaying)
    reported_tokens: int | None = None  # the stream's usage chunk, when the engine sent one
    first_event_at: float | None = None  # loop time of the first token event
    ends_event: bool = True  # the bytes relayed so far end with a blank line


class SseScanner:
    """Cuts an SSE byte stream at line ends and watches it, without decoding JSON.

    :meth:`feed` takes the next chunk and returns the complete lines it finishes
    (a partial last line waits for the next chunk), stopping before the
    ``data: [DONE]`` line. JSON strings cannot hold a raw newline, so every
    ``data:`` at a line start is one event; ``num_events`` counts those that carry a
    token: not the usage-only chunk (``"choices":[]``, whose ``completion_tokens`` is
    kept in ``reported``), nor a chunk with empty text (a role-only first chunk, the
    finish-reason-only last one).
    """

    __slots__ = ("_tail", "done", "ends_event", "num_data", "num_events", "reported")

    def __init__(self) -> None:
        self._tail = b""  # bytes after the last line end, not yet returned
        self.done = False  # the [DONE] line was seen
        self.num_data = 0  # data lines seen (events, usage chunk included)
        self.num_events = 0  # token events seen
        self.ends_event = True  # what was returned ends with a blank line
        self.reported: int | None = None  # completion_tokens of the usage chunk, if any

    def feed(self, chunk: bytes) -> bytes:
        """The whole lines completed by ``chunk``, up to (without) ``data: [DONE]``."""
        if self.done:
            return b""
        buf = self._tail + chunk if self._tail else chunk
        cut = buf.rfind(b"\n") + 1
        lines, self._tail = buf[:cut], buf[cut:]
        done_at = _line_start(lines, _DONE_LINE)
        if done_at is not None:
            lines, self.done, self._tail = lines[:done_at], True, b""
        if not lines:
            return lines
        num = lines.count(b"\ndata:") + lines.startswith(b"data:")
        self.num_data += num
        usage_only = lines.count(_EMPTY_CHOICES)
        empty = sum(lines.count(mark) for mark in _NO_TEXT)
        self.num_events += max(0, num - usage_only - empty)
        if usage_only:
            self.reported = _reported_tokens(lines)
        self.ends_event = lines.endswith((b"\n\n", b"\r\n\r\n"))
        return lines


def _reported_tokens(lines: bytes) -> int | None:
    """``completion_tokens`` of the last usage object in ``lines``, if one is readable."""
    at = lines.rfind(_COMPLETION_TOKENS)
    if at < 0:
        return None
    digits = lines[at + len(_COMPLETION_TOKENS) :].lstrip()[:12]
    end = 0
    while end < len(digits) and 0x30 <= digits[end] <= 0x39:
        end += 1
    return int(digits[:end]) if end else None


def _line_start(buf: bytes, prefix: bytes) -> int | None:
    """Offset of the first line of ``buf`` that starts with ``prefix``, or None."""
    at = buf.find(prefix)
    while at > 0 and buf[at - 1] != 0x0A:  # not at a line start: look further
        at = buf.find(prefix, at + 1)
    return None if at < 0 else at


class Upstream:
    """An open upstream response of an OpenAI-compatible server."""

    def __init__(self, response: aiohttp.ClientResponse | Http1Response, backend: Backend) -> None:
        self.response = response
        self.status = response.status
        self.backend = backend
        self.stats = StreamStats()

    async def read_all(self) -> bytes:
        """The whole (non-streamed) body; a broken connection raises UpstreamError."""
        try:
            return await self.response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise upstream_error(self.backend.name, "", exc, retryable=True) from None

    async def events(self) -> AsyncIterator[bytes]:
        """The SSE bytes as they arrive (whole lines, from the first data event), then [DONE]."""
        loop = asyncio.get_running_loop()
        content = self.response.content
        scanner = SseScanner()
        held = b""  # lines before the first data event (sent with it)
        try:
            while not scanner.done:
                chunk = await content.readany()
                if not chunk:
                    break
                out = scanner.feed(chunk)
                self.stats.num_events = scanner.num_events  # current if the relay is cut
                if self.stats.first_event_at is None:
                    if not scanner.num_data:
                        held += out
                        continue
                    self.stats.first_event_at = loop.time()
                    out, held = held + out, b""
                if out:
                    yield out
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise upstream_error(
                self.backend.name, "stream broken: ", exc, retryable=False
            ) from None
        finally:
            self.stats.num_events = scanner.num_events
            self.stats.reported_tokens = scanner.reported
            self.stats.ends_event = scanner.ends_event
        if not scanner.done:
            raise UpstreamError(
                f"{self.backend.name}: stream ended without [DONE]", retryable=False
            )
        yield SSE_DONE

    def output_tokens(self, body: bytes | None, cap: int | None = None) -> int:
        """Generated tokens, at most ``cap`` (the cap that was sent; None: none).

        A body's usage; for a stream the usage the engine reported in it, else the token
        events relayed (so far, for a stream cut short).
        """
        if body is None:
            reported = self.stats.reported_tokens
            used = self.stats.num_events if reported is None else reported
        else:
            used = usage_tokens(body)
        return used if cap is None else min(used, cap)

    def release(self) -> None:
        """Return the connection to the pool (or drop a broken one)."""
        self.response.release()


def usage_tokens(body: bytes) -> int:
    """``usage.completion_tokens`` of a JSON body (0 when absent or unreadable)."""
    try:
        usage = loads(body).get("usage") or {}
        return int(usage.get("completion_tokens") or 0)
    except (ValueError, AttributeError, TypeError):
        return 0


def upstream_error(name: str, what: str, exc: BaseException, *, retryable: bool) -> UpstreamError:
    """An :class:`UpstreamError` for instance ``name`` whose message names no address."""
    return UpstreamError(
        f"{name}: {what}{_describe(exc)}",
        retryable=retryable,
        detail=f"{type(exc).__name__}: {exc}",
        timed_out=isinstance(exc, asyncio.TimeoutError),
    )


def _describe(exc: BaseException) -> str:
    """What failed, in general terms (exception texts carry host and port)."""
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError | ConnectionRefusedError):
        return "connection failed"
    if isinstance(exc, aiohttp.ServerDisconnectedError | ConnectionResetError):
        return "connection closed"
    return type(exc).__name__


class Backend:
    """One OpenAI-compatible serving instance."""

    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        self.name = config.name
        self.url = config.url.rstrip("/")
        self.models = dict(config.models)  # public name -> upstream name
        self.price_in_per_token_usd = config.price_in_per_1m_usd / 1e6
        self.price_out_per_token_usd = config.price_out_per_1m_usd / 1e6
        self.urls = {kind: URL(self.url + path) for kind, path in PATHS.items()}  # parsed once
        # the request targets of the inference POSTs (path and query), for the lean client
        self.targets = {kind: url.raw_path_qs for kind, url in self.urls.items()}
        # answer_timeout's timeouts by answer cap, for this config (ClientTimeout is frozen)
        self._timeouts: tuple[BackendConfig, dict[int, aiohttp.ClientTimeout]] = (config, {})
        self.headers: dict[str, str] = dict(_JSON_HEADERS)  # sent with every POST
        self._auth: dict[str, str] = {}  # the upstream's credential header, if it needs one
        self._session: aiohttp.ClientSession | None = None
        self._pool: Http1Pool | None = None

    def use_api_key(self, token: str) -> None:
        """Send ``Authorization: Bearer token`` upstream (on requests and scrapes)."""
        self._auth = {"Authorization": f"Bearer {token}"}
        self.headers = {**_JSON_HEADERS, **self._auth}

    @property
    def session(self) -> aiohttp.ClientSession:
        """The keep-alive session (created on first use, inside the event loop)."""
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.config.max_in_flight + 8,  # requests in flight + scrapes
                keepalive_timeout=self.config.idle_keepalive_s,
                ttl_dns_cache=None,  # resolve a host name once (IP literals never)
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

    @property
    def pool(self) -> Http1Pool:
        """The inference requests' keep-alive connections (:mod:`.http1`; created on first
        use, with this backend's timeouts and keep-alive)."""
        if self._pool is None or self._pool.closed:
            c = self.config
            self._pool = Http1Pool(
                self.url,
                connect_timeout_s=c.connect_timeout_s,
                read_timeout_s=c.read_timeout_s,
                keepalive_s=c.idle_keepalive_s,
            )
        return self._pool

    async def close(self) -> None:
        """Close the session, the inference pool and their connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def upstream_body(self, req: CompletionRequest, max_tokens: int | None) -> dict[str, Any]:
        """The body to send: the client's, with the upstream model name and token cap."""
        body = dict(req.body)
        body["model"] = self.models.get(req.model, req.model)
        body.pop("sincere", None)
        if max_tokens is not None:
            body.pop("max_completion_tokens", None)
            body["max_tokens"] = max_tokens
        return body

    def upstream_payload(self, req: CompletionRequest, max_tokens: int | None) -> bytes:
        """The bytes to send: the client's own when nothing changes, else the patched body."""
        if req.raw and not self._needs_patch(req, max_tokens):
            return req.raw
        return dumps_compact(self.upstream_body(req, max_tokens))

    def _needs_patch(self, req: CompletionRequest, max_tokens: int | None) -> bool:
        body = req.body
        if "sincere" in body or self.models.get(req.model, req.model) != req.model:
            return True
        if max_tokens is None:
            return False
        given = body.get("max_tokens")
        return type(given) is not int or given != max_tokens or "max_completion_tokens" in body

    async def send(self, req: CompletionRequest, max_tokens: int | None) -> Upstream:
        """Open the upstream request; raise UpstreamError(retryable) before the first byte.

        Sent through the lean client (:mod:`.http1`): a non-streamed answer's read wait
        grows with the tokens asked (:meth:`answer_read_timeout_s`), a stream's is the
        backend's ``read_timeout_s`` between two bytes."""
        payload = self.upstream_payload(req, max_tokens)
        read_s = None if req.stream else self.answer_read_timeout_s(max_tokens)
        pool, target = self.pool, self.targets[req.kind]
        response = await self._opened(
            lambda: pool.post(target, payload, self.headers, read_timeout_s=read_s)
        )
        return Upstream(response, self)

    def answer_read_timeout_s(self, max_tokens: int | None) -> float:
        """The longest wait between two bytes of a non-streamed answer of ``max_tokens``:
        ``read_timeout_s`` plus ``read_timeout_per_token_s`` per token asked."""
        c = self.config
        tokens = max_tokens if max_tokens is not None else 0
        return c.read_timeout_s + c.read_timeout_per_token_s * tokens

    def answer_timeout(self, max_tokens: int | None) -> aiohttp.ClientTimeout:
        """The timeouts of a non-streamed answer: its read wait grows with the tokens asked.

        Made once per cap and (frozen) config, kept for the next request with that cap."""
        c = self.config
        tokens = max_tokens if max_tokens is not None else 0
        memo = self._timeouts
        if memo[0] is not c:  # a config set since: the kept timeouts are not its
            memo = self._timeouts = (c, {})
        timeout = memo[1].get(tokens)
        if timeout is None:
            timeout = aiohttp.ClientTimeout(
                total=None,
                connect=c.connect_timeout_s,
                sock_connect=c.connect_timeout_s,
                sock_read=self.answer_read_timeout_s(tokens),
            )
            if len(memo[1]) >= MAX_KEPT_TIMEOUTS:  # many caps: start afresh
                memo[1].clear()
            memo[1][tokens] = timeout
        return timeout

    async def send_opaque(
        self, kind: str, body: bytes, headers: dict[str, str], answer_tokens: int | None = None
    ) -> aiohttp.ClientResponse:
        """POST ``body`` unchanged with ``headers`` (plus the credential): a sealed request.

        ``answer_tokens``: for a non-streamed answer, the tokens asked for (its read wait
        grows with them, :meth:`answer_timeout`); None for a stream.
        """
        timeout = None if answer_tokens is None else self.answer_timeout(answer_tokens)
        return await self._post(self.urls[kind], body, {**headers, **self._auth}, timeout=timeout)

    async def _post(
        self,
        url: URL,
        data: bytes,
        headers: dict[str, str] | None = None,
        *,
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> aiohttp.ClientResponse:
        kwargs: dict[str, Any] = {"data": data, "headers": headers or self.headers}
        if timeout is not None:
            kwargs["timeout"] = timeout
        session = self.session
        return await self._opened(lambda: session.post(url, **kwargs))

    async def _opened(self, post: Callable[[], Awaitable[R]]) -> R:
        """The answer of ``post()`` (either client's POST) once its status line is in.

        A request the upstream closes before any answer (most often a kept-alive
        connection it closed idle as this request went out) is sent once more, on another
        connection; a failure before the first byte, or a 5xx / 429 status, raises a
        retryable :class:`UpstreamError`."""
        try:
            try:
                response = await post()
            except aiohttp.ServerDisconnectedError:
                response = await post()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise upstream_error(self.name, "", exc, retryable=True) from None
        await _refuse_failed(self.name, response)
        return response

    async def get_text(self, path: str, timeout_s: float) -> str:
        """``GET path`` as text (metrics scraping); errors propagate."""
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        get = self.session.get(self.url + path, timeout=timeout, headers=self._auth)
        async with get as response:
            response.raise_for_status()
            return await response.text()


MAX_KEPT_TIMEOUTS = 1024
"""Most answer caps whose timeouts a backend keeps (:meth:`Backend.answer_timeout`)."""

MAX_ERROR_BYTES = 64 * 1024
"""Most bytes of an upstream's error answer kept (the rest is dropped with the connection)."""


async def _refuse_failed(name: str, response: aiohttp.ClientResponse | Http1Response) -> None:
    """Raise a retryable :class:`UpstreamError` for a 5xx or 429 answer (its body's start
    kept, in case the request is at fault); the connection is then released."""
    if response.status >= 500 or response.status == 429:
        body = await _error_body(response)
        raise UpstreamError(
            f"{name}: upstream status {response.status}",
            retryable=True,
            status=503 if response.status == 429 else 502,
            upstream_status=response.status,
            body=body,
        )


async def _error_body(response: aiohttp.ClientResponse | Http1Response) -> bytes:
    """The start of an error answer's body (b"" when it cannot be read); the response is
    released (a body cut short closes its connection)."""
    try:
        async with asyncio.timeout(1.0):
            body = await response.content.read(MAX_ERROR_BYTES)
    except (TimeoutError, aiohttp.ClientError):
        body = b""
    if response.content.at_eof():
        response.release()
    else:
        response.close()
    return body


def make_backend(config: BackendConfig) -> Backend:
    """The client for ``config.kind``."""
    if config.kind == "ollama":
        from sincere.serve.backends.ollama_api import OllamaBackend

        return OllamaBackend(config)
    return Backend(config)
