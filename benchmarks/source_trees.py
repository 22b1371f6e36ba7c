"""Source trees timed against each other: each one's modules compiled before it is timed.

A process imports a module from its cached bytecode (``__pycache__``) when that is there
and current, and otherwise compiles the source; with ``PYTHONDONTWRITEBYTECODE`` set (as on
the project's VMs) it writes no cache, so a fresh ``git archive`` of another tree compiles
every module it imports in every run -- about 0.12 s of CPU in a ``sincere simulate``
process, 7 % of W1 at 100k requests on one instance -- while a checkout whose caches
earlier runs wrote does not. The scripts that pair trees (``sim_scaling.py --paired``,
``prefix_heavy_speed.py --baseline-src``, ``prefix_cache_speed.py``) compile both sides
first with :func:`compile_tree`.
"""

from __future__ import annotations

import compileall
from pathlib import Path


def compile_tree(src: Path | str) -> None:
    """Write the bytecode of every module under ``src`` (``compileall``: written whatever
    ``PYTHONDONTWRITEBYTECODE`` says, and read by imports either way)."""
    if not compileall.compile_dir(str(src), quiet=1):
        raise SystemExit(f"some sources under {src} do not compile")
