"""The key store: keys, per-key limits and budgets in memory, persisted behind.

The request path touches memory only. :meth:`KeyStore.authenticate` finds a key by
its id and checks the secret's digest; :meth:`KeyStore.admit` checks the key's
requests-per-minute and tokens-per-minute windows and its budget and, only if all
three allow, records the request and *reserves* its worst case: ``prompt_tokens +
max_tokens`` in the tokens window and their price at the dearest instance's prices
against the budget. :meth:`KeyStore.settle` replaces the reservation by what the
request used (its actual tokens at the prices of the instance that served it). Both
are synchronous, with no ``await`` between check and record, so the asyncio tasks of
one process cannot interleave inside them: a budget is never over-spent by requests
in flight, only by a request whose actual usage exceeds what it reserved (a prompt
counted higher upstream than the gateway's estimate).

Settled usage is kept as a pending delta per key and written by :meth:`flush`
(or :meth:`flush_async`, in a worker thread), which the gateway calls every
second or so; :meth:`close` flushes the rest. A crash loses at most the last flush
interval's usage and the requests in flight (under-counting, never double counting).
The sliding windows live in memory only: after a restart a key may use up to one
more window's worth. Several gateway worker processes on one store each keep their
own windows and reservations (limits then apply per worker), and
:meth:`refresh` picks up keys created or revoked by another process.

**Shared state** (``shared``: a :class:`~sincere.serve.security.shared.RedisState`):
windows, reservations and spend live in Redis as well, each admission and settlement one
atomic script, so limits and budgets hold across every worker and gateway on that Redis
(:class:`~sincere.serve.security.ledger.SharedLedger`: leases, settlement ids, rebuilding
lost books). Usage is still kept and flushed by each process as without it, so the
durable record never depends on Redis. Redis unreachable, stalled, or unable to vouch for
a key: :meth:`admit` refuses with 503 ``state_store_unavailable`` and a ``Retry-After``
(budgets fail closed); :meth:`maintain` (the gateway runs it every ``renew_s``) renews
leases and retries settlements Redis missed.

**Metrics** (``metrics``: a :class:`~sincere.serve.security.metrics.TenantMetrics`): each
change of a key's reservations, spend or record updates its tenant's reserved and
remaining-budget gauges there (a few integer additions), so a scrape never walks the keys.
With shared state those gauges are this process's view: the spend loaded from the durable
record plus what this process settled, less what it holds in flight (Redis is not asked).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
from collections.abc import Coroutine, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from sincere.core.errors import ConfigError
from sincere.serve.security.audit import AuditLog
from sincere.serve.security.keys import (
    KeyRecord,
    KeySpec,
    Prices,
    TokenBytes,
    hash_secret,
    new_token,
    split_token,
)
from sincere.serve.security.ledger import SharedLedger
from sincere.serve.security.metrics import TenantMetrics
from sincere.serve.security.shared import (
    Admitted,
    KeyLimits,
    RedisState,
    Refused,
    StateUnavailableError,
)
from sincere.serve.security.storage import KeyStorage, Totals, open_storage
from sincere.serve.security.windows import SlidingWindow

MAX_ID_TRIES = 8  # fresh ids drawn before giving up on a collision (48-bit ids: never)
MAX_VERIFIED = 65_536  # verified tokens remembered; the cache starts over beyond
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Reservation:
    """What one admitted request holds until it is settled."""

    number: int  # the store's sequence number of this reservation
    key_id: str
    tenant: str
    reserved_usd: float  # worst-case cost held against the budget
    reserved_tokens: int  # prompt + max_tokens held in the tokens-per-minute window
    tokens_bucket: int | None  # the window bucket holding them; None: no tokens limit
    made_at: float  # when it was admitted (the caller's clock)


@dataclass(frozen=True, slots=True)
class LimitRefusal:
    """Why a key's limits or budget refused a request."""

    status: int  # 429 (rate), 402 (budget) or 503 (shared state store unreachable)
    code: str  # requests_per_minute_exceeded, tokens_per_minute_exceeded, budget_exhausted
    message: str  # names the limit, the amounts and what would help
    retry_after_s: float | None  # when a retry can succeed; None: not by waiting
    remaining_usd: float | None  # budget left; None: the key has no budget


