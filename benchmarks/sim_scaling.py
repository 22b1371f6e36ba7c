"""How the simulator's cost grows with the fleet: 1, 8 and 64 instances, same load each.

W1 (examples/w1.yaml: Llama-3-8B on an A100, Sarathi chunk 512) with ``count`` instances
behind a router and ``count`` times W1's arrival rate, so every instance sees W1's load;
10k, 100k and 1M requests. Each cell is one whole ``sincere simulate`` process (imports,
workload, simulation, Parquet / JSON output), timed by wall clock and by the child's CPU
time (user + system, ``RUSAGE_CHILDREN``), which a busy machine disturbs less. The
ratio column is a cell's CPU time over the 1-instance cell's at the same size, measured
in the same call. One warm-up process first; ``--repeat`` runs per cell, medians.

    .venv/bin/python benchmarks/sim_scaling.py --quick      # 10k and 100k requests
    .venv/bin/python benchmarks/sim_scaling.py              # 10k, 100k and 1M
    .venv/bin/python benchmarks/sim_scaling.py --router least-outstanding

``SINCERE_NATIVE`` is passed through: compiled modules when built (the default), or
``SINCERE_NATIVE=0`` for the interpreted sources.

``--paired OTHER_SRC`` compares two source trees in one run: every cell is run with this
tree's sources and then with ``OTHER_SRC`` on ``PYTHONPATH`` (e.g. a ``git archive`` of an
earlier commit), in turn, ``--repeat`` times; each line gives both CPU times and their
ratio, and each tree's CPU time over its own 1-instance cell of the same repetition.

    SINCERE_NATIVE=0 .venv/bin/python benchmarks/sim_scaling.py --sizes 100000 \
        --instances 1 64 --router least-outstanding --repeat 2 --paired /tmp/before/src

Compiled, each tree with its own build (``PYTHONPATH=/tmp/before/src
SINCERE_NATIVE_DIR=/tmp/before-native sincere native build``), ``--paired-native-dir
/tmp/before-native``.

``--interleave`` (this tree alone) goes round the cells repetition by repetition (1, 64,
1, 64, ... instances) instead of running each cell's repetitions in a row, and gives each
repetition's CPU time over its own first cell, then the median of those ratios per cell:
the cost of the fleet's size taken pair by pair, which drifts in the machine's speed move
less than medians of cells run minutes apart.

    .venv/bin/python benchmarks/sim_scaling.py --sizes 100000 --instances 1 64 \
        --router least-outstanding --repeat 10 --interleave
"""

from __future__ import annotations

import argparse
import copy
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
from typing import Any

import yaml
from source_trees import compile_tree

ROOT = Path(__file__).resolve().parents[1]
SINCERE = Path(sys.executable).with_name("sincere")
W1_RATE = 6.45  # W1's arrival rate per instance, req/s


def config(num_instances: int, num_requests: int, router: str) -> dict[str, Any]:
    """W1 with ``num_instances`` replicas at ``num_instances`` times its rate."""
    cfg: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "w1.yaml").read_text())
    cfg = copy.deepcopy(cfg)
    cfg["workload"]["num_requests"] = num_requests
    cfg["workload"]["arrival"]["rate"] = W1_RATE * num_instances
    cfg["instances"][0]["count"] = num_instances
    if num_instances > 1:
        cfg["router"] = {"name": router}
    return cfg


def cell_file(tmp_dir: Path, count: int, size: int, router: str) -> Path:
    """The configuration of one cell (``config``), written into ``tmp_dir``."""
    path = tmp_dir / f"c{count}_{size}.yaml"
    path.write_text(yaml.safe_dump(config(count, size, router)))
    return path


def print_machine() -> None:
    """The machine the cells ran on, the table's last line."""
    cpus, python = os.cpu_count(), platform.python_version()
    print(f"machine: {platform.machine()}, {cpus} CPUs, Python {python}")


