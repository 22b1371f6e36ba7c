"""Write and read profile CSVs in the published column layouts.

Profiles are plain CSV with the published layouts' leading columns first (SINCERE's
``model, batch_size, processing time (s), throughput (qps)``; MaverIQ's fingerprint
columns; SINCERE's ``model_loading_times`` columns), then our own columns, then the
monitor's ``cpu/…``, ``memory/…``, ``process/…`` and ``gpu/…`` columns in sorted order.
A missing value is written ``None``, as SINCERE wrote its out-of-memory rows.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sincere.core.csv_lines import refuse_blank_lines
from sincere.core.errors import DataError

MONITOR_PREFIXES = ("cpu/", "memory/", "process/", "gpu/")


def _cell(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def ordered_columns(rows: Sequence[Mapping[str, Any]], leading: Sequence[str]) -> list[str]:
    """``leading``, then other columns in first-seen order, then monitor columns sorted."""
    seen: dict[str, None] = dict.fromkeys(leading)
    monitor: set[str] = set()
    for row in rows:
        for key in row:
            if key.startswith(MONITOR_PREFIXES):
                monitor.add(key)
            elif key not in seen:
                seen[key] = None
    return [*seen, *sorted(monitor - set(seen))]


def write_profile_csv(
    rows: Sequence[Mapping[str, Any]], path: str | Path, leading: Sequence[str]
) -> Path:
    """Write ``rows`` to ``path`` (parents created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = ordered_columns(rows, leading)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(c)) for c in columns])
    return path


def _parse(text: str) -> Any:
    if text in ("None", ""):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def read_profile_csv(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a profile CSV with numbers parsed and ``None`` / empty cells as ``None``;
    a blank line before the last row is a :class:`DataError` naming it."""
    path = Path(path)
    refuse_blank_lines(path)
    try:
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames:
                raise DataError("empty profile (no header)", path=path)
            return [{k: _parse(v or "") for k, v in row.items()} for row in reader]
    except OSError as exc:
        raise DataError(f"cannot read profile: {exc.strerror}", path=path) from None
