"""Relaying one admitted request to an instance, with retries and fault handling.

* An instance that fails **before the first byte reaches the client** (connect error,
  timeout, a 5xx or 429 status, a stream that breaks before its first event, a body
  that breaks while read) counts a breaker failure, and the request is routed again
  to an instance it has not tried yet; when none is left the client gets 502 / 503
  with the last reason. So does an instance that sends no first byte within the
  tier's ``first_byte_timeout_s`` (a stalled engine): its connection is dropped and
  the request retried elsewhere, instead of waiting out the read timeout. A non-streamed
  answer's first byte is the whole answer: its limit grows by the backend's
  ``read_timeout_per_token_s`` per token asked for.
* An instance that fails **mid-stream** ends the client's stream with an error event
  ``data: {"error": {...}}`` followed by ``data: [DONE]``.
* A **read timeout** (no byte within the backend's ``read_timeout_s``; a non-streamed
  answer, which comes whole, gets ``read_timeout_per_token_s`` more per token asked for)
  is retried like a failure but counts no breaker failure: a slow answer is not a dead
  instance.
* A client's ``sincere.deadline_s`` is enforced while relaying: passed before the answer
  started, the client gets **504** ``deadline_exceeded``; passed mid-stream, the stream
  ends with that error event and ``[DONE]`` (charged the tokens relayed).
* A 4xx from the instance is passed through (the instance is alive). A 5xx that the
  request itself caused (``501``, or the same status from a second instance) is passed
  through too, not retried further, and takes back its breaker failures
  (:mod:`.faults`).
* A client that goes away mid-stream ends the relay quietly: one log line, the
  request counted as ``cancelled``.
* A **sealed** request (confidential mode, :mod:`.sealed`) goes byte for byte to the
  instance and its answer comes back as it is; only the usage counts the seal proxy adds
  in the clear are read. A sealed stream that breaks is cut short (the client's opener
  reports it truncated): an error event could not be sealed by the gateway. One the
  client's deadline cuts ends with a plain ``sincere-error`` event instead.
* Upstream 4xx bodies pass through ``scrub`` when upstream credentials are configured,
  so an engine quoting the request's ``Authorization`` header leaks nothing.

The tokens an attempt produced are left in ``pending.output_tokens`` (and, when the
upstream said, ``pending.prompt_tokens_used``) for the spend to be settled.

The :class:`Relay` sees only what relaying needs -- the dispatcher (slots, admission,
outcomes), the metrics, the observed-load window, the tiers' first-byte timeouts and a
logger -- not the whole gateway. Every path releases its slot (``finally``), so no request
is lost or left hanging:
each ends with a response, an error status or an error event. Timing: TTFT is the
first streamed event (or the first Ollama token) after the gateway sent the request;
a non-streamed OpenAI answer arrives whole, so its TTFT is not measured (the metrics
record its E2E for both; admission learns only from measured TTFTs).

Cost per request: the upstream's bytes go to the client as they come (a body in one
``web.Response``, a stream chunk by chunk, with headers built once per instance); JSON
is decoded only for the usage of a non-streamed answer and to rename a mapped model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping

import aiohttp
from aiohttp import web

from sincere.core.request import Request
from sincere.policy.router_base import Outcome
from sincere.serve.backends.openai_api import Upstream, UpstreamError, upstream_error
from sincere.serve.gateway.dispatch import Dispatcher, Pending, RefusalError, Slot
from sincere.serve.gateway.faults import error_kind, is_request_fault
from sincere.serve.gateway.instances import INSTANCE_HEADER, InstanceState
from sincere.serve.gateway.metrics import GatewayMetrics
from sincere.serve.gateway.observed_load import ObservedLoad
from sincere.serve.gateway.sealed import (
    UsageScanner,
    error_event,
    relay_stream,
    usage_of_header,
)
from sincere.serve.protocol import (
    SSE_DONE,
    CompletionRequest,
    dumps_compact,
    error_body,
    loads,
    sse_event,
)
from sincere.serve.security.envelope import USAGE_HEADER

__all__ = ["INSTANCE_HEADER", "SSE_HEADERS", "Relay"]

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}

Opened = tuple[AsyncIterator[bytes], bytes]
"""A stream being relayed: its event iterator and the first event, already read."""


class Relay:
    """Relays admitted requests to instances; one per gateway."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        metrics: GatewayMetrics,
        load: ObservedLoad,
        first_byte_timeouts: Mapping[str, float | None],
        log: logging.Logger,
        scrub: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self.scrub = scrub  # masks upstream secrets in error bodies passed through; None: none
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.load = load  # finished requests per (model, tier), for the planner
        self.first_byte_timeouts = first_byte_timeouts  # per tier; None: read timeout only
        self.log = log

    async def serve(
        self, http_req: web.Request, creq: CompletionRequest, pending: Pending
    ) -> web.StreamResponse:
        """Route (queueing if needed) and relay an admitted ``pending`` (the guard's
        :meth:`~sincere.serve.gateway.guard.Guard.admit`); retry before the first byte."""
        d = self.dispatcher
        loop = asyncio.get_running_loop()
        req = pending.request
        tried: set[str] = set()
        last: UpstreamError | None = None
        for _ in range(len(d.by_model.get(req.model, ())) + 1):
            if last is not None and all(s.name in tried for s in d.by_model.get(req.model, ())):
                break
            slot = await d.acquire(pending, loop)
            pending.instance = slot.instance.name
            try:
                if pending.sealed is not None:
                    return await self._attempt_sealed(http_req, creq, pending, slot)
                return await self._attempt(http_req, creq, pending, slot)
            except UpstreamError as exc:
                if is_request_fault(exc, last):  # not the instances': answer it, no retry
                    return self._request_fault(exc, slot, pending, tried)
                self._failed(slot, error_kind(exc), exc)
                self.metrics.retries[slot.instance.name] += 1
                tried.add(slot.instance.name)
                pending.exclude = frozenset(tried)
                last = exc
            finally:
                d.release(slot, loop.time())
        assert last is not None  # the loop runs at least once and only breaks after a failure
        raise RefusalError(
            last.status,
            f"every instance tried failed; last: {last.message}",
            "error",
            "upstream_error",
        )

    def _request_fault(
        self, exc: UpstreamError, slot: Slot, pending: Pending, tried: set[str]
    ) -> web.Response:
        """The engine's own error answer to a request at fault (:mod:`.faults`); the
        instances that answered it are alive, so their breakers take back its failures."""
        now = asyncio.get_running_loop().time()
        for name in {*tried, slot.instance.name}:
            state = self.dispatcher.instances.get(name)
            if state is not None:
                state.breaker.record_success(now)
        self.metrics.upstream_error(slot.instance.name, "status")
        self.metrics.finished(slot.instance.name, pending.request.tier.name, "client_error")
        pending.output_tokens = 0
        status = exc.upstream_status or 500
        body = exc.body or dumps_compact(
            error_body(f"{exc.message} (the same from every instance tried)", code="upstream")
        )
        return _json(status, self._scrubbed(body), slot.instance)

    def client_left(self, tier: str, instance: str, when: str) -> None:
        """Count a request whose client disconnected; one log line, no traceback."""
        self.metrics.finished(instance, tier, "cancelled")
        self.log.info("client disconnected %s (tier %s, instance %s)", when, tier, instance or "-")

    async def _attempt(
        self, http_req: web.Request, creq: CompletionRequest, pending: Pending, slot: Slot
    ) -> web.StreamResponse:
        req = pending.request
        loop = asyncio.get_running_loop()
        sent_at = loop.time()
        limit_s = self.first_byte_timeouts.get(req.tier.name)
        if limit_s is not None and not creq.stream:  # the first byte is the whole answer
            per_token_s = slot.instance.backend.config.read_timeout_per_token_s
            limit_s += per_token_s * (slot.max_tokens or 0)
        opened: Opened | None = None
        try:
            async with asyncio.timeout_at(pending.deadline_at):
                if limit_s is None:
                    upstream = await slot.instance.backend.send(creq, slot.max_tokens)
                else:
                    upstream, opened = await _first_byte(slot, creq, sent_at + limit_s, limit_s)
        except TimeoutError:
            raise deadline_error(pending, loop.time(), "before the first byte") from None
        ok = False
        try:
            if upstream.status != 200:
                body = await upstream.read_all()
                slot.instance.breaker.record_success(loop.time())
                self.metrics.finished(slot.instance.name, req.tier.name, "client_error")
                ok = True
                pending.output_tokens = 0
                return _json(upstream.status, self._scrubbed(body), slot.instance)
            if creq.stream:
                resp = await self._relay_stream(http_req, pending, slot, upstream, sent_at, opened)
            else:
                resp = await self._relay_body(creq, pending, slot, upstream, sent_at)
            ok = True
            return resp
        finally:
            if ok:
                upstream.release()
            else:
                upstream.response.close()

    async def _relay_body(
        self,
        creq: CompletionRequest,
        pending: Pending,
        slot: Slot,
        upstream: Upstream,
        sent_at: float,
    ) -> web.StreamResponse:
        req = pending.request
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(pending.deadline_at):
                body = await upstream.read_all()
        except TimeoutError:
            raise deadline_error(pending, loop.time(), "while the answer was generated") from None
        now = loop.time()
        first = upstream.stats.first_event_at  # None: the answer came whole (not measured)
        pending.output_tokens = upstream.output_tokens(body, every_sequence(slot, pending))
        self._succeeded(req, slot, sent_at, first, now, pending.output_tokens)
        upstream_model = slot.instance.backend.models.get(req.model, req.model)
        if upstream_model != req.model:
            body = _rename_model(body, req.model)
        resp = _json(200, body, slot.instance)
        if pending.headers:
            resp.headers.extend(pending.headers)
        return resp

    async def _relay_stream(
        self,
        http_req: web.Request,
        pending: Pending,
        slot: Slot,
        upstream: Upstream,
        sent_at: float,
        opened: Opened | None,
    ) -> web.StreamResponse:
        req = pending.request
        loop = asyncio.get_running_loop()
        events, first_event = opened or await _open_stream(upstream)
        first_at = upstream.stats.first_event_at or loop.time()
        resp = web.StreamResponse(headers=slot.instance.sse_headers)
        if pending.headers:
            resp.headers.extend(pending.headers)
        pending.output_tokens = 0
        cap = every_sequence(slot, pending)  # the cap of all its sequences together
        try:
            await resp.prepare(http_req)
            await resp.write(first_event)
            async with asyncio.timeout_at(pending.deadline_at):
                async for event in events:
                    await resp.write(event)
        except TimeoutError:  # the client's deadline_s passed mid-stream: end it, say why
            pending.output_tokens = upstream.output_tokens(None, cap)
            self.metrics.finished(slot.instance.name, req.tier.name, "timeout")
            late = deadline_error(pending, loop.time(), "mid-stream")
            sep = b"" if upstream.stats.ends_event else b"\n"
            error = error_body(late.message, type="timeout_error", code=late.code)
            await _write_quietly(resp, sep + sse_event(error) + SSE_DONE)
            return resp
        except asyncio.CancelledError:  # the client left while the next event was awaited
            pending.output_tokens = upstream.output_tokens(None, cap)
            raise
        except UpstreamError as exc:
            pending.output_tokens = upstream.output_tokens(None, cap)
            self._failed(slot, "stream", exc)
            self.metrics.finished(slot.instance.name, req.tier.name, "error")
            sep = b"" if upstream.stats.ends_event else b"\n"  # close a half-sent event
            await _write_quietly(resp, sep + sse_event(_stream_error(exc.message)) + SSE_DONE)
            return resp
        except ConnectionResetError:  # the client went away: not the gateway's error
            pending.output_tokens = upstream.output_tokens(None, cap)
            self.client_left(req.tier.name, slot.instance.name, "mid-stream")
            return resp
        now = loop.time()
        pending.output_tokens = upstream.output_tokens(None, cap)
        self._succeeded(req, slot, sent_at, first_at, now, pending.output_tokens)
        return resp

    def _scrubbed(self, body: bytes) -> bytes:
        return body if self.scrub is None else self.scrub(body)

    async def _attempt_sealed(
        self, http_req: web.Request, creq: CompletionRequest, pending: Pending, slot: Slot
    ) -> web.StreamResponse:
        """Relay a sealed body and its answer byte for byte (see :mod:`.sealed`)."""
        req, loop = pending.request, asyncio.get_running_loop()
        assert pending.sealed is not None
        sent_at = loop.time()
        answer_tokens = None if creq.stream else creq.max_tokens or 0
        try:
            async with asyncio.timeout_at(pending.deadline_at):
                up = await slot.instance.backend.send_opaque(
                    creq.kind, creq.raw, pending.sealed, answer_tokens
                )
        except TimeoutError:
            raise deadline_error(pending, loop.time(), "before the first byte") from None
        headers = {**slot.instance.json_headers, "Content-Type": up.headers.get("Content-Type", "")}
        headers.update(pending.headers)
        pending.output_tokens = 0
        cap = creq.max_tokens  # the declared cap the seal proxy enforced
        try:
            if up.status != 200 or not creq.stream:
                try:
                    async with asyncio.timeout_at(pending.deadline_at):
                        body = await _read_sealed(up, slot)
                except TimeoutError:
                    late = "while the answer was generated"
                    raise deadline_error(pending, loop.time(), late) from None
                usage = usage_of_header(up.headers.get(USAGE_HEADER))
                if usage is not None:
                    pending.prompt_tokens_used, pending.output_tokens = usage
                elif up.status == 200:  # an answer whose usage nobody told: its cap
                    pending.output_tokens = cap or 0
                pending.output_tokens = _capped(pending.output_tokens, cap)
                if up.status == 200:
                    self._succeeded(req, slot, sent_at, None, loop.time(), pending.output_tokens)
                else:
                    slot.instance.breaker.record_success(loop.time())
                    self.metrics.finished(slot.instance.name, req.tier.name, "client_error")
                return web.Response(status=up.status, body=body, headers=headers)
            scanner = UsageScanner()
            try:
                resp, first_at, ended = await relay_stream(
                    http_req, up, headers, scanner, pending.deadline_at
                )
            except asyncio.CancelledError:  # the client left: charge the events relayed
                pending.output_tokens = _capped(scanner.num_events, cap)
                raise
            if scanner.usage is not None:
                pending.prompt_tokens_used, pending.output_tokens = scanner.usage
            else:
                pending.output_tokens = scanner.num_events
            pending.output_tokens = _capped(pending.output_tokens, cap)
            if ended == "broken":
                error = UpstreamError(
                    f"{slot.instance.name}: sealed stream broken", retryable=False
                )
                self._failed(slot, "stream", error)
                self.metrics.finished(slot.instance.name, req.tier.name, "error")
            elif ended == "client_left":
                self.client_left(req.tier.name, slot.instance.name, "mid-stream")
            elif ended == "deadline":  # cut, and said why in the clear (it cannot be sealed)
                self.metrics.finished(slot.instance.name, req.tier.name, "timeout")
                cut = deadline_error(pending, loop.time(), "mid-stream")
                await _write_quietly(resp, error_event(cut.message, cut.code, scanner.at_boundary))
            else:
                self._succeeded(req, slot, sent_at, first_at, loop.time(), pending.output_tokens)
            return resp
        finally:
            up.release()

    def _succeeded(
        self,
        req: Request,
        slot: Slot,
        sent_at: float,
        first_at: float | None,
        now: float,
        output_tokens: int,
    ) -> None:
        """Count a served request; ``first_at`` None: its first token was not measured."""
        state = slot.instance
        state.breaker.record_success(now)
        ttft_s = None if first_at is None else first_at - sent_at  # None: not measured
        tier = req.tier.name
        first = now if first_at is None else first_at
        self.metrics.served(state.name, tier, first - req.arrival_at, now - req.arrival_at)
        self.load.record(req.model, tier, now, req.prompt_tokens, output_tokens)
        outcome = Outcome(req, state.name, ttft_s, now - sent_at, max(output_tokens, 1), now)
        self.dispatcher.observe(outcome)

    def _failed(self, slot: Slot, kind: str, exc: UpstreamError) -> None:
        """Count an instance's error; a read timeout (a slow answer) opens no breaker."""
        state = slot.instance
        if not exc.timed_out:
            state.breaker.record_failure(asyncio.get_running_loop().time())
        self.metrics.upstream_error(state.name, kind)
        self.log.debug("instance %s failed (%s): %s %s", state.name, kind, exc.message, exc.detail)


