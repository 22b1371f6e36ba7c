"""Expand an experiment spec into cells: one resolved simulation config per point and seed.

The cells are the cross product of the axes' values (in the spec's order, the last
axis varying fastest) times the seeds. For each point the base config gets every
axis's fields set (:func:`~sincere.experiment.paths.set_fields`: a policy swept away
from the base's leaves the base's policy parameters behind), then every ``${name}``
placeholder filled with that axis's value, then its seed. Every point is then
validated as a :class:`~sincere.sim.config.SimulationConfig` and its engines and router
are built without requests, so bad values fail before anything runs; the error lists
every invalid cell at once, naming the field path, the value and what is allowed.

A cell's id spells its coordinates (``strategy=fcfs,env=cc,seed=1``) and names its
folder; its ``config_hash`` (SHA-256 of the resolved config) tells a resumed run
whether a finished folder still matches the spec.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from typing import Any

from sincere.core.errors import ConfigError
from sincere.experiment.paths import (
    format_value,
    placeholders,
    set_fields,
    set_path,
    substitute,
)
from sincere.experiment.spec import ExperimentSpec, Label
from sincere.sim.build import check_buildable
from sincere.sim.config import load_config

MAX_LISTED_CELLS = 3  # cells named per problem in an error (the rest are counted)

_UNSAFE = re.compile(r"[^A-Za-z0-9._=+,\-]")


@dataclass(frozen=True, eq=False)
class Cell:
    """One run of the experiment."""

    id: str  # folder name under cells/, spelling the coordinates
    coords: dict[str, Label]  # axis name -> label of its value
    seed: int  # the simulation seed
    config: dict[str, Any]  # the resolved simulation config (seed included)
    config_hash: str  # SHA-256 (hex, 16 chars) of ``config``


def config_hash(config: dict[str, Any]) -> str:
    """A short, stable hash of a config mapping."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def cell_id(coords: dict[str, Label], seed: int) -> str:
    """``name=label,...,seed=N`` with characters unsafe in folder names replaced by ``-``."""
    parts = [f"{name}={format_value(label)}" for name, label in coords.items()]
    return _UNSAFE.sub("-", ",".join([*parts, f"seed={seed}"]))


def apply_quick(spec: ExperimentSpec) -> ExperimentSpec:
    """The reduced study of ``spec.quick`` (the spec itself when it has none)."""
    quick = spec.quick
    if quick is None:
        return spec
    base = spec.base
    for path, value in quick.set.items():
        base = set_path(base, path, value)
    axes = dict(spec.axes)
    for name, keep in quick.only.items():
        items = dict((str(label), (label, v)) for label, v in axes[name].items())
        unknown = [k for k in keep if str(k) not in items]
        if unknown:
            raise ConfigError(
                "quick.only: unknown label",
                where=f"quick.only.{name}",
                value=unknown,
                allowed=list(items),
            )
        values = {items[str(k)][0]: items[str(k)][1] for k in keep}
        axes[name] = axes[name].model_copy(update={"values": values})
    seeds = quick.seeds or spec.seeds
    update = {"base": base, "axes": axes, "seeds": seeds, "quick": None}
    return spec.model_copy(update={**update, "description": _quick_note(spec, seeds)})


def apply_sets(spec: ExperimentSpec, settings: list[tuple[str, Any]]) -> ExperimentSpec:
    """``spec`` with every ``(path, value)`` set in its base config (``experiment --set``).

    A path an axis sweeps is refused (the axis would overwrite it in every cell), and so
    is one whose parent does not exist; a misspelt last key fails when the cells are
    validated, with the keys that section takes. The description lists the overrides.
    """
    swept = {path: name for name, axis in spec.axes.items() for path in axis.targets}
    for path, _ in settings:
        if path in swept:
            raise ConfigError(
                f"--set {path}: axis {swept[path]!r} sweeps this field, so every cell would "
                "overwrite it; narrow the axis in the spec instead",
                value=path,
            )
    base = set_fields(spec.base, settings)
    shown = "; ".join(f"{path} = {format_value(value)}" for path, value in settings)
    note = f"Overrides: {shown}." if settings else ""
    description = " ".join(t for t in (spec.description, note) if t)
    return spec.model_copy(update={"base": base, "description": description})


def _quick_note(spec: ExperimentSpec, seeds: list[int]) -> str:
    """``spec``'s description with what its quick run leaves out (so the report's text
    does not promise the full grid)."""
    quick = spec.quick
    assert quick is not None  # only called for a spec with a quick section
    kept = [
        f"{name} {', '.join(map(format_value, keep))} only" for name, keep in quick.only.items()
    ]
    kept.append(f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}")
    kept += [f"{path} = {format_value(value)}" for path, value in quick.set.items()]
    note = f"Quick run ({'; '.join(kept)})."
    return f"{spec.description} {note}" if spec.description else note


