"""Re-planning over a load trace: Inferno's control loop, offline.

A load trace is a CSV of rows ``time, server, arrivalRate[, avgInTokens, avgOutTokens]``
(time in any unit, arrival rate in req/min; an optional header row is skipped). At
each distinct time the listed servers take their new load (others keep theirs) and
the problem is solved again with the previous solution as ``currentAlloc``, so
moving a server to another accelerator pays Inferno's transition penalty.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from sincere.core.errors import DataError
from sincere.optimize.data import Load, Problem
from sincere.optimize.plan import Solution, solve, with_loads, with_previous


@dataclass(frozen=True, slots=True)
class LoadChange:
    """One row of a load trace."""

    time: float
    server: str
    arrival_rate: float  # req/min
    avg_in_tokens: float | None = None  # None: unchanged
    avg_out_tokens: float | None = None


def read_load_trace(path: str | Path) -> list[LoadChange]:
    """Parse a load-trace CSV; errors name the file, line and column."""
    p = Path(path)
    try:
        lines = list(csv.reader(p.read_text().splitlines()))
    except FileNotFoundError:
        raise DataError("file not found", path=p) from None
    out: list[LoadChange] = []
    for num, row in enumerate(lines, start=1):
        cells = [c.strip() for c in row]
        if not cells or not any(cells) or cells[0].startswith("#"):
            continue
        if num == 1 and not _is_number(cells[0]):
            continue  # header
        out.append(_row(p, num, cells))
    if not out:
        raise DataError("no load rows", path=p)
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _row(path: Path, num: int, cells: list[str]) -> LoadChange:
    names = ("time", "server", "arrivalRate", "avgInTokens", "avgOutTokens")
    if len(cells) not in (3, 5):
        raise DataError(
            "expected 3 or 5 columns (time, server, arrivalRate[, avgInTokens, avgOutTokens])",
            path=path,
            line=num,
            value=len(cells),
        )
    values: list[float] = []
    for i, cell in enumerate(cells):
        if i == 1:
            continue
        if not _is_number(cell) or float(cell) < 0:
            raise DataError(
                "expected a number >= 0", path=path, line=num, column=names[i], value=cell
            )
        values.append(float(cell))
    extra = values[2:] if len(values) == 4 else [None, None]
    return LoadChange(values[0], cells[1], values[1], extra[0], extra[1])


def replan(
    problem: Problem, trace: list[LoadChange], *, solver: str | None = None
) -> list[tuple[float, Solution]]:
    """Solve at every time of ``trace``, each run starting from the previous solution."""
    current = problem.servers
    loads = {s.name: s.current.load for s in current}
    steps: list[tuple[float, Solution]] = []
    for time in sorted({c.time for c in trace}):
        for c in (c for c in trace if c.time == time):
            if c.server not in loads:
                raise DataError(
                    "load trace names an unknown server",
                    path="load trace",
                    column="server",
                    value=c.server,
                )
            old = loads[c.server]
            loads[c.server] = Load(
                c.arrival_rate,
                old.avg_in_tokens if c.avg_in_tokens is None else c.avg_in_tokens,
                old.avg_out_tokens if c.avg_out_tokens is None else c.avg_out_tokens,
                old.prefix_hit_rate,
            )
        problem = with_loads(problem, loads)
        solution = solve(problem, solver=solver)
        steps.append((time, solution))
        problem = with_previous(problem, solution)
    return steps
