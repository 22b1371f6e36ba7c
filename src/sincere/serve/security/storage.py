"""Where keys and their usage persist: a SQLite database (default) or a JSON keys file.

Both keep the same two things: the key records (salted digests, never secrets) and
each key's lifetime usage (:class:`Totals`: spend, requests, prompt and completion
tokens). Usage is only ever *added to* (``add_usage`` takes deltas), so two
processes writing the same store (the gateway flushing spend, ``sincere keys``
creating or revoking a key) never overwrite each other's figures.

A gateway sharing books in Redis writes each flush as a numbered *batch* of its own,
and a survivor may write a killed (or stalled) gateway's batch from Redis's mirror of
it: a batch is a running total, written by either, and the store keeps what each of a
writer's recent :data:`KEEP_BATCHES` batches has added per key, so a batch written again
adds only what it grew by since (never twice, and a stalled gateway's batch that kept
growing after a survivor wrote part of it is not lost). Batches older than those are
closed: written again, they add nothing.

* :class:`SqliteStorage` (``*.db``, ``*.sqlite``, ``*.sqlite3``): WAL journal,
  ``synchronous=NORMAL`` (a committed transaction survives a process crash; a power
  loss may lose the last ones), a 5 s busy timeout for writers in other processes, one
  connection guarded by a lock so a flush may run in a worker thread.
* :class:`FileStorage` (``*.json``): one JSON document rewritten atomically (temporary
  file + rename, mode 0600) under an exclusive ``flock`` on ``PATH.lock``, re-read
  before every change. Meant for a small set of keys kept beside a config.

:func:`open_storage` picks one by the file's suffix.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sincere.core.errors import ConfigError, DataError
from sincere.serve.security.keys import KEY_KINDS, KeyRecord, KeySpec

SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
FILE_SUFFIXES = (".json",)
FORMAT = "sincere-keys"
VERSION = 1
KEEP_BATCHES = 16  # a writer's latest batches whose written totals are kept, per key


@dataclass(frozen=True, slots=True)
class Totals:
    """A key's usage: lifetime totals, or a delta to add to them."""

    spent_usd: float = 0.0
    num_requests: int = 0
    num_prompt_tokens: int = 0
    num_completion_tokens: int = 0

    def __add__(self, other: Totals) -> Totals:
        return Totals(
            self.spent_usd + other.spent_usd,
            self.num_requests + other.num_requests,
            self.num_prompt_tokens + other.num_prompt_tokens,
            self.num_completion_tokens + other.num_completion_tokens,
        )

    def excess(self, written: Totals) -> Totals:
        """What this running total has beyond ``written`` (an earlier view of it), per
        figure, never negative: the part of a batch not written yet. Spend differing by
        rounding alone (the same costs summed in another order) adds nothing."""
        usd = self.spent_usd - written.spent_usd
        return Totals(
            usd if usd > 1e-9 * max(1.0, abs(self.spent_usd)) else 0.0,
            max(self.num_requests - written.num_requests, 0),
            max(self.num_prompt_tokens - written.num_prompt_tokens, 0),
            max(self.num_completion_tokens - written.num_completion_tokens, 0),
        )

    def most(self, other: Totals) -> Totals:
        """The larger of each figure (a batch's written total after writing ``other``)."""
        return Totals(
            max(self.spent_usd, other.spent_usd),
            max(self.num_requests, other.num_requests),
            max(self.num_prompt_tokens, other.num_prompt_tokens),
            max(self.num_completion_tokens, other.num_completion_tokens),
        )

    def is_zero(self) -> bool:
        """No usage at all."""
        return not (
            self.spent_usd or self.num_requests or self.num_prompt_tokens
            or self.num_completion_tokens
        )  # fmt: skip


