"""Wall time of the full built-in ``sincere-study`` (810 cells) per backend.

Usage: ``python benchmarks/experiment_sincere_study.py [serial process ray] [--quick]``.
Each backend runs into a fresh temporary folder (no resumed cells); a warm-up runs
one cell first so imports are not timed. Prints one line per backend:
``backend workers cells wall_s cells_per_s``. Ray uses a local cluster of 2 CPUs,
started and stopped by the run (RAY_USAGE_STATS_ENABLED=0).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

from sincere.experiment import apply_quick, expand, resolve_spec, run_experiment
from sincere.experiment.runner import Backend, execute_cell


def main(argv: list[str]) -> None:
    """Time each backend named in ``argv`` (default: serial, process, ray)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    quick = "--quick" in argv
    names = [a for a in argv if not a.startswith("--")] or ["serial", "process", "ray"]
    spec = resolve_spec("sincere-study")
    spec = apply_quick(spec) if quick else spec
    cells = expand(spec)
    execute_cell(cells[0])  # warm-up
    for name in names:
        backend: Backend = name  # type: ignore[assignment]
        with tempfile.TemporaryDirectory() as out:
            started = time.perf_counter()
            report = run_experiment(spec, out, backend=backend, workers=2)
            wall = time.perf_counter() - started
        workers = 1 if backend == "serial" else 2
        print(
            f"{backend} workers={workers} cells={len(cells)} failed={len(report.failed)} "
            f"wall_s={wall:.1f} cells_per_s={len(cells) / wall:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
