"""`sincere emulate FILE` reads FILE as its config, and its table of engines stays readable.

Each test starts `sincere emulate` in a child process on ports the OS picks (127.0.0.1),
reads the table it prints on stderr, asks each announced URL for /health and stops the
process by the PID it started.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENTRY = "import sys; sys.argv[0] = 'sincere'; from sincere.cli import main; main()"
URL = re.compile(r"http://127\.0\.0\.1:\d+")
CONFIG = """\
- name: emulated-llama-3-8b-on-one-h100-sxm
  model: llama-3-8b
  accelerator: H100-SXM
  port: 0
  count: 2
"""
"""Two engines whose long names make the table wider than 80 columns."""
Stop = Callable[[Any], None]


def _env(terminal: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "FORCE_COLOR"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    env.update(COLUMNS="80", NO_COLOR="1", TTY_COMPATIBLE="1" if terminal else "0")
    return env


@contextmanager
def emulating(args: list[str], tmp_path: Path, terminal: bool, stop: Stop) -> Iterator[str]:
    """Run `sincere emulate ARGS` until it has announced two URLs; yields its stderr."""
    log = tmp_path / "stderr.txt"
    with log.open("w") as err:
        process = subprocess.Popen(
            [sys.executable, "-c", ENTRY, "emulate", *args],
            cwd=tmp_path,
            env=_env(terminal),
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while len(URL.findall(log.read_text())) < 2:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"sincere emulate announced no engines: {log.read_text()}")
            time.sleep(0.1)
        time.sleep(0.2)  # the rest of the table
        yield re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", log.read_text())
    finally:
        stop(process)  # Ctrl-C, as a user stops it


def _healthy(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
        return bool(response.status == 200)


def test_a_positional_file_is_the_config_and_the_piped_table_is_plain(
    tmp_path: Path, stop_child: Stop
) -> None:
    """`sincere emulate FILE` starts FILE's engines; piped, the table is plain, one per line."""
    config = tmp_path / "engines.yaml"
    config.write_text(CONFIG)
    with emulating([str(config)], tmp_path, False, stop_child) as text:
        rows = [line for line in text.splitlines() if URL.search(line)]
        assert [row.split()[0] for row in rows] == [
            "emulated-llama-3-8b-on-one-h100-sxm-0",
            "emulated-llama-3-8b-on-one-h100-sxm-1",
        ]
        assert all(row.split()[1:3] == ["llama-3-8b", "H100-SXM"] for row in rows)
        assert "…" not in text and not set("┏┃━│") & set(text)
        assert all(_healthy(URL.findall(row)[0]) for row in rows)


def test_the_config_option_still_works_and_fits_80_columns(
    tmp_path: Path, stop_child: Stop
) -> None:
    """`sincere emulate --config FILE` on an 80-column terminal: no line is wider, nothing is
    cut, and every announced URL answers."""
    config = tmp_path / "engines.yaml"
    config.write_text(CONFIG)
    with emulating(["--config", str(config)], tmp_path, True, stop_child) as text:
        assert "…" not in text
        assert max(len(line) for line in text.splitlines()) <= 80
        joined = " ".join(text.split())
        assert "emulated-llama-3-8b-on-one-h100-sxm-1" in joined
        urls = URL.findall(text)
        assert len(urls) == 2 and all(_healthy(url) for url in urls)


def test_a_file_given_twice_is_a_clear_error(tmp_path: Path) -> None:
    """FILE and --config together: exit 2 with one line naming both, before anything starts."""
    args = ["emulate", "a.yaml", "--config", "b.yaml"]
    done = subprocess.run(
        [sys.executable, "-c", ENTRY, *args],
        cwd=tmp_path,
        env=_env(terminal=False),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and not done.stdout
    assert done.stderr.strip().splitlines() == [
        "error: config file given twice, as FILE and with --config; give it once; "
        "got 'a.yaml and b.yaml'"
    ]


def test_the_role_flag_is_announced(tmp_path: Path, stop_child: Stop) -> None:
    """`sincere emulate --role decode`: the engines take the P/D role, and the table says so."""
    args = ["--role", "decode", "--port", "0", "--count", "2"]
    with emulating(args, tmp_path, False, stop_child) as text:
        rows = [line for line in text.splitlines() if URL.search(line)]
        assert len(rows) == 2 and all(row.split()[3] == "decode" for row in rows)
