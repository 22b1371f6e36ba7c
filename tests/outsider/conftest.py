"""The outsider suite: sincere driven only through its public interfaces, as a new user would.

Every test here runs the ``sincere`` command in a child process (or a server over HTTP on
127.0.0.1) and judges what a user sees: the exit status, stdout, stderr and the files
written. Nothing is imported from sincere's internals except to locate the package.

Fixtures:

* ``sincere`` -- run ``sincere ARGS...`` (the console script's entry point, in a fresh
  interpreter) with a timeout; returns the finished process (``returncode``, ``stdout``,
  ``stderr`` as text).
* ``cli_environment`` -- the environment of those children (this interpreter's ``sincere``
  and ``python`` first on ``PATH``, 80 columns, no colour).
* ``modules_loaded`` -- the top-level modules ``sincere ARGS`` imports (fresh process).
* ``scratch_repo`` -- a fresh copy of the repository's tracked files (README, docs,
  examples, benchmarks, scripts, src) in a temporary folder, to run commands from "the
  repository root" without writing into the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENTRY = "import sys; sys.argv[0] = 'sincere'; from sincere.cli import main; main()"
DEFAULT_TIMEOUT_S = 120.0
_IGNORED = (".*", "runs", "out", "__pycache__", "*.egg-info", "build", "dist", "tests")

Sincere = Callable[..., subprocess.CompletedProcess[str]]


def cli_env() -> dict[str, str]:
    """The environment of a child: this interpreter's ``sincere``, no colours, 80 columns."""
    env = dict(os.environ)
    src = str(ROOT / "src")
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([src, *[p for p in paths if p != src]])
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    env.update(COLUMNS="80", NO_COLOR="1", TERM="dumb", PYTHONWARNINGS="ignore")
    return env


def run_sincere(
    args: Sequence[str], *, cwd: Path | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """``sincere ARGS`` in a child process; a run past ``timeout_s`` fails the test."""
    command = [sys.executable, "-c", ENTRY, *args]
    try:
        return subprocess.run(
            command,
            cwd=cwd or ROOT,
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"`sincere {' '.join(args)}` ran past {timeout_s:g} s")


@pytest.fixture
def cli_environment() -> Callable[[], dict[str, str]]:
    """``cli_environment()``: the environment children run in (see :func:`cli_env`)."""
    return cli_env


@pytest.fixture
def sincere() -> Sincere:
    """Run ``sincere ARGS`` as a user would (a fresh process); see :func:`run_sincere`."""
    return run_sincere


_PROBE = (
    "import sys, json, atexit\n"
    "atexit.register(lambda: sys.__stderr__.write("
    "'\\nMODULES ' + json.dumps(sorted(sys.modules))))\n" + ENTRY
)


def modules_of(args: Sequence[str]) -> set[str]:
    """The top-level modules a ``sincere ARGS`` process had imported when it exited."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *args],
        cwd=ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode in (0, 1, 2), done.stderr  # bare `sincere` shows help, exit 2
    names = json.loads(done.stderr.rsplit("MODULES ", 1)[-1])
    return {name.split(".")[0] for name in names}


@pytest.fixture
def modules_loaded() -> Callable[..., set[str]]:
    """``modules_loaded(*args)``: top-level modules ``sincere ARGS`` imports."""
    return lambda *args: modules_of(args)


def copy_repo(target: Path) -> Path:
    """Copy the repository (without caches, outputs and version control) to ``target``."""
    shutil.copytree(ROOT, target, ignore=shutil.ignore_patterns(*_IGNORED))
    return target


SHARED = ROOT.parent / "shared"


@pytest.fixture
def scratch_repo(tmp_path: Path) -> Path:
    """A fresh copy of the repository to run commands in (outputs stay in tmp); when the
    published data exists beside the checkout, ``../shared`` points at it from the copy too."""
    if SHARED.is_dir():
        (tmp_path / "shared").symlink_to(SHARED, target_is_directory=True)
    return copy_repo(tmp_path / "repo")
