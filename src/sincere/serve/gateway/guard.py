"""The guard stage of the request path: who may ask, what it may take, what it is charged.

A request goes through the gateway as parse -> guard -> relay -> settle
(:meth:`~sincere.serve.gateway.server.Gateway._handle`); the guard's steps are named here
and each can be driven alone, without HTTP:

0. :meth:`Guard.parse` -- the body read as vLLM reads it, then checked against its model's
   limits (:mod:`~sincere.serve.gateway.model_limits`: the context, and ``n`` / batches
   only where every instance can generate them), before any key limit is spent;
1. :meth:`Guard.authenticate` -- the client key, from the headers alone (before the body is
   read: a request without a valid key costs the gateway no body read);
2. :meth:`Guard.admit` -- the parsed request becomes a policy request (tier, priority, answer
   cap, session); with keys, the key's limits are checked and its worst case is reserved at
   the dearest instance of the model (:mod:`~sincere.serve.gateway.billing`; every sequence
   of it: ``n`` choices of each prompt of a batch; a request without ``max_tokens`` is
   capped at the room its context leaves and the answer says so in
   ``x-sincere-max-tokens``, :mod:`.model_limits`); then the front
   door's admission answers (for a model with prefill/decode roles the P/D relay admits
   instead, after deciding whether to disaggregate: :attr:`Guard.admits_later`). The
   result is :class:`Admitted` (a :class:`Pending` ready to relay, with its reservation)
   or :class:`Refused` (the refusal, holding nothing: a reservation made before an
   admission refusal is released);
3. :meth:`Guard.settle` -- when the request ends, whatever happened, it is charged what was
   relayed at the prices of the instance that served it (nothing when none answered), and
   the rest of its reservation is released. :meth:`Guard.settle_now` does the same without
   waiting (a client that went away: the write to a shared store runs in a task).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sincere.core.request import Request
from sincere.serve.content import image_tokens_rule
from sincere.serve.gateway.auth import GatewayAuth
from sincere.serve.gateway.billing import reserve_prices, settle, token_counter
from sincere.serve.gateway.config import GatewayConfig
from sincere.serve.gateway.dispatch import Dispatcher, Pending, RefusalError
from sincere.serve.gateway.model_limits import MAX_TOKENS_HEADER, ModelLimits
from sincere.serve.gateway.requests import RequestFactory, session_of, with_cap
from sincere.serve.gateway.sealed import parse_any
from sincere.serve.protocol import CompletionRequest, Kind, ProtocolError
from sincere.serve.security.keys import KeyRecord
from sincere.serve.security.policy import Grant, Refusal, RequestFacts

__all__ = ["Admitted", "Guard", "Refused"]


@dataclass(frozen=True, slots=True)
class Admitted:
    """A request let through: what to relay, and (with keys) the reservation it holds."""

    request: CompletionRequest  # as parsed, with the answer cap a keyed request gets
    pending: Pending  # the policy request on its way; the relay fills in what it used
    grant: Grant | None  # the key's grant and reservation; None without keys

    @property
    def tier(self) -> str:
        """The tier it is served in."""
        return self.pending.request.tier.name


@dataclass(frozen=True, slots=True)
class Refused:
    """A request turned away by a key check (401/402/403/429) or by admission (429/503)."""

    tier: str  # the tier it asked for (counted under it)
    refusal: Refusal | RefusalError


class Guard:
    """The key checks, budget reservation and admission in front of the relay."""

    def __init__(
        self,
        config: GatewayConfig,
        auth: GatewayAuth,
        dispatcher: Dispatcher,
        requests: RequestFactory,
        clock: Callable[[], float],
        admits_later: Callable[[Pending], bool] | None = None,
    ) -> None:
        self.auth = auth
        self.dispatcher = dispatcher
        self.requests = requests
        self.clock = clock  # the gateway's loop time, seconds
        self.model_limits = ModelLimits(dispatcher, config.limits.max_tokens)  # contexts
        images = config.images  # prompt tokens per image part, by model
        self.image_tokens = image_tokens_rule(images.tokens_by_model, images.tokens_per_image)
        self.prefix = config.prefix
        self.sealed_only = frozenset(config.security.sealed_backends)  # take sealed bodies only
        self.confidential = config.security.confidential  # sealed bodies are relayed unread
        self.max_body_bytes = config.limits.max_body_bytes
        # requests whose admission waits for a later step (the P/D relay decides first
        # whether they are disaggregated, and admits only those it keeps colocated)
        self.admits_later = admits_later

    def parse(
        self, headers: Mapping[str, str], kind: Kind, body: bytes
    ) -> tuple[CompletionRequest, dict[str, str] | None]:
        """The request to route, and for a sealed body the headers to relay it with; raises
        :class:`~sincere.serve.protocol.ProtocolError` for a body its model cannot take
        (over the context, several sequences an instance cannot generate, a sealed body
        no instance opens)."""
        creq, sealed = parse_any(
            headers, kind, body, self.dispatcher.served, self.max_body_bytes,
            self.confidential, self.image_tokens,
        )  # fmt: skip
        self.model_limits.check(creq)
        if sealed is not None and not self.sealed_only:
            raise ProtocolError(
                415,
                "Content-Type: application/sincere-sealed: this gateway has no backend that "
                "opens sealed bodies (security.sealed_backends is empty); send plain JSON",
                param="Content-Type",
                code="sealed_not_served",
            )
        return creq, sealed

    def authenticate(self, headers: Mapping[str, str]) -> KeyRecord | Refusal | None:
        """The client's key (None: no keys configured), or why it is refused."""
        return self.auth.authenticate(headers)

    async def admit(
        self,
        key: KeyRecord | None,
        creq: CompletionRequest,
        sealed: dict[str, str] | None,
        headers: Mapping[str, str],
    ) -> Admitted | Refused:
        """Limits, budget reservation and admission for a parsed request.

        ``sealed``: the headers a sealed body is relayed with (None: a plain body). Raises
        :class:`~sincere.serve.protocol.ProtocolError` for a tier or priority the client
        may not ask for.
        """
        relayed, applied = creq, None
        if key is not None and creq.max_tokens is None:  # reserve what it may really take
            applied = self.model_limits.cap(creq)
            relayed = with_cap(creq, applied)
        req = self.requests.build(
            creq,
            self.clock(),
            base_tier=None if key is None else key.spec.tier,
            priority_ceiling=None if key is None else key.spec.priority_ceiling,
            tenant=None if key is None else key.name,
            session=session_of(headers, creq, self.prefix),
        )
        grant = None
        if key is not None:
            prices = reserve_prices(self.dispatcher, req.model)
            facts = request_facts(req, relayed)
            granted = await self.auth.authorize_async(key, facts, prices)
            if isinstance(granted, Refusal):
                return Refused(req.tier.name, granted)
            grant = granted
        pending = self._pending(req, creq, sealed, headers, grant)
        if applied is not None:  # say what cap was applied to an answer that named none
            pending.headers = (*pending.headers, (MAX_TOKENS_HEADER, str(applied)))
        admitted = Admitted(relayed, pending, grant)
        if self.admits_later is not None and self.admits_later(admitted.pending):
            return admitted
        refusal = self.dispatcher.admit(admitted.pending, self.clock())
        if refusal is not None:
            await self.settle(admitted)  # nothing was relayed: the reservation is released
            return Refused(req.tier.name, refusal)
        return admitted

    def _pending(
        self,
        req: Request,
        creq: CompletionRequest,
        sealed: dict[str, str] | None,
        headers: Mapping[str, str],
        grant: Grant | None,
    ) -> Pending:
        """The request to dispatch: its deadline, the instances it may not go to, its headers."""
        pending = Pending(req, client_id(headers), sealed=sealed, num_sequences=creq.num_sequences)
        if creq.sincere.deadline_s is not None:
            pending.deadline_at = req.arrival_at + creq.sincere.deadline_s
        if self.sealed_only:
            pending.skip = self.sealed_only if sealed is None else self._plain_names()
        counted = token_counter(creq, sealed is not None)  # x-sincere-token-counter
        pending.headers = (counted,) if grant is None else (*grant.headers, counted)
        return pending

    def _plain_names(self) -> frozenset[str]:
        """Instances that are not seal proxies (a sealed body must not go there)."""
        return frozenset(n for n in self.dispatcher.instances if n not in self.sealed_only)

    async def settle(self, admitted: Admitted) -> None:
        """Charge what was relayed and release the rest (:meth:`settle_now`)."""
        self.settle_now(admitted)

    def settle_now(self, admitted: Admitted) -> None:
        """Charge what was relayed and release the rest, here at once; with a shared store
        the Redis part rides this process's next admission (or goes within
        ``state.settle_within_s``): no round trip of its own on the request path."""
        if admitted.grant is not None:
            settle(self.auth, admitted.grant, admitted.pending, self.dispatcher)


def client_id(headers: Mapping[str, str]) -> str | None:
    """The client's own request id (``x-request-id``), when it is a short printable text."""
    value = headers.get("x-request-id")
    if value is None or len(value) > 128 or not value.isprintable():
        return None
    return value


def request_facts(req: Request, creq: CompletionRequest) -> RequestFacts:
    """What the key check needs: model, sized prompts (all of a batch) and the answer cap
    of every sequence generated (``n`` choices of each prompt), asked tier/priority."""
    fields = creq.sincere
    cap = creq.max_tokens or req.max_tokens or req.output_tokens // creq.num_sequences
    return RequestFacts(
        req.model, req.prompt_tokens, cap * creq.num_sequences, fields.tier, fields.priority,
    )  # fmt: skip
