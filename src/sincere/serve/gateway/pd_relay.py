"""Disaggregated serving at the gateway: prefill on one instance, decode on another.

For a model whose backends have roles (``backends[].role``: ``prefill`` / ``decode``;
``both`` serves whole requests), each request is decided by the
:class:`~sincere.policy.pd.PDFrontDoor` -- the very decider and per-phase routers the
simulator drives (:mod:`sincere.sim.disagg`), built from the gateway's
``disaggregation:`` section (:class:`~sincere.policy.pd_config.PDRoutingConfig`) -- from
views of the model's prefill and decode instances. Then, as vLLM's P/D proxy does:

1. **Prefill**: the client's request goes to the prefill instance with ``max_tokens: 1``,
   ``stream: false`` and ``kv_transfer_params: {"do_remote_decode": true, ...}``; the
   answer's ``kv_transfer_params`` say where the KV is. The gateway takes the request's
   TTFT here, when the first token exists (as the simulator does).
2. **Decode**: the client's request goes to the decode instance with those
   ``kv_transfer_params``; its answer (streamed or whole) is relayed to the client as any
   answer is (:class:`~sincere.serve.gateway.exchange.Exchange`, the plain path's too:
   deadlines, mid-stream errors, usage, outcome counts).

A request the decider keeps colocated is routed by the gateway's own front door over
the ``both`` instances of its model (else its decode instances, which then prefill it
too), as in the simulator. P/D decisions are not written to the decision log (its
records hold one instance per call); the answers' headers say where each phase ran.

Both phases are recorded in the answer's headers: ``x-sincere-instance`` (the decode
instance), ``x-sincere-prefill-instance``, ``x-sincere-prefill-s`` (arrival to the
prefill's answer: the end of the prefill as the simulator takes it) and, relayed from the decode
instance when it says, ``x-sincere-kv-transfer-s`` / ``x-sincere-kv-wait-s``.

A client's own ``kv_transfer_params`` are dropped (on every request:
:mod:`~sincere.serve.security.engine_fields`): they would make an engine pull KV from
wherever they point, or skip computing the prompt. A sealed body is opened only by the
seal proxy, which drops them there.

Billing: one request, one charge -- the prompt and the completion tokens the decode
answer reports, at the decode instance's prices (the prefill's one token is not
charged); a request prefilled that no decode instance answered is charged its prompt at
the prefill instance's prices. Failures: an instance failing before the client's first
byte is a breaker failure; a failed prefill is served whole on the decode (or ``both``)
instances instead, a failed decode is sent to another decode instance (each tried once;
then 502). With no prefill instance healthy the front door keeps requests colocated
(:meth:`~sincere.policy.pd.PDFrontDoor.decide`). A 4xx of either phase goes to the
client as it is, counted ``client_error`` as the plain path counts one. A phase with no
room (a hold: every candidate at its ``max_in_flight``) is asked again every 10 ms up to
the queue timeout, then 504.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from sincere.policy.front_door import Hold, Reject, Route
from sincere.policy.pd import Local, PDFrontDoor, PDRoute, build_pd_front_door, colocated_role
from sincere.policy.pd_config import PDRoutingConfig
from sincere.serve.backends.openai_api import UpstreamError
from sincere.serve.gateway.config import GatewayConfig
from sincere.serve.gateway.dispatch import Dispatcher, Pending, RefusalError, Slot, refusal
from sincere.serve.gateway.exchange import Exchange, deadline_error
from sincere.serve.gateway.instances import InstanceState
from sincere.serve.gateway.relay import Relay
from sincere.serve.protocol import CompletionRequest, loads
from sincere.serve.security.engine_fields import engine_fields_in, without_engine_fields

PREFILL_INSTANCE_HEADER = "x-sincere-prefill-instance"
PREFILL_S_HEADER = "x-sincere-prefill-s"
PREFILL_CACHED_HEADER = "x-sincere-prefill-cached-tokens"
RELAYED_HEADERS = ("x-sincere-kv-transfer-s", "x-sincere-kv-wait-s")
KV_PARAMS = "kv_transfer_params"
HOLD_POLL_S = 0.01

PREFILL_PARAMS: dict[str, Any] = {
    "do_remote_decode": True,
    "do_remote_prefill": False,
    "remote_engine_id": None,
    "remote_block_ids": None,
    "remote_host": None,
    "remote_port": None,
}
"""The ``kv_transfer_params`` of a prefill request (vLLM's P/D proxy sends these)."""


PrefillResult = tuple[dict[str, Any], float, int | None] | web.StreamResponse
"""A prefill's KV parameters and arrival-to-answer seconds, or the client's answer."""


def role_of(state: InstanceState) -> str:
    """An instance's role (``both`` when its backend says none)."""
    return str(getattr(state.backend.config, "role", "both"))


class PDRelay:
    """Serves requests of disaggregated models in two phases; others go to ``relay``."""

    def __init__(self, config: GatewayConfig, dispatcher: Dispatcher, relay: Relay) -> None:
        self.dispatcher = dispatcher
        self.relay = relay
        self.exchange: Exchange = relay.exchange  # each phase's send, relay and counts
        self.queue_timeout_s = config.queue.timeout_s
        self.door: PDFrontDoor = build_pd_front_door(config.disaggregation or PDRoutingConfig(), 0)
        self._split: tuple[object, frozenset[str]] = (None, frozenset())

    def split_models(self) -> frozenset[str]:
        """Models with a prefill or decode instance (recomputed when membership changes)."""
        by_model = self.dispatcher.by_model
        if self._split[0] is not by_model:
            split = (m for m, ss in by_model.items() if any(role_of(s) != "both" for s in ss))
            self._split = (by_model, frozenset(split))
        return self._split[1]

    def admits_later(self, pending: Pending) -> bool:
        """Whether ``pending``'s admission waits for the P/D decision (its model has roles):
        a disaggregated request is not admitted by the colocated front door, as in the
        simulator; one kept colocated is admitted on the instances it may use."""
        return pending.sealed is None and pending.request.model in self.split_models()

    async def serve(
        self, http_req: web.Request, creq: CompletionRequest, pending: Pending
    ) -> web.StreamResponse:
        """Serve ``pending``: disaggregated when its model has roles and the decider says so."""
        if engine_fields_in(creq.body):  # the gateway speaks the KV protocol, never a client
            creq = dataclasses.replace(creq, body=without_engine_fields(creq.body), raw=b"")
        if pending.sealed is not None or pending.request.model not in self.split_models():
            return await self._colocated(http_req, creq, pending)
        states = [
            s
            for s in self.dispatcher.by_model.get(pending.request.model, ())
            if s.name not in pending.skip
        ]
        prefill = [s for s in states if role_of(s) == "prefill"]
        decode = [s for s in states if role_of(s) == "decode"]
        if not prefill and not decode:
            return await self._colocated(http_req, creq, pending)
        route = await self._decide(pending, prefill, decode) if prefill and decode else None
        if isinstance(route, Local):  # whole on the decode instance the decider read
            pending.skip |= {s.name for s in states if s.name != route.route.instance}
            return await self._colocated(http_req, creq, pending)
        if route is None:
            return await self._colocated_on(states, http_req, creq, pending)
        return await self._two_phases(http_req, creq, pending, route)

    async def _colocated_on(
        self,
        states: Sequence[InstanceState],
        http_req: web.Request,
        creq: CompletionRequest,
        pending: Pending,
    ) -> web.StreamResponse:
        """Serve ``pending`` whole on the ``both`` instances of ``states``, else the decode
        ones (which then prefill it too)."""
        keep = colocated_role(role_of(s) for s in states)
        pending.skip |= {s.name for s in states if role_of(s) != keep}
        return await self._colocated(http_req, creq, pending)

    async def _colocated(
        self, http_req: web.Request, creq: CompletionRequest, pending: Pending
    ) -> web.StreamResponse:
        """Relay ``pending`` whole; admitted first when its admission waited for the P/D
        decision (no decision yet: the guard left it here)."""
        if pending.decision is None:
            refused = self.dispatcher.admit(pending, asyncio.get_running_loop().time())
            if refused is not None:
                raise refused
        return await self.relay.serve(http_req, creq, pending)

    async def _decide(
        self, pending: Pending, prefill: Sequence[InstanceState], decode: Sequence[InstanceState]
    ) -> PDRoute | Local | None:
        """The P/D front door's answer, asked again while a phase holds (bounded)."""
        d, req = self.dispatcher, pending.request
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self.queue_timeout_s
        while True:
            now = loop.time()
            pv = [s.view(req.model, now, d.max_age_s) for s in prefill]
            dv = [s.view(req.model, now, d.max_age_s) for s in decode]
            decision = self.door.decide(req, pv, dv, now)
            if isinstance(decision, Reject):
                raise refusal(decision)
            if not isinstance(decision, Hold):
                return decision
            if now >= give_up_at or (pending.deadline_at or give_up_at) <= now:
                raise RefusalError(
                    504, f"no prefill / decode room for {req.model!r} within "
                    f"{self.queue_timeout_s:g}s (the queue timeout)", "timeout", "queue_timeout",
                )  # fmt: skip
            await asyncio.sleep(HOLD_POLL_S)

    async def _two_phases(
        self, http_req: web.Request, creq: CompletionRequest, pending: Pending, route: PDRoute
    ) -> web.StreamResponse:
        d = self.dispatcher
        loop = asyncio.get_running_loop()
        # both slots now, as the simulator counts the decode instance's request from the
        # decision on: the decode router of the next request sees it
        slot = self._reserve(pending, route.prefill, 1)
        second = self._reserve(pending, route.decode, None)
        pending.instance = slot.instance.name
        try:
            first: PrefillResult | UpstreamError = await self._prefill(creq, pending, slot)
        except UpstreamError as exc:
            self.exchange.failed(slot, "prefill", exc)
            first = exc
        except BaseException:
            d.release(second, loop.time())
            raise
        finally:
            d.release(slot, loop.time())
        if not isinstance(first, tuple):
            d.release(second, loop.time())
            if isinstance(first, web.StreamResponse):
                return first
            # nothing reached the client: served whole by a decode instance instead
            states = d.by_model.get(pending.request.model, ())
            return await self._colocated_on(states, http_req, creq, pending)
        params, prefill_s, cached = first
        headers = (
            (PREFILL_INSTANCE_HEADER, slot.instance.name),
            (PREFILL_S_HEADER, f"{prefill_s:.6f}"),
            *(() if cached is None else ((PREFILL_CACHED_HEADER, str(cached)),)),
        )
        pending.headers = (*pending.headers, *headers)
        try:
            return await self._decode_anywhere(http_req, creq, pending, second, params)
        except BaseException:
            if pending.output_tokens is None:  # no decode answered: the prefill is charged
                pending.instance, pending.output_tokens = slot.instance.name, 0
            raise

    async def _decode_anywhere(
        self,
        http_req: web.Request,
        creq: CompletionRequest,
        pending: Pending,
        slot: Slot,
        params: dict[str, Any],
    ) -> web.StreamResponse:
        """Decode on ``slot``'s instance; one that fails before the client's first byte is
        a breaker failure, and the decode goes to another decode instance the decode
        router picks (each tried once), with the same KV parameters. ``slot`` and the
        slots taken here are released."""
        loop = asyncio.get_running_loop()
        tried: set[str] = set()
        while True:
            pending.instance = slot.instance.name
            try:
                return await self._decode(http_req, creq, pending, slot, params)
            except UpstreamError as exc:
                self.exchange.failed(slot, "decode", exc)
                tried.add(slot.instance.name)
                last = exc
            finally:
                self.dispatcher.release(slot, loop.time())
            again = self._other_decode(pending, tried)
            if again is None:
                raise RefusalError(502, f"decode failed: {last.message}", "error", "upstream_error")
            slot = again

    def _other_decode(self, pending: Pending, tried: set[str]) -> Slot | None:
        """A slot on a decode instance not in ``tried`` (the decode router's choice among
        those with room), or None."""
        d, req = self.dispatcher, pending.request
        now = asyncio.get_running_loop().time()
        views = [
            s.view(req.model, now, d.max_age_s)
            for s in d.by_model.get(req.model, ())
            if role_of(s) == "decode" and s.name not in pending.skip
        ]
        decision = self.door.decode.place(req, views, now, exclude=frozenset(tried), waiting=True)
        return self._reserve(pending, decision, None) if isinstance(decision, Route) else None

    def _reserve(self, pending: Pending, route: Route, cap: int | None) -> Slot:
        """A slot on the routed instance (the dispatcher's reservation; ``cap``: the
        tokens to send, None: the route's, else the client's)."""
        now = asyncio.get_running_loop().time()
        return self.dispatcher.reserve(pending, route, now, cap)

    async def _prefill(
        self, creq: CompletionRequest, pending: Pending, slot: Slot
    ) -> PrefillResult:
        """Run the prefill: the KV parameters, arrival-to-answer seconds and the prompt's
        cached tokens it reported, or the answer the client gets now (an instance's 4xx;
        the whole answer of a one-token request)."""
        loop = asyncio.get_running_loop()
        body = {k: v for k, v in creq.body.items() if k not in _PREFILL_DROPS}
        body.update(stream=False, max_tokens=1, kv_transfer_params=dict(PREFILL_PARAMS))
        one = dataclasses.replace(
            creq, body=body, raw=b"", stream=False, include_usage=False, max_tokens=1
        )
        when = "during the prefill"
        upstream, _ = await self.exchange.send(one, pending, slot, when=when)
        try:
            async with asyncio.timeout_at(pending.deadline_at):
                answer = await upstream.read_all()
        except TimeoutError:
            raise deadline_error(pending, loop.time(), when) from None
        finally:
            upstream.release()
        if upstream.status != 200:  # the engine's own answer: the client's now
            return self.exchange.error_answer(upstream.status, answer, pending, slot)
        now = loop.time()
        slot.instance.breaker.record_success(now)
        params = _kv_params(answer)
        if params is None:
            raise UpstreamError(
                f"{slot.instance.name}: the prefill answer has no kv_transfer_params "
                "(is it started with a KV connector?)", retryable=False,
            )  # fmt: skip
        return params, now - pending.request.arrival_at, _cached_tokens(answer)

    async def _decode(
        self,
        http_req: web.Request,
        creq: CompletionRequest,
        pending: Pending,
        slot: Slot,
        params: dict[str, Any],
    ) -> web.StreamResponse:
        """Send the decode request with the prefill's parameters; relay its answer."""
        loop = asyncio.get_running_loop()
        body = {**creq.body, KV_PARAMS: params}
        second = dataclasses.replace(creq, body=body, raw=b"")
        sent_at = loop.time()
        upstream, _ = await self.exchange.send(second, pending, slot)
        relayed = tuple(
            (name, upstream.response.headers[name])
            for name in RELAYED_HEADERS
            if name in upstream.response.headers
        )
        pending.headers = (*pending.headers, *relayed)
        return await self.exchange.relay(http_req, second, pending, slot, upstream, sent_at)


_PREFILL_DROPS = frozenset(
    {"stream_options", "max_completion_tokens", "min_tokens", "min_completion_tokens"}
)


def _cached_tokens(answer: bytes) -> int | None:
    """A prefill answer's ``usage.prompt_tokens_details.cached_tokens`` (None: absent)."""
    try:
        value = loads(answer)["usage"]["prompt_tokens_details"]["cached_tokens"]
    except (ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, int) else None


def _kv_params(answer: bytes) -> dict[str, Any] | None:
    """The ``kv_transfer_params`` object of a prefill answer (None: absent or unreadable)."""
    try:
        params = loads(answer).get(KV_PARAMS)
    except (ValueError, AttributeError):
        return None
    return params if isinstance(params, dict) else None