class KeyStorage(Protocol):
    """What :class:`~sincere.serve.security.keystore.KeyStore` needs from a store."""

    path: Path

    def load(self) -> tuple[list[KeyRecord], dict[str, Totals]]:
        """Every key record and every key's usage totals."""
        ...

    def insert(self, record: KeyRecord) -> None:
        """Add a new key; raises ``ConfigError`` if its id exists."""
        ...

    def revoke(self, key_id: str, at: float, by: str) -> None:
        """Mark a key revoked (idempotent for an already revoked key)."""
        ...

    def usage(self, key_id: str) -> Totals:
        """One key's usage totals as written now (zero if none)."""
        ...

    def add_usage(
        self, deltas: Mapping[str, Totals], writer: tuple[str, int] | None = None
    ) -> dict[str, Written]:
        """Add each delta to its key's totals, in one transaction; per key what was added
        and its request count right after (so a reader can tell whether it saw this write).

        ``writer``: (writer id, batch number): ``deltas`` are that batch's running totals,
        and each key gets only what they exceed the batch's totals written before (by its
        writer or a survivor writing for it); keys that add nothing are left out (``{}``:
        the batch was written already). A batch :data:`KEEP_BATCHES` or more below the
        writer's latest adds nothing.
        """
        ...

    def close_writer(self, writer_id: str, last_batch: int) -> None:
        """A writer stopping with all its batches up to ``last_batch`` written: they are
        closed (written again, by a survivor from a mirror not yet trimmed, they add
        nothing) and their kept totals dropped."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Written:
    """What :meth:`KeyStorage.add_usage` added to one key, and its request count after."""

    added: Totals
    num_requests_after: int


def open_storage(path: str | Path) -> KeyStorage:
    """SQLite for ``.db``/``.sqlite``/``.sqlite3``, a JSON keys file for ``.json``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in SQLITE_SUFFIXES:
        return SqliteStorage(path)
    if suffix in FILE_SUFFIXES:
        return FileStorage(path)
    raise ConfigError(
        "unknown key store kind (by file suffix)",
        where=path,
        value=path.suffix,
        allowed=SQLITE_SUFFIXES + FILE_SUFFIXES,
    )


# ------------------------------------------------------------------- row encoding
def record_to_row(record: KeyRecord) -> dict[str, Any]:
    """A record as a flat, JSON-safe dict (digest and salt in hex)."""
    s = record.spec
    return {
        "key_id": record.key_id,
        "kind": s.kind,
        "name": s.name,
        "salt": record.salt.hex(),
        "digest": record.digest.hex(),
        "created_at": record.created_at,
        "created_by": record.created_by,
        "models": None if s.models is None else sorted(s.models),
        "tier": s.tier,
        "priority_ceiling": s.priority_ceiling,
        "max_requests_per_min": s.max_requests_per_min,
        "max_tokens_per_min": s.max_tokens_per_min,
        "budget_usd": s.budget_usd,
        "expires_at": s.expires_at,
        "revoked_at": record.revoked_at,
        "revoked_by": record.revoked_by,
    }


