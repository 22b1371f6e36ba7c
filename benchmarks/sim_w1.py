"""End-to-end speed of `sincere simulate` on the reference workload W1.

Runs the whole CLI process (imports, workload generation, simulation, Parquet and
JSON output) on examples/w1.yaml at 10,000 requests and at larger sizes, and
records wall time, simulated requests per wall-clock second and peak memory (max
RSS of the child process). One warm-up run first; fixed seed 0.

Each size runs with the compiled modules (``sincere native``; the default once built)
and with ``SINCERE_NATIVE=0`` (the interpreted sources), in turn, ``--repeat`` times;
the table gives medians and the compiled/interpreted wall ratio, pair by pair, so the
comparison holds while the machine's speed drifts. Both modes must give the same
summary (checked). No peer figure is printed: Vidur cannot run on this machine, and a
ratio to a figure from another run, machine or size would not be a measurement
(benchmarks/README.md, "Speed beside Vidur").

    .venv/bin/python benchmarks/sim_w1.py                 # 10k and 1M requests
    .venv/bin/python benchmarks/sim_w1.py --sizes 10000 100000 --repeat 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SINCERE = Path(sys.executable).with_name("sincere")


def run_once(config: Path, out: Path, compiled: bool) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one `sincere simulate` process.

    The peak is the largest child so far (``RUSAGE_CHILDREN``), so only growth shows.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    env = dict(os.environ, SINCERE_NATIVE="1" if compiled else "0")
    started = time.perf_counter()
    subprocess.run(
        [str(SINCERE), "simulate", str(config), "--out", str(out), "--quiet"], check=True, env=env
    )
    wall = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(peak_kib, before) / 1024.0


def native_state() -> str:
    """What `sincere native status` says (the compiled modules' state)."""
    done = subprocess.run(
        [str(SINCERE), "native", "status"], capture_output=True, text=True, check=False
    )
    return done.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each mode per size")
    args = parser.parse_args()
    print(native_state(), flush=True)
    base = yaml.safe_load((ROOT / "examples" / "w1.yaml").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        paths = {}
        for size in [1_000, *args.sizes]:
            cfg = dict(base, workload=dict(base["workload"], num_requests=size))
            paths[size] = tmp_dir / f"w1_{size}.yaml"
            paths[size].write_text(yaml.safe_dump(cfg))
        for compiled in (True, False):  # warm-up
            run_once(paths[1_000], tmp_dir / "warm", compiled)
        for size in args.sizes:
            walls: dict[bool, list[float]] = {True: [], False: []}
            peaks: dict[bool, float] = {}
            summaries = {}
            for _ in range(max(1, args.repeat)):
                for compiled in (True, False):
                    out = tmp_dir / f"out_{size}_{compiled}"
                    wall, peak = run_once(paths[size], out, compiled)
                    walls[compiled].append(wall)
                    peaks[compiled] = peak
                    summaries[compiled] = (out / "summary.json").read_text()
            if summaries[True] != summaries[False]:
                raise SystemExit(f"compiled and interpreted summaries differ at {size} requests")
            summary = json.loads(summaries[True])
            ratios = [a / b for a, b in zip(walls[True], walls[False], strict=True)]
            wall = statistics.median(walls[True])
            row = {
                "requests": size,
                "wall_s": round(wall, 2),
                "requests_per_s": round(size / wall),
                "interpreted_wall_s": round(statistics.median(walls[False]), 2),
                "compiled_over_interpreted": round(statistics.median(ratios), 3),
                "peak_rss_mib": round(peaks[True]),
                "ttft_p50_s": summary["ttft_s"]["p50"],
                "ttft_p99_s": summary["ttft_s"]["p99"],
                "tpot_p50_s": summary["tpot_s"]["p50"],
                "e2e_p50_s": summary["e2e_s"]["p50"],
                "e2e_p99_s": summary["e2e_s"]["p99"],
            }
            print(json.dumps(row), flush=True)
    cpus, python = os.cpu_count(), platform.python_version()
    print(f"machine: {platform.machine()}, {cpus} CPUs, Python {python}")


if __name__ == "__main__":
    main()
