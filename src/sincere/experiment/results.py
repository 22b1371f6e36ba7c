"""Reading an experiment folder back: its results table, axes, roles and slices.

Everything the report shows is computed here from ``results.parquet`` (one row per
cell) and ``experiment.json`` (axes, labels, report roles): means over seeds of a
metric column for a group of cells, and the *reference slice* -- one label per axis
that a plot does not vary (the spec's ``report.reference``, else each axis's middle
label). Labels compare by their text (``40`` and ``40.0`` are the same label).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sincere.core.errors import ConfigError
from sincere.experiment.paths import format_value

Row = dict[str, Any]


def key(label: Any) -> str:
    """The text a label compares by."""
    return format_value(label)


@dataclass(frozen=True, eq=False)
class Results:
    """An experiment folder's table and manifest."""

    out_dir: Path  # the experiment folder
    rows: list[Row]  # every cell's row (failed ones included)
    axes: dict[str, list[Any]]  # axis -> labels in spec order
    roles: dict[str, Any]  # report roles (strategy, traffic, load, env, baseline, reference)
    name: str  # the experiment's name
    description: str  # its description

    @property
    def ok_rows(self) -> list[Row]:
        """Rows of cells that finished."""
        return [r for r in self.rows if r.get("status") == "ok"]

    def role(self, name: str) -> str | None:
        """The axis playing report role ``name`` (strategy, traffic, load, env)."""
        axis = self.roles.get(name)
        return axis if isinstance(axis, str) and axis in self.axes else None

    def reference(self) -> dict[str, Any]:
        """One label per axis: the spec's reference when the axis has it, else the middle one."""
        given = self.roles.get("reference") or {}
        out = {}
        for axis, labels in self.axes.items():
            match = [x for x in labels if axis in given and key(x) == key(given[axis])]
            out[axis] = match[0] if match else labels[len(labels) // 2]
        return out

    def select(self, fixed: Mapping[str, Any], rows: Iterable[Row] | None = None) -> list[Row]:
        """Finished rows whose axes take the given labels."""
        want = {a: key(v) for a, v in fixed.items()}
        source = self.ok_rows if rows is None else rows
        return [r for r in source if all(key(r.get(a)) == v for a, v in want.items())]

    def slice_except(self, *free: str | None) -> dict[str, Any]:
        """The reference slice with the axes ``free`` left out."""
        return {a: v for a, v in self.reference().items() if a not in free}

    def requests_path(self, row: Row) -> Path:
        """A cell's request table."""
        return self.out_dir / "cells" / str(row["cell_id"]) / "requests.parquet"


def mean_of(rows: Iterable[Row], metric: str) -> float | None:
    """Mean of ``metric`` over ``rows`` where it is a finite number; ``None`` if none is."""
    values = [float(r[metric]) for r in rows if _is_number(r.get(metric))]
    return sum(values) / len(values) if values else None


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value)


def load_results(out_dir: str | Path) -> Results:
    """Read ``results.parquet`` and ``experiment.json`` of an experiment folder."""
    out = Path(out_dir)
    table_path, manifest_path = out / "results.parquet", out / "experiment.json"
    if not table_path.exists() or not manifest_path.exists():
        raise ConfigError(
            "not an experiment folder (results.parquet / experiment.json missing)",
            where=out,
            allowed="a folder written by `sincere experiment SPEC --out DIR`",
        )
    table: pa.Table = pq.read_table(table_path)
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    return Results(
        out_dir=out,
        rows=table.to_pylist(),
        axes={k: list(v) for k, v in manifest.get("axes", {}).items()},
        roles=dict(manifest.get("roles") or {}),
        name=str(manifest.get("name", out.name)),
        description=str(manifest.get("description", "")),
    )
