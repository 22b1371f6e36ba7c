"""The key store: creation, revocation, persistence (SQLite and keys file), audit, metrics."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from sincere.core.errors import ConfigError, DataError
from sincere.serve.security.audit import AuditLog
from sincere.serve.security.keys import KeyRecord, KeySpec, Prices
from sincere.serve.security.keystore import KeyStore, LimitRefusal, Reservation
from sincere.serve.security.metrics import TenantMetrics
from sincere.serve.security.storage import (
    KEEP_BATCHES,
    FileStorage,
    SqliteStorage,
    Totals,
    Written,
    open_storage,
)

NOW = 1_700_000_000.0
PRICES = Prices.per_million(1.0, 2.0)


@pytest.fixture(params=["keys.db", "keys.json"])
def store_path(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A fresh store path of each kind (SQLite and keys file)."""
    return tmp_path / str(request.param)


def test_open_storage_by_suffix(tmp_path: Path) -> None:
    """SQLite for .db/.sqlite, a keys file for .json, a clear error otherwise."""
    assert isinstance(open_storage(tmp_path / "a.sqlite"), SqliteStorage)
    assert isinstance(open_storage(tmp_path / "a.json"), FileStorage)
    with pytest.raises(ConfigError, match=r"unknown key store kind.*'\.txt'.*allowed: \.db"):
        open_storage(tmp_path / "a.txt")


def test_create_shows_secret_once_and_stores_only_digest(store_path: Path) -> None:
    """The token is returned at creation; the store file never contains its secret."""
    store = KeyStore.open(store_path)
    token, record = store.create(KeySpec(name="acme"), actor="cli:test", now=NOW)
    store.close()
    secret = token.rpartition(".")[2]
    raw = store_path.read_bytes()
    assert record.key_id.encode() in raw
    assert secret.encode() not in raw
    assert token.encode() not in store_path.with_name(store_path.name + ".audit.jsonl").read_bytes()
    reopened = KeyStore.open(store_path)
    assert reopened.authenticate(token) == record


def test_authenticate_rejects_wrong_secret_kind_and_unknown_id(store_path: Path) -> None:
    """A token authenticates only with its own secret, its own kind and a known id."""
    store = KeyStore.open(store_path)
    token, _ = store.create(KeySpec(name="acme"), actor="t", now=NOW)
    prefix, _, secret = token.rpartition(".")
    assert store.authenticate(prefix + "." + secret[::-1]) is None
    assert store.authenticate(token.replace("sk-snc-", "sk-snc-admin-")) is None
    assert store.authenticate("sk-snc-000000000000." + secret) is None
    assert store.authenticate("garbage") is None


def test_revoke_persists_and_is_audited(store_path: Path) -> None:
    """A revoked key stays revoked after a restart; the audit log names who did it."""
    store = KeyStore.open(store_path)
    token, record = store.create(KeySpec(name="acme"), actor="cli:alice", now=NOW)
    store.revoke(record.key_id, actor="admin:ops/abc", now=NOW + 5)
    store.close()
    again = KeyStore.open(store_path)
    found = again.authenticate(token)
    assert found is not None and found.revoked_at == NOW + 5 and found.revoked_by == "admin:ops/abc"
    actions = [(r["action"], r["actor"], r["target"]) for r in again.audit.read()]
    assert actions == [
        ("key.create", "cli:alice", record.key_id),
        ("key.revoke", "admin:ops/abc", record.key_id),
    ]


def test_revoke_unknown_key_names_the_id(store_path: Path) -> None:
    """Revoking an id the store does not have is a clear error."""
    store = KeyStore.open(store_path)
    with pytest.raises(ConfigError, match=r"no key with this id.*'feedfeedfeed'.*keys list"):
        store.revoke("feedfeedfeed", actor="t", now=NOW)


