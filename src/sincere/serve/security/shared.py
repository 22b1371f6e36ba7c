"""Limits, reservations and spend shared by every worker and gateway: one Redis.

With ``state: {redis: URL}`` (``sincere serve --redis URL``) a key store keeps its live
accounting in Redis as well as in its own process, so that limits hold across worker
processes and gateways. This module is the transport: :class:`RedisState` runs the
scripts of :mod:`sincere.serve.security.redis_scripts` (each one atomic in Redis) and
turns their answers into values; :class:`~sincere.serve.security.ledger.SharedLedger`
decides when to call which, and how to rebuild the books when Redis lost them.

Windows are buckets of ``window_s / num_buckets`` seconds in a hash per key (bucket
number -> amount), read and pruned by the scripts, with the same conservative rule as
:class:`~sincere.serve.security.windows.SlidingWindow`.

Clock: the caller's ``now`` (Unix seconds); gateways sharing a Redis share a clock
within the bucket width. Failure: a call that cannot reach Redis, or that times out
(``timeout_s``), raises :class:`StateUnavailableError` (the key store then refuses with
503: budgets fail closed). redis-py's own retries are off (a script that timed out may
still run: sending it again is the ledger's choice, with ids that make it apply once). A
call whose connection broke (Redis restarted) is retried once at once on a fresh one
(the scripts apply once by id, so a call that did run is not applied twice); only when
that fails too is Redis marked down for ``retry_after_s`` (no request waits on a dead
Redis). Errors never carry Redis's address: it is logged, not answered. The scripts go
through :mod:`~sincere.serve.security.redis_client` (one pipelined connection per event
loop; redis-py's pool for TLS URLs and URLs with options).
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass
from typing import Any

from sincere.serve.security import redis_scripts
from sincere.serve.security.redis_client import RedisReplyError, Scripts, make_scripts

MAX_CONNECTIONS = 32  # per process, through redis-py: requests beyond wait for one (a pool)
SCRIPTS = {
    "instance": redis_scripts.INSTANCE,
    "admit": redis_scripts.ADMIT,
    "settle": redis_scripts.SETTLE,
    "sync": redis_scripts.SYNC,
    "writers": redis_scripts.WRITERS,
}
_REASONS = (  # what an error says, in words that name no host, port or path
    ("refused", "connection refused"),
    ("connect call failed", "connection refused"),
    ("connecting to", "cannot connect"),
    ("closed", "connection closed by the server"),
    ("reset", "connection reset"),
    ("timeout", "timed out"),
    ("timed out", "timed out"),
    ("no connection available", "no free connection in the pool"),
    ("auth", "authentication failed"),
    ("name or service", "host name not found"),
    ("unreachable", "network unreachable"),
)
log = logging.getLogger("sincere.serve.security.shared")


class StateUnavailableError(Exception):
    """The shared state store cannot vouch for a key now; budgets fail closed."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s  # when a retry may succeed


@dataclass(frozen=True, slots=True)
class Admitted:
    """A request recorded and reserved in Redis."""

    bucket: int  # the window bucket its tokens were recorded in
    remaining_usd: float | None  # budget left after the reservation; None: no budget


@dataclass(frozen=True, slots=True)
class Refused:
    """Which limit refused: ``rpm``, ``tpm`` or ``budget``, and when it frees."""

    limit: str
    retry_after_s: float | None  # None: not by waiting (inf for a request above the limit)
    remaining_usd: float | None  # for a budget refusal


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """What Redis needs of a key to check it."""

    key_id: str
    max_requests_per_min: int | None
    max_tokens_per_min: int | None
    budget_usd: float | None


@dataclass(frozen=True, slots=True)
class Answer:
    """A script's answer: its verdict and up to two values (empty strings: none)."""

    verdict: str  # ok, or why not (no-instance, new-instance, regressed, unseeded, ...)
    first: str
    second: str
    more: tuple[str, ...] = ()  # any further values (an admission's settlements, clock)


