"""Fidelity against SINCERE's real H100 runs: the simulator replays every cell and compares.

Usage: ``python benchmarks/validate_sincere_runs.py [RUNS_DIR] [--workers N]`` (default
``../shared/data/sincere-runs`` beside the checkout). Seed 0. One warm-up cell first.
Runs, each over the cells it names:

* ``profile`` -- before calibration: SINCERE's standalone profiles and the idealised
  scheduler (all 144 cells);
* ``calibrated`` -- the shipped calibration (fitted on all cells) with SINCERE's server
  dispatch (all cells);
* ``fit X -> Y`` -- a calibration fitted by ``sincere fit sincere-runs`` on the cells of
  traffic shape X, validated on those of shape Y: in sample (X = Y) beside transfer
  (X != Y) on the same cells;
* ``timing only`` / ``dispatch only`` -- the calibrated timing with the idealised
  scheduler, and the profiles with SINCERE's server dispatch: what each part adds.

Prints a Markdown table (median and p90 of the per-cell errors for the targeted
metrics) and one line per run: ``run cells wall_s targets_met``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from sincere.experiment.validation import ReplayModel, replay_model, validate_runs, validation_rows
from sincere.experiment.validation_report import TARGETS, error_summary
from sincere.fit.sincere_runs import fit_runs, write_calibration

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RUNS = ROOT.parent / "shared" / "data" / "sincere-runs"
SHOWN = ("processed", "throughput_rps", "latency_mean_s", "slo_attainment", "model_switches")


def _fitted(runs: Path, cells: str, folder: Path) -> ReplayModel:
    document, _ = fit_runs(runs, cells)
    document["command"] = f"sincere fit sincere-runs {runs} --cells '{cells}'"
    path = write_calibration(document, folder / f"{cells.strip('*_')}.yaml")
    return replay_model("calibrated", path)


def _row(label: str, runs: Path, model: ReplayModel, cells: str | None, workers: int) -> str:
    started = time.perf_counter()
    results = validate_runs(runs, model, cells=cells, workers=workers, seed=0)
    wall = time.perf_counter() - started
    stats = {s.metric: s for s in error_summary(validation_rows(results))}
    met = sum(bool(stats[m].meets) for m in TARGETS)
    print(f"{label} cells={len(results)} wall_s={wall:.1f} targets_met={met}/{len(TARGETS)}",
          file=sys.stderr, flush=True)  # fmt: skip
    cols = [f"{stats[m].median:.1f} / {stats[m].p90:.1f}" for m in SHOWN]
    return f"| {label} | {len(results)} | " + " | ".join(cols) + f" | {met}/{len(TARGETS)} |"


def main(argv: list[str]) -> None:
    """Run every configuration and print the table."""
    workers = int(argv[argv.index("--workers") + 1]) if "--workers" in argv else 2
    given = [a for a in argv if not a.startswith("--") and not a.isdigit()]
    runs = Path(given[0]) if given else DEFAULT_RUNS
    validate_runs(runs, replay_model("calibrated"), cells="non-cc_BestBatch_gamma_mean4_sla40")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        gamma, bursty = _fitted(runs, "*_gamma_*", folder), _fitted(runs, "*_bursty_*", folder)
        configs = [
            ("profile (before)", replay_model("profile"), None),
            ("calibrated (all cells)", replay_model("calibrated"), None),
            ("fit bursty -> bursty (in sample)", bursty, "*_bursty_*"),
            ("fit gamma -> bursty (transfer)", gamma, "*_bursty_*"),
            ("fit gamma -> gamma (in sample)", gamma, "*_gamma_*"),
            ("fit bursty -> gamma (transfer)", bursty, "*_gamma_*"),
            ("timing only (idle dispatch)",
             ReplayModel("timing", {"kind": "sincere-runs"}, {"dispatch": "idle"}), None),
            ("dispatch only (profiles)",
             ReplayModel("dispatch", {"kind": "sincere-table"}, {"dispatch": "server"}), None),
        ]  # fmt: skip
        header = " | ".join(f"{m} ({'pts' if m == 'slo_attainment' else '%'})" for m in SHOWN)
        lines = [f"| model | cells | {header} | targets met |",
                 "|---|---:|" + "---:|" * len(SHOWN) + "---:|"]  # fmt: skip
        lines += [_row(label, runs, model, cells, workers) for label, model, cells in configs]
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])
