"""Speed of prefix-heavy runs, paired with an earlier tree: Mooncake's trace and sessions.

Cells (each one whole ``sincere simulate`` process, timed by wall clock and by the child's
CPU time, user + system, which a busy machine disturbs less):

* ``mooncake`` -- Mooncake's conversation trace (12,031 requests, ~12k-token prompts,
  512-token ``hash_ids``) on 4 Llama-3.1-8B instances on H100s (131k context: every
  request is served) behind least-outstanding, prefix caching on;
* ``sessions`` -- the generated multi-turn sessions of docs/workload.md (20 shared
  1,000-token system prompts, 1-6 turns, 16-token block ids) with ``--instances`` H100s
  behind prefix-aware, sessions starting at 1/s per instance, ``--num-requests`` turns;
  ``--block-tokens`` changes the block ids' size.

With ``--baseline-src`` (a ``src`` folder of the earlier tree, e.g. ``git archive REV |
tar -x -C /tmp/base``) each run of this tree is paired with one of the baseline, in turn,
and the two must write byte-identical ``summary.json`` and ``requests.parquet`` (checked).
``SINCERE_NATIVE`` is passed through (``SINCERE_NATIVE=0``: the interpreted sources). The
compiled modules (:mod:`sincere.native`) are used only where they were built from the very
sources run, so to compare compiled trees build each into its own folder and name the
baseline's with ``--baseline-native-dir`` (this tree's: ``SINCERE_NATIVE_DIR``, or the
default)::

    PYTHONPATH=/tmp/base/src SINCERE_NATIVE_DIR=/tmp/base-native sincere native build
    python benchmarks/prefix_heavy_speed.py mooncake --baseline-src /tmp/base/src \
        --baseline-native-dir /tmp/base-native --repeat 3

Interpreted, and this tree alone::

    SINCERE_NATIVE=0 python benchmarks/prefix_heavy_speed.py mooncake \
        --baseline-src /tmp/base/src --repeat 2
    python benchmarks/prefix_heavy_speed.py sessions --instances 64 --num-requests 100000

Each tree's ``sincere native status`` is printed first: a build that is stale for its
sources runs interpreted.
"""

from __future__ import annotations

import argparse
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
MOONCAKE = ROOT.parent / "shared" / "data" / "traces" / "mooncake_conversation_trace.jsonl"


def mooncake_config() -> dict[str, Any]:
    """4 Llama-3.1-8B H100s behind least-outstanding; the trace replaces the workload."""
    return {
        "seed": 0,
        "workload": {
            "num_requests": 1,
            "arrival": {"kind": "poisson", "rate": 1.0},
            "lengths": {"source": "azure-conv-2023"},
            "models": {"llama-3.1-8b": 1.0},
        },
        "instances": [{"model": "llama-3.1-8b", "accelerator": "H100-SXM", "count": 4}],
        "router": {"name": "least-outstanding"},
    }


def sessions_config(instances: int, num_requests: int, block_tokens: int) -> dict[str, Any]:
    """Multi-turn sessions with shared system prompts on ``instances`` H100s."""
    return {
        "seed": 0,
        "workload": {
            "num_requests": num_requests,
            "arrival": {"kind": "poisson", "rate": float(instances)},
            "lengths": {
                "prompt": {"kind": "uniform", "low": 20, "high": 400},
                "output": {"kind": "uniform", "low": 20, "high": 300},
            },
            "sessions": {
                "min_turns": 1,
                "max_turns": 6,
                "think_s": 10.0,
                "system_prompt_tokens": 1000,
                "num_system_prompts": 20,
                "popularity_s": 1.1,
                "block_tokens": block_tokens,
            },
            "models": {"llama-3-8b": 1.0},
        },
        "instances": [
            {
                "name": "h100",
                "model": "llama-3-8b",
                "accelerator": "H100-SXM",
                "count": instances,
                "step_model": {"kind": "roofline"},
                "engine": {"kind": "continuous", "enable_prefix_caching": True},
            }
        ],
        "router": {"name": "prefix-aware"},
    }


def run_once(
    config: Path, out: Path, src: Path, native: Path | None, extra: list[str]
) -> tuple[float, float]:
    """Wall and CPU seconds of one ``sincere simulate`` process importing ``src`` (its
    compiled modules from ``native`` if given)."""
    env = dict(os.environ, PYTHONPATH=str(src))
    if native is not None:
        env["SINCERE_NATIVE_DIR"] = str(native)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    command = [str(SINCERE), "simulate", str(config), "--out", str(out), "--quiet", *extra]
    subprocess.run(command, check=True, env=env, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def native_status(src: Path, native: Path | None) -> str:
    """``sincere native status`` for ``src`` (active, stale, not built, disabled)."""
    env = dict(os.environ, PYTHONPATH=str(src))
    if native is not None:
        env["SINCERE_NATIVE_DIR"] = str(native)
    command = [str(SINCERE), "native", "status"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def same_outputs(a: Path, b: Path) -> bool:
    """Whether two runs wrote byte-identical summaries and request tables."""
    names = ("summary.json", "requests.parquet")
    return all((a / n).read_bytes() == (b / n).read_bytes() for n in names)


def main() -> None:
    """Parse the arguments, run the cell in pairs and print one line per tree."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=["mooncake", "sessions"])
    parser.add_argument("--baseline-src", type=Path, help="src folder of the earlier tree")
    parser.add_argument(
        "--baseline-native-dir", type=Path, help="the earlier tree's compiled modules"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs (pairs) per tree")
    parser.add_argument("--instances", type=int, default=64)
    parser.add_argument("--num-requests", type=int, default=100_000)
    parser.add_argument("--block-tokens", type=int, default=16)
    args = parser.parse_args()
    if args.which == "mooncake":
        config, extra = mooncake_config(), ["--trace", str(MOONCAKE)]
    else:
        config = sessions_config(args.instances, args.num_requests, args.block_tokens)
        extra = []
    trees: dict[str, tuple[Path, Path | None]] = {"this tree": (ROOT / "src", None)}
    if args.baseline_src is not None:
        trees = {"baseline": (args.baseline_src.resolve(), args.baseline_native_dir), **trees}
    native = os.environ.get("SINCERE_NATIVE", "default")
    print(f"{args.which}: SINCERE_NATIVE={native}", flush=True)
    for name, (src, native_dir) in trees.items():
        compile_tree(src)  # (no tree compiles its sources while timed)
        print(f"{name}: {native_status(src, native_dir)}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
        for k in range(max(1, args.repeat)):
            for name, (src, native_dir) in trees.items():
                out = Path(tmp) / f"{name}-{k}"
                runs[name].append(run_once(path, out, src, native_dir, extra))
        if len(trees) == 2:
            same = same_outputs(Path(tmp) / "baseline-0", Path(tmp) / "this tree-0")
            print(f"outputs byte-identical: {same}")
        for name, values in runs.items():
            walls = ", ".join(f"{w:.1f}" for w, _ in values)
            cpus = ", ".join(f"{c:.1f}" for _, c in values)
            wall = statistics.median(w for w, _ in values)
            cpu = statistics.median(c for _, c in values)
            print(f"{name}: median {wall:.2f} s wall, {cpu:.2f} s CPU (walls {walls}; CPU {cpus})")
    python = platform.python_version()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {python}")


if __name__ == "__main__":
    main()