class RedisState:
    """One Redis connection pool and the books' scripts (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "sincere",
        window_s: float = 60.0,
        num_buckets: int = 60,
        timeout_s: float = 1.0,
        retry_after_s: float = 1.0,
        lease_s: float = 30.0,
        renew_s: float = 1.0,
        settle_within_s: float = 0.05,
    ) -> None:
        import redis  # the ``redis`` package; a dependency of the gateway's shared state
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.url = url
        self.prefix = f"{prefix}:"
        self.window_s = window_s
        self.num_buckets = num_buckets
        self.width_s = window_s / num_buckets
        self.retry_after_s = retry_after_s  # after a failure, Redis is not tried this long
        self.lease_s = lease_s  # a reservation not renewed this long is released
        self.renew_s = renew_s  # how often a process renews its leases and checks Redis
        self.settle_within_s = settle_within_s  # a deferred settlement waits at most this
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError, RedisReplyError)
        self._refused = (redis.ConnectionError, ConnectionError)
        self._client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )  # fmt: skip
        self._timeout_s = timeout_s
        self._async: Scripts | None = None  # the running loop's client (made on first use)
        self._down_until = 0.0  # monotonic time before which Redis is not tried
        self.last_error: str | None = None  # why the last call failed (no address); None: ok

    @property
    def timeout_s(self) -> float:
        """How long a call may wait for Redis before it fails (the request is refused)."""
        return self._timeout_s

    @property
    def ok(self) -> bool:
        """Whether the last call reached Redis."""
        return self.last_error is None

    def key(self, token: str, key_id: str, what: str) -> str:
        """The Redis key of ``what`` (money, res, lease, ...) of a key under ``token``."""
        return f"{self.prefix}{token}:{key_id}:{what}"

    @property
    def instance_key(self) -> str:
        """The instance hash (token, ready_at, clock)."""
        return f"{self.prefix}instance"

    def bucket(self, now: float) -> int:
        """The window bucket of ``now``."""
        return math.floor(now / self.width_s)

    def _client_async(self) -> Scripts:
        if self._async is None:
            self._async = make_scripts(self.url, SCRIPTS, self._timeout_s)
        return self._async

    async def call(self, name: str, keys: list[str], args: list[Any]) -> Answer:
        """Run script ``name`` on the event loop; :class:`StateUnavailableError` if it fails."""
        out = await self.call_raw(name, keys, args)
        if isinstance(out, list):
            parts = [_text(x) for x in out] + ["", ""]
            return Answer(parts[0], parts[1], parts[2], tuple(parts[3:-2]))
        return Answer("ok", _text(out), "")

    async def call_raw(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """:meth:`call` with the script's raw answer."""
        now = time.monotonic()
        if now < self._down_until:
            raise StateUnavailableError(self._why(), self.retry_after_s)
        client = self._client_async()
        for attempt in (1, 2):
            try:
                out = await client.run(name, keys, args)
            except self._refused as exc:  # a stale pooled connection: once more, on a fresh one
                if attempt == 2 or _is_timeout(exc):
                    self._failed(exc, now)
                    raise StateUnavailableError(self._why(), self.retry_after_s) from None
                # Redis restarted: every idle connection is as stale as this one
                await client.reset()
            except self._errors as exc:
                self._failed(exc, now)
                raise StateUnavailableError(self._why(), self.retry_after_s) from None
            else:
                self.last_error = None
                return out
        raise AssertionError("unreachable")

    def _failed(self, exc: BaseException, now: float) -> None:
        """Remember why (without the address); a refused connection marks Redis down a while."""
        where = re.sub(r"//[^@/]*@", "//***@", self.url)  # no password in the log
        log.warning("shared state store (%s): %s: %s", where, type(exc).__name__, exc)
        self.last_error = _describe(exc)
        if not _is_timeout(exc):
            self._down_until = now + self.retry_after_s

    def _why(self) -> str:
        return f"the shared state store (Redis) cannot be reached: {self.last_error}"

    def ping(self) -> bool:
        """Whether Redis answers now (for ``/health``; blocking: run it in a thread)."""
        try:
            self._client.ping()
        except self._errors as exc:
            self.last_error = _describe(exc)
            return False
        self.last_error = None
        return True

    def spent_usd(self, key_id: str) -> float:
        """A key's lifetime spend as Redis holds it now (0 if it holds none; blocking)."""
        token = self._client.hget(self.instance_key, "token")
        if token is None:
            return 0.0
        value = self._client.hget(self.key(_text(token), key_id, "money"), "spent")
        return 0.0 if value is None else float(_text(value))

    async def aclose(self) -> None:
        """Close the event loop's connections (before the loop ends)."""
        if self._async is not None:
            await self._async.aclose()
            self._async = None

    def close(self) -> None:
        """Close the connections."""
        self._client.close()


def _describe(exc: BaseException) -> str:
    """Why a call failed, without Redis's address (answers and /health show it)."""
    text = str(exc).lower()
    reason = next((say for words, say in _REASONS if words in text), "see the gateway's log")
    return f"{type(exc).__name__}: {reason}"


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError) or "Timeout" in type(exc).__name__


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