def run_once(
    path: Path, out: Path, src: str | None = None, native_dir: str | None = None
) -> tuple[float, float]:
    """Wall and CPU seconds (user + system) of one ``sincere simulate`` process
    (``src``: the sources it imports, put first on ``PYTHONPATH``; ``native_dir``: where
    its compiled modules are, ``SINCERE_NATIVE_DIR``)."""
    env = None if src is None else {**os.environ, "PYTHONPATH": src}
    if native_dir is not None:
        env = {**(env or os.environ), "SINCERE_NATIVE_DIR": native_dir}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    command = [str(SINCERE), "simulate", str(path), "--out", str(out), "--quiet"]
    subprocess.run(command, check=True, env=env)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10k and 100k requests only")
    parser.add_argument("--sizes", type=int, nargs="+", default=None)
    parser.add_argument("--instances", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--router", default="round-robin")
    parser.add_argument("--repeat", type=int, default=1, help="runs per cell (median)")
    parser.add_argument("--paired", default=None, help="another tree's src, run in turn")
    parser.add_argument(
        "--paired-native-dir", default=None, help="the other tree's compiled modules"
    )
    parser.add_argument(
        "--interleave", action="store_true", help="repetitions round the cells: ratios by pair"
    )
    args = parser.parse_args()
    if args.paired is not None:
        paired(args)
        return
    if args.interleave:
        interleaved(args)
        return
    sizes = args.sizes or ([10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000])
    native = os.environ.get("SINCERE_NATIVE", "default")
    print(f"router {args.router}, SINCERE_NATIVE={native}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        warm = cell_file(tmp_dir, 1, 1_000, args.router)
        run_once(warm, tmp_dir / "warm")
        for size in sizes:
            base_cpu: float | None = None
            for count in args.instances:
                path = cell_file(tmp_dir, count, size, args.router)
                runs = [run_once(path, tmp_dir / "out") for _ in range(max(1, args.repeat))]
                wall = statistics.median(w for w, _ in runs)
                cpu = statistics.median(c for _, c in runs)
                if base_cpu is None:
                    base_cpu = cpu
                summary = json.loads((tmp_dir / "out" / "summary.json").read_text())
                row = {
                    "instances": count,
                    "requests": size,
                    "wall_s": round(wall, 2),
                    "cpu_s": round(cpu, 2),
                    "cpu_us_per_request": round(cpu / size * 1e6, 1),
                    "cpu_vs_1_instance": round(cpu / base_cpu, 2),
                    "ttft_p50_s": round(summary["ttft_s"]["p50"], 3),
                }
                print(json.dumps(row), flush=True)
    print_machine()


def interleaved(args: argparse.Namespace) -> None:
    """This tree's cells, repetition by repetition round the instance counts; each
    repetition's CPU over its first cell, and per cell the median of those ratios."""
    sizes = args.sizes or [10_000, 100_000]
    print(f"router {args.router}, interleaved, SINCERE_NATIVE="
          f"{os.environ.get('SINCERE_NATIVE', 'default')}", flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        warm = cell_file(tmp_dir, 1, 1_000, args.router)
        run_once(warm, tmp_dir / "warm")
        for size in sizes:
            paths = {
                count: cell_file(tmp_dir, count, size, args.router) for count in args.instances
            }
            ratios: dict[int, list[float]] = {count: [] for count in args.instances}
            cpus: dict[int, list[float]] = {count: [] for count in args.instances}
            for rep in range(max(1, args.repeat)):
                first: float | None = None
                for count in args.instances:
                    cpu = run_once(paths[count], tmp_dir / "out")[1]
                    first = cpu if first is None else first
                    cpus[count].append(cpu)
                    ratios[count].append(cpu / first)
                    row = {"rep": rep + 1, "instances": count, "requests": size,
                           "cpu_s": round(cpu, 2), "vs_first": round(cpu / first, 3)}  # fmt: skip
                    print(json.dumps(row), flush=True)
            for count in args.instances:
                row = {"instances": count, "requests": size,
                       "cpu_s_median": round(statistics.median(cpus[count]), 2),
                       "vs_first_median": round(statistics.median(ratios[count]), 3),
                       "vs_first_range": [round(min(ratios[count]), 3),
                                          round(max(ratios[count]), 3)]}  # fmt: skip
                print(json.dumps(row), flush=True)
    print_machine()


def paired(args: argparse.Namespace) -> None:
    """Each cell with this tree's sources, then with ``args.paired``'s, in turn."""
    sizes = args.sizes or [10_000, 100_000]
    this = str(ROOT / "src")
    print(f"router {args.router}, this tree against {args.paired}", flush=True)
    for src in (this, args.paired):
        compile_tree(src)  # (no tree compiles its sources while timed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        warm = cell_file(tmp_dir, 1, 1_000, args.router)
        other = args.paired_native_dir
        run_once(warm, tmp_dir / "warm", this)
        run_once(warm, tmp_dir / "warm", args.paired, other)
        for rep in range(max(1, args.repeat)):
            for size in sizes:
                base: dict[str, float] = {}
                for count in args.instances:
                    path = cell_file(tmp_dir, count, size, args.router)
                    cpu = {tree: run_once(path, tmp_dir / "out", src, native)[1]
                           for tree, src, native in (("this", this, None),
                                                     ("other", args.paired, other))}  # fmt: skip
                    base = base or cpu
                    row = {"rep": rep + 1, "instances": count, "requests": size}
                    for tree in ("this", "other"):
                        row[f"cpu_s_{tree}"] = round(cpu[tree], 2)
                        row[f"vs_1_{tree}"] = round(cpu[tree] / base[tree], 2)
                    row["this_over_other"] = round(cpu["this"] / cpu["other"], 3)
                    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
