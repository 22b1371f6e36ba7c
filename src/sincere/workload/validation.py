"""Turn pydantic's ValidationError into a readable :class:`ConfigError`.

Every config section in sincere is a pydantic v2 model validated once at the edge.
:func:`format_validation_error` renders each problem as one line
``<path>: <what is wrong>; got <value>[; allowed: <fields>]`` where the path is the
dotted field path (``workload.arrival.rate``, list items as ``tiers[1]``), and unknown
keys list the keys the section accepts. Any layer may reuse it for its own config.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from sincere.core.errors import ConfigError
from sincere.core.params import format_loc
from sincere.core.params import short_repr as _short

M = TypeVar("M", bound=BaseModel)


def _fields_at(model: type[BaseModel] | None, loc: Sequence[int | str]) -> list[str] | None:
    """Field names of the (sub)model that holds ``loc``'s last key, when it can be found."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or current is None:
            continue
        field = getattr(current, "model_fields", {}).get(part)
        annotation = getattr(field, "annotation", None)
        current = annotation if isinstance(annotation, type) else None
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(current.model_fields)
    return None


_TYPE_MISMATCH = {"list_type", "dict_type", "model_type", "string_type", "model_attributes_type"}


def _is_branch_label(part: int | str) -> bool:
    """Pydantic's names for union members in a loc, e.g. ``list[TierConfig]``."""
    return isinstance(part, str) and ("[" in part or part.startswith("function-"))


def _useful_errors(exc: ValidationError) -> list[tuple[tuple[int | str, ...], Any]]:
    """Errors with union-branch labels dropped from their loc; where one value failed
    several union members, "wrong type for this member" errors are dropped in favour of
    the member whose type matched."""
    errors = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err.get("loc", ()) if not _is_branch_label(p))
        errors.append((loc, err, any(_is_branch_label(p) for p in err.get("loc", ()))))
    useful = []
    for loc, err, in_union in errors:
        siblings = [e for lc, e, u in errors if u and lc[: len(loc)] == loc and e is not err]
        if (
            in_union
            and err.get("type") in _TYPE_MISMATCH
            and any(e.get("type") not in _TYPE_MISMATCH for e in siblings)
        ):
            continue
        useful.append((loc, err))
    return useful


def format_validation_error(
    exc: ValidationError,
    source: str | Path | None = None,
    *,
    prefix: str | None = None,
    model: type[BaseModel] | None = None,
) -> ConfigError:
    """One :class:`ConfigError` listing every problem of ``exc``, one line each.

    ``source`` names the file (or other origin) of the config, ``prefix`` the path of
    the section inside it (e.g. ``workload``), ``model`` the validated class (to list
    allowed keys when an unknown key was given).
    """
    lines = []
    for loc, err in _useful_errors(exc):
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        line = f"{format_loc(loc, prefix)}: {msg}"
        if err.get("type") not in ("missing", "value_error"):
            line += f"; got {_short(err.get('input'))}"
        if err.get("type") == "extra_forbidden":
            allowed = _fields_at(model, loc)
            if allowed:
                line += f"; allowed: {', '.join(allowed)}"
        lines.append(line)
    count = f"{len(lines)} problem" + ("s" if len(lines) != 1 else "")
    title = f"invalid {prefix or exc.title} config ({count})"
    return ConfigError("\n  ".join([title, *lines]), where=source)


def validate_config(
    model: type[M], data: Any, source: str | Path | None = None, *, prefix: str | None = None
) -> M:
    """``model.model_validate(data)``, raising :func:`format_validation_error`'s error."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise format_validation_error(exc, source, prefix=prefix, model=model) from None
