"""The catalog: shipped accelerator and model facts, merged with the user's own files.

sincere ships ``sincere/data/accelerators.yaml`` and ``models.yaml`` (package data, read
through :mod:`importlib.resources`). Users add or override entries with files of the
same layout, YAML or JSON, given to :func:`load_catalog` or listed in the
``SINCERE_CATALOG`` environment variable (paths separated by :data:`os.pathsep`). Files
apply in order -- shipped, then the environment's, then ``extra_paths`` -- and an entry
whose name matches an existing one (any case) overrides the fields it sets, keeping the
rest; the figures it replaces get the user file as their source unless it names one.
Names and aliases resolve case-insensitively. Top-level keys other than
``accelerators`` and ``models`` must start with ``x-`` (a place for YAML anchors).
"""

from __future__ import annotations

import difflib
import functools
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from sincere.catalog.schema import (
    CatalogEntryError,
    entry_fields,
    validate_accelerator,
    validate_model,
)
from sincere.catalog.specs import Accelerator, ModelArch
from sincere.core.errors import ConfigError, DataError
from sincere.core.yaml_data import load_yaml

ENV_VAR = "SINCERE_CATALOG"
"""Environment variable listing extra catalog files (``os.pathsep``-separated)."""

SHIPPED_FILES = ("accelerators.yaml", "models.yaml")
"""Catalog files inside the package's ``data`` folder."""

_SECTIONS = {"accelerators": "accelerator", "models": "model"}
_UNSOURCED = {"sources", "aliases", "vendor"}  # accelerator fields that are not figures

Spec = TypeVar("Spec", Accelerator, ModelArch)


class Catalog:
    """Accelerators and models by name; lookups ignore case and follow aliases."""

    def __init__(
        self,
        accelerators: Iterable[Accelerator],
        models: Iterable[ModelArch],
        origins: Mapping[tuple[str, str], str] | None = None,
    ) -> None:
        """``origins`` maps ``(kind, name)`` to the file an entry came from (for errors)."""
        self._origins = dict(origins or {})
        self._accelerators = {a.name: a for a in accelerators}
        self._models = {m.name: m for m in models}
        self._accelerator_index = self._index("accelerator", self._accelerators.values())
        self._model_index = self._index("model", self._models.values())

    def accelerator(self, name: str) -> Accelerator:
        """The accelerator called ``name`` (or an alias); unknown names raise ``ConfigError``."""
        return _lookup("accelerator", name, self._accelerator_index, self._accelerators)

    def model(self, name: str) -> ModelArch:
        """The model called ``name`` (or an alias); unknown names raise ``ConfigError``."""
        return _lookup("model", name, self._model_index, self._models)

    def accelerators(self) -> list[Accelerator]:
        """All accelerators, in file order."""
        return list(self._accelerators.values())

    def models(self) -> list[ModelArch]:
        """All models, in file order."""
        return list(self._models.values())

    def has_accelerator(self, name: str) -> bool:
        """Whether ``name`` resolves to an accelerator."""
        return _key(name) in self._accelerator_index

    def has_model(self, name: str) -> bool:
        """Whether ``name`` resolves to a model."""
        return _key(name) in self._model_index

    def origin(self, kind: str, name: str) -> str | None:
        """The file the entry ``name`` of ``kind`` ("accelerator" / "model") last came from."""
        return self._origins.get((kind, name))

    def _index(self, kind: str, entries: Iterable[Accelerator | ModelArch]) -> dict[str, str]:
        """Lower-cased names and aliases -> canonical names; clashing aliases raise."""
        entries = list(entries)
        index: dict[str, str] = {}
        for entry in entries:
            if _key(entry.name) in index:
                raise ConfigError(f"duplicate {kind} name", value=entry.name)
            index[_key(entry.name)] = entry.name
        for entry in entries:
            for alias in entry.aliases:
                owner = index.setdefault(_key(alias), entry.name)
                if owner != entry.name:
                    raise CatalogEntryError(
                        f"alias is already taken by {kind} {owner!r}",
                        path=self._origins.get((kind, entry.name), "<catalog>"),
                        kind=kind,
                        entry=entry.name,
                        field="aliases",
                        value=alias,
                        allowed="a name or alias no other entry uses",
                    )
        return index


def _key(name: str) -> str:
    return name.strip().lower()


def _lookup(kind: str, name: str, index: Mapping[str, str], entries: Mapping[str, Spec]) -> Spec:
    canonical = index.get(_key(name))
    if canonical is not None:
        return entries[canonical]
    close = difflib.get_close_matches(_key(name), list(index), n=1)
    hint = f" (did you mean {index[close[0]]!r}?)" if close else ""
    raise ConfigError(f"unknown {kind}{hint}", value=name, allowed=sorted(entries))


@dataclass
class _Pending:
    """An entry's merged raw fields before validation, and the last file that set them."""

    name: str
    fields: dict[str, Any]
    origin: str
    sources: dict[str, str] = field(default_factory=dict)


