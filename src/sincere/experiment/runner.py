"""Run an experiment's cells (serially, in worker processes or on Ray) and gather the table.

Layout of an experiment folder::

    DIR/experiment.json            the (possibly --quick) spec, axes and labels, in order
    DIR/results.parquet            one row per cell: cell_id, axes, seed, status, metrics
    DIR/cells/<cell-id>/config.yaml, summary.json, requests.parquet
    DIR/cells/<cell-id>/cell.json  the completion marker (status, config hash, row)
    DIR/cells/<cell-id>/error.txt  the traceback of a failed cell

A worker runs one cell (:func:`execute_cell`) and returns its row and its files as
bytes; only the driver writes into ``DIR``, and ``cell.json`` last, so a cell whose
marker says ``ok`` with the current config hash is complete. A re-run skips those
cells and runs the others (failed ones included). A cell that raises is recorded with
its error and traceback; it never stops the other cells. Because workers return
bytes, Ray workers on other machines need no shared file system. Cells whose resolved
configs are identical (an axis that some values ignore, such as a KV link for a colocated
deployment) are simulated once: each twin gets the same files and metrics under its own
coordinates.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from sincere.core.errors import ConfigError
from sincere.experiment.grid import Cell, expand
from sincere.experiment.metrics import Scalar, cell_metrics
from sincere.experiment.spec import ExperimentSpec

Backend = Literal["serial", "process", "ray"]
OnDone = Callable[[int, int, dict[str, Scalar]], None]  # (done, total, row)
MARKER = "cell.json"


@dataclass(frozen=True)
class CellResult:
    """What a worker sends back for one cell."""

    cell_id: str  # the cell's id
    row: dict[str, Scalar]  # its results row
    files: dict[str, bytes] = field(default_factory=dict)  # name -> content, for its folder


@dataclass(frozen=True)
class RunReport:
    """What a run did."""

    out_dir: Path  # the experiment folder
    rows: list[dict[str, Scalar]]  # every cell's row, in grid order
    num_run: int  # cells run now
    num_skipped: int  # cells found complete
    wall_s: float  # wall time of this call

    @property
    def failed(self) -> list[dict[str, Scalar]]:
        """Rows of cells that failed."""
        return [r for r in self.rows if r.get("status") != "ok"]


def _base_row(cell: Cell) -> dict[str, Scalar]:
    return {"cell_id": cell.id, **cell.coords, "seed": cell.seed}


def execute_cell(cell: Cell) -> CellResult:
    """Simulate one cell; never raises (a failure becomes a ``failed`` row and error.txt)."""
    from sincere.sim.api import simulate

    started = time.perf_counter()
    row = _base_row(cell)
    files: dict[str, bytes] = {}
    try:
        result = simulate(cell.config)
        with tempfile.TemporaryDirectory(prefix="sincere-cell-") as tmp:
            result.write(tmp)
            for name in ("requests.parquet", "summary.json", "config.yaml"):
                files[name] = (Path(tmp) / name).read_bytes()
        row.update(status="ok", error=None)
        row["wall_s"] = time.perf_counter() - started
        row.update(cell_metrics(result.summary, result.requests))
    except Exception as exc:  # a broken cell must not stop the others
        files["error.txt"] = traceback.format_exc().encode("utf-8")
        files["config.yaml"] = yaml.safe_dump(cell.config, sort_keys=False).encode("utf-8")
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        row["wall_s"] = time.perf_counter() - started
    return CellResult(cell.id, row, files)


def save_cell(cells_dir: Path, cell: Cell, result: CellResult) -> None:
    """Write a cell's files, then its marker."""
    folder = cells_dir / cell.id
    folder.mkdir(parents=True, exist_ok=True)
    stale = folder / "error.txt"
    if stale.exists() and "error.txt" not in result.files:
        stale.unlink()
    for name, content in result.files.items():
        (folder / name).write_bytes(content)
    marker = {"cell_id": cell.id, "config_hash": cell.config_hash, "row": result.row}
    (folder / MARKER).write_text(json.dumps(marker, indent=1, default=str), encoding="utf-8")


def load_done(cells_dir: Path, cell: Cell) -> dict[str, Scalar] | None:
    """The row of a complete, up-to-date cell folder; ``None`` when it must run."""
    folder = cells_dir / cell.id
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    row = marker.get("row") or {}
    complete = (folder / "summary.json").exists() and (folder / "requests.parquet").exists()
    if marker.get("config_hash") != cell.config_hash or row.get("status") != "ok" or not complete:
        return None
    return dict(row)


def failed_result(cell: Cell, exc: BaseException) -> CellResult:
    row = {**_base_row(cell), "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    return CellResult(
        cell.id, row, {"error.txt": "".join(traceback.format_exception(exc)).encode()}
    )


def _run_serial(cells: list[Cell], sink: Callable[[Cell, CellResult], None]) -> None:
    for cell in cells:
        sink(cell, execute_cell(cell))


def _run_processes(
    cells: list[Cell], workers: int, sink: Callable[[Cell, CellResult], None]
) -> None:
    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending: dict[Future[CellResult], Cell] = {}
        queue = iter(cells)
        for cell in _take(queue, 2 * workers):
            pending[pool.submit(execute_cell, cell)] = cell
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                cell = pending.pop(future)
                try:
                    result = future.result()
                except Exception as exc:  # a worker died (e.g. killed for memory)
                    result = failed_result(cell, exc)
                sink(cell, result)
            for cell in _take(queue, 2 * workers - len(pending)):
                pending[pool.submit(execute_cell, cell)] = cell


