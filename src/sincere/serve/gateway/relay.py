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

One attempt is one :class:`~sincere.serve.gateway.exchange.Exchange` -- the same one
the P/D stage's phases go through -- so an answer is relayed, and its outcome counted, in
one place; the :class:`Relay` adds what only the plain path has: routing (queueing if
needed), retries, request faults, the tiers' first-byte limits and sealed bodies. Every
path releases its slot (``finally``), so no request is lost or left hanging: each ends
with a response, an error status or an error event. Timing: TTFT is the first streamed
event (or the first Ollama token) after the gateway sent the request; a non-streamed
OpenAI answer arrives whole, so its TTFT is not measured (the metrics record its E2E for
both; admission learns only from measured TTFTs).

Cost per request: the upstream's bytes go to the client as they come (a body in one
``web.Response``, a stream chunk by chunk, with headers built once per instance); JSON
is decoded only for the usage of a non-streamed answer and to rename a mapped model.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import aiohttp
from aiohttp import web

from sincere.serve.backends.openai_api import UpstreamError, upstream_error
from sincere.serve.gateway.dispatch import Pending, RefusalError, Slot
from sincere.serve.gateway.exchange import Exchange, deadline_error, write_quietly
from sincere.serve.gateway.faults import error_kind, is_request_fault
from sincere.serve.gateway.instances import INSTANCE_HEADER
from sincere.serve.gateway.sealed import (
    UsageScanner,
    error_event,
    relay_stream,
    usage_of_header,
)
from sincere.serve.protocol import CompletionRequest, dumps_compact, error_body
from sincere.serve.security.envelope import USAGE_HEADER

__all__ = ["INSTANCE_HEADER", "SSE_HEADERS", "Relay"]

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


class Relay:
    """Routes and relays admitted requests, retrying before the first byte; one per gateway."""

    def __init__(self, exchange: Exchange, first_byte_timeouts: Mapping[str, float | None]) -> None:
        self.exchange = exchange  # sends, relays and counts each attempt
        self.dispatcher = exchange.dispatcher
        self.metrics = exchange.metrics
        self.first_byte_timeouts = first_byte_timeouts  # per tier; None: read timeout only

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
                self.exchange.failed(slot, error_kind(exc), exc)
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
        for name in tried:
            state = self.dispatcher.instances.get(name)
            if state is not None:
                state.breaker.record_success(now)
        self.metrics.upstream_error(slot.instance.name, "status")
        status = exc.upstream_status or 500
        body = exc.body or dumps_compact(
            error_body(f"{exc.message} (the same from every instance tried)", code="upstream")
        )
        return self.exchange.error_answer(status, body, pending, slot)

    async def _attempt(
        self, http_req: web.Request, creq: CompletionRequest, pending: Pending, slot: Slot
    ) -> web.StreamResponse:
        """One attempt on ``slot``'s instance, within the tier's first-byte limit."""
        limit_s = self.first_byte_timeouts.get(pending.request.tier.name)
        if limit_s is not None and not creq.stream:  # the first byte is the whole answer
            per_token_s = slot.instance.backend.config.read_timeout_per_token_s
            limit_s += per_token_s * (slot.max_tokens or 0)
        sent_at = asyncio.get_running_loop().time()
        upstream, opened = await self.exchange.send(creq, pending, slot, limit_s)
        return await self.exchange.relay(http_req, creq, pending, slot, upstream, sent_at, opened)

    async def _attempt_sealed(
        self, http_req: web.Request, creq: CompletionRequest, pending: Pending, slot: Slot
    ) -> web.StreamResponse:
        """Relay a sealed body and its answer byte for byte (see :mod:`.sealed`)."""
        loop = asyncio.get_running_loop()
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
        try:
            if up.status != 200 or not creq.stream:
                return await self._sealed_whole(creq, pending, slot, up, headers, sent_at)
            return await self._sealed_stream(http_req, creq, pending, slot, up, headers, sent_at)
        finally:
            up.release()

    async def _sealed_whole(
        self,
        creq: CompletionRequest,
        pending: Pending,
        slot: Slot,
        up: aiohttp.ClientResponse,
        headers: dict[str, str],
        sent_at: float,
    ) -> web.Response:
        """A sealed answer that comes whole (or an error status), charged the usage the
        seal proxy told in the clear (else its cap), counted."""
        loop = asyncio.get_running_loop()
        cap = creq.max_tokens  # the declared cap the seal proxy enforced
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
        pending.output_tokens = _capped(pending.output_tokens or 0, cap)
        if up.status == 200:
            now = loop.time()
            self.exchange.succeeded(
                pending.request, slot, sent_at, None, now, pending.output_tokens
            )
        else:
            self.exchange.refused_by_instance(pending, slot)
        return web.Response(status=up.status, body=body, headers=headers)

    async def _sealed_stream(
        self,
        http_req: web.Request,
        creq: CompletionRequest,
        pending: Pending,
        slot: Slot,
        up: aiohttp.ClientResponse,
        headers: dict[str, str],
        sent_at: float,
    ) -> web.StreamResponse:
        """A sealed stream relayed unread; charged the usage its last event told in the
        clear (else its events), counted by how it ended."""
        loop, tier, name = asyncio.get_running_loop(), pending.request.tier.name, slot.instance.name
        cap = creq.max_tokens  # the declared cap the seal proxy enforced
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
        tokens = pending.output_tokens = _capped(pending.output_tokens, cap)
        if ended == "broken":
            error = UpstreamError(f"{name}: sealed stream broken", retryable=False)
            self.exchange.failed(slot, "stream", error)
            self.metrics.finished(name, tier, "error")
        elif ended == "client_left":
            self.exchange.client_left(tier, name, "mid-stream")
        elif ended == "deadline":  # cut, and said why in the clear (it cannot be sealed)
            self.metrics.finished(name, tier, "timeout")
            cut = deadline_error(pending, loop.time(), "mid-stream")
            await write_quietly(resp, error_event(cut.message, cut.code, scanner.at_boundary))
        else:
            self.exchange.succeeded(pending.request, slot, sent_at, first_at, loop.time(), tokens)
        return resp


async def _read_sealed(up: aiohttp.ClientResponse, slot: Slot) -> bytes:
    """A sealed answer's whole body; a broken or timed-out read is a retryable UpstreamError."""
    try:
        return await up.read()
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise upstream_error(slot.instance.name, "", exc, retryable=True) from None


def _capped(tokens: int, cap: int | None) -> int:
    """``tokens``, at most ``cap`` (None: no cap)."""
    return tokens if cap is None else min(tokens, cap)
