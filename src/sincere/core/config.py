"""The config edge: YAML files in, validated frozen pydantic models out, ConfigError on defects.

Every config section in sincere is a pydantic v2 model validated once at the edge.

* :func:`read_yaml` reads a YAML (or JSON) file; an unreadable file or bad YAML is a
  :class:`ConfigError` naming the file, the line and the column.
* :func:`validate_config` validates data against a model;
  :func:`format_validation_error` renders every problem as one line
  ``<path>: <what is wrong>; got <value>[; allowed: <fields>]`` where the path is the
  dotted field path (``workload.arrival.rate``, list items as ``tiers[1]``), and unknown
  keys list the keys the section accepts.
* :class:`TierConfig` is the one schema of an SLA tier (latency targets and priority);
  the workload (weights), the gateway (first-byte timeouts) and the emulator use it.

Any layer may use these for its own config.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, Tag, ValidationError

from sincere.core.errors import ConfigError
from sincere.core.params import Problem, format_loc
from sincere.core.request import Tier

M = TypeVar("M", bound=BaseModel)


def _tags(annotation: Any) -> dict[str, Any]:
    """Tag -> member of a tagged (discriminated) union annotation; empty for anything else."""
    out: dict[str, Any] = {}
    for arg in typing.get_args(annotation):
        if typing.get_origin(arg) is Annotated:
            base, *meta = typing.get_args(arg)
            out.update({m.tag: base for m in meta if isinstance(m, Tag)})
    return out


def _step(current: Any, part: int | str) -> Any:
    """The annotation below ``current`` at ``part`` (a field name or a list index)."""
    if typing.get_origin(current) in (Union, types.UnionType):
        members = [a for a in typing.get_args(current) if a is not type(None)]
        current = members[0] if len(members) == 1 else current
    if isinstance(part, int):
        args = typing.get_args(current)
        return args[0] if typing.get_origin(current) in (list, tuple) and args else None
    if isinstance(current, type) and issubclass(current, BaseModel):
        field = current.model_fields.get(part)
        return field.annotation if field is not None else None
    return None


def _walk(
    model: type[BaseModel] | None, loc: Sequence[int | str]
) -> tuple[tuple[int | str, ...], Any]:
    """``loc`` without the tags pydantic puts in it for tagged unions (``engine.continuous.x``
    is the user's ``engine.x``), and the annotation of the value that holds its last key."""
    current: Any = model
    kept: list[int | str] = []
    holder: Any = None
    for part in loc:
        tags = _tags(current)
        if isinstance(part, str) and part in tags:
            current = tags[part]
            continue
        holder = current
        kept.append(part)
        current = _step(current, part)
    return tuple(kept), holder


def _fields_at(model: type[BaseModel] | None, loc: Sequence[int | str]) -> list[str] | None:
    """Field names of the (sub)model that holds ``loc``'s last key, when it can be found."""
    _, holder = _walk(model, loc)
    if isinstance(holder, type) and issubclass(holder, BaseModel):
        return sorted(holder.model_fields)
    return None


def _did_you_mean(key: int | str, fields: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for the field closest to an unknown ``key``; empty if none."""
    close = difflib.get_close_matches(str(key), list(fields), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _literal_choices(err: Mapping[str, Any]) -> list[str]:
    """The values a ``Literal`` field accepts, from pydantic's ``expected`` text."""
    expected = str(err.get("ctx", {}).get("expected", ""))
    return re.findall(r"'([^']*)'", expected) or [expected]


def title_of(model: type[BaseModel]) -> str:
    """A config class's name as words: ``EmulatorConfig`` -> ``emulator``."""
    name = re.sub(r"(Config|Spec)$", "", model.__name__) or model.__name__
    return re.sub(r"(?<!^)(?=[A-Z])", " ", name).lower()


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


def validation_lines(
    exc: ValidationError, *, prefix: str | None = None, model: type[BaseModel] | None = None
) -> list[str]:
    """Every problem of ``exc``, one line each (see :func:`format_validation_error`)."""
    lines = []
    for raw_loc, err in _useful_errors(exc):
        loc, _ = _walk(model, raw_loc)
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts: dict[str, Any] = {}
        if err.get("type") not in ("missing", "value_error"):
            parts["value"] = err.get("input")
        if err.get("type") == "extra_forbidden":
            fields = _fields_at(model, raw_loc) or []
            parts["allowed"] = ", ".join(fields)
            msg += _did_you_mean(loc[-1], fields) if loc else ""
        if err.get("type") == "literal_error":
            choices = _literal_choices(err)
            msg = "not one of the allowed values" + _did_you_mean(err.get("input", ""), choices)
            parts["allowed"] = ", ".join(choices)
        lines.append(Problem(format_loc(loc, prefix), msg, **parts).line())
    return lines


def problems_error(
    lines: Sequence[str], what: str, source: str | Path | None = None
) -> ConfigError:
    """One :class:`ConfigError` titled ``invalid <what> config (N problems)``, a line each."""
    count = f"{len(lines)} problem" + ("s" if len(lines) != 1 else "")
    return ConfigError("\n  ".join([f"invalid {what} config ({count})", *lines]), where=source)


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
    lines = validation_lines(exc, prefix=prefix, model=model)
    return problems_error(lines, prefix or exc.title, source)


def validate_config(
    model: type[M],
    data: Any,
    source: str | Path | None = None,
    *,
    prefix: str | None = None,
    checks: Callable[[Any], Sequence[Problem]] | None = None,
) -> M:
    """``model.model_validate(data)``, raising :func:`format_validation_error`'s error.

    ``checks`` finds further problems in the raw ``data`` (the policies a config names,
    checked against their registries: :mod:`sincere.policy.specs`); they are reported
    in the same error as the schema's own, so a config shows every problem at once.
    """
    lines: list[str] = []
    checked: M | None = None
    try:
        checked = model.model_validate(data)
    except ValidationError as exc:
        lines = validation_lines(exc, prefix=prefix, model=model)
    if checks is not None:
        lines += [problem.line() for problem in checks(data)]
    if lines or checked is None:
        raise problems_error(lines, prefix or title_of(model), source)
    return checked


def read_yaml(path: str | Path, what: str = "config") -> Any:
    """The data of the YAML (or JSON) file at ``path``.

    Raises :class:`ConfigError` naming the file when it cannot be read, and its line
    and column when it is not valid YAML.
    """
    where = Path(path)
    try:
        text = where.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{what} file not found", where=where) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {what} file", where=where, value=str(exc)) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"not valid YAML{at}: {problem}", where=where) from None


MAX_SECONDS = 86_400.0
"""Longest duration a latency target or timeout may give (one day)."""

MAX_PRIORITY = 1 << 31
"""Largest magnitude of a priority."""


class TierConfig(BaseModel):
    """An SLA tier: latency targets (seconds; null = not checked) and a priority.

    Smaller priority is more important. Used as is by the emulator and, extended, by
    the workload (a share of the requests) and the gateway (a first-byte timeout).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    name: str = Field(min_length=1, max_length=128)
    ttft_s: float | None = Field(None, gt=0, le=MAX_SECONDS)  # time-to-first-token target
    ttlt_s: float | None = Field(None, gt=0, le=MAX_SECONDS)  # end-to-end target
    tbt_s: float | None = Field(None, gt=0, le=MAX_SECONDS)  # time-between-tokens target
    priority: int = Field(0, ge=-MAX_PRIORITY, le=MAX_PRIORITY)

    def to_tier(self) -> Tier:
        """The core :class:`~sincere.core.request.Tier`."""
        return Tier(self.name, self.ttft_s, self.ttlt_s, self.tbt_s, self.priority)