class _KeyState:
    """One key's record and its live accounting."""

    __slots__ = ("pending", "record", "requests", "reserved_usd", "tokens", "totals")

    def __init__(self, record: KeyRecord, totals: Totals, window_s: float, buckets: int) -> None:
        self.record = record
        spec = record.spec
        rpm, tpm = spec.max_requests_per_min, spec.max_tokens_per_min
        self.requests = None if rpm is None else SlidingWindow(rpm, window_s, buckets)
        self.tokens = None if tpm is None else SlidingWindow(tpm, window_s, buckets)
        self.totals = totals  # lifetime usage, including what is not yet flushed
        self.pending = Totals()  # settled but not yet written to storage
        self.reserved_usd = 0.0  # worst-case cost of requests in flight

    def remaining_usd(self) -> float | None:
        budget = self.record.spec.budget_usd
        if budget is None:
            return None
        return budget - self.totals.spent_usd - self.reserved_usd


class KeyStore:
    """Keys with their limits and budgets; see the module docstring for the guarantees."""

    def __init__(
        self,
        storage: KeyStorage,
        *,
        audit: AuditLog | None = None,
        metrics: TenantMetrics | None = None,
        window_s: float = 60.0,
        num_buckets: int = 60,
        shared: RedisState | None = None,
    ) -> None:
        self.storage = storage
        self.shared = shared  # None: windows, reservations and spend in this process
        self._remaining: dict[str, float | None] = {}  # shared: budget left at last admit
        self.ledger = None if shared is None else SharedLedger(shared, storage, self)
        self._batch = 1  # the flush batch pending usage belongs to (named in Redis's mirror)
        self._settling: set[asyncio.Task[None]] = set()  # settlements on their way to Redis
        self.audit = audit if audit is not None else AuditLog(None)
        self.metrics = metrics
        self.window_s = window_s  # the "per minute" window, seconds
        self.num_buckets = num_buckets  # its resolution
        self._states: dict[str, _KeyState] = {}
        self._open: dict[int, Reservation] = {}  # admitted, not yet settled
        self._num_reservations = 0
        self._verified: dict[str, str] = {}  # tokens already checked -> their key id
        self._writer: ThreadPoolExecutor | None = None  # the write-behind thread
        self._writing: tuple[Future[None], dict[str, Totals]] | None = None  # under way
        if metrics is not None:
            metrics.watch()
        records, totals = storage.load()
        for record in records:
            self._add_state(record, totals.get(record.key_id, Totals()))

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        audit_path: str | Path | None = None,
        metrics: TenantMetrics | None = None,
        shared: RedisState | None = None,
    ) -> KeyStore:
        """The store at ``path`` (SQLite or keys file) with its audit log beside it by default."""
        path = Path(path)
        audit = AuditLog(audit_path if audit_path is not None else default_audit_path(path))
        return cls(open_storage(path), audit=audit, metrics=metrics, shared=shared)

    def _add_state(self, record: KeyRecord, totals: Totals) -> _KeyState:
        state = _KeyState(record, totals, self.window_s, self.num_buckets)
        self._states[record.key_id] = state
        self._changed(state)
        return state

    def _changed(self, state: _KeyState) -> None:
        """Tell the metrics a key's reservations, spend or record changed (their gauges)."""
        if self.metrics is None:
            return
        record = state.record
        left = state.remaining_usd()
        self.metrics.key_changed(
            record.key_id,
            record.name if record.kind == "client" else None,
            state.reserved_usd,
            None if left is None else max(left, 0.0),
        )

    # ------------------------------------------------------------ administration
    def create(
        self,
        spec: KeySpec,
        *,
        actor: str,
        now: float,
        token_bytes: TokenBytes = secrets.token_bytes,
    ) -> tuple[str, KeyRecord]:
        """A new key: ``(token, record)``. The token is returned here and never again."""
        spec.validate(now)
        for _ in range(MAX_ID_TRIES):
            key_id, token = new_token(spec.kind, token_bytes)
            if key_id not in self._states:
                break
        else:
            raise ConfigError("could not draw an unused key id", value=MAX_ID_TRIES)
        salt, digest = hash_secret(token, token_bytes)
        record = KeyRecord(key_id, spec, salt, digest, created_at=now, created_by=actor)
        self.storage.insert(record)
        self._add_state(record, Totals())
        self.audit.record(now, actor, "key.create", key_id, _spec_details(spec))
        return token, record

    def revoke(self, key_id: str, *, actor: str, now: float) -> KeyRecord:
        """Revoke a key at once (its requests in flight finish); an unknown id is an error."""
        state = self._states.get(key_id)
        if state is None:
            raise ConfigError(
                "no key with this id", value=key_id, allowed="an id from `sincere keys list`"
            )
        if state.record.revoked_at is None:
            self.storage.revoke(key_id, now, actor)
            old = state.record
            state.record = replace(old, revoked_at=now, revoked_by=actor)
            self._changed(state)
            self.audit.record(now, actor, "key.revoke", key_id, {"name": old.name})
        return state.record

    def records(self) -> list[KeyRecord]:
        """Every key, revoked and expired ones too, in creation order."""
        return [s.record for s in self._states.values()]

    def totals(self, key_id: str) -> Totals:
        """A key's lifetime usage (including what is not flushed yet)."""
        return self._states[key_id].totals

    def refresh(self) -> int:
        """Re-read the records from storage (keys created or revoked elsewhere); new keys count."""
        return self.apply_loaded(*self.storage.load())

    async def refresh_async(self) -> int:
        """:meth:`refresh` with the read in a worker thread and the update on the caller's."""
        return self.apply_loaded(*await asyncio.to_thread(self.storage.load))

    def apply_loaded(self, records: list[KeyRecord], totals: dict[str, Totals]) -> int:
        """Add new keys and revocations from a storage read; the number of keys added."""
        added = 0
        for record in records:
            state = self._states.get(record.key_id)
            if state is None:
                self._add_state(record, totals.get(record.key_id, Totals()))
                added += 1
            elif record.revoked_at is not None and state.record.revoked_at is None:
                state.record = record
                self._changed(state)
        return added

    # -------------------------------------------------------------- request path
    def authenticate(self, token: str) -> KeyRecord | None:
        """The key a token belongs to (any state), or ``None`` if it is no valid key.

        A token verified once is remembered (token -> key id, at most
        :data:`MAX_VERIFIED` of them) so that a client's next requests skip parsing and
        the HMAC: one dict lookup. The record itself is read fresh every time, so a
        revocation or expiry applies at once.
        """
        key_id = self._verified.get(token)
        if key_id is not None:
            return self._states[key_id].record
        record = self._verify(token)
        if record is not None:
            if len(self._verified) >= MAX_VERIFIED:
                self._verified.clear()
            self._verified[token] = record.key_id
        return record

    def _verify(self, token: str) -> KeyRecord | None:
        parts = split_token(token)
        if parts is None:
            return None
        kind, key_id, secret = parts
        state = self._states.get(key_id)
        if state is None or state.record.kind != kind or not state.record.matches(secret):
            return None
        return state.record

    def admit(
        self, record: KeyRecord, prompt_tokens: int, max_tokens: int, prices: Prices, now: float
    ) -> Reservation | LimitRefusal:
        """Check limits and budget; if all allow, record the request and reserve its worst case."""
        state = self._states[record.key_id]
        amount = prompt_tokens + max_tokens
        if self.shared is not None:
            return self._run(self.admit_async(record, prompt_tokens, max_tokens, prices, now))
        refusal = _rate_refusal(state, now, amount)
        if refusal is not None:
            return refusal
        cost = prices.cost_usd(prompt_tokens, max_tokens)
        remaining = state.remaining_usd()
        if remaining is not None and (remaining <= 0 or cost > remaining):
            return _budget_refusal(remaining, cost, prompt_tokens, max_tokens)
        if state.requests is not None:
            state.requests.add(now, 1)
        bucket = None if state.tokens is None else state.tokens.add(now, amount)
        state.reserved_usd += cost
        self._changed(state)
        self._num_reservations += 1
        reservation = Reservation(
            self._num_reservations, record.key_id, record.name, cost, amount, bucket, now
        )
        self._open[reservation.number] = reservation
        return reservation

    async def admit_async(
        self, record: KeyRecord, prompt_tokens: int, max_tokens: int, prices: Prices, now: float
    ) -> Reservation | LimitRefusal:
        """:meth:`admit`; with shared state the Redis call is awaited, not blocking the loop."""
        if self.ledger is None:
            return self.admit(record, prompt_tokens, max_tokens, prices, now)
        state, spec = self._states[record.key_id], record.spec
        limits = KeyLimits(
            record.key_id, spec.max_requests_per_min, spec.max_tokens_per_min, spec.budget_usd
        )
        amount, cost = prompt_tokens + max_tokens, prices.cost_usd(prompt_tokens, max_tokens)
        self._num_reservations += 1
        number = self._num_reservations
        try:
            got = await self.ledger.admit(limits, amount, cost, self._rid(number), now)
        except StateUnavailableError as exc:
            return LimitRefusal(503, "state_store_unavailable", str(exc), exc.retry_after_s, None)
        return self._shared_answer(got, state, prompt_tokens, max_tokens, cost, now, number)

    def _rid(self, number: int) -> str:
        """A reservation's id in Redis: this process's id and its number."""
        assert self.ledger is not None
        return f"{self.ledger.process_id}:{number}"

    def _shared_answer(
        self,
        got: Admitted | Refused,
        state: _KeyState,
        prompt_tokens: int,
        max_tokens: int,
        cost: float,
        now: float,
        number: int,
    ) -> Reservation | LimitRefusal:
        record, spec = state.record, state.record.spec
        amount = prompt_tokens + max_tokens
        if not isinstance(got, Admitted):
            return _shared_refusal(got.limit, spec, amount, got.retry_after_s, got.remaining_usd,
                                   cost, prompt_tokens, max_tokens)  # fmt: skip
        self._remaining[record.key_id] = got.remaining_usd
        state.reserved_usd += cost  # this process's share, for the gauges (Redis decides)
        self._changed(state)
        bucket = got.bucket if spec.max_tokens_per_min is not None else None
        reservation = Reservation(number, record.key_id, record.name, cost, amount, bucket, now)
        self._open[reservation.number] = reservation
        return reservation

    def settle(
        self,
        reservation: Reservation,
        prompt_tokens: int,
        completion_tokens: int,
        prices: Prices,
    ) -> float:
        """Replace a reservation by actual usage at the serving instance's prices; its cost."""
        if self._open.pop(reservation.number, None) is None:
            raise ValueError(f"reservation {reservation.number} is not open (settled twice?)")
        cost = self._settle_here(reservation, prompt_tokens, completion_tokens, prices)
        if self.ledger is not None:
            call = self._settle_shared(reservation, (prompt_tokens, completion_tokens), cost)
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self._run(call)
            else:
                task = loop.create_task(call)
                self._settling.add(task)
                task.add_done_callback(self._settling.discard)
        return cost

    def _settle_here(
        self, reservation: Reservation, prompt_tokens: int, completion_tokens: int, prices: Prices
    ) -> float:
        """This process's side of a settlement: usage pending for the flush, windows, gauges."""
        state = self._states[reservation.key_id]
        cost = prices.cost_usd(prompt_tokens, completion_tokens)
        delta = Totals(cost, 1, prompt_tokens, completion_tokens)
        state.totals += delta
        state.pending += delta
        state.reserved_usd = max(0.0, state.reserved_usd - reservation.reserved_usd)
        self._changed(state)
        local = state.tokens if self.ledger is None else None  # shared: Redis holds windows
        if local is not None and reservation.tokens_bucket is not None:
            used = prompt_tokens + completion_tokens
            local.adjust(reservation.tokens_bucket, used - reservation.reserved_tokens)
        if self.metrics is not None:
            self.metrics.settled(reservation.tenant, prompt_tokens, completion_tokens, cost)
        return cost

    def _settle_shared(
        self, reservation: Reservation, used: tuple[int, int], cost: float
    ) -> Coroutine[Any, Any, None]:
        """The ledger's part, decided now (right after the usage became pending: a rebuild
        of Redis's books either counts it there or gets it from here, never both); the
        returned call sends it."""
        assert self.ledger is not None
        item = self.ledger.settle(
            reservation.key_id, self._rid(reservation.number), cost, reservation.tokens_bucket,
            sum(used) - reservation.reserved_tokens, reservation.made_at, self._batch, used,
        )  # fmt: skip
        return self.ledger.send(item)

    async def settle_async(
        self,
        reservation: Reservation,
        prompt_tokens: int,
        completion_tokens: int,
        prices: Prices,
    ) -> float:
        """:meth:`settle`; with shared state the Redis call is awaited (done when it returns)."""
        if self.ledger is None:
            return self.settle(reservation, prompt_tokens, completion_tokens, prices)
        if self._open.pop(reservation.number, None) is None:
            raise ValueError(f"reservation {reservation.number} is not open (settled twice?)")
        cost = self._settle_here(reservation, prompt_tokens, completion_tokens, prices)
        call = self._settle_shared(reservation, (prompt_tokens, completion_tokens), cost)
        task = asyncio.get_running_loop().create_task(call)
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)
        # shielded: a caller cancelled meanwhile must not leave the reservation held in Redis
        await asyncio.shield(task)
        return cost

    def _run(self, call: Coroutine[Any, Any, T]) -> T:
        """Run a shared-state call to the end from synchronous code (no loop running)."""
        shared = self.shared
        assert shared is not None

        async def run() -> T:
            try:
                return await call
            finally:
                await shared.aclose()  # its connections belong to this loop

        return asyncio.run(run())

    async def maintain(self, now: float) -> int:
        """Renew leases, follow Redis's instance, retry settlements Redis missed (shared)."""
        if self.ledger is not None:
            await self.ledger.maintain(now)
        return 0

    def unwritten_usd(self, key_id: str) -> float:
        """Spend settled here and not yet written: pending, or in a write not yet done."""
        state = self._states.get(key_id)
        usd = 0.0 if state is None else state.pending.spent_usd
        if self._writing is not None:
            job, batch = self._writing
            if not job.done() or job.exception() is not None:
                usd += batch[key_id].spent_usd if key_id in batch else 0.0
        return usd

    async def writes_done(self) -> None:
        """Wait until a write under way has ended (either way)."""
        if self._writing is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(asyncio.wrap_future(self._writing[0]))

    async def drain(self) -> None:
        """Wait for settlements under way (before the loop stops); close the loop's client."""
        while self._settling:
            await asyncio.gather(*list(self._settling), return_exceptions=True)
        if self.shared is not None:
            await self.shared.aclose()

    def remaining_usd(self, key_id: str) -> float | None:
        """Budget left after spend and reservations; ``None``: the key has no budget.

        With shared state: as Redis said at this key's last admission in this process.
        """
        if self.shared is not None:
            return self._remaining.get(key_id)
        return self._states[key_id].remaining_usd()

    def window_totals(self, key_id: str, now: float) -> tuple[int | None, int | None]:
        """Requests and tokens in the key's current windows (``None``: no such limit)."""
        state = self._states[key_id]
        requests = None if state.requests is None else state.requests.total(now)
        return requests, None if state.tokens is None else state.tokens.total(now)

    @property
    def num_open(self) -> int:
        """Reservations admitted and not yet settled."""
        return len(self._open)

    def budget_gauges(self) -> dict[str, tuple[float, float | None]]:
        """tenant -> (reserved USD, remaining budget USD or None), recomputed from every key.

        O(keys): a check of what the metrics keep as keys change (``metrics.gauges``), which
        is what a scrape reads; both sum exactly (``math.fsum``), so they agree to the bit.
        """
        held: dict[str, list[float]] = {}
        left: dict[str, list[float]] = {}
        for state in self._states.values():
            if state.record.kind != "client":
                continue
            name = state.record.name
            held.setdefault(name, []).append(state.reserved_usd)
            mine = state.remaining_usd()
            if mine is not None:
                left.setdefault(name, []).append(max(mine, 0.0))
        return {
            name: (math.fsum(values), math.fsum(left[name]) if name in left else None)
            for name, values in held.items()
        }

    # --------------------------------------------------------------- persistence
    def take_pending(self) -> dict[str, Totals]:
        """The usage settled since the last flush, cleared from memory."""
        pending = {}
        for key_id, state in self._states.items():
            if state.pending.num_requests:
                pending[key_id] = state.pending
                state.pending = Totals()
        return pending

    def restore_pending(self, pending: dict[str, Totals]) -> None:
        """Put back usage whose write failed, to be written by the next flush."""
        for key_id, delta in pending.items():
            state = self._states[key_id]
            state.pending = delta + state.pending

    def flush(self) -> int:
        """Write pending usage now (blocking); the number of keys written."""
        pending = self.take_pending()
        if pending:
            batch, self._batch = self._batch, self._batch + 1
            try:
                self._write(pending, batch)
            except BaseException:
                self.restore_pending(pending)
                raise
        return len(pending)

    async def flush_async(self) -> int:
        """:meth:`flush` with the write in a worker thread, off the event loop.

        Cancelled while the write is under way (the gateway stopping), the write still
        completes in its thread, and :meth:`close` waits for it: the usage is written
        once, neither lost nor counted twice.
        """
        pending = self.take_pending()
        if not pending:
            return 0
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="sincere-keystore")
        batch, self._batch = self._batch, self._batch + 1
        job = self._writer.submit(self._write, pending, batch)
        self._writing = (job, pending)
        try:
            await asyncio.shield(asyncio.wrap_future(job))
        except asyncio.CancelledError:
            raise  # the write goes on; close() waits for it
        except BaseException:
            self._writing = None
            self.restore_pending(pending)
            raise
        self._writing = None
        return len(pending)

    def _write(self, pending: Mapping[str, Totals], batch: int) -> None:
        """Add ``pending`` to the durable record (tell the ledger what was written)."""
        if self.ledger is None:
            self.storage.add_usage(pending)
            return
        after = self.storage.add_usage(pending, (self.ledger.process_id, batch))
        self.ledger.wrote(pending, after, batch)

    def close(self) -> None:
        """Wait for a write under way, flush the rest and close the storage."""
        if self._writing is not None:
            job, pending = self._writing
            self._writing = None
            try:
                job.result()
            except Exception:
                self.restore_pending(pending)  # written again below
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None
        self.flush()
        self.storage.close()
        if self.shared is not None:
            self.shared.close()


