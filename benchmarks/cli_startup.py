"""Start-up time of the ``sincere`` command: every verb's ``--help`` and the small verbs.

The commands are ``sincere --help``, ``--version``, ``VERB [SUBCOMMAND] --help`` for every
verb and subcommand of the measured tree (read from its command table, so a new verb is
timed without editing this file) and the small verbs (``native status``, ``catalog ...``,
``keys list`` on a one-key store made first). Each command runs as a fresh process
(``python -c 'from sincere.cli import main; main()' ARGS``), exactly what the console
script does, one warm-up first, then ``--repeat`` times in turn; the table gives the
median wall time per command. The
peer is a bare interpreter (``python -c pass``) timed in the same rounds, so the
column "over python" is what sincere itself adds on this machine. With
``--baseline-src DIR`` (the ``src`` folder of another checkout, e.g. one made with
``git archive``) every command is also timed against that tree in the same rounds,
and the last column is the ratio baseline / this tree.

    python benchmarks/cli_startup.py
    python benchmarks/cli_startup.py --repeat 9 --baseline-src /tmp/sincere-main/src

Target: every ``--help`` and the small verbs start in 0.3 s or less.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENTRY = "import sys; sys.argv[0] = 'sincere'; from sincere.cli import main; main()"
TARGET_S = 0.3

SMALL_VERBS: tuple[tuple[str, ...], ...] = (
    ("native", "status"),
    ("catalog", "accelerators"),
    ("catalog", "models"),
)
WALK = """
import json
from sincere.cli.app import VERBS, load_verb
def walk(command, path):
    yield path
    for name, sub in sorted((getattr(command, "commands", None) or {}).items()):
        yield from walk(sub, [*path, name])
print(json.dumps([p for verb in VERBS for p in walk(load_verb(verb), [verb])]))
"""


def command_paths(src: Path) -> list[tuple[str, ...]]:
    """Every verb and subcommand of the tree at ``src``, as argument lists."""
    env = dict(os.environ, PYTHONPATH=str(src))
    done = subprocess.run(
        [sys.executable, "-c", WALK], env=env, capture_output=True, text=True, check=True
    )
    return [tuple(path) for path in json.loads(done.stdout)]


def commands(src: Path, store: Path) -> list[tuple[str, ...]]:
    """What is timed: root help and version, every ``--help``, the small verbs."""
    helps = [(*path, "--help") for path in command_paths(src)]
    return [
        ("--help",),
        ("--version",),
        *helps,
        *SMALL_VERBS,
        ("keys", "list", "--store", str(store)),
    ]


def make_store(src: Path, folder: Path) -> Path:
    """A key store with one key, for ``keys list`` to read."""
    store = folder / "keys.json"
    env = dict(os.environ, PYTHONPATH=str(src))
    argv = [sys.executable, "-c", ENTRY, "keys", "create", "--name", "bench", "--store", str(store)]
    subprocess.run(argv, env=env, capture_output=True, check=True)
    return store


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
    with tempfile.TemporaryDirectory() as folder:
        run_rounds(opts.repeat, trees, commands(opts.src, make_store(opts.src, Path(folder))))


def run_rounds(repeat: int, trees: dict[str, Path], todo: list[tuple[str, ...]]) -> None:
    """Time every command of ``todo`` on every tree, ``repeat`` rounds; print the table."""
    runs: dict[tuple[str, tuple[str, ...]], list[float]] = {}
    bare: list[float] = []
    for round_ in range(repeat + 1):  # round 0 is the warm-up
        bare_s = time_once((), None)
        for args in todo:
            for name, src in trees.items():
                wall = time_once(args, src)
                if round_:
                    runs.setdefault((name, args), []).append(wall)
        if round_:
            bare.append(bare_s)
    print_table(runs, statistics.median(bare), repeat, todo, baseline="base" in trees)


def print_table(
    runs: dict[tuple[str, tuple[str, ...]], list[float]],
    python_s: float,
    repeat: int,
    todo: list[tuple[str, ...]],
    baseline: bool,
) -> None:
    """The Markdown table of medians and the verdict against the target."""
    print(f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"# bare interpreter: {python_s:.3f} s (median of {repeat})")
    header = "| command | this tree s | over python s |"
    header += " baseline s | baseline / this |" if baseline else ""
    print(header)
    print("|---|---:|---:|" + ("---:|---:|" if baseline else ""))
    worst = 0.0
    for args in todo:
        this = statistics.median(runs[("this", args)])
        worst = max(worst, this)
        shown = " ".join("STORE" if a.endswith("keys.json") else a for a in args)
        row = f"| `sincere {shown}` | {this:.3f} | {this - python_s:.3f} |"
        if baseline:
            base = statistics.median(runs[("base", args)])
            row += f" {base:.3f} | {base / this:.1f}x |"
        print(row)
    verdict = "meets" if worst <= TARGET_S else "misses"
    print(f"slowest command {worst:.3f} s: {verdict} the {TARGET_S} s target")


if __name__ == "__main__":
    main()