def _check_placeholders(spec: ExperimentSpec) -> None:
    values_nodes = [v for axis in spec.axes.values() for _, v in axis.items()]
    used = placeholders(spec.base) | placeholders(values_nodes)
    unknown = sorted(used - set(spec.axes))
    if unknown:
        raise ConfigError(
            f"placeholder ${{{unknown[0]}}} names no axis", where="base", allowed=list(spec.axes)
        )


def _resolve(spec: ExperimentSpec, point: tuple[tuple[Label, Any], ...]) -> dict[str, Any]:
    """The base config with one point's fields set and placeholders filled."""
    values: dict[str, Any] = {}
    settings: list[tuple[str, Any]] = []
    for (name, axis), (_, value) in zip(spec.axes.items(), point, strict=True):
        values[name] = value
        parts = value if axis.paths is not None else [value] if axis.path else []
        settings.extend(zip(axis.targets, parts, strict=True))
    config = substitute(set_fields(spec.base, settings), values)
    if spec.base_dir is not None and "base_dir" not in config:
        config["base_dir"] = spec.base_dir
    return dict(config)


def expand(spec: ExperimentSpec, *, validate: bool = True) -> list[Cell]:
    """Every cell of ``spec``; ``validate`` checks each resolved config (all, then raises)."""
    _check_placeholders(spec)
    names = list(spec.axes)
    points = itertools.product(*(axis.items() for axis in spec.axes.values()))
    cells: list[Cell] = []
    problems: dict[str, list[str]] = {}  # problem -> cells that have it
    for point in points:
        coords = {name: label for name, (label, _) in zip(names, point, strict=True)}
        where = ",".join(f"{n}={format_value(v)}" for n, v in coords.items()) or "(single cell)"
        try:
            resolved = _resolve(spec, point)
            if validate:
                check_config({**resolved, "seed": spec.seeds[0]})
        except ConfigError as exc:
            for line in problem_lines(exc):
                problems.setdefault(line, []).append(where)
            continue
        for seed in spec.seeds:
            config = {**resolved, "seed": seed}
            cells.append(Cell(cell_id(coords, seed), coords, seed, config, config_hash(config)))
    if problems:
        raise invalid_cells(problems, len(cells) // len(spec.seeds) + _num_bad(problems))
    _check_unique(cells)
    return cells


def check_config(config: dict[str, Any]) -> None:
    """Validate a resolved config and build its engines (no run): ConfigError if bad."""
    check_buildable(load_config(config))


def problem_lines(exc: ConfigError) -> list[str]:
    """The problems of a ConfigError, one per line (a multi-problem header dropped)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[1:] if len(lines) > 1 else lines


def _num_bad(problems: dict[str, list[str]]) -> int:
    return len({cell for cells in problems.values() for cell in cells})


def invalid_cells(problems: dict[str, list[str]], num_points: int) -> ConfigError:
    """One error listing every problem with the cells (points) that have it."""
    lines = [f"{_num_bad(problems)} of {num_points} cells are invalid; nothing was run:"]
    for problem, cells in problems.items():
        named = "; ".join(cells[:MAX_LISTED_CELLS])
        more = len(cells) - MAX_LISTED_CELLS
        suffix = f" and {more} more" if more > 0 else ""
        lines.append(f"  {problem} (cell {named}{suffix})")
    return ConfigError("\n".join(lines))


def _check_unique(cells: list[Cell]) -> None:
    seen: dict[str, int] = {}
    for cell in cells:
        seen[cell.id] = seen.get(cell.id, 0) + 1
    dupes = sorted(k for k, n in seen.items() if n > 1)
    if dupes:
        raise ConfigError(
            "two cells share an id (labels that differ only in unsafe characters)",
            value=dupes[0],
            allowed="labels made of letters, digits and ._=+-",
        )


def reference_config(spec: ExperimentSpec) -> dict[str, Any]:
    """The base config with every axis at its reference label (``report.reference``,
    else its first label), with the spec's first seed; e.g. the config a capacity
    search starts from."""
    reference = spec.report.reference
    point = []
    for name, axis in spec.axes.items():
        items = axis.items()
        want = reference.get(name)
        chosen = next((it for it in items if want is not None and str(it[0]) == str(want)), None)
        point.append(chosen or items[0])
    _check_placeholders(spec)
    return {**_resolve(spec, tuple(point)), "seed": spec.seeds[0]}