def test_spend_and_counts_survive_restart(store_path: Path) -> None:
    """Settled usage is flushed on close and loaded back; the budget keeps counting down."""
    store = KeyStore.open(store_path)
    _, record = store.create(KeySpec(name="acme", budget_usd=1.0), actor="t", now=NOW)
    for _ in range(3):
        res = store.admit(record, 100, 50, PRICES, NOW)
        assert isinstance(res, Reservation)
        store.settle(res, 100, 40, PRICES)
    store.close()
    again = KeyStore.open(store_path)
    totals = again.totals(record.key_id)
    assert totals.num_requests == 3
    assert totals.num_prompt_tokens == 300 and totals.num_completion_tokens == 120
    assert totals.spent_usd == pytest.approx(3 * (100e-6 + 80e-6))
    assert again.remaining_usd(record.key_id) == pytest.approx(1.0 - totals.spent_usd)


def test_usage_from_two_stores_adds_up(store_path: Path) -> None:
    """Two processes' flushes (two store objects) add to, never overwrite, a key's totals."""
    first = KeyStore.open(store_path)
    _, record = first.create(KeySpec(name="acme"), actor="t", now=NOW)
    second = KeyStore.open(store_path)
    for store in (first, second, first):
        res = store.admit(record, 10, 10, PRICES, NOW)
        assert isinstance(res, Reservation)
        store.settle(res, 10, 5, PRICES)
        store.flush()
    third = KeyStore.open(store_path)
    assert third.totals(record.key_id).num_requests == 3


def test_refresh_sees_keys_created_and_revoked_elsewhere(store_path: Path) -> None:
    """A running store picks up another process's new key and revocation on refresh."""
    running = KeyStore.open(store_path)
    cli = KeyStore.open(store_path)
    token, record = cli.create(KeySpec(name="late"), actor="cli:t", now=NOW)
    assert running.authenticate(token) is None
    assert running.refresh() == 1
    assert running.authenticate(token) == record
    cli.revoke(record.key_id, actor="cli:t", now=NOW + 1)
    running.refresh()
    found = running.authenticate(token)
    assert found is not None and found.revoked_at == NOW + 1


def _settled_once(
    path: Path, prompt_tokens: int = 10, completion_tokens: int = 10
) -> tuple[KeyStore, KeyRecord, Reservation]:
    """A store at ``path`` with one key and one request admitted and settled."""
    store = KeyStore.open(path)
    _, record = store.create(KeySpec(name="acme"), actor="t", now=NOW)
    res = store.admit(record, 10, 10, PRICES, NOW)
    assert isinstance(res, Reservation)
    store.settle(res, prompt_tokens, completion_tokens, PRICES)
    return store, record, res


def test_failed_flush_keeps_usage_for_the_next(tmp_path: Path) -> None:
    """If writing usage fails, the pending deltas are kept and written by the next flush."""
    store, record, _ = _settled_once(tmp_path / "k.db")
    real = store.storage.add_usage

    def broken(deltas: object) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    store.storage.add_usage = broken  # type: ignore[method-assign]
    with pytest.raises(sqlite3.OperationalError):
        store.flush()
    store.storage.add_usage = real  # type: ignore[method-assign]
    assert store.flush() == 1
    store.close()
    assert KeyStore.open(tmp_path / "k.db").totals(record.key_id).num_requests == 1


def test_a_batch_written_again_adds_only_what_it_grew_by(store_path: Path) -> None:
    """A writer's batch is a running total: a survivor writes 5 requests of it, the writer
    (stalled, not dead) settles 5 more into it and writes all 10: the store holds 10, once;
    writing the batch again, or a view of it smaller in every figure, adds nothing."""
    storage = open_storage(store_path)
    part, whole = Totals(20.0, 5, 50, 20), Totals(40.0, 10, 100, 40)
    first = storage.add_usage({"k1": part}, ("w", 1))
    assert first["k1"].added == part and first["k1"].num_requests_after == 5
    again = storage.add_usage({"k1": whole, "k2": Totals(4.0, 1, 10, 4)}, ("w", 1))
    assert again["k1"].added == Totals(20.0, 5, 50, 20) and again["k1"].num_requests_after == 10
    assert again["k2"].added == Totals(4.0, 1, 10, 4)
    assert storage.add_usage({"k1": whole}, ("w", 1)) == {}
    assert storage.add_usage({"k1": part}, ("w", 1)) == {}
    assert storage.add_usage({"k1": part}, ("other", 1))["k1"].added == part  # its own batch
    assert storage.usage("k1") == Totals(60.0, 15, 150, 60)
    storage.close()
    assert open_storage(store_path).usage("k1") == Totals(60.0, 15, 150, 60)


