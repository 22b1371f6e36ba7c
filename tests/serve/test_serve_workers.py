"""`sincere serve --workers N` is one process group: SIGTERM to it stops every worker."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from tests.serve.conftest import _free_port

ROOT = Path(__file__).resolve().parents[2]
ENTRY = "import sys; sys.argv[0] = 'sincere'; from sincere.cli import main; main()"


def _answers(url: str) -> bool:
    with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as r:
        return r.status == 200
    return False


@pytest.mark.slow
def test_sigterm_to_the_gateway_stops_all_its_workers(tmp_path: Path) -> None:
    """SIGTERM to the first process: it and its 2 workers exit; nothing serves the port."""
    port = _free_port()
    config = tmp_path / "gw.yaml"
    config.write_text(json.dumps({"port": port, "backends": [], "scrape": {"enabled": False}}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), *sys.path])}
    proc = subprocess.Popen(
        [sys.executable, "-c", ENTRY, "serve", str(config), "--workers", "3"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "gw.log").open("w"),
    )
    url = f"http://127.0.0.1:{port}/health"
    workers: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(workers) < 2:
            time.sleep(0.2)
            if _answers(url):
                workers = [
                    c for c in psutil.Process(proc.pid).children() if c.name().startswith("python")
                ]
        assert len(workers) >= 2, (tmp_path / "gw.log").read_text()[-500:]
        time.sleep(1.0)  # the workers bind
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        gone, alive = psutil.wait_procs(workers, timeout=20)
        assert alive == [] and len(gone) == len(workers)
        assert not _answers(url)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        for worker in workers:  # a failed run leaves none behind
            with contextlib.suppress(psutil.NoSuchProcess):
                worker.kill()


def _settled(workers: list[psutil.Process], limit_s: float = 60.0) -> None:
    """Wait (bounded) until the workers stop using CPU: they have imported and bound."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        before = [w.cpu_times().user for w in workers]
        time.sleep(0.5)
        if [w.cpu_times().user for w in workers] == before:
            return


def _wait_gone(processes: list[psutil.Process], limit_s: float) -> list[psutil.Process]:
    """Poll every 10 ms (psutil's own wait backs off to seconds for processes that are
    not this one's children) until each has exited; those still running after limit_s."""
    deadline = time.monotonic() + limit_s
    alive = list(processes)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if _running(p)]
        time.sleep(0.01)
    return alive


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
def test_an_idle_two_worker_gateway_stops_within_a_second(tmp_path: Path) -> None:
    """SIGTERM to an idle 2-worker gateway: it and its worker are gone in under a second
    (each process used to spend about a second tearing its modules down, one after the
    other); its start line names the workers."""
    port = _free_port()
    config = tmp_path / "gw.yaml"
    config.write_text(json.dumps({"port": port, "backends": [], "scrape": {"enabled": False}}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), *sys.path])}
    proc = subprocess.Popen(
        [sys.executable, "-c", ENTRY, "serve", str(config), "--workers", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "gw.log").open("w"),
        text=True,
    )
    workers: list[psutil.Process] = []
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "(2 workers, 0 backends" in line, (tmp_path / "gw.log").read_text()[-500:]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not workers:
            time.sleep(0.2)
            workers = [c for c in psutil.Process(proc.pid).children() if "python" in c.name()]
        assert workers, "the second worker did not start"
        _settled([psutil.Process(proc.pid), *workers])
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        alive = _wait_gone(workers, 20.0)
        stop_s = time.monotonic() - started
        assert alive == [] and proc.returncode == 0
        assert stop_s < 1.0, f"stopping took {stop_s:.2f} s"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        for worker in workers:
            with contextlib.suppress(psutil.NoSuchProcess):
                worker.kill()
