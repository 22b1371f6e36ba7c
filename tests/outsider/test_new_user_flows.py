"""Whole sessions a new user runs, judged by what they see: exit status, messages, files.

Each test is a short story from the docs: start an emulated engine and measure it; make a
typo in a model name; sweep schedulers over a config that has scheduler parameters; search
a capacity. Servers bind 127.0.0.1 and are stopped by the PID this test started.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
W1 = ROOT / "examples" / "w1.yaml"
ENTRY = "import sys; sys.argv[0] = 'sincere'; from sincere.cli import main; main()"
Sincere = Callable[..., Any]


@pytest.fixture
def emulator(
    cli_environment: Callable[[], dict[str, str]], stop_child: Callable[[Any], None]
) -> Iterator[str]:
    """`sincere emulate --port 0` in the background; yields its URL, then stops it."""
    env = {**cli_environment(), "COLUMNS": "200"}
    process = subprocess.Popen(
        [sys.executable, "-c", ENTRY, "emulate", "--model", "llama-3-8b", "--port", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        yield _wait_for_url(process, deadline_s=60.0)
    finally:
        stop_child(process)  # Ctrl-C, as a user stops it


def _wait_for_url(process: subprocess.Popen[str], deadline_s: float) -> str:
    """The URL the emulator announces on stderr (fails if it exits or stays silent)."""
    assert process.stderr is not None
    started = time.monotonic()
    seen = ""
    while time.monotonic() - started < deadline_s:
        line = process.stderr.readline()
        if not line and process.poll() is not None:
            pytest.fail(f"sincere emulate exited {process.returncode}: {seen}")
        seen += line
        found = re.search(r"http://127\.0\.0\.1:\d+", line)
        if found:
            return found.group(0)
    pytest.fail(f"sincere emulate announced no URL in {deadline_s:g} s: {seen}")


def test_emulate_then_bench_at_a_rate_and_with_a_cut_workload(
    emulator: str, tmp_path: Path, sincere: Sincere
) -> None:
    """bench measures an emulated engine; a 10,000-request YAML with --num-requests 12 sends 12."""
    out = tmp_path / "rate"
    done = sincere(["bench", emulator, "--rate", "20", "--num-requests", "10", "--out", str(out)])
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_completed"] == 10 and summary["ttft_s"]["p50"] > 0
    cut = tmp_path / "w1"
    args = ["bench", emulator, "-w", str(W1), "--num-requests", "12", "--out", str(cut), "-q"]
    done = sincere(args, timeout_s=90)
    assert done.returncode == 0, done.stderr
    assert pq.read_table(cut / "requests.parquet").num_rows == 12


def test_bench_against_nothing_says_so_at_once(tmp_path: Path, sincere: Sincere) -> None:
    """A URL where nothing listens: exit 2 within seconds, one line, nothing written."""
    started = time.monotonic()
    args = ["bench", "http://127.0.0.1:9", "-w", str(W1), "--out", str(tmp_path / "o")]
    done = sincere(args)
    assert done.returncode == 2 and time.monotonic() - started < 30
    assert done.stderr.startswith("error: ") and "cannot connect to 127.0.0.1:9" in done.stderr
    assert not (tmp_path / "o").exists()


def test_a_model_typo_is_loud(tmp_path: Path, sincere: Sincere) -> None:
    """`llama-3-8bx` in the workload: warnings with the close match, exit 1, outputs kept."""
    config = yaml.safe_load(W1.read_text())
    config["workload"].update(num_requests=300, models={"llama-3-8bx": 1.0})
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    done = sincere(["simulate", str(path), "--out", str(tmp_path / "o")])
    said = " ".join(done.stderr.split())
    assert done.returncode == 1
    assert (
        "workload model 'llama-3-8bx' is served by no instance (did you mean 'llama-3-8b'?)" in said
    )
    assert "every request was rejected (no_instance 300)" in said
    assert "error: no request completed" in said and (tmp_path / "o" / "summary.json").exists()


def test_a_scheduler_sweep_over_w1_runs_every_cell(tmp_path: Path, sincere: Sincere) -> None:
    """Sweeping fcfs / sarathi / niyama over W1 (Sarathi parameters in it) runs 3 ok cells."""
    spec = {
        "base": str(W1),
        "axes": {"scheduler": {"path": "instances.0.engine.scheduler",
                               "values": ["fcfs", "sarathi", "niyama"]}},
        "quick": {"set": {"workload.num_requests": 300}},
    }  # fmt: skip
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    out = tmp_path / "o"
    args = ["experiment", str(path), "--out", str(out), "--quick", "--serial", "--no-report", "-q"]
    done = sincere(args)
    assert done.returncode == 0, done.stderr
    rows = pq.read_table(out / "results.parquet").to_pylist()
    assert sorted(r["scheduler"] for r in rows) == ["fcfs", "niyama", "sarathi"]
    assert {r["status"] for r in rows} == {"ok"}


def test_capacity_of_two_policies_over_a_niyama_config(tmp_path: Path, sincere: Sincere) -> None:
    """fcfs and niyama over examples/niyama.yaml: both searched, fcfs without Niyama's knobs."""
    args = [
        "capacity", str(ROOT / "examples" / "niyama.yaml"), "--policies", "fcfs,niyama",
        "--seeds", "1", "--set", "workload.num_requests=400", "--rel-tol", "0.5",
        "--workers", "1", "--out", str(tmp_path / "cap"),
    ]  # fmt: skip
    done = sincere(args)
    assert done.returncode == 0, done.stderr
    assert "note: fcfs runs with its own defaults" in " ".join(done.stderr.split())
    results = json.loads((tmp_path / "cap" / "capacity.json").read_text())["results"]
    assert [r["policy"] for r in results] == ["fcfs", "niyama"]
    assert all(r["points"] for r in results)


def test_piped_tables_keep_every_value(sincere: Sincere) -> None:
    """`sincere catalog accelerators | ...` prints plain rows with whole names and figures."""
    done = sincere(["catalog", "accelerators"])
    assert done.returncode == 0
    assert "…" not in done.stdout and "│" not in done.stdout
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines()[3:]}
    assert rows["H100-SXM"][1:4] == ["NVIDIA", "80", "3350"]
