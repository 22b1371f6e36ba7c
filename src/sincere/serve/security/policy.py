"""The front door's key check: a request's headers and facts in, a refusal or a grant out.

:func:`authorize_request` runs, in this order, and stops at the first failure:

1. a key (``Authorization: Bearer sk-snc-...``) is present and valid -- else **401**
   (``missing_api_key``, ``invalid_api_key``, ``key_revoked``, ``key_expired``;
   with ``WWW-Authenticate: Bearer``);
2. it is a client key (**403** ``admin_key_not_allowed``, ``metrics_key_not_allowed``),
   allowed the model (**403**
   ``model_not_allowed``) and the declared tier, if any (**403** ``tier_not_allowed``);
3. its requests-per-minute and tokens-per-minute windows have room (**429**
   ``requests_per_minute_exceeded`` / ``tokens_per_minute_exceeded`` with
   ``Retry-After`` seconds, rounded up);
4. its budget covers the worst case (**402** ``budget_exhausted`` with
   ``x-sincere-budget-remaining-usd``).

A grant carries the tenant, the tier, the priority ceiling and the budget
:class:`~sincere.serve.security.keystore.Reservation` that the caller must settle
once the request ends (``store.settle(grant.reservation, ...)``, also on failure,
with the tokens actually produced). :func:`authorize_admin` is the admin API's check:
only admin keys pass; :func:`authorize_metrics` is ``/metrics``': admin or metrics keys.
Refusals carry OpenAI's error body and never echo a secret.

Clock-free: ``now`` (Unix seconds; key expiry is a date) is an argument. The only
state is the store's windows and budgets, changed only when every check passes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sincere.serve.protocol import error_body
from sincere.serve.security.keys import KeyRecord, Prices
from sincere.serve.security.keystore import KeyStore, LimitRefusal, Reservation

BUDGET_HEADER = "x-sincere-budget-remaining-usd"
_ERROR_TYPES = {
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    429: "rate_limit_error",
    503: "server_error",
}
_OUTCOMES = {
    401: "unauthenticated", 402: "budget_exhausted", 403: "forbidden", 429: "rate_limited",
    503: "unavailable",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the key check needs to know of a request (parsed body or declared headers)."""

    model: str  # the model asked for
    prompt_tokens: int  # the prompt's length, estimated by the gateway (or declared)
    max_tokens: int  # the cap on generated tokens that goes upstream (defaults applied)
    tier: str | None = None  # tier the client asked for; None: the key's
    priority: int | None = None  # priority the client asked for (smaller: sooner)


@dataclass(frozen=True, slots=True)
class Refusal:
    """An error answer: status, OpenAI error body fields, headers."""

    status: int  # 401, 402, 403, 429, or 503 (the shared state store is unreachable)
    code: str  # machine-readable reason (see the module docstring)
    message: str  # what was wrong and what would help; no secrets
    headers: tuple[tuple[str, str], ...] = ()  # Retry-After, WWW-Authenticate, budget
    param: str | None = None  # the request field at fault, if one is

    @property
    def outcome(self) -> str:
        """The metrics outcome: unauthenticated, forbidden, rate_limited, budget_exhausted."""
        return _OUTCOMES[self.status]

    def body(self) -> dict[str, Any]:
        """OpenAI's error object."""
        kind = _ERROR_TYPES[self.status]
        return error_body(self.message, type=kind, param=self.param, code=self.code)


@dataclass(frozen=True, slots=True)
class Grant:
    """An authorised request: who it is for and what it holds."""

    key_id: str  # the key's public id
    tenant: str  # the key's tenant name
    tier: str | None  # the tier to serve it in; None: the gateway's default
    priority_ceiling: int | None  # the most important priority allowed; None: no ceiling
    reservation: Reservation  # settle it when the request ends
    headers: tuple[tuple[str, str], ...] = ()  # budget left, for the response

    def priority(self, requested: int | None, default: int) -> int:
        """The priority to use: the client's (or ``default``), never above the ceiling."""
        value = default if requested is None else requested
        return value if self.priority_ceiling is None else max(value, self.priority_ceiling)


@dataclass(frozen=True, slots=True)
class AdminGrant:
    """An authorised admin call."""

    key_id: str
    actor: str  # "admin:<name>/<key id>", for the audit log


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer`` header, if there is one."""
    value = headers.get("Authorization") or headers.get("authorization")
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def authorize_request(
    store: KeyStore, headers: Mapping[str, str], facts: RequestFacts, prices: Prices, now: float
) -> Grant | Refusal:
    """The key check of an inference request; ``prices``: the dearest eligible instance's."""
    found = authenticate(store, headers, now)
    if isinstance(found, Refusal):
        return counted(store, "", found)
    return authorize_record(store, found, facts, prices, now)


def authorize_record(
    store: KeyStore, record: KeyRecord, facts: RequestFacts, prices: Prices, now: float
) -> Grant | Refusal:
    """Steps 2-4 of :func:`authorize_request` for a key already authenticated.

    A front door that authenticates before it reads the body (so an anonymous
    client gets 401, not a parse error) calls :func:`authenticate` and then this.
    """
    refusal = check_access(record, facts)
    if refusal is not None:
        return counted(store, record.name, refusal)
    admitted = store.admit(record, facts.prompt_tokens, facts.max_tokens, prices, now)
    return _granted(store, record, admitted)