def default_audit_path(store_path: Path) -> Path:
    """``keys.db`` -> ``keys.db.audit.jsonl``."""
    return store_path.with_name(store_path.name + ".audit.jsonl")


def _rate_refusal(state: _KeyState, now: float, amount: int) -> LimitRefusal | None:
    spec = state.record.spec
    if state.requests is not None:
        wait = state.requests.retry_after_s(now, 1)
        if wait is not None:
            message = (
                f"requests per minute: the key's limit is {spec.max_requests_per_min}; "
                f"retry after {wait:.1f} s"
            )
            return LimitRefusal(429, "requests_per_minute_exceeded", message, wait, None)
    if state.tokens is not None:
        wait = state.tokens.retry_after_s(now, amount)
        if wait is not None:
            limit = spec.max_tokens_per_min
            if wait == float("inf"):
                message = (
                    f"tokens per minute: this request needs {amount} tokens (prompt + "
                    f"max_tokens), more than the key's limit of {limit}; lower max_tokens"
                )
                return LimitRefusal(429, "tokens_per_minute_exceeded", message, None, None)
            message = (
                f"tokens per minute: the key's limit is {limit}, this request needs {amount} "
                f"(prompt + max_tokens); retry after {wait:.1f} s"
            )
            return LimitRefusal(429, "tokens_per_minute_exceeded", message, wait, None)
    return None


