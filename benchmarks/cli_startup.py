"""Start-up time of the ``sincere`` command: ``--help`` and the small verbs.

Each command runs as a fresh process (``python -c 'from sincere.cli import main;
main()' ARGS``), exactly what the console script does, one warm-up first, then
``--repeat`` times in turn; the table gives the median wall time per command. The
peer is a bare interpreter (``python -c pass``) timed in the same rounds, so the
column "over python" is what sincere itself adds on this machine. With
``--baseline-src DIR`` (the ``src`` folder of another checkout, e.g. one made with
``git archive``) every command is also timed against that tree in the same rounds,
and the last column is the ratio baseline / this tree.

    python benchmarks/cli_startup.py
    python benchmarks/cli_startup.py --repeat 9 --baseline-src /tmp/sincere-main/src

Target: ``--help`` and the small verbs start in 0.3 s or less.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENTRY = "import sys; sys.argv[0] = 'sincere'; from sincere.cli import main; main()"
TARGET_S = 0.3

COMMANDS: tuple[tuple[str, ...], ...] = (
    ("--help",),
    ("--version",),
    ("simulate", "--help"),
    ("trace", "stats", "--help"),
    ("bench", "--help"),
    ("native", "status"),
    ("catalog", "accelerators"),
    ("catalog", "models"),
)


def time_once(args: tuple[str, ...], src: Path | None) -> float:
    """Wall seconds of one process; ``src`` None times a bare interpreter."""
    env = dict(os.environ, COLUMNS="100")
    if src is not None:
        env["PYTHONPATH"] = str(src)
    command = [sys.executable, "-c", ENTRY, *args] if src is not None else [sys.executable]
    if src is None:
        command += ["-c", "pass"]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode not in (0, 1):  # `native status` exits 1 when not built
        raise RuntimeError(f"{args} exited {done.returncode}: {done.stderr.decode()[-400:]}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--src", type=Path, default=ROOT / "src", help="tree measured")
    parser.add_argument("--baseline-src", type=Path, help="tree compared against")
    opts = parser.parse_args()
    trees = {"this": opts.src} | ({"base": opts.baseline_src} if opts.baseline_src else {})
    runs: dict[tuple[str, tuple[str, ...]], list[float]] = {}
    bare: list[float] = []
    for round_ in range(opts.repeat + 1):  # round 0 is the warm-up
        bare_s = time_once((), None)
        for args in COMMANDS:
            for name, src in trees.items():
                wall = time_once(args, src)
                if round_:
                    runs.setdefault((name, args), []).append(wall)
        if round_:
            bare.append(bare_s)
    python_s = statistics.median(bare)
    print(f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"# bare interpreter: {python_s:.3f} s (median of {opts.repeat})")
    header = "| command | this tree s | over python s |"
    header += " baseline s | baseline / this |" if "base" in trees else ""
    print(header)
    print("|---|---:|---:|" + ("---:|---:|" if "base" in trees else ""))
    worst = 0.0
    for args in COMMANDS:
        this = statistics.median(runs[("this", args)])
        worst = max(worst, this)
        row = f"| `sincere {' '.join(args)}` | {this:.3f} | {this - python_s:.3f} |"
        if "base" in trees:
            base = statistics.median(runs[("base", args)])
            row += f" {base:.3f} | {base / this:.1f}x |"
        print(row)
    verdict = "meets" if worst <= TARGET_S else "misses"
    print(f"slowest command {worst:.3f} s: {verdict} the {TARGET_S} s target")


if __name__ == "__main__":
    main()
