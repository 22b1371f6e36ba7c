"""Scoreboard against real vLLM runs: the simulator replays each run, request by request.

Usage: ``python benchmarks/validate_serving_runs.py [RUNS_DIR] [--out OUT]`` (default
``../shared/data/serving-runs/llmservingsim-vllm`` beside the checkout; ``OUT`` keeps the
CSVs, report and figures per preset, a temporary folder otherwise). Seed 0; the simulator's
default step model (the roofline with each accelerator's default constants), run under two
engine execution models: ``eager`` (the 2024 engine: CPU in series, no CUDA graphs, no front
end) and ``vllm-v1`` (CUDA graphs, asynchronous scheduling, the API server's intake).

It is ``sincere validate runs RUNS_DIR --out OUT`` plus a table for benchmarks/README.md:
per run, the median absolute percentage error of TTFT, TPOT and E2E (and queue time), the
median signed error (bias) of each, the simulated and real median TTFT, and where the step
model's constants come from. One line per run on stderr: ``preset run requests wall_s``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from sincere.experiment.serving_runs import compare_run
from sincere.experiment.serving_runs_report import ErrorStat, error_stats, write_runs_report
from sincere.workload.serving_runs import read_serving_runs

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RUNS = ROOT.parent / "shared" / "data" / "serving-runs" / "llmservingsim-vllm"
SHOWN = ("ttft_s", "tpot_s", "e2e_s", "queue_s")
PRESETS = ("eager", "vllm-v1")


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def _row(name: str, stats: dict[str, ErrorStat], origin: str) -> str:
    apes = [f"{_pct(stats[m].median_ape)} ({_pct(stats[m].bias)})" for m in SHOWN]
    return f"| {name} | " + " | ".join(apes) + f" | {origin} |"


def main(argv: list[str]) -> None:
    """Replay every run, write the report and print the scoreboard."""
    out_arg = Path(argv[argv.index("--out") + 1]) if "--out" in argv else None
    given = [a for i, a in enumerate(argv) if not a.startswith("--")
             and (i == 0 or argv[i - 1] != "--out")]  # fmt: skip
    runs_dir = Path(given[0]) if given else DEFAULT_RUNS
    runs = read_serving_runs(runs_dir)
    for preset in PRESETS:
        results = []
        for run in runs:
            started = time.perf_counter()
            results.append(compare_run(run, seed=0, preset=preset))
            wall = time.perf_counter() - started
            print(f"{preset} {run.name} requests={len(run)} wall_s={wall:.1f}", file=sys.stderr,
                  flush=True)  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            out = (out_arg / preset) if out_arg else Path(tmp)
            write_runs_report(results, out, source=str(runs_dir))
        print(f"\nengine execution model: {preset}\n")
        print("| run | TTFT | TPOT | E2E | queue | step-model constants |")
        print("|---|---:|---:|---:|---:|---|")
        for result in results:
            stats = {s.metric: s for s in error_stats([result])}
            origin = result.setup.step_model.split("constants ", 1)[-1].split(":")[0]
            print(_row(result.run.name, stats, origin))


if __name__ == "__main__":
    main(sys.argv[1:])
