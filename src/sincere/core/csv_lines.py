"""Blank lines in CSV inputs: refused inside the data, allowed at the end.

CSV readers (Python's ``csv`` module, pyarrow) skip empty lines without a word, so a
trace or profile with a blank line in the middle would lose nothing but its line
numbers: every error after it would name the wrong line, and a truncated or spliced
file would pass unnoticed. Every CSV input sincere reads (traces, profiles,
fingerprints, operator profiles) therefore goes through :func:`refuse_blank_lines`:
a blank line followed by more data is a :class:`DataError` naming its line; blank
lines after the last row (an editor's trailing newlines) are accepted.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from sincere.core.errors import DataError


def interior_blank_line(text: str) -> int | None:
    """The 1-based line of the first empty line that more data follows (None if none)."""
    body = text.rstrip("\r\n")
    if "\n\n" not in body and "\n\r\n" not in body and not body.startswith(("\n", "\r\n")):
        return None  # the common case, decided without parsing
    reader = csv.reader(io.StringIO(body, newline=""))
    for row in reader:
        if not row:  # a quoted field's own newlines never make an empty row
            return reader.line_num
    return None


def refuse_blank_lines(path: str | Path) -> None:
    """Raise :class:`DataError` when ``path`` has a blank line before its last row."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read ({exc.strerror})", path=path) from None
    body = data.rstrip(b"\r\n")
    if b"\n\n" not in body and b"\n\r\n" not in body and not body.startswith((b"\n", b"\r\n")):
        return  # the common case: no empty line at all, decided on the bytes
    line = interior_blank_line(data.decode("utf-8", errors="replace"))
    if line is not None:
        raise DataError(
            "blank line inside the data; remove it (blank lines after the last row are fine)",
            path=path,
            line=line,
        )
