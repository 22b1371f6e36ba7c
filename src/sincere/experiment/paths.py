"""Dotted config paths and ``${name}`` placeholders: how an experiment edits a base config.

A path names one field of a nested YAML config: keys joined by dots, list items by their
position (``instances.0.engine.strategy``, ``workload.arrival.rate``). :func:`set_path`
returns a copy of the config with that field replaced (its parents must exist; the last
key may be new, so a parameter that was left at its default can be swept).

:func:`substitute` fills placeholders: a string that is exactly ``"${rate}"`` becomes the
value of the axis ``rate`` (its type kept: a number stays a number); a placeholder inside
a longer string (``"sincere-${sla}"``) is replaced by the value's text. This is how one
axis drives several fields, or a field whose name depends on another axis (e.g. the
arrival rate is ``rate`` for gamma arrivals but ``mean`` for SINCERE's bursty preset).

Parameters belong to the policy they were given for. :func:`set_fields` (what sweeps and
capacity searches use) sets several paths; when one of them changes an engine's
``scheduler`` to another policy, the base's ``scheduler_params`` (written for the old
one) are dropped from that engine, unless the same settings give new ones. So sweeping
``scheduler: [fcfs, niyama]`` over a Niyama config runs FCFS with its own defaults
instead of failing on Niyama's parameters.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from typing import Any

from sincere.core.errors import ConfigError

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_\-]*)\}")


def split_path(path: str) -> list[str | int]:
    """``"instances.0.cc"`` -> ``["instances", 0, "cc"]``; an empty part raises."""
    if not isinstance(path, str) or not path:
        raise ConfigError("a config path must be a non-empty string", value=path)
    parts: list[str | int] = []
    for part in path.split("."):
        if not part:
            raise ConfigError(
                "empty part in config path", value=path, allowed="keys joined by single dots"
            )
        parts.append(int(part) if part.isdigit() else part)
    return parts


def _child(node: Any, key: str | int, path: str) -> Any:
    if isinstance(node, list) and isinstance(key, int):
        if key >= len(node):
            raise ConfigError(
                f"list index {key} out of range", where=path, allowed=f"0..{len(node) - 1}"
            )
        return node[key]
    if isinstance(node, dict) and key in node:
        return node[key]
    allowed = sorted(map(str, node)) if isinstance(node, dict) else None
    raise ConfigError(f"no field {key!r} in the base config", where=path, allowed=allowed)


def get_path(config: Mapping[str, Any], path: str) -> Any:
    """The value at ``path``; a missing field raises, naming what exists there."""
    node: Any = config
    for key in split_path(path):
        node = _child(node, key, path)
    return node


def set_path(config: Mapping[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``config`` with ``path`` set to ``value``."""
    out = copy.deepcopy(dict(config))
    parts = split_path(path)
    node: Any = out
    for key in parts[:-1]:
        node = _child(node, key, path)
    last = parts[-1]
    if isinstance(node, list) and isinstance(last, int):
        _child(node, last, path)
        node[last] = copy.deepcopy(value)
    elif isinstance(node, dict):
        node[last] = copy.deepcopy(value)
    else:
        raise ConfigError(
            f"cannot set {last!r}: its parent is not a mapping", where=path, value=node
        )
    return out


POLICY_PARAMS = {"scheduler": "scheduler_params"}
"""A policy field and the sibling field holding that policy's parameters."""
DEFAULT_POLICY = {"scheduler": "fcfs"}
"""The policy an engine block runs when the field is left out."""


def set_fields(config: Mapping[str, Any], settings: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    """``config`` with every ``(path, value)`` set in order, policy parameters kept with
    their policy (see the module docstring)."""
    out = dict(config)
    given = {path for path, _ in settings}
    for path, value in settings:
        out = set_path(out, path, value)
        parent, _, name = path.rpartition(".")
        params_path = f"{parent}.{POLICY_PARAMS[name]}" if name in POLICY_PARAMS else None
        if params_path is None or params_path in given:
            continue
        before = _get_or(config, path, DEFAULT_POLICY[name])
        if isinstance(before, str) and "${" not in before and before != value:
            out = _delete(out, params_path)
    return out


def _get_or(config: Mapping[str, Any], path: str, default: Any) -> Any:
    try:
        return get_path(config, path)
    except ConfigError:
        return default


def _delete(config: dict[str, Any], path: str) -> dict[str, Any]:
    """``config`` without the mapping key at ``path`` (unchanged when it is absent)."""
    parent, _, key = path.rpartition(".")
    node = _get_or(config, parent, None)
    if not isinstance(node, dict) or key not in node:
        return config
    return set_path(config, parent, {k: v for k, v in node.items() if k != key})


def format_value(value: Any) -> str:
    """Text of a value inside a string: ``40.0`` -> ``40``, ``True`` -> ``true``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def substitute(node: Any, values: Mapping[str, Any], where: str = "") -> Any:
    """``node`` with every ``${name}`` replaced by ``values[name]`` (recursively)."""
    if isinstance(node, dict):
        return {
            k: substitute(v, values, f"{where}.{k}" if where else str(k)) for k, v in node.items()
        }
    if isinstance(node, list):
        return [
            substitute(v, values, f"{where}.{i}" if where else str(i)) for i, v in enumerate(node)
        ]
    if not isinstance(node, str) or "${" not in node:
        return node
    names = _PLACEHOLDER.findall(node)
    unknown = sorted(set(names) - set(values))
    if unknown:
        raise ConfigError(
            f"unknown placeholder ${{{unknown[0]}}}", where=where or None, allowed=sorted(values)
        )
    whole = _PLACEHOLDER.fullmatch(node)
    if whole:
        return copy.deepcopy(values[whole.group(1)])
    return _PLACEHOLDER.sub(lambda m: format_value(values[m.group(1)]), node)


def placeholders(node: Any) -> set[str]:
    """Names of every ``${name}`` in ``node``."""
    if isinstance(node, dict):
        return set().union(*(placeholders(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(placeholders(v) for v in node)) if node else set()
    return set(_PLACEHOLDER.findall(node)) if isinstance(node, str) else set()