def deadline_error(pending: Pending, now: float, when: str) -> RefusalError:
    """The 504 of a request whose client ``deadline_s`` passed (``when``: where it was)."""
    req = pending.request
    given = (pending.deadline_at or now) - req.arrival_at
    return RefusalError(
        504,
        f"sincere.deadline_s of {given:g}s passed {when} ({now - req.arrival_at:.3f}s after "
        "arrival); ask for fewer tokens or a later deadline",
        "timeout",
        "deadline_exceeded",
    )


async def _read_sealed(up: aiohttp.ClientResponse, slot: Slot) -> bytes:
    """A sealed answer's whole body; a broken or timed-out read is a retryable UpstreamError."""
    try:
        return await up.read()
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise upstream_error(slot.instance.name, "", exc, retryable=True) from None


async def _first_byte(
    slot: Slot, creq: CompletionRequest, deadline_at: float, limit_s: float
) -> tuple[Upstream, Opened | None]:
    """Send, and for a stream read its first event, before ``deadline_at`` (else retryable)."""
    upstream: Upstream | None = None
    try:
        async with asyncio.timeout_at(deadline_at):
            upstream = await slot.instance.backend.send(creq, slot.max_tokens)
            if not creq.stream or upstream.status != 200:
                return upstream, None
            return upstream, await _open_stream(upstream)
    except TimeoutError:
        if upstream is not None:
            upstream.response.close()
        raise UpstreamError(
            f"{slot.instance.name}: no first byte within {limit_s:g}s "
            "(the tier's first_byte_timeout_s)",
            retryable=True,
        ) from None