def _take(cells: Iterable[Cell], num: int) -> list[Cell]:
    out: list[Cell] = []
    if num <= 0:
        return out
    for cell in cells:
        out.append(cell)
        if len(out) >= num:
            break
    return out


def default_workers() -> int:
    """The CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def run_experiment(
    spec: ExperimentSpec,
    out_dir: str | Path,
    *,
    backend: Backend = "process",
    workers: int | None = None,
    ray_address: str | None = None,
    on_done: OnDone | None = None,
) -> RunReport:
    """Run every cell of ``spec`` not already complete in ``out_dir``; write the table.

    ``backend``: ``serial`` (this process), ``process`` (``workers`` processes, default
    the CPU count) or ``ray`` (a local Ray cluster of ``workers`` CPUs, or the cluster
    at ``ray_address``). ``on_done(done, total, row)`` is called after each cell.
    Raises :class:`ConfigError` for an invalid spec (before anything runs).
    """
    started = time.perf_counter()
    out = Path(out_dir)
    cells = expand(spec)
    cells_dir = out / "cells"
    cells_dir.mkdir(parents=True, exist_ok=True)
    write_manifest(spec, out)
    rows, todo = _split_done(cells_dir, cells)
    num_skipped = len(rows)
    if on_done is not None:
        on_done(num_skipped, len(cells), {})
    unique, twins = _twins(todo)

    def sink(cell: Cell, result: CellResult) -> None:
        for each in [cell, *twins.get(cell.id, [])]:
            copy = result if each is cell else _as_twin(each, result)
            save_cell(cells_dir, each, copy)
            rows[each.id] = copy.row
            if on_done is not None:
                on_done(len(rows), len(cells), copy.row)

    _dispatch(unique, backend, workers or default_workers(), ray_address, sink)
    ordered = [rows[c.id] for c in cells]
    write_results(ordered, spec, out / "results.parquet")
    return RunReport(out, ordered, len(todo), num_skipped, time.perf_counter() - started)


def _twins(cells: list[Cell]) -> tuple[list[Cell], dict[str, list[Cell]]]:
    """The cells to simulate (the first of each resolved config) and, by their ids, the
    later cells with the same config."""
    first: dict[str, Cell] = {}
    twins: dict[str, list[Cell]] = {}
    for cell in cells:
        if cell.config_hash in first:
            twins.setdefault(first[cell.config_hash].id, []).append(cell)
        else:
            first[cell.config_hash] = cell
    return list(first.values()), twins


def _as_twin(cell: Cell, result: CellResult) -> CellResult:
    """``result`` of an identical config, under ``cell``'s id and coordinates."""
    return CellResult(cell.id, {**result.row, **_base_row(cell)}, result.files)


def _split_done(
    cells_dir: Path, cells: list[Cell]
) -> tuple[dict[str, dict[str, Scalar]], list[Cell]]:
    """Rows of the complete cells, and the cells still to run."""
    rows: dict[str, dict[str, Scalar]] = {}
    todo: list[Cell] = []
    for cell in cells:
        done = load_done(cells_dir, cell)
        if done is None:
            todo.append(cell)
        else:
            rows[cell.id] = done
    return rows, todo


def _dispatch(
    todo: list[Cell],
    backend: Backend,
    workers: int,
    ray_address: str | None,
    sink: Callable[[Cell, CellResult], None],
) -> None:
    if not todo:
        return
    if backend == "serial" or (backend == "process" and workers == 1):
        _run_serial(todo, sink)
    elif backend == "process":
        _run_processes(todo, workers, sink)
    elif backend == "ray":
        from sincere.experiment.ray_backend import run_on_ray

        run_on_ray(todo, sink, num_cpus=workers, address=ray_address)
    else:
        raise ConfigError("unknown backend", value=backend, allowed=["serial", "process", "ray"])


def write_manifest(spec: ExperimentSpec, out: Path) -> None:
    """``experiment.json``: the spec, the axes and their labels in order."""
    manifest = {
        "name": spec.name,
        "description": spec.description,
        "axes": {n: [label for label, _ in a.items()] for n, a in spec.axes.items()},
        "seeds": spec.seeds,
        "roles": spec.roles().model_dump(mode="json"),
        "spec": spec.model_dump(mode="json"),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "experiment.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")


def _column_type(values: list[Any]) -> pa.DataType | None:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pa.bool_()
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return pa.float64() if any(isinstance(v, float) for v in present) else pa.int64()
    return pa.string() if present else None


def write_results(rows: list[dict[str, Scalar]], spec: ExperimentSpec, path: Path) -> pa.Table:
    """The results table: identity columns first, then metrics in first-seen order."""
    head = ["cell_id", *spec.axes, "seed", "status", "error", "wall_s"]
    names = list(head)
    for row in rows:
        names.extend(k for k in row if k not in names)
    columns: dict[str, pa.Array] = {}
    for name in names:
        values = [row.get(name) for row in rows]
        kind = _column_type(values) or pa.float64()
        if kind == pa.string():
            values = [None if v is None else str(v) for v in values]
        columns[name] = pa.array(values, type=kind)
    table = pa.table(columns)
    pq.write_table(table, path)
    return table
