"""How fast workloads are made: one million generated requests, and the Azure 2023 traces read.

Targets (they were timed tests; timing belongs here, where a noisy machine shows as a
spread rather than a red test run):

* ``generate`` of W1's workload (Azure 2023 conversation lengths, Poisson arrivals) with
  the SINCERE model mix and Niyama's tiers, 1,000,000 requests: under 2 s;
* ``read_trace`` of each Azure 2023 trace (code: 8,819 rows, conversation: 19,366): under
  1 s, also as the first read of a fresh process (which loads the CSV reader's modules).

Each in-process figure runs after one warm-up, ``--repeat`` times; the first-read figure
is ``--repeat`` fresh processes, each timing its one read from inside. The table gives the
median and the spread.

    python benchmarks/workload_speed.py --repeat 5
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from sincere.workload import traces
from sincere.workload.config import generate, load_workload_config

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "traces"


def w1_million() -> dict[str, Any]:
    """W1's workload (examples/w1.yaml) at 1M requests, over the SINCERE model mix and
    Niyama's tiers (what the test generated)."""
    w1: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "w1.yaml").read_text())["workload"]
    return {**w1, "num_requests": 1_000_000, "models": "sincere", "tiers": {"preset": "niyama"}}


FIRST_READ = (
    "import sys, time; from sincere.workload.traces import read_trace; "
    "t = time.perf_counter(); read_trace(sys.argv[1]); print(time.perf_counter() - t)"
)


def timed(work: Callable[[], object], repeat: int) -> list[float]:
    """Seconds of ``repeat`` calls of ``work`` after one warm-up."""
    work()
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        out.append(time.perf_counter() - started)
    return out


def first_reads(path: Path, repeat: int) -> list[float]:
    """Seconds of the first ``read_trace`` in each of ``repeat`` fresh processes."""
    runs = [[sys.executable, "-c", FIRST_READ, str(path)] for _ in range(repeat)]
    return [float(subprocess.run(r, check=True, capture_output=True, text=True).stdout)
            for r in runs]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    cfg = load_workload_config(w1_million())
    rows = [
        ("generate, 1M requests (W1 lengths)", 2.0, timed(lambda: generate(cfg, 1), args.repeat))
    ]
    for service in ("code", "conv"):
        path = SHARED / f"AzureLLMInferenceTrace_{service}.csv"
        seconds = timed(lambda p=path: traces.read_trace(p), args.repeat)
        rows.append((f"read_trace, Azure 2023 {service}", 1.0, seconds))
        rows.append((f"read_trace, Azure 2023 {service}, first in a process", 1.0,
                     first_reads(path, args.repeat)))  # fmt: skip
    print("| what | target s | median s | min–max s | met |\n|---|---:|---:|---:|---|")
    for name, target, seconds in rows:
        med = statistics.median(seconds)
        print(f"| {name} | {target:g} | {med:.3f} | {min(seconds):.3f}–{max(seconds):.3f} "
              f"| {'yes' if med < target else 'no'} |")  # fmt: skip
    print(f"\nmachine: {platform.machine()}, Python {platform.python_version()}")


if __name__ == "__main__":
    main()