async def authorize_record_async(
    store: KeyStore, record: KeyRecord, facts: RequestFacts, prices: Prices, now: float
) -> Grant | Refusal:
    """:func:`authorize_record` with the store's admission awaited (shared state in Redis)."""
    refusal = check_access(record, facts)
    if refusal is not None:
        return counted(store, record.name, refusal)
    admitted = await store.admit_async(record, facts.prompt_tokens, facts.max_tokens, prices, now)
    return _granted(store, record, admitted)


def _granted(
    store: KeyStore, record: KeyRecord, admitted: Reservation | LimitRefusal
) -> Grant | Refusal:
    """The grant of an admitted request, or its limit's refusal (counted either way)."""
    if isinstance(admitted, LimitRefusal):
        return counted(store, record.name, _from_limit(admitted))
    if store.metrics is not None:
        store.metrics.decided(record.name, "allowed")
    remaining = store.remaining_usd(record.key_id)
    spec = record.spec
    return Grant(
        key_id=record.key_id,
        tenant=record.name,
        tier=spec.tier,
        priority_ceiling=spec.priority_ceiling,
        reservation=admitted,
        headers=() if remaining is None else ((BUDGET_HEADER, _usd(remaining)),),
    )


def authorize_admin(
    store: KeyStore, headers: Mapping[str, str], now: float
) -> AdminGrant | Refusal:
    """The admin API's check: a valid admin key, else 401 / 403."""
    return _authorize_kinds(store, headers, now, ("admin",), "the admin API needs an admin key")


def authorize_metrics(
    store: KeyStore, headers: Mapping[str, str], now: float
) -> AdminGrant | Refusal:
    """``/metrics``' check: a valid admin or metrics key, else 401 / 403 (a client key)."""
    needs = "/metrics needs an admin or a metrics key"
    return _authorize_kinds(store, headers, now, ("admin", "metrics"), needs)


def _authorize_kinds(
    store: KeyStore, headers: Mapping[str, str], now: float, kinds: tuple[str, ...], needs: str
) -> AdminGrant | Refusal:
    """A valid key of one of ``kinds``, else 401 (no valid key) or 403 saying what it ``needs``."""
    found = authenticate(store, headers, now)
    if isinstance(found, Refusal):
        return found
    if found.kind not in kinds:
        return Refusal(
            403,
            f"{found.kind}_key_not_allowed",
            f"{needs}; this is a {found.kind} key",
        )
    return AdminGrant(found.key_id, f"{found.kind}:{found.name}/{found.key_id}")


def check_access(record: KeyRecord, facts: RequestFacts) -> Refusal | None:
    """What the key allows, independent of time and usage: kind, model, tier."""
    spec = record.spec
    if record.kind != "client":
        return Refusal(
            403,
            f"{record.kind}_key_not_allowed",
            f"an {record.kind} key cannot send inference requests",
        )
    if spec.models is not None and facts.model not in spec.models:
        allowed = ", ".join(sorted(spec.models))
        return Refusal(
            403,
            "model_not_allowed",
            f"model: got {_shown(facts.model)}; this key allows: {allowed}",
            param="model",
        )
    if facts.tier is not None and spec.tier is not None and facts.tier != spec.tier:
        return Refusal(
            403,
            "tier_not_allowed",
            f"tier: got {_shown(facts.tier)}; this key's tier is {spec.tier!r}",
            param="sincere.tier",
        )
    return None


def authenticate(store: KeyStore, headers: Mapping[str, str], now: float) -> KeyRecord | Refusal:
    """Step 1: the live key of the request's bearer token, else a 401 refusal (not counted)."""
    token = bearer_token(headers)
    if token is None:
        return _unauthorized("missing_api_key", "no API key: send Authorization: Bearer <key>")
    record = store.authenticate(token)
    if record is None:
        return _unauthorized("invalid_api_key", "invalid API key")
    state = record.state(now)
    if state == "revoked":
        return _unauthorized("key_revoked", f"API key {record.key_id} was revoked")
    expires_at = record.spec.expires_at
    if state == "expired" and expires_at is not None:  # expired: it has a date
        when = datetime.fromtimestamp(expires_at, UTC).isoformat(timespec="seconds")
        return _unauthorized("key_expired", f"API key {record.key_id} expired at {when}")
    return record


def _unauthorized(code: str, message: str) -> Refusal:
    return Refusal(401, code, message, (("WWW-Authenticate", "Bearer"),))


def _from_limit(limit: LimitRefusal) -> Refusal:
    headers: list[tuple[str, str]] = []
    if limit.retry_after_s is not None:
        headers.append(("Retry-After", str(max(1, math.ceil(limit.retry_after_s)))))
    if limit.remaining_usd is not None:
        headers.append((BUDGET_HEADER, _usd(limit.remaining_usd)))
    return Refusal(limit.status, limit.code, limit.message, tuple(headers))


def counted(store: KeyStore, tenant: str, refusal: Refusal) -> Refusal:
    """Count ``refusal`` in the store's per-tenant metrics (if any) and return it."""
    if store.metrics is not None:
        store.metrics.decided(tenant, refusal.outcome)
    return refusal


def _usd(value: float) -> str:
    return f"{max(value, 0.0):.6f}"


def _shown(value: str) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