async def _open_stream(upstream: Upstream) -> Opened:
    """The stream's events and its first one; a stream that breaks before it is retryable."""
    events = upstream.events().__aiter__()
    try:
        return events, await events.__anext__()
    except UpstreamError as exc:  # nothing sent to the client yet: retryable
        raise UpstreamError(exc.message, retryable=True, detail=exc.detail) from None


async def _write_quietly(resp: web.StreamResponse, data: bytes) -> None:
    with contextlib.suppress(ConnectionResetError):
        await resp.write(data)


def _stream_error(message: str) -> dict[str, object]:
    return error_body(
        f"upstream failed mid-stream: {message}", type="server_error", code="upstream_failed"
    )


def every_sequence(slot: Slot, pending: Pending) -> int | None:
    """The most tokens all of a request's sequences may generate (``n`` choices of each
    prompt, each within the cap sent); None: no cap was sent."""
    cap = slot.max_tokens
    return None if cap is None else cap * pending.num_sequences


def _capped(tokens: int, cap: int | None) -> int:
    """``tokens``, at most ``cap`` (None: no cap)."""
    return tokens if cap is None else min(tokens, cap)


def _json(status: int, body: bytes, instance: InstanceState) -> web.Response:
    return web.Response(status=status, body=body, headers=instance.json_headers)


def _rename_model(body: bytes, model: str) -> bytes:
    """The body with ``model`` set back to the client's name (mapped backends)."""
    try:
        obj = loads(body)
    except ValueError:
        return body
    if isinstance(obj, dict):
        obj["model"] = model
        return dumps_compact(obj)
    return body
