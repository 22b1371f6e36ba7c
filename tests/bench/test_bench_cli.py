"""``sincere bench`` from the command line: limits, unreachable URLs, runs with no answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from sincere.cli.app import main

FakeServer = Any  # tests/bench/conftest.py


def _workload(tmp_path: Path, model: str = "m") -> Path:
    """A YAML workload of 40 requests at 20 req/s (about 2 s of arrivals)."""
    path = tmp_path / "w.yaml"
    workload = {
        "num_requests": 40,
        "arrival": {"kind": "poisson", "rate": 20.0},
        "lengths": {
            "prompt": {"kind": "fixed", "tokens": 4},
            "output": {"kind": "fixed", "tokens": 2},
        },
        "models": {model: 1.0},
    }
    path.write_text(yaml.safe_dump({"workload": workload}), encoding="utf-8")
    return path


def _run(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    """Run ``sincere ARGS`` through the console entry point; (exit status, stderr)."""
    monkeypatch.setattr("sys.argv", ["sincere", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    code = exited.value.code
    return code if isinstance(code, int) else 1, capsys.readouterr().err


def test_num_requests_cuts_a_yaml_workload(
    fake_server: FakeServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--num-requests 5 with a 40-request YAML workload sends the first 5 only."""
    out = tmp_path / "out"
    args = ["bench", fake_server.url, "-w", str(_workload(tmp_path)), "--num-requests", "5"]
    code, _ = _run([*args, "--out", str(out), "-q"], monkeypatch, capsys)
    assert code == 0
    assert pq.read_table(out / "requests.parquet").num_rows == 5


def test_duration_cuts_a_yaml_workload(
    fake_server: FakeServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--duration-s 0.5 keeps only the requests of a YAML workload arriving in 0.5 s."""
    out = tmp_path / "out"
    args = ["bench", fake_server.url, "-w", str(_workload(tmp_path)), "--duration-s", "0.5"]
    code, _ = _run([*args, "--out", str(out), "-q"], monkeypatch, capsys)
    assert code == 0
    arrivals = pq.read_table(out / "requests.parquet").column("arrival_at").to_pylist()
    assert 0 < len(arrivals) < 40 and max(arrivals) < 0.5


def test_unreachable_url_exits_2_before_sending(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A closed port ends with exit status 2, one line saying so, and no outputs."""
    out = tmp_path / "out"
    args = ["bench", "http://127.0.0.1:9", "--rate", "5", "--num-requests", "3", "--out", str(out)]
    code, err = _run(args, monkeypatch, capsys)
    assert code == 2
    assert "cannot connect to 127.0.0.1:9" in err and "Traceback" not in err
    assert not out.exists()


def test_run_where_no_request_completes_exits_1(
    fake_server: FakeServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """When every request fails (HTTP 500 here) the run exits 1 and says why; records stay."""
    out = tmp_path / "out"
    workload = _workload(tmp_path, model="error")
    args = ["bench", fake_server.url, "-w", str(workload), "--num-requests", "3"]
    code, err = _run([*args, "--out", str(out)], monkeypatch, capsys)
    assert code == 1
    assert "none of the 3 requests completed" in err and "(reject reasons: http_500 3)" in err
    assert pq.read_table(out / "requests.parquet").num_rows == 3


def test_reject_reasons_read_as_words_not_a_python_dict() -> None:
    """Reject reasons print as `reason count` pairs, most first; none as `none`."""
    from sincere.cli.bench import reasons_text

    assert reasons_text({"timeout": 1, "http_500": 3}) == "http_500 3, timeout 1"
    assert reasons_text({}) == "none"


def test_the_progress_bar_shows_an_eta() -> None:
    """The bar bench (and the other long verbs) draw has an ETA from the pace so far."""
    import io

    from rich.console import Console

    from sincere.cli.progress import count_bar

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    with count_bar(console, transient=False) as bar:
        task = bar.add_task("requests answered", total=10)
        bar.update(task, completed=4)
    assert "ETA" in out.getvalue() and "4/10" in out.getvalue()
