"""Scoreboard against InferenceX's closed-loop points: mean TTFT and TPOT, point by point.

Usage: ``python benchmarks/validate_inferencex.py [FILE] [--all | --sample N] [--jobs J]
[--filter KEY=VALUE,...] [--kernel-tables DIR] [--out OUT]`` (default
``../shared/data/serving-runs/inferencex/blackwell_operating_points.csv`` beside the
checkout; ``--sample 150`` of the representable points unless ``--all``; ``OUT`` keeps the
CSVs, report and figures, a temporary folder otherwise; ``--filter mode=disagg`` keeps the
prefill/decode split points, as the CLI's ``--filter``; ``--kernel-tables``: a folder of
measured kernels, e.g. ``../shared/data/kernels/aiconfigurator``, that MoE layers are
priced from where it measured them, the fitted formula alone without it). Seed 0, the
simulator's default step model (the roofline with each accelerator's default constants,
a vLLM point's those of its own release).

It is ``sincere validate inferencex FILE --out OUT [--sample N] [--kernel-tables DIR]``
plus the tables of benchmarks/README.md: median APE (bias) of the mean TTFT and TPOT over
all points and by backend, catalog model, system and backend with its TP degree, then the
skipped points per reason.
One line on stderr: ``points simulated skipped wall_s``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from sincere.experiment.inferencex import SKIP_REASONS, score_points
from sincere.experiment.inferencex_report import (
    GroupError,
    skip_counts,
    write_inferencex_report,
)
from sincere.workload.inferencex import parse_filter, read_operating_points, select_points

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "serving-runs" / "inferencex"
DEFAULT_FILE = DATA / "blackwell_operating_points.csv"
DEFAULT_SAMPLE = 150
SHOWN = ("all", "distinct", "backend", "model", "system", "backend_tp")


def _option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def _cell(e: GroupError) -> str:
    med = "—" if e.median_ape is None else f"{100 * e.median_ape:.1f}"
    bias = "—" if e.bias is None else f"{100 * e.bias:+.1f}"
    return f"{med} ({bias})"


def _table(errors: list[GroupError]) -> list[str]:
    lines = ["| group | points | mean TTFT: median APE % (bias) | mean TPOT: median APE % (bias) |",
             "|---|---:|---:|---:|"]  # fmt: skip
    by_key: dict[tuple[str, str], dict[str, GroupError]] = {}
    for e in errors:
        if e.group in SHOWN:
            by_key.setdefault((e.group, e.value), {})[e.metric] = e
    for (group, value), row in by_key.items():
        name = {"all": "all", "distinct": "all, each measurement once"}.get(group)
        name = name or (value if group == "backend_tp" else f"{group} {value}")
        lines.append(f"| {name} | {row['ttft'].num_points} | {_cell(row['ttft'])} | "
                     f"{_cell(row['tpot'])} |")  # fmt: skip
    return lines


def main(argv: list[str]) -> None:
    """Score the points, write the report and print the tables."""
    valued = ("--out", "--sample", "--jobs", "--filter", "--kernel-tables")
    if "--help" in argv or "-h" in argv:
        print(__doc__)
        return
    unknown = [a for a in argv if a.startswith("-") and a not in (*valued, "--all")]
    if unknown:
        sys.exit(f"validate_inferencex.py: unknown option {unknown[0]!r}; allowed: "
                 f"{', '.join((*valued, '--all', '--help'))}")  # fmt: skip
    given = [a for i, a in enumerate(argv) if not a.startswith("--")
             and (i == 0 or argv[i - 1] not in valued)]  # fmt: skip
    path = Path(given[0]) if given else DEFAULT_FILE
    sample = None if "--all" in argv else int(_option(argv, "--sample") or DEFAULT_SAMPLE)
    jobs = int(_option(argv, "--jobs") or 1)
    out_arg = _option(argv, "--out")
    started = time.perf_counter()
    wanted = parse_filter(_option(argv, "--filter") or "")
    points = select_points(read_operating_points(path), wanted)
    kernel_tables = _option(argv, "--kernel-tables")
    board = score_points(points, sample=sample, seed=0, jobs=jobs, kernel_tables=kernel_tables)
    wall = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        files = write_inferencex_report(board, Path(out_arg or tmp), source=str(path))
    print(f"points={board.num_points} simulated={len(board.results)} "
          f"skipped={len(board.skips)} wall_s={wall:.1f}", file=sys.stderr)  # fmt: skip
    print("\n".join(_table(files.errors)))
    print("\n| skipped: reason | points |\n|---|---:|")
    for reason, count in skip_counts(board.skips).items():
        print(f"| {SKIP_REASONS[reason]} | {count} |")


if __name__ == "__main__":
    main(sys.argv[1:])
