"""Project exceptions.

Every user-facing error names the thing that was wrong, the bad value and what is
allowed, so a one-line message is enough to fix the input.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path


class SincereError(Exception):
    """Base class of every error sincere raises on purpose."""


class ConfigError(SincereError, ValueError):
    """A configuration or argument is invalid.

    ``where`` locates the problem (a file, a config path such as ``workload.rate``),
    ``value`` is what was given and ``allowed`` says what would be accepted (a list is
    shown sorted, each value once).
    """

    def __init__(
        self,
        message: str,
        *,
        where: str | Path | None = None,
        value: object = None,
        allowed: str | Iterable[str] | None = None,
    ) -> None:
        self.where = str(where) if where is not None else None
        self.value = value
        if allowed is not None and not isinstance(allowed, str):
            allowed = ", ".join(sorted({str(a) for a in allowed}))
        self.allowed = allowed
        parts = [f"{self.where}: {message}" if self.where else message]
        if value is not None:
            parts.append(f"got {value!r}")
        if allowed:
            parts.append(f"allowed: {allowed}")
        super().__init__("; ".join(parts))


class DataError(SincereError, ValueError):
    """A data file (trace, profile, catalog entry) is malformed.

    The message carries the file, the line (1-based, when known), the column or
    field, and the offending value.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path,
        line: int | None = None,
        column: str | None = None,
        value: object = None,
    ) -> None:
        self.path = str(path)
        self.line = line
        self.column = column
        self.value = value
        loc = self.path
        if line is not None:
            loc += f":{line}"
        if column is not None:
            loc += f" column {column!r}"
        text = f"{loc}: {message}"
        if value is not None:
            text += f" (value {value!r})"
        super().__init__(text)


def check_in_range(owner: object, checks: Mapping[str, bool], label: str, allowed: str) -> None:
    r"""Refuse the first field of ``owner`` whose check in ``checks`` (field name -> whether
    its value is allowed) failed: a :class:`ConfigError` "``label``\ NAME is out of range"
    with the field's value and ``allowed``."""
    for name, ok in checks.items():
        if not ok:
            raise ConfigError(
                f"{label}{name} is out of range", value=getattr(owner, name), allowed=allowed
            )
