"""End-to-end speed of `sincere simulate` on the reference workload W1.

Runs the whole CLI process (imports, workload generation, simulation, Parquet and
JSON output) on examples/w1.yaml at 10,000 requests and at larger sizes, and
records wall time, simulated requests per wall-clock second and peak memory (max
RSS of the child process). One warm-up run first; fixed seed 0.

    .venv/bin/python benchmarks/sim_w1.py                 # 10k and 1M requests
    .venv/bin/python benchmarks/sim_w1.py --sizes 10000 100000
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SINCERE = Path(sys.executable).with_name("sincere")
VIDUR_RPS = 670.0  # Vidur's whole-process speed on W1 (10k requests), from the issue


def run_once(config: Path, out: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one `sincere simulate` process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    subprocess.run(
        [str(SINCERE), "simulate", str(config), "--out", str(out), "--quiet"], check=True
    )
    wall = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(peak_kib, before) / 1024.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    args = parser.parse_args()
    base = yaml.safe_load((ROOT / "examples" / "w1.yaml").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        rows = []
        for k, size in enumerate([1_000, *args.sizes]):  # the first is the warm-up
            cfg = dict(base, workload=dict(base["workload"], num_requests=size))
            path = tmp_dir / f"w1_{size}.yaml"
            path.write_text(yaml.safe_dump(cfg))
            wall, peak = run_once(path, tmp_dir / f"out_{size}")
            if k == 0:
                continue
            summary = json.loads((tmp_dir / f"out_{size}" / "summary.json").read_text())
            rows.append(
                {
                    "requests": size,
                    "wall_s": round(wall, 2),
                    "requests_per_s": round(size / wall),
                    "vs_vidur": round(size / wall / VIDUR_RPS, 1),
                    "peak_rss_mib": round(peak),
                    "ttft_p50_s": summary["ttft_s"]["p50"],
                    "ttft_p99_s": summary["ttft_s"]["p99"],
                    "tpot_p50_s": summary["tpot_s"]["p50"],
                    "e2e_p50_s": summary["e2e_s"]["p50"],
                    "e2e_p99_s": summary["e2e_s"]["p99"],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    print(f"machine: {platform.machine()}, Python {platform.python_version()}")


if __name__ == "__main__":
    main()