def test_a_batch_written_by_two_processes_at_once_is_added_once(tmp_path: Path) -> None:
    """Another process writes batch ("w", 1) and holds its transaction open while this one
    writes the same batch (a survivor and the stalled gateway it took for dead): this one
    waits for the other's commit and then reads the batch's totals, adding nothing. Read
    before the other committed, both would add it."""
    path = tmp_path / "k.db"
    storage = open_storage(path)
    whole = Totals(4.0, 1, 10, 4)
    other = sqlite3.connect(path, timeout=5.0, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO batches VALUES ('w', 1, 'k', 4.0, 1, 10, 4)")
    other.execute("INSERT INTO usage VALUES ('k', 4.0, 1, 10, 4)")
    result: list[object] = []
    writer = threading.Thread(
        target=lambda: result.append(storage.add_usage({"k": whole}, ("w", 1)))
    )
    writer.start()
    time.sleep(0.3)  # the writer is waiting for the other's lock
    other.execute("COMMIT")
    other.close()
    writer.join(10)
    assert result == [{}]
    assert storage.usage("k") == whole
    storage.close()


def test_a_writers_batches_long_past_are_closed(store_path: Path) -> None:
    """The store keeps the written totals of a writer's KEEP_BATCHES latest batches; a batch
    older than that (or than what a store of the previous version recorded) adds nothing."""
    storage = open_storage(store_path)
    one = Totals(1.0, 1, 1, 1)
    for batch in range(1, KEEP_BATCHES + 3):
        assert storage.add_usage({"k": one}, ("w", batch))["k"].added == one
    assert storage.add_usage({"k": one + one}, ("w", 2)) == {}  # closed: pruned
    assert storage.add_usage({"k": one + one}, ("w", 3))["k"].added == one  # kept
    assert storage.usage("k").num_requests == KEEP_BATCHES + 3
    storage.close()
    if store_path.suffix == ".db":  # a writer row of version-1 stores: its last batch written
        with sqlite3.connect(store_path) as db:
            db.execute("INSERT INTO writers VALUES ('old', 7)")
    else:
        doc = json.loads(store_path.read_text())
        doc["writers"]["old"] = 7
        store_path.write_text(json.dumps(doc))
    storage = open_storage(store_path)
    assert storage.add_usage({"k": one}, ("old", 7)) == {}
    assert storage.add_usage({"k": one}, ("old", 8))["k"].added == one
    storage.close()


class _Ledger:
    """What the usage writer tells a shared ledger: each batch written, by number."""

    process_id = "p"

    def __init__(self) -> None:
        self.batches: list[tuple[int, dict[str, float]]] = []

    def wrote(self, written: dict[str, Written], batch: int) -> None:
        self.batches.append((batch, {k: w.added.spent_usd for k, w in written.items()}))


def test_a_failed_batch_is_written_again_under_its_own_number(tmp_path: Path) -> None:
    """Batch 1's write fails; usage settled after goes in batch 2; the next flush writes
    batch 1 then batch 2, each under its own number (a survivor may have written batch 1
    from Redis's mirror: a batch must stay the same usage to be added once)."""
    store, record, _ = _settled_once(tmp_path / "k.db")
    ledger = _Ledger()
    store.writer.ledger = ledger  # type: ignore[assignment]
    real = store.storage.add_usage

    def broken(deltas: object, writer: object = None) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    store.storage.add_usage = broken  # type: ignore[method-assign]
    with pytest.raises(sqlite3.OperationalError):
        store.flush()
    usd = store.totals(record.key_id).spent_usd
    assert store.writer.unwritten_usd(record.key_id) == pytest.approx(usd)
    res = store.admit(record, 10, 10, PRICES, NOW)
    assert isinstance(res, Reservation)
    store.settle(res, 10, 10, PRICES)
    assert store.writer.batch == 2
    store.storage.add_usage = real  # type: ignore[method-assign]
    assert store.flush() == 2
    assert [b for b, _ in ledger.batches] == [1, 2]
    assert ledger.batches[0][1][record.key_id] == pytest.approx(usd)
    assert store.writer.unwritten_usd(record.key_id) == 0.0
    store.close()  # everything written: its batches are closed, their totals dropped
    assert KeyStore.open(tmp_path / "k.db").totals(record.key_id).num_requests == 2
    with sqlite3.connect(tmp_path / "k.db") as db:
        assert db.execute("SELECT COUNT(*) FROM batches").fetchone() == (0,)
    late = open_storage(tmp_path / "k.db")  # a survivor writing an untrimmed mirror
    assert late.add_usage({record.key_id: Totals(9.0, 1, 1, 1)}, ("p", 2)) == {}
    late.close()


def test_a_stopping_writer_closes_its_batches(store_path: Path) -> None:
    """close_writer: the writer's batches up to the one named add nothing when written
    again and keep no totals; a later batch is a new one."""
    storage = open_storage(store_path)
    one = Totals(1.0, 1, 1, 1)
    for batch in (1, 2):
        storage.add_usage({"k": one}, ("w", batch))
    storage.add_usage({"k": one}, ("other", 1))
    storage.close_writer("w", 2)
    assert storage.add_usage({"k": one + one}, ("w", 2)) == {}
    assert storage.add_usage({"k": one}, ("w", 3))["k"].added == one
    assert storage.add_usage({"k": one + one}, ("other", 1))["k"].added == one  # kept
    assert storage.usage("k").num_requests == 5
    storage.close()


def test_flush_async_writes_off_the_loop(tmp_path: Path) -> None:
    """flush_async writes pending usage from a worker thread; nothing is lost."""
    store, record, _ = _settled_once(tmp_path / "k.db", 7, 3)
    assert asyncio.run(store.flush_async()) == 1
    assert asyncio.run(store.flush_async()) == 0
    assert KeyStore.open(tmp_path / "k.db").totals(record.key_id).num_prompt_tokens == 7


def test_flush_cancelled_mid_write_is_written_once(tmp_path: Path) -> None:
    """A flush cancelled while its thread writes (a gateway stopping) counts the usage once."""
    store, record, _ = _settled_once(tmp_path / "k.db", 7, 3)
    real = store.storage.add_usage

    def slow(deltas: dict[str, Totals]) -> None:
        time.sleep(0.2)
        real(deltas)

    store.storage.add_usage = slow  # type: ignore[method-assign]

    async def stop_mid_write() -> None:
        task = asyncio.create_task(store.flush_async())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(stop_mid_write())
    store.close()
    totals = KeyStore.open(tmp_path / "k.db").totals(record.key_id)
    assert (totals.num_requests, totals.num_prompt_tokens) == (1, 7)


def test_settle_twice_is_an_error(tmp_path: Path) -> None:
    """A reservation is settled once; a second settle raises instead of double counting."""
    store, _, res = _settled_once(tmp_path / "k.db")
    with pytest.raises(ValueError, match="not open"):
        store.settle(res, 10, 10, PRICES)


def test_keys_file_is_private_and_malformed_file_is_a_clear_error(tmp_path: Path) -> None:
    """The keys file is written mode 0600; a broken one fails at open naming file and line."""
    path = tmp_path / "keys.json"
    store = KeyStore.open(path)
    store.create(KeySpec(name="acme"), actor="t", now=NOW)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert json.loads(path.read_text())["format"] == "sincere-keys"
    path.write_text('{"format": "sincere-keys",\n "version": 1,\n oops}')
    with pytest.raises(DataError, match=r"keys\.json:3: not JSON"):
        KeyStore.open(path)
    path.write_text('{"format": "other"}')
    with pytest.raises(DataError, match="not a keys file"):
        KeyStore.open(path)


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    """A file that is not SQLite fails at open with the path in the message."""
    path = tmp_path / "keys.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigError, match=r"keys\.db: not a usable key database"):
        KeyStore.open(path)


def test_audit_log_redacts_secret_looking_strings(tmp_path: Path) -> None:
    """An audit record never carries a token or a password, even if a caller passes one."""
    log = AuditLog(tmp_path / "audit.jsonl")
    log.record(NOW, "admin:ops/1", "instance.add", "emu", {"url": "http://u:hunter2@h:1"})
    log.record(NOW, "cli:t", "x", "sk-snc-0123456789ab.SECRETSECRET", {"k": ["password=hunter2"]})
    text = (tmp_path / "audit.jsonl").read_text()
    assert "hunter2" not in text and "SECRETSECRET" not in text
    assert [r["at_iso"] for r in log.read()] == ["2023-11-14T22:13:20.000+00:00"] * 2


def test_metrics_per_tenant_on_the_given_registry(tmp_path: Path) -> None:
    """Settles count tokens and spend per tenant; gauges show reserved and remaining budget."""
    registry = CollectorRegistry()
    store = KeyStore.open(tmp_path / "k.db", metrics=TenantMetrics(registry))
    _, record = store.create(KeySpec(name="acme", budget_usd=1.0), actor="t", now=NOW)
    held = store.admit(record, 1000, 1000, PRICES, NOW)
    done = store.admit(record, 100, 100, PRICES, NOW)
    assert isinstance(held, Reservation) and isinstance(done, Reservation)
    store.settle(done, 100, 50, PRICES)
    values = _samples(generate_latest(registry).decode())
    assert values['sincere_tenant_tokens_total{kind="prompt",tenant="acme"}'] == 100
    assert values['sincere_tenant_tokens_total{kind="completion",tenant="acme"}'] == 50
    assert values['sincere_tenant_spend_usd_total{tenant="acme"}'] == pytest.approx(0.0002)
    assert values['sincere_tenant_reserved_usd{tenant="acme"}'] == pytest.approx(0.003)
    assert values['sincere_tenant_budget_remaining_usd{tenant="acme"}'] == pytest.approx(0.9968)


def _samples(text: str) -> dict[str, float]:
    """Prometheus text as {name{labels}: value}."""
    lines = (line.rpartition(" ") for line in text.splitlines() if not line.startswith("#"))
    return {name: float(value) for name, _, value in lines if name}


def test_budget_refusal_carries_remaining(tmp_path: Path) -> None:
    """A worst case over the remaining budget is refused 402 with what is left."""
    store = KeyStore.open(tmp_path / "k.db")
    _, record = store.create(KeySpec(name="acme", budget_usd=0.001), actor="t", now=NOW)
    refusal = store.admit(record, 100, 1000, PRICES, NOW)  # 0.0021 USD worst case
    assert isinstance(refusal, LimitRefusal)
    assert refusal.status == 402 and refusal.remaining_usd == pytest.approx(0.001)
    assert "may cost up to 0.002100 USD" in refusal.message
    assert store.totals(record.key_id) == Totals()


def test_verified_tokens_are_remembered_but_revocation_applies_at_once(store_path: Path) -> None:
    """A second check of a token skips the HMAC, yet sees a revocation; a forgery stays out."""
    store = KeyStore.open(store_path)
    token, record = store.create(KeySpec(name="acme"), actor="t", now=NOW)
    assert store.authenticate(token) == record
    assert store.authenticate(token) == record  # from the cache of verified tokens
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert store.authenticate(forged) is None
    store.revoke(record.key_id, actor="t", now=NOW + 1)
    again = store.authenticate(token)
    assert again is not None and again.revoked_at == NOW + 1
    store.close()
