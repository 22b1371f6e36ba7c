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
* **Settlement** (:meth:`SharedLedger.settle`): replaces the reservation by the cost, once
  per id (a settlement retried after a timeout is not applied twice). It is *deferred*
  (:meth:`SharedLedger.defer`): this process's next admission carries it, applied in the
  same script just before the admission -- one round trip per request -- or it goes in a
  batch of its own after at most ``settle_within_s``
  (:mod:`~sincere.serve.security.settlements`); until then its worst case stays reserved.
  One that fails is kept and retried by :meth:`maintain` (never on the request path); so
  is the cancellation of an admission that timed out (Redis may run it late: it then holds
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
import contextlib
import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import Any, Protocol

from sincere.serve.security.mirror import Mirror
from sincere.serve.security.settlements import (
    GONE_KEEP_S,
    KEY_TTL_S,
    Outbox,
    Settlement,
    settle_args,
    settle_call,
    settle_keys,
)
from sincere.serve.security.shared import (
    Admitted,
    Answer,
    KeyLimits,
    RedisState,
    Refused,
    StateUnavailableError,
)
from sincere.serve.security.storage import KeyStorage, Totals, Written

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
        self._syncing: dict[str, list[Settlement]] = {}  # settlements held during a sync
        self._locks: dict[str, asyncio.Lock] = {}
        self._held: dict[str, tuple[str, float]] = {}  # rid -> (key id, worst-case cost)
        self._touched: dict[str, float] = {}  # key id -> monotonic time of last use
        self._written: deque[tuple[str, int, float, float]] = deque()  # key, n_after, usd, at
        self._written_lock = threading.Lock()  # written by the key store's writer thread
        self._backlog: list[Settlement] = []  # failed: retried by maintain
        self.outbox = Outbox(state.settle_within_s, self.flush)  # deferred: the next call's
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
            carried = self.outbox.take(token)  # earlier settlements ride along
            call = self._admit_call(token, key, amount, cost, rid, now, carried)
            try:
                out = await self.state.call("admit", *call)
            except StateUnavailableError:  # it may still run (a stall): cancel it by its id
                cancel = Settlement(key.key_id, rid, 0.0, None, 0, now, token, 0, (0, 0), True)
                self._backlog += [*carried, cancel]
                raise
            if out.more:
                self._settled(carried, out.more[0], out.more[1], token)
            if out.verdict in REBUILD:  # not admitted (nor anything applied, but for unseeded)
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
            return _admitted(self.state, out, now)
        raise StateUnavailableError("the shared state store (Redis) keeps changing; retry")

    def _admit_call(
        self, token: str, key: KeyLimits, amount: int, cost: float, rid: str, now: float,
        carried: list[Settlement],
    ) -> tuple[list[str], list[Any]]:  # fmt: skip
        st = self.state
        keys = [st.instance_key] + [
            st.key(token, key.key_id, w)
            for w in ("money", "res", "lease", "gone", "requests", "tokens")
        ]
        keys.append(st.key(token, "w", self.process_id))
        args = [
            token, repr(now), self._clock, rid, st.bucket(now), st.num_buckets,
            key.max_requests_per_min or 0, key.max_tokens_per_min or 0, amount,
            -1 if key.budget_usd is None else repr(key.budget_usd), repr(cost),
            int(st.window_s * 2) + 2, repr(now + st.lease_s), GONE_KEEP_S, KEY_TTL_S,
        ]  # fmt: skip
        for item in carried:
            keys += settle_keys(st, item)
            args += settle_args(st, item)
        return keys, args

    def settle(
        self, key_id: str, rid: str, cost: float, tokens_bucket: int | None,
        tokens_delta: int, made_at: float, batch: int, used: tuple[int, int],
    ) -> Settlement | None:  # fmt: skip
        """Reservation ``rid`` settled at ``cost``: what to :meth:`defer` (or :meth:`send`)
        to Redis, if anything.

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
        item = Settlement(
            key_id, rid, cost, tokens_bucket, tokens_delta, made_at, token, batch, used
        )
        held = self._syncing.get(key_id)
        if held is not None:
            held.append(item)
            return None
        return item

    def defer(self, item: Settlement | None) -> None:
        """Send ``item`` with this process's next admission, or within ``settle_within_s``."""
        if item is not None:
            self.outbox.put(item)

    async def send(self, item: Settlement | None) -> None:
        """Apply a settlement in Redis now (once, by its id); kept for a retry if it fails."""
        if item is not None:
            await self._send([item])

    async def flush(self) -> None:
        """Send the deferred settlements that no admission carried (one call per batch)."""
        while self._token is not None and len(self.outbox):
            await self._send(self.outbox.take(self._token))

    async def drain(self) -> None:
        """Before stopping: send every deferred settlement (a failure leaves them unsent)."""
        await self.outbox.drain()
        await self.flush()

    async def _send(self, items: list[Settlement]) -> None:
        """One call applying ``items`` (all of one instance); kept for a retry if it fails."""
        if not items:
            return
        token, now = items[0].token, time.time()
        clock = self._clock if token == self._token else 0
        keys, args = settle_call(self.state, self.process_id, items, clock, now)
        try:
            out = await self.state.call("settle", keys, args)
        except StateUnavailableError:
            self._backlog += items
            return
        if out.verdict == "ok":
            self._settled(items, out.first, out.second, token)
        elif out.verdict in REBUILD and token == self._token:  # the sync carries their usage
            with contextlib.suppress(StateUnavailableError):  # else the next call rebuilds
                await self._rebuild(out, items[0].key_id, now)

    def _settled(self, items: list[Settlement], verdicts: str, clock: str, token: str) -> None:
        """Redis applied ``items`` (a verdict letter each; ``u``: the key's books expired, its
        next use syncs it) and answered its clock -- unless this process moved on meanwhile."""
        if token == self._token:
            self._clock = max(self._clock, int(clock or 0))
            self._synced -= {i.key_id for i, v in zip(items, verdicts, strict=True) if v == "u"}

    def wrote(self, written: Mapping[str, Written], batch: int) -> None:
        """The key store wrote ``batch``: per key what it added (nothing for what a
        survivor had written of it already) and the key's request count right after."""
        self.mirror.wrote(batch)
        at = time.monotonic()
        with self._written_lock:
            for key_id, w in written.items():
                self._written.append((key_id, w.num_requests_after, w.added.spent_usd, at))
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
                out = await self.state.call("sync", _sync_keys(self.state, token, key_id), args)
            finally:
                held = self._syncing.pop(key_id)
            if out.verdict != "ok":
                await self._rebuild(out, key_id, now)
                return
            if token == self._token:
                self._synced.add(key_id)
                for item in held:
                    await self.send(item)

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
        """Check the instance, sync or renew every key in use (first: a key that cannot
        sync does not stop the others; its error is raised at the end), beat the heartbeat
        (:class:`Mirror`), retry failed settlements. Run every ``renew_s`` by the gateway;
        raises :class:`StateUnavailableError` when Redis cannot be reached."""
        await self.check_instance(now)
        horizon = time.monotonic() - MEMORY_S
        self._touched = {k: t for k, t in self._touched.items() if t >= horizon}
        keys = set(self._touched) | {k for k, _ in self._held.values()}
        failed: StateUnavailableError | None = None
        for key_id in sorted(keys):
            try:
                if key_id not in self._synced:
                    await self._sync(key_id, now)
                elif any(k == key_id for k, _ in self._held.values()):
                    await self._renew(key_id, now)
            except StateUnavailableError as exc:
                failed = failed or exc
        if self._token is not None:
            await self.mirror.round(self._token, now)
        await self.flush()
        backlog, self._backlog = self._backlog, []
        for item in backlog:
            await self.send(item)
        if failed is not None:
            raise failed

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
        out = await self.state.call("sync", _sync_keys(self.state, token, key_id), args)
        if out.verdict != "ok":
            await self._rebuild(out, key_id, now)


def _admitted(state: RedisState, out: Answer, now: float) -> Admitted | Refused:
    """An admission's answer as this module's types (when a refused limit frees)."""
    remaining = float(out.second) if out.second else None
    if out.verdict == "ok":
        return Admitted(state.bucket(now), remaining)
    retry = None
    if out.first:
        freed = int(out.first)
        width, n = state.width_s, state.num_buckets
        retry = math.inf if freed == -2 else max((freed + n + 1) * width - now, 0.0)
    return Refused(out.verdict, retry, remaining)


def _sync_keys(state: RedisState, token: str, key_id: str) -> list[str]:
    """The Redis keys of :data:`~.redis_scripts.SYNC` for ``key_id`` under ``token``."""
    return [state.instance_key] + [
        state.key(token, key_id, w) for w in ("money", "res", "lease", "gone", "synced")
    ]
