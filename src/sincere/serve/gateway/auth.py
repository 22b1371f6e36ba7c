"""The gateway's security wiring: client keys, limits and budgets, admin keys, audit, secrets.

One :class:`GatewayAuth` per gateway holds what ``security`` in the config asks for
(:class:`~sincere.serve.gateway.config.SecurityConfig`) and runs the building blocks
of :mod:`sincere.serve.security` at the points of the request path:

* **before the body is read**: :meth:`GatewayAuth.authenticate` (a 401 costs no
  parsing); a dict lookup by the token's public id and one HMAC, in memory;
* **after parsing, before routing**: :meth:`GatewayAuth.authorize` -- model and tier
  allowed (403), requests and tokens per minute (429 + ``Retry-After``), budget (402 +
  ``x-sincere-budget-remaining-usd``); the worst case is reserved at the dearest
  prices among the model's instances (:func:`dearest_prices`);
* **once the request ended** (served, failed or cancelled; exactly once):
  :meth:`GatewayAuth.settle` with the tokens used at the serving instance's prices;
* **in the background**: settled usage is flushed every ``flush_interval_s`` in a
  worker thread and keys made by ``sincere keys`` are picked up every
  ``refresh_interval_s`` -- nothing of the store's persistence runs on the request path;
* **admin calls**: :meth:`GatewayAuth.admin` (admin key, else 401/403) and
  :meth:`GatewayAuth.audit` for every state change, naming the actor.

Without ``keys`` every request passes (``authenticate`` returns ``None``) and the
gateway must listen on loopback unless ``insecure_no_auth`` (:func:`check_bind`).
Upstream credentials are read once (:meth:`GatewayAuth.credential`) and a
:class:`~sincere.serve.security.credentials.RedactingFilter` masks them, and any
bearer token, in the gateway's log lines.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from sincere.core.errors import ConfigError
from sincere.serve.gateway.config import SecurityConfig, StateConfig
from sincere.serve.protocol import dumps
from sincere.serve.security.audit import AuditLog
from sincere.serve.security.credentials import RedactingFilter, Secret, redact_text
from sincere.serve.security.keys import KeyRecord, Prices
from sincere.serve.security.keystore import KeyStore
from sincere.serve.security.metrics import TenantMetrics
from sincere.serve.security.policy import (
    AdminGrant,
    Grant,
    Refusal,
    RequestFacts,
    authenticate,
    authorize_admin,
    authorize_metrics,
    authorize_record,
    authorize_record_async,
    counted,
)
from sincere.serve.security.shared import RedisState

FREE = Prices(0.0, 0.0)
LOGGERS = ("sincere.serve.gateway.server", "sincere.serve.gateway.controller", "aiohttp.server")


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, security: SecurityConfig) -> None:
    """Refuse a non-loopback ``host`` without a key store unless ``insecure_no_auth``."""
    if security.keys is None and not security.insecure_no_auth and not is_loopback(host):
        raise ConfigError(
            f"refusing to listen on {host} without API keys: give --keys FILE "
            "(see `sincere keys create`), or --insecure-no-auth to serve anyone who can reach it"
        )


def dearest_prices(prices: Iterable[Prices]) -> Prices:
    """The highest input and output prices among ``prices`` (the worst case to reserve)."""
    top_in = top_out = 0.0
    for p in prices:
        top_in = max(top_in, p.in_per_token_usd)
        top_out = max(top_out, p.out_per_token_usd)
    return Prices(top_in, top_out)


class GatewayAuth:
    """Keys, limits, budgets, admin checks, audit and upstream secrets of one gateway."""

    def __init__(self, security: SecurityConfig, state: StateConfig | None = None) -> None:
        self.config = security
        self.registry = CollectorRegistry()  # the per-tenant metrics, appended to /metrics
        self.store: KeyStore | None = None
        self.shared: RedisState | None = None  # the shared state store, when configured
        if state is not None and state.redis is not None:
            if security.keys is None:
                raise ConfigError(
                    "state.redis holds the key store's limits and spend: it needs keys",
                    value=state.redis,
                    allowed="security.keys (--keys FILE) set, or state.redis left out",
                )
            from sincere.serve.security.shared import RedisState

            self.shared = RedisState(
                state.redis, prefix=state.prefix, lease_s=state.lease_s, renew_s=state.renew_s,
                settle_within_s=state.settle_within_s, timeout_s=state.timeout_s,
            )  # fmt: skip
        if security.keys is not None:
            self.store = KeyStore.open(
                security.keys,
                audit_path=security.audit,
                metrics=TenantMetrics(self.registry),
                shared=self.shared,
            )
            self.audit_log = self.store.audit
        else:
            self.audit_log = AuditLog(security.audit)
        self.secrets = {name: ref.resolve() for name, ref in security.upstream_keys.items()}
        self._filter = RedactingFilter(self.secrets.values())

    def credential(self, backend: str) -> Secret | None:
        """The upstream API key configured for ``backend``, if any."""
        return self.secrets.get(backend)

    def redact(self, text: str) -> str:
        """``text`` with every upstream secret and token-looking string masked."""
        return redact_text(text, self.secrets.values())

    # --------------------------------------------------------------- requests
    def authenticate(self, headers: Mapping[str, str]) -> KeyRecord | Refusal | None:
        """The request's key, a 401, or ``None`` when the gateway checks no keys."""
        if self.store is None:
            return None
        found = authenticate(self.store, headers, time.time())
        return counted(self.store, "", found) if isinstance(found, Refusal) else found

    def authorize(self, record: KeyRecord, facts: RequestFacts, prices: Prices) -> Grant | Refusal:
        """Access, limits and budget for an authenticated request (reserves on a grant)."""
        assert self.store is not None
        return authorize_record(self.store, record, facts, prices, time.time())

    async def authorize_async(
        self, record: KeyRecord, facts: RequestFacts, prices: Prices
    ) -> Grant | Refusal:
        """:meth:`authorize`, awaiting the shared state store when there is one."""
        assert self.store is not None
        if self.shared is None:
            return authorize_record(self.store, record, facts, prices, time.time())
        return await authorize_record_async(self.store, record, facts, prices, time.time())

    def settle(
        self, grant: Grant, prompt_tokens: int, completion_tokens: int, prices: Prices
    ) -> None:
        """Replace ``grant``'s reservation by what the request used."""
        assert self.store is not None
        self.store.settle(grant.reservation, prompt_tokens, completion_tokens, prices)

    def state_health(self) -> dict[str, Any] | None:
        """The shared state store's health for ``/health`` (None: state is per process)."""
        if self.shared is None:
            return None
        ok = self.shared.ping()
        out: dict[str, Any] = {"store": "redis", "ok": ok}
        if not ok:
            out["reason"] = (
                f"{self.shared.last_error}; keyed requests are refused (503) until it is back"
            )
        return out

    def metrics_text(self, every_tenant: bool = False) -> str:
        """The per-tenant metrics in Prometheus text ("" without keys): the
        ``metrics_max_tenants`` tenants with the most spend and ``(other)``, or every tenant."""
        store = self.store
        if store is None or store.metrics is None:
            return ""
        return store.metrics.render(None if every_tenant else self.config.metrics_max_tenants)

    # ------------------------------------------------------------------ admin
    def admin(self, headers: Mapping[str, str], peer: str) -> AdminGrant | Refusal:
        """An admin call's actor: an admin key's, else 401/403; anyone's without keys."""
        if self.store is None:
            return AdminGrant("", f"anonymous@{peer or '?'}")
        return authorize_admin(self.store, headers, time.time())

    def metrics_reader(self, headers: Mapping[str, str]) -> AdminGrant | Refusal:
        """``/metrics``' reader: an admin or metrics key's, else 401/403 (anyone without keys)."""
        if self.store is None:
            return AdminGrant("", "anonymous")
        return authorize_metrics(self.store, headers, time.time())

    def audit(self, actor: str, action: str, target: str, details: dict[str, Any]) -> None:
        """Append one state change to the audit log."""
        self.audit_log.record(time.time(), actor, action, target, details)

    # ------------------------------------------------------------- lifecycle
    def start(self) -> list[Coroutine[Any, Any, None]]:
        """Mask secrets in the gateway's logs; the flush and refresh loops for the caller to run."""
        for name in LOGGERS:
            logging.getLogger(name).addFilter(self._filter)
        store = self.store
        if store is None:
            return []
        loops = [
            _every(self.config.flush_interval_s, store.flush_async, "write spend to"),
            _every(self.config.refresh_interval_s, store.refresh_async, "re-read keys from"),
        ]
        if self.shared is not None:
            renew = self.shared.renew_s
            loops.append(_every(renew, lambda: store.maintain(time.time()), "renew leases in"))
        return loops

    async def drain(self) -> None:
        """Wait for settlements on their way to the shared state store (before stopping)."""
        if self.store is not None:
            await self.store.drain()

    def stop(self) -> None:
        """After the loops are cancelled: flush what is pending and close the store."""
        for name in LOGGERS:
            logging.getLogger(name).removeFilter(self._filter)
        if self.store is not None:
            self.store.close()


async def _every(interval_s: float, action: Callable[[], Awaitable[int]], what: str) -> None:
    """Run ``action`` every ``interval_s`` until cancelled; a failure is logged and retried."""
    log = logging.getLogger("sincere.serve.gateway.server")
    task = asyncio.current_task()
    while True:
        await asyncio.sleep(interval_s)
        try:
            await action()
        except Exception as exc:  # usage stays in memory; the next round tries again
            log.warning("could not %s the key store: %s", what, exc)
        if task is not None and task.cancelling():  # cancelled, but a library below turned
            raise asyncio.CancelledError  # it into a timeout it retried: stop all the same


def refusal_response(refusal: Refusal) -> web.Response:
    """A key check's refusal as the client's answer: 401/402/403/429 with its headers."""
    return web.Response(
        status=refusal.status,
        body=dumps(refusal.body()),
        content_type="application/json",
        headers=dict(refusal.headers),
    )
