"""An append-only audit trail: one JSON line per state change, naming who made it.

Each line is ``{"at", "at_iso", "actor", "action", "target", "details"}``: ``at`` in
Unix seconds (passed in by the caller, so the log is clock-free), ``actor`` such as
``cli:alice`` or ``admin:ops/3f2a9c01d4e7``, ``action`` a dotted verb
(``key.create``, ``key.revoke``, ``instance.add``, ...), ``target`` what it acted on
and ``details`` the non-secret arguments. Secrets never enter it: callers pass key
ids, and every string is also passed through
:func:`~sincere.serve.security.credentials.redact_text`. A line is written and
flushed per change (state changes are rare), under a lock, so lines from threads
never interleave.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sincere.core.errors import ConfigError
from sincere.serve.security.credentials import redact_text


class AuditLog:
    """Appends audit records to a JSON-lines file (or keeps them in memory if ``path`` is None)."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = None if path is None else Path(path)
        self.records: list[dict[str, Any]] = []  # kept only without a file (tests, embedding)
        self._lock = threading.Lock()
        if self.path is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.path.touch(mode=0o600, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"cannot write audit log: {exc.strerror}", where=path) from None

    def record(
        self, at: float, actor: str, action: str, target: str, details: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Append one record and return it."""
        entry = {
            "at": at,
            "at_iso": datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds"),
            "actor": redact_text(actor),
            "action": action,
            "target": redact_text(target),
            "details": _redacted(details or {}),
        }
        line = json.dumps(entry, sort_keys=True, ensure_ascii=False) + "\n"
        # a lone UTF-16 surrogate (an admin body's key quoted in its 400) cannot be written
        # as UTF-8: keep it as the JSON escape it came in as
        line = line.encode("utf-8", "backslashreplace").decode("utf-8")
        with self._lock:
            if self.path is None:
                self.records.append(entry)
            else:
                with self.path.open("a", encoding="utf-8") as out:
                    out.write(line)
        return entry

    def unwritable(self) -> str | None:
        """Why a record could not be appended now (None: it can, or there is no file)."""
        if self.path is None:
            return None
        try:
            with self.path.open("a", encoding="utf-8"):
                pass
        except OSError as exc:
            return exc.strerror or type(exc).__name__
        return None

    def read(self) -> list[dict[str, Any]]:
        """Every record so far, oldest first."""
        if self.path is None:
            return list(self.records)
        text = self.path.read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {str(k): _redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value) if isinstance(value, set | frozenset) else value
        return [_redacted(v) for v in items]
    return value
