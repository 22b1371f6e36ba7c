"""The key book: every key's record and its live accounting, found by id or by token.

The book is what the key store keeps in memory about keys: their records (created,
revoked, re-read from storage), a :class:`KeyState` per key with its sliding windows,
lifetime and pending usage and the worst case its requests in flight hold, and the
tokens already verified. It writes nothing but new and revoked records (and their audit
lines); admission and settlement (:mod:`.reservations`) and the durable write of usage
(:mod:`.usage_writer`) work on its states. Each change of a key's reservations, spend or
record is told to the tenant metrics (:meth:`KeyBook.changed`), so a scrape never walks
the keys.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import replace

from sincere.core.errors import ConfigError
from sincere.serve.security.audit import AuditLog
from sincere.serve.security.keys import (
    KeyRecord,
    KeySpec,
    TokenBytes,
    hash_secret,
    new_token,
    split_token,
)
from sincere.serve.security.metrics import TenantMetrics
from sincere.serve.security.storage import KeyStorage, Totals
from sincere.serve.security.windows import SlidingWindow

MAX_ID_TRIES = 8  # fresh ids drawn before giving up on a collision (48-bit ids: never)
MAX_VERIFIED = 65_536  # verified tokens remembered; the cache starts over beyond


class KeyState:
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
        """Budget left after spend and reservations; None: the key has no budget."""
        budget = self.record.spec.budget_usd
        if budget is None:
            return None
        return budget - self.totals.spent_usd - self.reserved_usd


class KeyBook:
    """Keys by id with their states; creation, revocation, look-up by token, gauges."""

    def __init__(
        self,
        storage: KeyStorage,
        audit: AuditLog,
        metrics: TenantMetrics | None,
        window_s: float,
        num_buckets: int,
    ) -> None:
        self.storage = storage  # where records are inserted and revoked
        self.audit = audit
        self.metrics = metrics  # told of every key's change (None: no tenant metrics)
        self.window_s = window_s  # the "per minute" window, seconds
        self.num_buckets = num_buckets  # its resolution
        self.states: dict[str, KeyState] = {}  # key id -> state, in creation order
        self._verified: dict[str, str] = {}  # tokens already checked -> their key id

    def add(self, record: KeyRecord, totals: Totals) -> KeyState:
        """Put a key (and its lifetime usage) into the book."""
        state = KeyState(record, totals, self.window_s, self.num_buckets)
        self.states[record.key_id] = state
        self.changed(state)
        return state

    def changed(self, state: KeyState) -> None:
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

    def create(
        self, spec: KeySpec, actor: str, now: float, token_bytes: TokenBytes = secrets.token_bytes
    ) -> tuple[str, KeyRecord]:
        """A new key: ``(token, record)``. The token is returned here and never again."""
        spec.validate(now)
        for _ in range(MAX_ID_TRIES):
            key_id, token = new_token(spec.kind, token_bytes)
            if key_id not in self.states:
                break
        else:
            raise ConfigError("could not draw an unused key id", value=MAX_ID_TRIES)
        salt, digest = hash_secret(token, token_bytes)
        record = KeyRecord(key_id, spec, salt, digest, created_at=now, created_by=actor)
        self.storage.insert(record)
        self.add(record, Totals())
        self.audit.record(now, actor, "key.create", key_id, _spec_details(spec))
        return token, record

    def revoke(self, key_id: str, actor: str, now: float) -> KeyRecord:
        """Revoke a key at once (its requests in flight finish); an unknown id is an error."""
        state = self.states.get(key_id)
        if state is None:
            raise ConfigError(
                "no key with this id", value=key_id, allowed="an id from `sincere keys list`"
            )
        if state.record.revoked_at is None:
            self.storage.revoke(key_id, now, actor)
            old = state.record
            state.record = replace(old, revoked_at=now, revoked_by=actor)
            self.changed(state)
            self.audit.record(now, actor, "key.revoke", key_id, {"name": old.name})
        return state.record

    def apply_loaded(self, records: list[KeyRecord], totals: dict[str, Totals]) -> int:
        """Add new keys and revocations from a storage read; the number of keys added."""
        added = 0
        for record in records:
            state = self.states.get(record.key_id)
            if state is None:
                self.add(record, totals.get(record.key_id, Totals()))
                added += 1
            elif record.revoked_at is not None and state.record.revoked_at is None:
                state.record = record
                self.changed(state)
        return added

    def authenticate(self, token: str) -> KeyRecord | None:
        """The key a token belongs to (any state), or ``None`` if it is no valid key.

        A token verified once is remembered (token -> key id, at most
        :data:`MAX_VERIFIED` of them) so that a client's next requests skip parsing and
        the HMAC: one dict lookup. The record itself is read fresh every time, so a
        revocation or expiry applies at once.
        """
        key_id = self._verified.get(token)
        if key_id is not None:
            return self.states[key_id].record
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
        state = self.states.get(key_id)
        if state is None or state.record.kind != kind or not state.record.matches(secret):
            return None
        return state.record

    def window_totals(self, key_id: str, now: float) -> tuple[int | None, int | None]:
        """Requests and tokens in the key's current windows (``None``: no such limit)."""
        state = self.states[key_id]
        requests = None if state.requests is None else state.requests.total(now)
        return requests, None if state.tokens is None else state.tokens.total(now)

    def budget_gauges(self) -> dict[str, tuple[float, float | None]]:
        """tenant -> (reserved USD, remaining budget USD or None), recomputed from every key.

        O(keys): a check of what the metrics keep as keys change (``metrics.gauges``), which
        is what a scrape reads; both sum exactly (``math.fsum``), so they agree to the bit.
        """
        held: dict[str, list[float]] = {}
        left: dict[str, list[float]] = {}
        for state in self.states.values():
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
