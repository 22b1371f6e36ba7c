"""One process's side of the books shared in Redis: what it holds, and how it rebuilds them.

The durable record (the key store's SQLite file) is written by each process with its own
settled usage, never from Redis: so nothing Redis does -- stall, lose its data, come back
from an old snapshot -- can lose, double or corrupt what is written there. Redis holds
what every process must see at once: per key the spend (the durable record's when the key
was seeded, plus every settlement since), the reservations in flight, and the windows.

* **Admission** (:meth:`SharedLedger.admit`): one script checks the windows and the
  budget against spend plus reservations and reserves the worst case under an id.
  A reservation carries a *lease*: a process renews its leases every ``renew_s``
  (:meth:`SharedLedger.maintain`) and a lease not renewed for ``lease_s`` (its
  process was killed) is released by the next admission.
* **Settlement** (:meth:`SharedLedger.settle`): one script replaces the reservation by the
  cost, once per id (a settlement retried after a timeout is not applied twice). One that
  fails is kept and retried by :meth:`maintain` (never on the request path); so is the
  cancellation of an admission that timed out (Redis may run it late: it then holds
  nothing, instead of holding budget for a lease).
* **A killed process's usage**: each settlement also adds its usage to the process's
  *mirror* in Redis, by flush batch; a survivor writes a dead process's mirror to the key
  store (:class:`~sincere.serve.security.mirror.Mirror`).
* **Rebuilding.** Redis can vouch for a key only under the instance token its books were
  written under (see :mod:`sincere.serve.security.redis_scripts`). When the books are gone
  (``FLUSHALL``, a restart without persistence) or went back in time (a snapshot), a
  process makes a new token; every process then *syncs* each key it touched: the first
  seeds the key from the durable record's current spend (read at that moment), each
  adds, once, its usage not yet in that read (pending, being written, or written after
  it: a write's request count tells) and re-registers its reservations. Keys of a
  rebuilt instance are refused (503 + ``Retry-After``) for ``grace_s``, the time every
  live process needs to notice (its :meth:`maintain` runs every ``renew_s``).
"""

from __future__ import annotations

import asyncio
import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from sincere.serve.security.mirror import Mirror
from sincere.serve.security.shared import (
    Admitted,
    Answer,
    KeyLimits,
    RedisState,
    Refused,
    StateUnavailableError,
)
from sincere.serve.security.storage import KeyStorage, Totals

GONE_KEEP_S = 3600.0  # ids of run-out leases and cancelled admissions kept this long
KEY_TTL_S = 7 * 86400  # a key's books idle this long leave Redis (re-seeded on next use)
MEMORY_S = 120.0  # a key touched this recently counts as this process's (synced on rebuild)
REBUILD = ("no-instance", "new-instance", "regressed", "unseeded")


class Usage(Protocol):
    """What the ledger needs of the key store's durable side."""

    def unwritten_usd(self, key_id: str) -> float:
        """Spend settled by this process and not yet written (pending or being written)."""
        ...

    async def writes_done(self) -> None:
        """Wait until a write under way has ended (either way)."""
        ...


@dataclass(frozen=True, slots=True)
class _Settlement:
    """A settlement to send to Redis (kept to retry when the first try failed)."""

    key_id: str
    rid: str
    cost: float
    tokens_bucket: int | None
    tokens_delta: int
    made_at: float  # when the request was admitted (its window bucket's time)
    token: str  # the instance it belongs to: in a rebuilt one the sync carried it
    batch: int  # the flush batch its usage is written with (this process's mirror)
    used: tuple[int, int]  # prompt and completion tokens
    cancel: bool = False  # an admission that failed here: release it if Redis ran it