def _shared_refusal(
    limit: str,
    spec: KeySpec,
    amount: int,
    retry_after_s: float | None,
    remaining: float | None,
    cost: float,
    prompt_tokens: int,
    max_tokens: int,
) -> LimitRefusal:
    """The refusal of a limit the shared state named (``rpm``, ``tpm`` or ``budget``)."""
    if limit == "budget":
        return _budget_refusal(remaining or 0.0, cost, prompt_tokens, max_tokens)
    wait = math.inf if retry_after_s is None else retry_after_s
    if limit == "rpm":
        message = (
            f"requests per minute: the key's limit is {spec.max_requests_per_min}; "
            f"retry after {wait:.1f} s"
        )
        return LimitRefusal(429, "requests_per_minute_exceeded", message, wait, None)
    cap = spec.max_tokens_per_min
    if wait == math.inf:
        message = (
            f"tokens per minute: this request needs {amount} tokens (prompt + "
            f"max_tokens), more than the key's limit of {cap}; lower max_tokens"
        )
        return LimitRefusal(429, "tokens_per_minute_exceeded", message, None, None)
    message = (
        f"tokens per minute: the key's limit is {cap}, this request needs {amount} "
        f"(prompt + max_tokens); retry after {wait:.1f} s"
    )
    return LimitRefusal(429, "tokens_per_minute_exceeded", message, wait, None)


def _budget_refusal(
    remaining: float, cost: float, prompt_tokens: int, max_tokens: int
) -> LimitRefusal:
    if remaining <= 0:
        message = f"budget: the key's budget is spent (remaining {max(remaining, 0.0):.6f} USD)"
    else:
        message = (
            f"budget: this request may cost up to {cost:.6f} USD ({prompt_tokens} prompt + "
            f"{max_tokens} max_tokens) and the key has {remaining:.6f} USD left; lower max_tokens"
        )
    return LimitRefusal(402, "budget_exhausted", message, None, max(remaining, 0.0))


def _spec_details(spec: KeySpec) -> dict[str, object]:
    return {
        "kind": spec.kind,
        "name": spec.name,
        "models": None if spec.models is None else sorted(spec.models),
        "tier": spec.tier,
        "priority_ceiling": spec.priority_ceiling,
        "max_requests_per_min": spec.max_requests_per_min,
        "max_tokens_per_min": spec.max_tokens_per_min,
        "budget_usd": spec.budget_usd,
        "expires_at": spec.expires_at,
    }
