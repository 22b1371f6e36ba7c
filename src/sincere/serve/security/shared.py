"""Limits, reservations and spend shared by every worker and gateway: one Redis.

With ``state: {redis: URL}`` (``sincere serve --redis URL``) a key store keeps its live
accounting in Redis instead of process memory, so that limits hold across worker
processes and gateways: each check-and-record is **one Lua script**, atomic in Redis.

* :meth:`RedisState.admit` -- the requests-per-minute and tokens-per-minute windows
  and the budget checked, and on success the request recorded and its worst case
  reserved, in one script (no two gateways can both take the last request's room);
* :meth:`RedisState.settle` -- the reservation replaced by the usage, the tokens
  window corrected, the spend added, and the usage added to the key's *unflushed*
  delta -- in one script;
* :meth:`RedisState.take_unflushed` -- the unflushed deltas of every key taken (and
  cleared) in one script, for a gateway to write to the durable record (SQLite);
  :meth:`RedisState.restore_unflushed` puts back a batch whose write failed.

Windows are buckets of ``window_s / num_buckets`` seconds in a hash per key (bucket
number -> amount), read and pruned by the scripts, with the same conservative rule as
:class:`~sincere.serve.security.windows.SlidingWindow`. Spend lives in a hash per key
(``spent``, ``reserved``), seeded once from the durable record (``HSETNX``) so that a
fresh Redis starts from what SQLite holds. Because unflushed usage sits in Redis, not
in a process, a gateway killed with ``kill -9`` loses at most the batch it was writing
(one flush interval), and the spend in Redis equals the durable record once the others
have flushed.

Clock: the caller's ``now`` (Unix seconds); gateways sharing a Redis share a clock
within the bucket width. Failure: a Redis that cannot be reached raises
:class:`StateUnavailableError` (the key store then refuses with 503: budgets fail closed);
after a failure Redis is not tried again for ``retry_after_s``, so a dead Redis costs
no request a timeout.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from sincere.serve.security.storage import Totals

MAX_CONNECTIONS = 32  # per process: requests beyond wait for a connection (a pool)

_WINDOW = """
local function window(key, bucket, n, limit, add)
  if limit <= 0 then return 0, -1 end
  local all = redis.call('HGETALL', key)
  local total = 0
  local parts = {}
  for i = 1, #all, 2 do
    local b = tonumber(all[i])
    local v = tonumber(all[i + 1])
    if b < bucket - n then
      redis.call('HDEL', key, all[i])
    else
      total = total + v
      parts[#parts + 1] = {b, v}
    end
  end
  if total + add <= limit then return total, -1 end
  if add > limit then return total, -2 end
  table.sort(parts, function(x, y) return x[1] < y[1] end)
  local freed = 0
  for _, p in ipairs(parts) do
    freed = freed + p[2]
    if total - freed + add <= limit then return total, p[1] end
  end
  return total, -2
end
"""

# KEYS: requests window, tokens window, money hash
# ARGV: bucket, num_buckets, rpm (0: none), tpm (0: none), amount, budget (<0: none),
#       cost, seed_spent, ttl_s
ADMIT = (
    _WINDOW
    + """
local bucket, n = tonumber(ARGV[1]), tonumber(ARGV[2])
local rpm, tpm, amount = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local budget, cost, ttl = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[9])
redis.call('HSETNX', KEYS[3], 'spent', ARGV[8])
local _, wait = window(KEYS[1], bucket, n, rpm, 1)
if wait ~= -1 then return {'rpm', tostring(wait), ''} end
local _, twait = window(KEYS[2], bucket, n, tpm, amount)
if twait ~= -1 then return {'tpm', tostring(twait), ''} end
local spent = tonumber(redis.call('HGET', KEYS[3], 'spent') or '0')
local reserved = tonumber(redis.call('HGET', KEYS[3], 'reserved') or '0')
if budget >= 0 then
  local remaining = budget - spent - reserved
  if remaining <= 0 or cost > remaining then return {'budget', '', tostring(remaining)} end
end
if rpm > 0 then
  redis.call('HINCRBY', KEYS[1], bucket, 1)
  redis.call('EXPIRE', KEYS[1], ttl)
end
if tpm > 0 then
  redis.call('HINCRBY', KEYS[2], bucket, amount)
  redis.call('EXPIRE', KEYS[2], ttl)
end
redis.call('HINCRBYFLOAT', KEYS[3], 'reserved', cost)
local left = ''
if budget >= 0 then left = tostring(budget - spent - reserved - cost) end
return {'ok', '', left}
"""
)

# KEYS: money hash, tokens window, unflushed hash, dirty set
# ARGV: reserved_cost, cost, tokens_bucket (<0: none), tokens_delta, bucket, num_buckets,
#       prompt_tokens, completion_tokens, key_id
SETTLE = """
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')
local left = reserved - tonumber(ARGV[1])
if left < 0 then left = 0 end
redis.call('HSET', KEYS[1], 'reserved', tostring(left))
redis.call('HINCRBYFLOAT', KEYS[1], 'spent', ARGV[2])
local tb = tonumber(ARGV[3])
if tb >= 0 and tonumber(ARGV[5]) - tb <= tonumber(ARGV[6]) then
  local v = tonumber(redis.call('HGET', KEYS[2], tb) or '0') + tonumber(ARGV[4])
  if v < 0 then v = 0 end
  redis.call('HSET', KEYS[2], tb, v)