def record_from_row(row: Mapping[str, Any], where: Path) -> KeyRecord:
    """The inverse of :func:`record_to_row`; a ``DataError`` naming the bad field."""
    try:
        if row["kind"] not in KEY_KINDS:
            raise ValueError(f"kind {row['kind']!r} is not one of {KEY_KINDS}")
        models = row["models"]
        if isinstance(models, str):
            models = json.loads(models)
        spec = KeySpec(
            kind=row["kind"],
            name=str(row["name"]),
            models=None if models is None else frozenset(str(m) for m in models),
            tier=row["tier"],
            priority_ceiling=row["priority_ceiling"],
            max_requests_per_min=row["max_requests_per_min"],
            max_tokens_per_min=row["max_tokens_per_min"],
            budget_usd=row["budget_usd"],
            expires_at=row["expires_at"],
        )
        return KeyRecord(
            key_id=str(row["key_id"]),
            spec=spec,
            salt=bytes.fromhex(row["salt"]),
            digest=bytes.fromhex(row["digest"]),
            created_at=float(row["created_at"]),
            created_by=str(row["created_by"]),
            revoked_at=row["revoked_at"],
            revoked_by=row["revoked_by"],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(
            f"bad key record: {exc}", path=where, column="keys", value=row.get("key_id")
        ) from None


_COLUMNS = (
    "key_id",
    "kind",
    "name",
    "salt",
    "digest",
    "created_at",
    "created_by",
    "models",
    "tier",
    "priority_ceiling",
    "max_requests_per_min",
    "max_tokens_per_min",
    "budget_usd",
    "expires_at",
    "revoked_at",
    "revoked_by",
)  # fmt: skip  (the keys of record_to_row, in table order)
_KEY_COLUMNS = ", ".join(c + (" TEXT PRIMARY KEY" if c == "key_id" else "") for c in _COLUMNS)
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS keys ({_KEY_COLUMNS});
CREATE TABLE IF NOT EXISTS usage (
    key_id TEXT PRIMARY KEY, spent_usd REAL NOT NULL, num_requests INTEGER NOT NULL,
    num_prompt_tokens INTEGER NOT NULL, num_completion_tokens INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS writers (writer_id TEXT PRIMARY KEY, last_batch INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    writer_id TEXT NOT NULL, batch INTEGER NOT NULL, key_id TEXT NOT NULL,
    spent_usd REAL NOT NULL, num_requests INTEGER NOT NULL, num_prompt_tokens INTEGER NOT NULL,
    num_completion_tokens INTEGER NOT NULL, PRIMARY KEY (writer_id, batch, key_id));
"""
# writers.last_batch: the writer's batches up to it are closed (add nothing); batches: what
# each of its later batches has written, per key (pruned to KEEP_BATCHES)


class SqliteStorage:
    """Keys and usage in SQLite (WAL), safe for one writer thread at a time per process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            if not path.exists():  # private from the start: it holds digests and spend
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            self._db = sqlite3.connect(path, timeout=5.0, check_same_thread=False)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            with self._db:
                self._db.executescript(_SCHEMA)
                self._db.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('format', ?), ('version', ?)",
                    (FORMAT, str(VERSION)),
                )
            version = self._db.execute("SELECT value FROM meta WHERE name='version'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"not a usable key database: {exc}", where=path) from None
        except OSError as exc:
            raise ConfigError(f"cannot create key database: {exc.strerror}", where=path) from None
        if version is None or int(version[0]) != VERSION:
            raise ConfigError(
                "unsupported key database version", where=path, value=version and version[0]
            )

    def load(self) -> tuple[list[KeyRecord], dict[str, Totals]]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM keys ORDER BY created_at, key_id").fetchall()
            usage = self._db.execute("SELECT * FROM usage").fetchall()
        records = [record_from_row(dict(r), self.path) for r in rows]
        totals = {u["key_id"]: Totals(*tuple(u)[1:]) for u in usage}
        return records, totals

    def insert(self, record: KeyRecord) -> None:
        row = record_to_row(record)
        row["models"] = None if row["models"] is None else json.dumps(row["models"])
        marks = ", ".join("?" for _ in _COLUMNS)
        values = tuple(row[c] for c in _COLUMNS)
        with self._lock:
            try:
                with self._db:
                    self._db.execute(f"INSERT INTO keys VALUES ({marks})", values)
            except sqlite3.IntegrityError:
                raise ConfigError("key id exists", where=self.path, value=record.key_id) from None

    def revoke(self, key_id: str, at: float, by: str) -> None:
        with self._lock, self._db:
            self._db.execute(
                "UPDATE keys SET revoked_at=?, revoked_by=? WHERE key_id=? AND revoked_at IS NULL",
                (at, by, key_id),
            )

    def usage(self, key_id: str) -> Totals:
        with self._lock:
            row = self._db.execute("SELECT * FROM usage WHERE key_id=?", (key_id,)).fetchone()
        return Totals() if row is None else Totals(*tuple(row)[1:])

    def add_usage(
        self, deltas: Mapping[str, Totals], writer: tuple[str, int] | None = None
    ) -> dict[str, Written]:
        with self._lock, self._db:
            if writer is not None:  # the batch's written totals read and updated as one
                self._db.execute("BEGIN IMMEDIATE")  # (else two writers read the same)
            added = dict(deltas) if writer is None else self._batch(deltas, *writer)
            if not added:
                return {}
            rows = [
                (k, d.spent_usd, d.num_requests, d.num_prompt_tokens, d.num_completion_tokens)
                for k, d in added.items()
            ]
            self._db.executemany(
                "INSERT INTO usage VALUES (?, ?, ?, ?, ?) ON CONFLICT(key_id) DO UPDATE SET "
                "spent_usd = spent_usd + excluded.spent_usd, "
                "num_requests = num_requests + excluded.num_requests, "
                "num_prompt_tokens = num_prompt_tokens + excluded.num_prompt_tokens, "
                "num_completion_tokens = num_completion_tokens + excluded.num_completion_tokens",
                rows,
            )
            marks = ", ".join("?" for _ in added)
            counts = self._db.execute(
                f"SELECT key_id, num_requests FROM usage WHERE key_id IN ({marks})", list(added)
            ).fetchall()
        return {str(k): Written(added[str(k)], int(n)) for k, n in counts}

    def _batch(self, totals: Mapping[str, Totals], writer_id: str, batch: int) -> dict[str, Totals]:
        """Within a transaction: what batch ``batch``'s running ``totals`` add beyond its
        totals written before, those recorded as written now (see the module)."""
        row = self._db.execute(
            "SELECT last_batch FROM writers WHERE writer_id=?", (writer_id,)
        ).fetchone()
        closed = 0 if row is None else int(row[0])
        if batch <= closed:
            return {}
        before = {
            str(r[0]): Totals(*tuple(r)[1:])
            for r in self._db.execute(
                "SELECT key_id, spent_usd, num_requests, num_prompt_tokens, "
                "num_completion_tokens FROM batches WHERE writer_id=? AND batch=?",
                (writer_id, batch),
            )
        }
        added, written = batch_excess(totals, before)
        self._db.executemany(
            "INSERT OR REPLACE INTO batches VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (writer_id, batch, k, t.spent_usd, t.num_requests, t.num_prompt_tokens,
                 t.num_completion_tokens)
                for k, t in written.items()
            ],
        )  # fmt: skip
        if batch - KEEP_BATCHES > closed:
            closed = batch - KEEP_BATCHES
            self._db.execute(
                "DELETE FROM batches WHERE writer_id=? AND batch<=?", (writer_id, closed)
            )
            self._db.execute(
                "INSERT INTO writers VALUES (?, ?) ON CONFLICT(writer_id) DO UPDATE SET "
                "last_batch = excluded.last_batch",
                (writer_id, closed),
            )
        return added

    def close_writer(self, writer_id: str, last_batch: int) -> None:
        with self._lock, self._db:
            self._db.execute("DELETE FROM batches WHERE writer_id=?", (writer_id,))
            self._db.execute(
                "INSERT INTO writers VALUES (?, ?) ON CONFLICT(writer_id) DO UPDATE SET "
                "last_batch = MAX(last_batch, excluded.last_batch)",
                (writer_id, last_batch),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()


class FileStorage:
    """Keys and usage in one JSON file, changed under a lock and replaced atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_path = path.with_name(path.name + ".lock")
        if not path.exists():
            with self._locked():
                if not path.exists():
                    self._write({"keys": [], "usage": {}})
        self.load()  # a malformed file fails now, not on the first request

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ConfigError(
                f"cannot open lock file: {exc.strerror}", where=self._lock_path
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read keys file: {exc.strerror}", where=self.path) from None
        except json.JSONDecodeError as exc:
            raise DataError(f"not JSON: {exc.msg}", path=self.path, line=exc.lineno) from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise DataError(f"not a keys file (format is not {FORMAT!r})", path=self.path)
        if doc.get("version") != VERSION:
            version = doc.get("version")
            raise DataError("unsupported keys file version", path=self.path, value=version)
        return doc

    def _write(self, doc: dict[str, Any]) -> None:
        doc = {
            "format": FORMAT, "version": VERSION, "keys": doc["keys"], "usage": doc["usage"],
            "writers": doc.get("writers", {}), "batches": doc.get("batches", {}),
        }  # fmt: skip
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(doc, out, indent=1)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)

    def load(self) -> tuple[list[KeyRecord], dict[str, Totals]]:
        doc = self._read()
        records = [record_from_row(r, self.path) for r in doc["keys"]]
        try:
            totals = {k: Totals(*v) for k, v in doc["usage"].items()}
        except (TypeError, ValueError, AttributeError) as exc:
            raise DataError(f"bad usage entry: {exc}", path=self.path, column="usage") from None
        return records, totals

    def insert(self, record: KeyRecord) -> None:
        with self._locked():
            doc = self._read()
            if any(r.get("key_id") == record.key_id for r in doc["keys"]):
                raise ConfigError("key id exists", where=self.path, value=record.key_id)
            doc["keys"].append(record_to_row(record))
            self._write(doc)

    def revoke(self, key_id: str, at: float, by: str) -> None:
        with self._locked():
            doc = self._read()
            for row in doc["keys"]:
                if row.get("key_id") == key_id and row.get("revoked_at") is None:
                    row["revoked_at"], row["revoked_by"] = at, by
            self._write(doc)

    def usage(self, key_id: str) -> Totals:
        return self.load()[1].get(key_id, Totals())

    def add_usage(
        self, deltas: Mapping[str, Totals], writer: tuple[str, int] | None = None
    ) -> dict[str, Written]:
        with self._locked():
            doc = self._read()
            added = dict(deltas) if writer is None else _file_batch(doc, deltas, *writer)
            if not added:
                return {}
            usage = doc["usage"]
            for key_id, delta in added.items():
                new = Totals(*usage.get(key_id, ())) + delta
                usage[key_id] = [
                    new.spent_usd,
                    new.num_requests,
                    new.num_prompt_tokens,
                    new.num_completion_tokens,
                ]
            self._write(doc)
        return {k: Written(d, int(usage[k][1])) for k, d in added.items()}

    def close_writer(self, writer_id: str, last_batch: int) -> None:
        with self._locked():
            doc = self._read()
            writers = doc.setdefault("writers", {})
            writers[writer_id] = max(int(writers.get(writer_id, 0)), last_batch)
            doc.setdefault("batches", {}).pop(writer_id, None)
            self._write(doc)

    def close(self) -> None:
        """Nothing stays open between calls."""


def batch_excess(
    totals: Mapping[str, Totals], before: Mapping[str, Totals]
) -> tuple[dict[str, Totals], dict[str, Totals]]:
    """A batch's running ``totals`` against its totals written ``before``: what to add
    (keys adding nothing left out) and the batch's written totals after."""
    added, written = {}, {}
    for key_id, total in totals.items():
        old = before.get(key_id, Totals())
        excess = total.excess(old)
        if not excess.is_zero():
            added[key_id] = excess
            written[key_id] = total.most(old)
    return added, written


def _file_batch(
    doc: dict[str, Any], totals: Mapping[str, Totals], writer_id: str, batch: int
) -> dict[str, Totals]:
    """:meth:`SqliteStorage._batch` on a keys file's document (changed in place):
    ``writers`` (id -> last closed batch), ``batches`` (id -> batch -> key -> totals)."""
    closed = int(doc.setdefault("writers", {}).get(writer_id, 0))
    if batch <= closed:
        return {}
    mine = doc.setdefault("batches", {}).setdefault(writer_id, {})
    before = {k: Totals(*v) for k, v in mine.get(str(batch), {}).items()}
    added, written = batch_excess(totals, before)
    row = mine.setdefault(str(batch), {})
    for key_id, t in written.items():
        row[key_id] = [t.spent_usd, t.num_requests, t.num_prompt_tokens, t.num_completion_tokens]
    if batch - KEEP_BATCHES > closed:
        closed = batch - KEEP_BATCHES
        doc["writers"][writer_id] = closed
        for old in [b for b in mine if int(b) <= closed]:
            del mine[old]
    return added