class SharedLedger:
    """This process's view of the shared books (see the module docstring)."""

    def __init__(self, state: RedisState, storage: KeyStorage, usage: Usage) -> None:
        self.state = state
        self.storage = storage
        self.usage = usage
        self.process_id = secrets.token_hex(8)  # names this process's syncs in Redis
        self.grace_s = 3 * state.renew_s
        self._token: str | None = None  # the instance this process works under
        self._clock = 0  # the highest clock seen under it
        self._synced: set[str] = set()  # keys whose books this process joined under it
        self._syncing: dict[str, list[_Settlement]] = {}  # settlements held during a sync
        self._locks: dict[str, asyncio.Lock] = {}
        self._held: dict[str, tuple[str, float]] = {}  # rid -> (key id, worst-case cost)
        self._touched: dict[str, float] = {}  # key id -> monotonic time of last use
        self._written: deque[tuple[str, int, float, float]] = deque()  # key, n_after, usd, at
        self._written_lock = threading.Lock()  # written by the key store's writer thread
        self._backlog: list[_Settlement] = []
        self.mirror = Mirror(state, storage, self.process_id)

    # ------------------------------------------------------------ request path
    async def admit(
        self, key: KeyLimits, amount: int, cost: float, rid: str, now: float
    ) -> Admitted | Refused:
        """Check and, if all allow, record and reserve one request under ``rid``.

        Raises :class:`StateUnavailableError` when Redis cannot be reached or cannot vouch
        for the key yet (its books being rebuilt): the caller refuses with 503.
        """
        for _ in range(4):
            await self._join(key.key_id, now)
            token = self._token
            assert token is not None
            call = self._admit_call(token, key, amount, cost, rid, now)
            try:
                out = await self.state.call("admit", *call)
            except StateUnavailableError:  # it may still run (a stall): cancel it by its id
                cancel = _Settlement(key.key_id, rid, 0.0, None, 0, now, token, 0, (0, 0), True)
                self._backlog.append(cancel)
                raise
            if out.verdict in REBUILD:
                await self._rebuild(out, key.key_id, now)
                continue
            if out.verdict == "syncing":
                wait = float(out.first)
                raise StateUnavailableError(
                    "the shared state store (Redis) lost its books and they are being rebuilt "
                    f"from the key store; retry after {wait:.1f} s", max(wait, 0.1)
                )  # fmt: skip
            if out.verdict == "ok":
                self._held[rid] = (key.key_id, cost)
                self._touched[key.key_id] = time.monotonic()
            return self._admitted(out, now)
        raise StateUnavailableError("the shared state store (Redis) keeps changing; retry")

    def _admit_call(
        self, token: str, key: KeyLimits, amount: int, cost: float, rid: str, now: float
    ) -> tuple[list[str], list[Any]]:
        st = self.state
        keys = [st.instance_key] + [
            st.key(token, key.key_id, w)
            for w in ("money", "res", "lease", "gone", "requests", "tokens")
        ]
        args = [
            token, repr(now), self._clock, rid, st.bucket(now), st.num_buckets,
            key.max_requests_per_min or 0, key.max_tokens_per_min or 0, amount,
            -1 if key.budget_usd is None else repr(key.budget_usd), repr(cost),
            int(st.window_s * 2) + 2, repr(now + st.lease_s), GONE_KEEP_S,
        ]  # fmt: skip
        return keys, args

    def _admitted(self, out: Answer, now: float) -> Admitted | Refused:
        remaining = float(out.second) if out.second else None
        if out.verdict == "ok":
            return Admitted(self.state.bucket(now), remaining)
        retry = None
        if out.first:
            freed = int(out.first)
            width, n = self.state.width_s, self.state.num_buckets
            retry = math.inf if freed == -2 else max((freed + n + 1) * width - now, 0.0)
        return Refused(out.verdict, retry, remaining)

    def settle(
        self, key_id: str, rid: str, cost: float, tokens_bucket: int | None,
        tokens_delta: int, made_at: float, batch: int, used: tuple[int, int],
    ) -> _Settlement | None:  # fmt: skip
        """Reservation ``rid`` settled at ``cost``: what to :meth:`send` to Redis, if anything.

        Called as the usage joins the caller's unwritten total, with no ``await`` between:
        where this process has not joined the key's books yet (a rebuilt instance) the
        sync adds that total, so nothing is sent; during a sync, whose total was taken
        before, it is sent once the sync is done.
        """
        self._held.pop(rid, None)
        self._touched[key_id] = time.monotonic()
        token = self._token
        if token is None or key_id not in self._synced:
            return None  # counted in the unwritten usage the sync adds
        item = _Settlement(
            key_id, rid, cost, tokens_bucket, tokens_delta, made_at, token, batch, used
        )
        held = self._syncing.get(key_id)
        if held is not None:
            held.append(item)
            return None
        return item

    async def send(self, item: _Settlement | None) -> None:
        """Apply a settlement in Redis (once, by its id); kept for a retry if it fails."""
        if item is None:
            return
        try:
            out = await self.state.call("settle", *self._settle_call(item))
        except StateUnavailableError:
            self._backlog.append(item)
            return
        if out.verdict == "ok" and out.second and item.token == self._token:
            self._clock = max(self._clock, int(out.second))
        elif out.verdict in REBUILD and item.token == self._token:
            await self._rebuild(out, item.key_id, time.time())  # the sync carries its usage

    def _settle_call(self, item: _Settlement) -> tuple[list[str], list[Any]]:
        st, now = self.state, item.made_at
        keys = (
            [st.instance_key]
            + [
                st.key(item.token, item.key_id, w)
                for w in ("money", "res", "lease", "gone", "tokens")
            ]
            + [st.key(item.token, "w", self.process_id)]
        )
        args = [
            item.token, repr(time.time()), self._clock if item.token == self._token else 0,
            item.rid, repr(item.cost), -1 if item.tokens_bucket is None else item.tokens_bucket,
            item.tokens_delta, st.bucket(now), st.num_buckets, GONE_KEEP_S, KEY_TTL_S,
            item.batch, item.used[0], item.used[1], item.key_id, 1 if item.cancel else 0,
        ]  # fmt: skip
        return keys, args

    def wrote(self, deltas: Mapping[str, Totals], after: Mapping[str, int], batch: int) -> None:
        """The key store wrote ``deltas`` as ``batch``; ``after``: each key's request count
        right after (empty: the batch had been written already, by a survivor)."""
        self.mirror.wrote(batch)
        at = time.monotonic()
        with self._written_lock:
            for key_id, delta in deltas.items():
                if key_id in after:
                    self._written.append((key_id, after[key_id], delta.spent_usd, at))
            while self._written and self._written[0][3] < at - MEMORY_S:
                self._written.popleft()

    # -------------------------------------------------------------- rebuilding
    async def _join(self, key_id: str, now: float) -> None:
        """Make sure this process works under Redis's instance and has synced ``key_id``."""
        if self._token is None:
            await self.check_instance(now)
        if key_id not in self._synced:
            await self._sync(key_id, now)

    async def check_instance(self, now: float) -> None:
        """Read Redis's instance: join a new one, make one if gone, replace one gone back.

        The read is judged against what this process knew when it sent it: a settlement
        answered meanwhile may carry a later clock (or an admission a newer token) than
        this read saw, which is no sign of Redis going back.
        """
        token, clock = self._token, self._clock
        out = await self.state.call("instance", [self.state.instance_key], ["?", "", "", 0])
        if self._token != token:
            return  # another call moved this process to a newer instance meanwhile
        if not out.verdict:
            await self._make_instance(now, expected="")
        elif out.verdict != token:
            self._adopt(out.verdict)
        elif int(out.first or 0) < clock:  # Redis went back in time (a snapshot)
            await self._make_instance(now, expected=out.verdict)

    async def _rebuild(self, out: Answer, key_id: str, now: float) -> None:
        if out.verdict == "no-instance":
            await self._make_instance(now, expected="")
        elif out.verdict == "new-instance":
            self._adopt(out.first)
        elif out.verdict == "regressed":
            await self._make_instance(now, expected=out.first)
        else:  # unseeded: this key's books are gone (expired) under the same instance
            self._synced.discard(key_id)

    async def _make_instance(self, now: float, expected: str) -> None:
        """A new instance (grace if this process knew books before: others may hold usage)."""
        ready_at = now + self.grace_s if self._token is not None else 0.0
        args = [expected, secrets.token_hex(8), repr(ready_at), self._clock]
        out = await self.state.call("instance", [self.state.instance_key], args)
        if out.verdict:
            self._adopt(out.verdict)

    def _adopt(self, token: str) -> None:
        if token == self._token:
            return
        self._token, self._clock = token, 0
        self._synced.clear()

    async def _sync(self, key_id: str, now: float) -> None:
        """Join ``key_id``'s books: seed if needed, add this process's usage once, leases."""
        lock = self._locks.setdefault(key_id, asyncio.Lock())
        async with lock:
            if key_id in self._synced or self._token is None:
                return
            token = self._token
            await self.usage.writes_done()
            try:
                seed = await asyncio.to_thread(self.storage.usage, key_id)
            except Exception as exc:  # the key store unreadable: no seed, the key waits
                raise StateUnavailableError(
                    f"cannot read the key's spend from the key store to join Redis's books: {exc}"
                ) from None
            args = self._sync_args(token, key_id, seed, now)  # no await from here to the call
            self._syncing[key_id] = []
            try:
                out = await self.state.call("sync", self._sync_keys(token, key_id), args)
            finally:
                held = self._syncing.pop(key_id)
            if out.verdict != "ok":
                await self._rebuild(out, key_id, now)
                return
            if token == self._token:
                self._synced.add(key_id)
                for item in held:
                    await self.send(item)

    def _sync_keys(self, token: str, key_id: str) -> list[str]:
        st = self.state
        return [st.instance_key] + [
            st.key(token, key_id, w) for w in ("money", "res", "lease", "gone", "synced")
        ]

    def _sync_args(self, token: str, key_id: str, seed: Totals | None, now: float) -> list[Any]:
        with self._written_lock:
            batches = [(n, usd) for k, n, usd, _ in self._written if k == key_id]
        held = [(rid, cost) for rid, (k, cost) in self._held.items() if k == key_id]
        args: list[Any] = [
            token, repr(now), self._clock, self.process_id,
            "" if seed is None else repr(seed.spent_usd), 0 if seed is None else seed.num_requests,
            repr(self.usage.unwritten_usd(key_id)), repr(now + self.state.lease_s), KEY_TTL_S,
            len(batches),
        ]  # fmt: skip
        for n_after, usd in batches:
            args += [n_after, repr(usd)]
        for rid, cost in held:
            args += [rid, repr(cost)]
        return args

    # ------------------------------------------------------------ background
    async def maintain(self, now: float) -> None:
        """Check the instance, sync or renew every key in use, retry failed settlements.

        Run every ``renew_s`` by the gateway; raises :class:`StateUnavailableError` when
        Redis cannot be reached (the next round tries again).
        """
        await self.check_instance(now)
        if self._token is not None:
            await self.mirror.round(self._token, now)
        horizon = time.monotonic() - MEMORY_S
        self._touched = {k: t for k, t in self._touched.items() if t >= horizon}
        keys = set(self._touched) | {k for k, _ in self._held.values()}
        for key_id in sorted(keys):
            if key_id not in self._synced:
                await self._sync(key_id, now)
            elif any(k == key_id for k, _ in self._held.values()):
                await self._renew(key_id, now)
        backlog, self._backlog = self._backlog, []
        for item in backlog:
            await self.send(item)

    async def _renew(self, key_id: str, now: float) -> None:
        token = self._token
        assert token is not None
        held = [(rid, cost) for rid, (k, cost) in self._held.items() if k == key_id]
        args: list[Any] = [
            token, repr(now), self._clock, self.process_id, "", 0, "0",
            repr(now + self.state.lease_s), KEY_TTL_S, 0,
        ]  # fmt: skip
        for rid, cost in held:
            args += [rid, repr(cost)]
        out = await self.state.call("sync", self._sync_keys(token, key_id), args)
        if out.verdict != "ok":
            await self._rebuild(out, key_id, now)
