"""The seal proxy's replay protection: the same sealed bytes are served once per window.

An HPKE encapsulation is fresh for every sealed request, so the same bytes twice are a
replay. A proxy remembers the digests of the bodies it accepted for ``window_s`` seconds;
older bodies are refused by their sealed timestamp instead
(:meth:`~sincere.serve.security.seal_proxy.SealProxy` checks ``x-sincere-sealed-at``).

Where the memory lives decides who is protected:

* :class:`ReplayWindow` -- this process's memory (the default). Replay protection is then
  **per process**: several proxies holding the same key pair (replicas behind one
  gateway, or ``sincere seal serve`` started twice) would each accept the same bytes once.
* :class:`SharedReplays` -- a Redis (or Valkey) server every proxy of a key pair is given
  (``--replay-redis URL``): one ``SET key NX EX window`` per request, atomic across them,
  so the bytes are served once in all. It fails closed: when Redis cannot answer, the
  request is refused (503 ``replay_store_unavailable``), never served unchecked.
"""

from __future__ import annotations

import collections
import hashlib
import math
import time
from typing import Any

from sincere.core.errors import ConfigError
from sincere.serve.protocol import ProtocolError

REDIS_TIMEOUT_S = 1.0  # one Redis call's limit before the request is refused (503)
KEY_PREFIX = "sincere:seal-replay"


class ReplayWindow:
    """Sealed bodies this process accepted in the last ``window_s`` seconds (their
    digests). Bounded: at most ``max_entries`` digests, the oldest forgotten first."""

    shared = False  # what the proxy says at start: per process

    def __init__(self, window_s: float, max_entries: int = 200_000) -> None:
        self.window_s = window_s
        self.max_entries = max_entries
        self._seen: collections.OrderedDict[bytes, float] = collections.OrderedDict()

    def first_time(self, body: bytes, now: float) -> bool:
        """Remember ``body``; False when it was seen within the window (a replay)."""
        while self._seen:
            oldest, at = next(iter(self._seen.items()))
            if now - at <= self.window_s and len(self._seen) < self.max_entries:
                break
            del self._seen[oldest]
        digest = hashlib.sha256(body).digest()
        if digest in self._seen:
            return False
        self._seen[digest] = now
        return True

    async def accept(self, body: bytes) -> bool:
        """:meth:`first_time` at the monotonic clock's now."""
        return self.first_time(body, time.monotonic())

    async def close(self) -> None:
        """Nothing to close."""


class SharedReplays:
    """Accepted sealed bodies kept in Redis for ``window_s`` seconds, for every proxy of
    the key pair ``key_id`` that uses the same server (see the module's text)."""

    shared = True

    def __init__(self, url: str, key_id: str, window_s: float) -> None:
        import redis.asyncio

        self.window_s = window_s
        self.key_id = key_id
        try:
            self._client: Any = redis.asyncio.Redis.from_url(
                url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
            )
        except ValueError as exc:  # the URL is not shown: it may hold a password
            raise ConfigError(
                f"replay store: {exc}", where="replay_redis",
                allowed="redis://HOST:PORT[/DB], rediss://... or unix://PATH",
            ) from None  # fmt: skip
        self._errors = (redis.RedisError, OSError, TimeoutError)

    async def accept(self, body: bytes) -> bool:
        """Record ``body``; False when a proxy sharing the store accepted it within the
        window. Raises :class:`ProtocolError` (503) when Redis cannot answer."""
        key = f"{KEY_PREFIX}:{self.key_id}:{hashlib.sha256(body).hexdigest()}"
        ttl = max(1, math.ceil(self.window_s))
        try:
            created = await self._client.set(key, b"1", nx=True, ex=ttl)
        except self._errors:
            raise ProtocolError(
                503,
                "the shared replay store cannot be reached; the request was not served "
                "(replay protection fails closed); retry later",
                code="replay_store_unavailable",
            ) from None
        return bool(created)

    async def close(self) -> None:
        """Close the connections to Redis."""
        await self._client.aclose()