end
redis.call('HINCRBYFLOAT', KEYS[3], 'spent', ARGV[2])
redis.call('HINCRBY', KEYS[3], 'requests', 1)
redis.call('HINCRBY', KEYS[3], 'prompt', ARGV[7])
redis.call('HINCRBY', KEYS[3], 'completion', ARGV[8])
redis.call('SADD', KEYS[4], ARGV[9])
return 1
"""

# KEYS: dirty set; ARGV: the unflushed hashes' prefix
TAKE = """
local ids = redis.call('SMEMBERS', KEYS[1])
local out = {}
for _, id in ipairs(ids) do
  local key = ARGV[1] .. id .. ':unflushed'
  local h = redis.call('HGETALL', key)
  redis.call('DEL', key)
  out[#out + 1] = id
  out[#out + 1] = h
end
redis.call('DEL', KEYS[1])
return out
"""


class StateUnavailableError(Exception):
    """The shared state store cannot be reached; budgets fail closed."""


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
    seed_spent_usd: float  # the durable record's spend, used if Redis has none yet


class RedisState:
    """A key store's live accounting in one Redis (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "sincere",
        window_s: float = 60.0,
        num_buckets: int = 60,
        timeout_s: float = 1.0,
        retry_after_s: float = 1.0,
    ) -> None:
        import redis  # the ``redis`` package; a dependency of the gateway's shared state

        self.url = url
        self.prefix = f"{prefix}:"
        self.window_s = window_s
        self.num_buckets = num_buckets
        self.width_s = window_s / num_buckets
        self.retry_after_s = retry_after_s  # after a failure, Redis is not tried this long
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._admit = self._client.register_script(ADMIT)
        self._settle = self._client.register_script(SETTLE)
        self._take = self._client.register_script(TAKE)
        self._timeout_s = timeout_s
        self._async: Any = None  # redis.asyncio client of the running loop (made on first use)
        self._async_scripts: dict[str, Any] = {}
        self._down_until = 0.0  # monotonic time before which Redis is not tried
        self.last_error: str | None = None  # why the last call failed; None: it worked

    @property
    def ok(self) -> bool:
        """Whether the last call reached Redis."""
        return self.last_error is None

    def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        now = time.monotonic()
        if now < self._down_until:
            raise StateUnavailableError(self._why())
        try:
            out = script(keys=keys, args=args)
        except self._errors as exc:
            self._failed(exc, now)
            raise StateUnavailableError(self._why()) from None
        self.last_error = None
        return out

    async def _call_async(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """:meth:`_call` on the event loop: the request path never blocks on Redis."""
        now = time.monotonic()
        if now < self._down_until:
            raise StateUnavailableError(self._why())
        if self._async is None:
            import redis.asyncio

            pool = redis.asyncio.BlockingConnectionPool.from_url(
                self.url,
                max_connections=MAX_CONNECTIONS,
                timeout=self._timeout_s,
                socket_timeout=self._timeout_s,
                socket_connect_timeout=self._timeout_s,
            )
            self._async = redis.asyncio.Redis(connection_pool=pool)
            source = {"admit": ADMIT, "settle": SETTLE}
            self._async_scripts = {k: self._async.register_script(v) for k, v in source.items()}
        try:
            out = await self._async_scripts[name](keys=keys, args=args)
        except self._errors as exc:
            self._failed(exc, now)
            raise StateUnavailableError(self._why()) from None
        self.last_error = None
        return out

    def _failed(self, exc: BaseException, now: float) -> None:
        """Remember why; a refused connection (not a slow answer) marks Redis down a while."""
        self.last_error = f"{type(exc).__name__}: {exc}"[:200]
        if not isinstance(exc, TimeoutError) and "Timeout" not in type(exc).__name__:
            self._down_until = now + self.retry_after_s

    def _why(self) -> str:
        return f"the shared state store (Redis) cannot be reached: {self.last_error}"

    def ping(self) -> bool:
        """Whether Redis answers now (for ``/health``)."""
        try:
            self._client.ping()
        except self._errors as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"[:200]
            return False
        self.last_error = None
        return True

    def _key(self, key_id: str, what: str) -> str:
        return f"{self.prefix}{key_id}:{what}"

    def bucket(self, now: float) -> int:
        """The window bucket of ``now``."""
        return math.floor(now / self.width_s)

    def admit(self, key: KeyLimits, amount: int, cost: float, now: float) -> Admitted | Refused:
        """Check and, if all allow, record and reserve one request -- atomically."""
        keys, args = self._admit_call(key, amount, cost, now)
        return self._admitted(self._call(self._admit, keys, args), now)

    async def admit_async(
        self, key: KeyLimits, amount: int, cost: float, now: float
    ) -> Admitted | Refused:
        """:meth:`admit` without blocking the event loop."""
        keys, args = self._admit_call(key, amount, cost, now)
        return self._admitted(await self._call_async("admit", keys, args), now)

    def _admit_call(
        self, key: KeyLimits, amount: int, cost: float, now: float
    ) -> tuple[list[str], list[Any]]:
        bucket = self.bucket(now)
        keys = [self._key(key.key_id, w) for w in ("requests", "tokens", "money")]
        args = [
            bucket, self.num_buckets, key.max_requests_per_min or 0,
            key.max_tokens_per_min or 0, amount,
            -1 if key.budget_usd is None else repr(key.budget_usd), repr(cost),
            repr(key.seed_spent_usd), int(self.window_s * 2) + 2,
        ]  # fmt: skip
        return keys, args

    def _admitted(self, out: Any, now: float) -> Admitted | Refused:
        verdict, wait, left = (_text(x) for x in out)
        remaining = float(left) if left else None
        if verdict == "ok":
            return Admitted(self.bucket(now), remaining)
        retry = None
        if wait:
            freed = int(wait)
            retry = (
                math.inf
                if freed == -2
                else max((freed + self.num_buckets + 1) * self.width_s - now, 0.0)
            )
        return Refused(verdict, retry, remaining)

    def settle(
        self,
        key_id: str,
        reserved_usd: float,
        cost: float,
        tokens_bucket: int | None,
        tokens_delta: int,
        prompt_tokens: int,
        completion_tokens: int,
        now: float,
    ) -> None:
        """Replace a reservation by the usage, in one script."""
        keys, args = self._settle_call(
            key_id, reserved_usd, cost, tokens_bucket, tokens_delta, prompt_tokens,
            completion_tokens, now,
        )  # fmt: skip
        self._call(self._settle, keys, args)

    async def settle_async(self, *settled: Any) -> None:
        """:meth:`settle` without blocking the event loop (the same arguments)."""
        keys, args = self._settle_call(*settled)
        await self._call_async("settle", keys, args)

    def _settle_call(
        self,
        key_id: str,
        reserved_usd: float,
        cost: float,
        tokens_bucket: int | None,
        tokens_delta: int,
        prompt_tokens: int,
        completion_tokens: int,
        now: float,
    ) -> tuple[list[str], list[Any]]:
        keys = [
            self._key(key_id, "money"), self._key(key_id, "tokens"),
            self._key(key_id, "unflushed"), f"{self.prefix}dirty",
        ]  # fmt: skip
        args = [
            repr(reserved_usd), repr(cost), -1 if tokens_bucket is None else tokens_bucket,
            tokens_delta, self.bucket(now), self.num_buckets, prompt_tokens,
            completion_tokens, key_id,
        ]  # fmt: skip
        return keys, args

    def take_unflushed(self) -> dict[str, Totals]:
        """Every key's usage not yet written to the durable record, taken and cleared."""
        out = self._call(self._take, [f"{self.prefix}dirty"], [self.prefix])
        taken: dict[str, Totals] = {}
        for i in range(0, len(out), 2):
            fields = dict(zip(*[iter(_text(x) for x in out[i + 1])] * 2, strict=True))
            taken[_text(out[i])] = Totals(
                float(fields.get("spent", 0.0)),
                int(fields.get("requests", 0)),
                int(fields.get("prompt", 0)),
                int(fields.get("completion", 0)),
            )
        return taken

    def restore_unflushed(self, pending: dict[str, Totals]) -> None:
        """Put back usage whose write to the durable record failed."""
        pipe = self._client.pipeline(transaction=True)
        for key_id, t in pending.items():
            key = self._key(key_id, "unflushed")
            pipe.hincrbyfloat(key, "spent", t.spent_usd)
            pipe.hincrby(key, "requests", t.num_requests)
            pipe.hincrby(key, "prompt", t.num_prompt_tokens)
            pipe.hincrby(key, "completion", t.num_completion_tokens)
            pipe.sadd(f"{self.prefix}dirty", key_id)
        pipe.execute()

    def spent_usd(self, key_id: str) -> float:
        """A key's lifetime spend as Redis holds it (0 before its first request)."""
        value = self._client.hget(self._key(key_id, "money"), "spent")
        return 0.0 if value is None else float(_text(value))

    def remaining_usd(self, key: KeyLimits) -> float | None:
        """Budget left after spend and reservations (None: no budget)."""
        if key.budget_usd is None:
            return None
        money = self._client.hgetall(self._key(key.key_id, "money"))
        fields = {_text(k): float(_text(v)) for k, v in money.items()}
        spent = fields.get("spent", key.seed_spent_usd)
        return key.budget_usd - spent - fields.get("reserved", 0.0)

    async def aclose(self) -> None:
        """Close the event loop's connections (before the loop ends)."""
        if self._async is not None:
            await self._async.aclose()
            self._async = None

    def close(self) -> None:
        """Close the connections."""
        self._client.close()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
