"""One exchange with one instance: send a request, relay its answer, count the outcome.

Both ways of serving a request go through an :class:`Exchange`: the plain path
(:class:`~sincere.serve.gateway.relay.Relay`: one attempt per instance, retried before the
first byte) and the disaggregated one (:class:`~sincere.serve.gateway.pd_relay.PDRelay`:
a prefill, then a decode). So an answer is relayed, and its outcome counted, in one place:

* :meth:`Exchange.send` -- the request goes out before the client's deadline (else 504),
  and, with a first-byte limit, its first byte (a whole answer, or a stream's first event)
  must come within it (else a retryable :class:`UpstreamError`);
* :meth:`Exchange.relay` -- a 200 answer relayed whole or streamed
  (:meth:`Exchange.relay_body`, :meth:`Exchange.relay_stream`), any other status passed
  through (:meth:`Exchange.pass_through`); the upstream connection is released after a
  relayed answer and closed after a failed one;
* outcomes -- :meth:`Exchange.succeeded` (breaker success, latency, observed load, the
  front door's outcome), :meth:`Exchange.failed` (a breaker failure unless a read timed
  out), :meth:`Exchange.refused_by_instance` (an instance's own error answer: the instance
  is alive, the request counts ``client_error``) and
  :meth:`Exchange.client_left` (``cancelled``);
* :meth:`Exchange.scrubbed` -- an upstream's error body with the upstream credentials
  masked (when they are configured).

The tokens an exchange produced are left in ``pending.output_tokens`` for the spend to be
settled. Timing: TTFT is the first streamed event after the request was sent; a
non-streamed answer arrives whole, so its TTFT is not measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from sincere.core.request import Request
from sincere.policy.router_base import Outcome
from sincere.serve.backends.openai_api import Upstream, UpstreamError
from sincere.serve.gateway.dispatch import Dispatcher, Pending, RefusalError, Slot
from sincere.serve.gateway.instances import InstanceState
from sincere.serve.gateway.metrics import GatewayMetrics
from sincere.serve.gateway.observed_load import ObservedLoad
from sincere.serve.protocol import (
    SSE_DONE,
    CompletionRequest,
    dumps_compact,
    error_body,
    loads,
    sse_event,
)

__all__ = ["Exchange", "Opened", "deadline_error", "every_sequence", "json_answer"]

Opened = tuple[AsyncIterator[bytes], bytes]
"""A stream being relayed: its event iterator and the first event, already read."""


class Exchange:
    """Sends requests to instances and relays their answers; counts every outcome."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        metrics: GatewayMetrics,
        load: ObservedLoad,
        log: logging.Logger,
        scrub: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self.dispatcher = dispatcher  # told of every served request (Outcome)
        self.metrics = metrics
        self.load = load  # finished requests per (model, tier), for the planner
        self.log = log
        self.scrub = scrub  # masks upstream secrets in error bodies passed through; None: none

    # ------------------------------------------------------------------ sending

    async def send(
        self,
        creq: CompletionRequest,
        pending: Pending,
        slot: Slot,
        first_byte_s: float | None = None,
        when: str = "before the first byte",
    ) -> tuple[Upstream, Opened | None]:
        """Send ``creq`` to ``slot``'s instance before the client's deadline (else a 504
        :class:`RefusalError` saying ``when`` it passed). With ``first_byte_s``, its first
        byte (a stream's first event, already read and returned) must come within that
        many seconds, else a retryable :class:`UpstreamError`."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(pending.deadline_at):
                if first_byte_s is None:
                    return await slot.instance.backend.send(creq, slot.max_tokens), None
                return await _first_byte(slot, creq, loop.time() + first_byte_s, first_byte_s)
        except TimeoutError:
            raise deadline_error(pending, loop.time(), when) from None

    # ----------------------------------------------------------------- relaying

    async def relay(
        self,
        http_req: web.Request,
        creq: CompletionRequest,
        pending: Pending,
        slot: Slot,
        upstream: Upstream,
        sent_at: float,
        opened: Opened | None = None,
    ) -> web.StreamResponse:
        """The client's answer to ``upstream``: a 200 relayed (streamed when ``creq``
        streams), another status passed through. The connection is released once relayed,
        closed when relaying failed."""
        ok = False
        resp: web.StreamResponse
        try:
            if upstream.status != 200:
                resp = await self.pass_through(upstream, pending, slot)
            elif creq.stream:
                resp = await self.relay_stream(http_req, pending, slot, upstream, sent_at, opened)
            else:
                resp = await self.relay_body(pending, slot, upstream, sent_at)
            ok = True
            return resp
        finally:
            if ok:
                upstream.release()
            else:
                upstream.response.close()

    async def pass_through(self, upstream: Upstream, pending: Pending, slot: Slot) -> web.Response:
        """An instance's own error answer (its status and body, scrubbed), counted."""
        body = await upstream.read_all()
        return self.error_answer(upstream.status, body, pending, slot)

    def error_answer(self, status: int, body: bytes, pending: Pending, slot: Slot) -> web.Response:
        """The client's answer to an instance's error answer ``body``, counted
        (:meth:`refused_by_instance`; nothing generated) and scrubbed."""
        self.refused_by_instance(pending, slot)
        pending.output_tokens = 0
        return json_answer(status, self.scrubbed(body), slot.instance)

    async def relay_body(
        self, pending: Pending, slot: Slot, upstream: Upstream, sent_at: float
    ) -> web.StreamResponse:
        """Relay a whole 200 answer (its model renamed back for a mapped backend)."""
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
        self.succeeded(req, slot, sent_at, first, now, pending.output_tokens)
        upstream_model = slot.instance.backend.models.get(req.model, req.model)
        if upstream_model != req.model:
            body = _rename_model(body, req.model)
        resp = json_answer(200, body, slot.instance)
        if pending.headers:
            resp.headers.extend(pending.headers)
        return resp

    async def relay_stream(
        self,
        http_req: web.Request,
        pending: Pending,
        slot: Slot,
        upstream: Upstream,
        sent_at: float,
        opened: Opened | None = None,
    ) -> web.StreamResponse:
        """Relay a 200 stream event by event; a failure, the client's deadline or its
        leaving ends it as the module says."""
        req = pending.request
        loop = asyncio.get_running_loop()
        events, first_event = opened or await open_stream(upstream)
        first_at = upstream.stats.first_event_at or loop.time()
        resp = web.StreamResponse(headers=slot.instance.sse_headers)
        if pending.headers:
            resp.headers.extend(pending.headers)
        pending.output_tokens = 0
        cap = every_sequence(slot, pending)  # the cap of all its sequences together
        sep = b""
        try:
            await resp.prepare(http_req)
            await resp.write(first_event)
            async with asyncio.timeout_at(pending.deadline_at):
                async for event in events:
                    await resp.write(event)
        except TimeoutError:  # the client's deadline_s passed mid-stream: end it, say why
            self.metrics.finished(slot.instance.name, req.tier.name, "timeout")
            late = deadline_error(pending, loop.time(), "mid-stream")
            sep = b"" if upstream.stats.ends_event else b"\n"
            error = error_body(late.message, type="timeout_error", code=late.code)
            await write_quietly(resp, sep + sse_event(error) + SSE_DONE)
            return resp
        except UpstreamError as exc:
            self.failed(slot, "stream", exc)
            self.metrics.finished(slot.instance.name, req.tier.name, "error")
            sep = b"" if upstream.stats.ends_event else b"\n"  # close a half-sent event
            await write_quietly(resp, sep + sse_event(_stream_error(exc.message)) + SSE_DONE)
            return resp
        except ConnectionResetError:  # the client went away: not the gateway's error
            self.client_left(req.tier.name, slot.instance.name, "mid-stream")
            return resp
        finally:  # also when the client left while the next event was awaited
            pending.output_tokens = upstream.output_tokens(None, cap)
        self.succeeded(req, slot, sent_at, first_at, loop.time(), pending.output_tokens)
        return resp

    # ----------------------------------------------------------------- outcomes

    def succeeded(
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

    def failed(self, slot: Slot, kind: str, exc: UpstreamError) -> None:
        """Count an instance's error; a read timeout (a slow answer) opens no breaker."""
        state = slot.instance
        if not exc.timed_out:
            state.breaker.record_failure(asyncio.get_running_loop().time())
        self.metrics.upstream_error(state.name, kind)
        self.log.debug("instance %s failed (%s): %s %s", state.name, kind, exc.message, exc.detail)

    def refused_by_instance(self, pending: Pending, slot: Slot) -> None:
        """Count an instance's own error answer to the request: the instance is alive
        (breaker success), the request ends ``client_error``."""
        slot.instance.breaker.record_success(asyncio.get_running_loop().time())
        self.metrics.finished(slot.instance.name, pending.request.tier.name, "client_error")

    def client_left(self, tier: str, instance: str, when: str) -> None:
        """Count a request whose client disconnected; one log line, no traceback."""
        self.metrics.finished(instance, tier, "cancelled")
        self.log.info("client disconnected %s (tier %s, instance %s)", when, tier, instance or "-")

    def scrubbed(self, body: bytes) -> bytes:
        """``body`` with the upstream credentials masked (as it is when none are set)."""
        return body if self.scrub is None else self.scrub(body)


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


def every_sequence(slot: Slot, pending: Pending) -> int | None:
    """The most tokens all of a request's sequences may generate (``n`` choices of each
    prompt, each within the cap sent); None: no cap was sent."""
    cap = slot.max_tokens
    return None if cap is None else cap * pending.num_sequences


def json_answer(status: int, body: bytes, instance: InstanceState) -> web.Response:
    """A JSON answer with ``instance``'s headers (it names the instance)."""
    return web.Response(status=status, body=body, headers=instance.json_headers)


async def write_quietly(resp: web.StreamResponse, data: bytes) -> None:
    """Write ``data`` unless the client has gone."""
    with contextlib.suppress(ConnectionResetError):
        await resp.write(data)


async def open_stream(upstream: Upstream) -> Opened:
    """The stream's events and its first one; a stream that breaks before it is retryable."""
    events = upstream.events().__aiter__()
    try:
        return events, await events.__anext__()
    except UpstreamError as exc:  # nothing sent to the client yet: retryable
        raise UpstreamError(exc.message, retryable=True, detail=exc.detail) from None


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
            return upstream, await open_stream(upstream)
    except TimeoutError:
        if upstream is not None:
            upstream.response.close()
        raise UpstreamError(
            f"{slot.instance.name}: no first byte within {limit_s:g}s "
            "(the tier's first_byte_timeout_s)",
            retryable=True,
        ) from None


def _stream_error(message: str) -> dict[str, object]:
    return error_body(
        f"upstream failed mid-stream: {message}", type="server_error", code="upstream_failed"
    )


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