def load_catalog(extra_paths: Sequence[Path | str] = (), *, use_env: bool = True) -> Catalog:
    """The shipped catalog merged with ``$SINCERE_CATALOG`` files, then ``extra_paths``.

    Raises :class:`~sincere.core.errors.DataError` (a :class:`CatalogEntryError` for a bad
    entry) naming the file, entry, field, value and what is allowed, and
    :class:`~sincere.core.errors.ConfigError` for a path that does not exist.
    """
    pending: dict[str, dict[str, _Pending]] = {"accelerator": {}, "model": {}}
    for origin, data in _read_all(extra_paths, use_env):
        for section, kind in _SECTIONS.items():
            for name, raw in _section(data, section, origin).items():
                _merge(pending[kind], kind, str(name), raw, origin)
    accelerators = [
        validate_accelerator(p.name, {**p.fields, "sources": p.sources}, p.origin)
        for p in pending["accelerator"].values()
    ]
    models = [validate_model(p.name, p.fields, p.origin) for p in pending["model"].values()]
    origins = {(kind, p.name): p.origin for kind, tbl in pending.items() for p in tbl.values()}
    return Catalog(accelerators, models, origins)


def _read_all(extra_paths: Sequence[Path | str], use_env: bool) -> Iterator[tuple[str, Any]]:
    """(origin, parsed content) of every catalog file, in the order they apply."""
    data_dir = resources.files("sincere") / "data"
    for fname in SHIPPED_FILES:
        origin = f"sincere/data/{fname}"
        yield origin, _parse((data_dir / fname).read_text(encoding="utf-8"), origin, fname)
    paths = [*(env_paths() if use_env else []), *(Path(p) for p in extra_paths)]
    for path in paths:
        if not path.is_file():
            raise ConfigError("catalog file not found", value=str(path), allowed="an existing file")
        yield str(path), _parse(path.read_text(encoding="utf-8"), str(path), path.name)


def env_paths() -> list[Path]:
    """The files listed in ``$SINCERE_CATALOG`` (empty items ignored)."""
    value = os.environ.get(ENV_VAR, "")
    return [Path(p) for p in value.split(os.pathsep) if p.strip()]


def _parse(text: str, origin: str, fname: str) -> Any:
    """Parse JSON (``*.json``) or YAML; syntax errors name the file and line."""
    try:
        if fname.lower().endswith(".json"):
            return json.loads(text) if text.strip() else {}
        return load_yaml(text) or {}
    except json.JSONDecodeError as exc:
        raise DataError(f"invalid JSON: {exc.msg}", path=origin, line=exc.lineno) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise DataError(f"invalid YAML: {problem}", path=origin, line=line) from None


def _section(data: Any, section: str, origin: str) -> dict[Any, Any]:
    """The ``section`` mapping of a parsed file, after checking the file's top level."""
    if not isinstance(data, dict):
        raise DataError(
            "a catalog file must be a mapping with 'accelerators' and/or 'models'",
            path=origin,
            value=type(data).__name__,
        )
    for key in data:
        if key not in _SECTIONS and not str(key).startswith("x-"):
            raise DataError(
                f"unknown top-level key {key!r}; allowed: accelerators, models, x-* (anchors)",
                path=origin,
            )
    content = data.get(section) or {}
    if not isinstance(content, dict):
        raise DataError(
            f"{section!r} must map entry names to their fields",
            path=origin,
            value=type(content).__name__,
        )
    return content


def _merge(table: dict[str, _Pending], kind: str, name: str, raw: Any, origin: str) -> None:
    """Add the entry ``name`` from ``origin`` or override an existing one field by field."""
    if not isinstance(raw, dict):
        raise CatalogEntryError(
            "an entry must be a mapping of field: value",
            path=origin,
            kind=kind,
            entry=name,
            value=raw,
        )
    if not name.strip():
        raise CatalogEntryError("empty name", path=origin, kind=kind, entry=name)
    base = table.get(_key(name))
    fields = {str(k): v for k, v in raw.items()}
    if base is None:
        base = table[_key(name)] = _Pending(name=name, fields={}, origin=origin)
    elif kind == "model" and "source" not in fields:
        overridden = ", ".join(sorted(fields))
        fields["source"] = f"{base.fields.get('source', '')}; {overridden} from {origin}"
    if kind == "accelerator":
        base.sources = _merge_sources(base.sources, fields, name, origin)
    base.fields.update(fields)
    base.origin = origin


def _merge_sources(
    base: dict[str, str], fields: dict[str, Any], name: str, origin: str
) -> dict[str, str]:
    """Per-figure sources after an accelerator entry (re)sets ``fields``.

    ``sources.default`` covers the figures this entry sets without their own source; a
    figure with neither gets the file it came from.
    """
    given = fields.pop("sources", None) or {}
    figures = set(entry_fields("accelerator")) - _UNSOURCED
    if not isinstance(given, dict):
        raise CatalogEntryError(
            "must map figure names to their public sources",
            path=origin,
            kind="accelerator",
            entry=name,
            field="sources",
            value=given,
        )
    for key, text in given.items():
        if (key != "default" and key not in figures) or not isinstance(text, str):
            raise CatalogEntryError(
                "bad source entry",
                path=origin,
                kind="accelerator",
                entry=name,
                field="sources",
                value={key: text},
                allowed=f"'<figure>: <text>' with figure in default, {', '.join(sorted(figures))}",
            )
    fallback = given.get("default", origin)
    merged = dict(base)
    merged.update({f: fallback for f in fields if f in figures})
    merged.update({k: v for k, v in given.items() if k != "default"})
    return merged


@functools.cache
def default_catalog() -> Catalog:
    """The shipped catalog plus ``$SINCERE_CATALOG``, loaded once (``cache_clear()`` reloads)."""
    return load_catalog()


def get_accelerator(name: str) -> Accelerator:
    """An accelerator of the default catalog, by name or alias (any case)."""
    return default_catalog().accelerator(name)


def get_model(name: str) -> ModelArch:
    """A model of the default catalog, by name or alias (any case)."""
    return default_catalog().model(name)
