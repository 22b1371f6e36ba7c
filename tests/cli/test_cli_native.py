"""`sincere native build` reports the time of the whole command, start-up included."""

from __future__ import annotations

import subprocess
import sys
import time

from sincere.cli.native import _process_age_s


def test_process_age_counts_time_spent_before_the_command() -> None:
    """A process that slept 0.5 s before asking reports an age of at least 0.5 s."""
    code = (
        "import time; time.sleep(0.5); "
        "from sincere.cli.native import _process_age_s; print(_process_age_s())"
    )
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    wall = time.perf_counter() - started
    age = float(out.stdout)
    assert 0.5 <= age <= wall + 0.05
    assert _process_age_s() > 0.0
