"""The key store: keys, per-key limits and budgets in memory, persisted behind.

It is the face of three parts, each with its own module: the :class:`~.keybook.KeyBook`
(keys and their live accounting), :class:`~.reservations.Reservations` (admission and
settlement) and the :class:`~.usage_writer.UsageWriter` (usage written behind).

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
windows, reservations and spend live in Redis as well, each admission one atomic script
that also applies this process's settlements deferred since the last one (one round trip
per request; :mod:`~sincere.serve.security.settlements`), so limits and budgets hold
across every worker and gateway on that Redis
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
import secrets
from pathlib import Path

from sincere.serve.security.audit import AuditLog
from sincere.serve.security.keybook import MAX_VERIFIED, KeyBook
from sincere.serve.security.keys import KeyRecord, KeySpec, Prices, TokenBytes
from sincere.serve.security.ledger import SharedLedger
from sincere.serve.security.metrics import TenantMetrics
from sincere.serve.security.reservations import LimitRefusal, Reservation, Reservations
from sincere.serve.security.shared import RedisState
from sincere.serve.security.storage import KeyStorage, Totals, open_storage
from sincere.serve.security.usage_writer import UsageWriter

__all__ = ["MAX_VERIFIED", "KeyStore", "LimitRefusal", "Reservation", "default_audit_path"]


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
        self.audit = audit if audit is not None else AuditLog(None)
        self.metrics = metrics
        self.book = KeyBook(storage, self.audit, metrics, window_s, num_buckets)
        self.writer = UsageWriter(self.book, storage)
        self.ledger = None if shared is None else SharedLedger(shared, storage, self.writer)
        self.writer.ledger = self.ledger
        self.reservations = Reservations(self.book, self.writer, metrics, shared, self.ledger)
        if metrics is not None:
            metrics.watch()
        records, totals = storage.load()
        for record in records:
            self.book.add(record, totals.get(record.key_id, Totals()))

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
        return self.book.create(spec, actor, now, token_bytes)

    def revoke(self, key_id: str, *, actor: str, now: float) -> KeyRecord:
        """Revoke a key at once (its requests in flight finish); an unknown id is an error."""
        return self.book.revoke(key_id, actor, now)

    def records(self) -> list[KeyRecord]:
        """Every key, revoked and expired ones too, in creation order."""
        return [s.record for s in self.book.states.values()]

    def totals(self, key_id: str) -> Totals:
        """A key's lifetime usage (including what is not flushed yet)."""
        return self.book.states[key_id].totals

    def refresh(self) -> int:
        """Re-read the records from storage (keys created or revoked elsewhere); new keys count."""
        return self.book.apply_loaded(*self.storage.load())

    async def refresh_async(self) -> int:
        """:meth:`refresh` with the read in a worker thread and the update on the caller's."""
        return self.book.apply_loaded(*await asyncio.to_thread(self.storage.load))

    # -------------------------------------------------------------- request path
    def authenticate(self, token: str) -> KeyRecord | None:
        """The key a token belongs to (any state), or ``None`` (:meth:`KeyBook.authenticate`)."""
        return self.book.authenticate(token)

    def admit(
        self, record: KeyRecord, prompt_tokens: int, max_tokens: int, prices: Prices, now: float
    ) -> Reservation | LimitRefusal:
        """Check limits and budget; if all allow, record the request and reserve its worst case."""
        return self.reservations.admit(record, prompt_tokens, max_tokens, prices, now)

    async def admit_async(
        self, record: KeyRecord, prompt_tokens: int, max_tokens: int, prices: Prices, now: float
    ) -> Reservation | LimitRefusal:
        """:meth:`admit`; with shared state the Redis call is awaited, not blocking the loop."""
        return await self.reservations.admit_async(record, prompt_tokens, max_tokens, prices, now)

    def settle(
        self, reservation: Reservation, prompt_tokens: int, completion_tokens: int, prices: Prices
    ) -> float:
        """Replace a reservation by actual usage at the serving instance's prices; its cost.

        With shared state Redis's part is deferred: it rides the next admission, or goes
        within ``settle_within_s`` (the worst case stays reserved there until then)."""
        return self.reservations.settle(reservation, prompt_tokens, completion_tokens, prices)

    async def settle_async(
        self, reservation: Reservation, prompt_tokens: int, completion_tokens: int, prices: Prices
    ) -> float:
        """:meth:`settle`; with shared state the Redis call is awaited (done when it returns)."""
        return await self.reservations.settle_async(
            reservation, prompt_tokens, completion_tokens, prices
        )

    async def maintain(self, now: float) -> int:
        """Renew leases, follow Redis's instance, retry settlements Redis missed (shared)."""
        if self.ledger is not None:
            await self.ledger.maintain(now)
        return 0

    async def drain(self) -> None:
        """Send deferred settlements and wait for those under way (before the loop stops);
        close the loop's client."""
        await self.reservations.drain()

    def remaining_usd(self, key_id: str) -> float | None:
        """Budget left after spend and reservations; ``None``: the key has no budget.

        With shared state: as Redis said at this key's last admission in this process.
        """
        return self.reservations.remaining_usd(key_id)

    def window_totals(self, key_id: str, now: float) -> tuple[int | None, int | None]:
        """Requests and tokens in the key's current windows (``None``: no such limit)."""
        return self.book.window_totals(key_id, now)

    @property
    def num_open(self) -> int:
        """Reservations admitted and not yet settled."""
        return self.reservations.num_open

    def budget_gauges(self) -> dict[str, tuple[float, float | None]]:
        """tenant -> (reserved USD, remaining budget USD or None), recomputed from every key
        (:meth:`KeyBook.budget_gauges`)."""
        return self.book.budget_gauges()

    # --------------------------------------------------------------- persistence
    def flush(self) -> int:
        """Write pending usage now (blocking); the number of keys written."""
        return self.writer.flush()

    async def flush_async(self) -> int:
        """:meth:`flush` with the write in a worker thread (:meth:`UsageWriter.flush_async`)."""
        return await self.writer.flush_async()

    def close(self) -> None:
        """Wait for a write under way, flush the rest and close the storage."""
        self.writer.close()
        self.storage.close()
        if self.shared is not None:
            self.shared.close()


def default_audit_path(store_path: Path) -> Path:
    """``keys.db`` -> ``keys.db.audit.jsonl``."""
    return store_path.with_name(store_path.name + ".audit.jsonl")
