"""SeriesLog: growing sizes stop at out-of-memory or the deadline, and each ending is recorded."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from sincere.profile.series import OutOfMemory, OutOfTimeError, SeriesLog, oom_errors


class FakeOomError(Exception):
    """Stands in for torch.OutOfMemoryError (no torch needed)."""


FAKE_TORCH = SimpleNamespace(OutOfMemoryError=FakeOomError)
CPU = SimpleNamespace(type="cpu")


def measure_until(limit: int) -> Any:
    """A measurement that runs out of memory from ``limit`` up."""

    def measure(size: int) -> dict[str, Any]:
        if size >= limit:
            raise FakeOomError("CUDA out of memory. Tried to allocate 4 GiB\nmore lines")
        return {"size": size}

    return measure


def test_oom_ends_the_series_with_the_largest_size_that_ran() -> None:
    """Sizes after the first OOM are not tried; the row keeps largest_ok, stopped_at, message."""
    steps: list[int] = []
    log = SeriesLog(FAKE_TORCH, CPU, on_step=lambda: steps.append(1))
    out = list(log.run("decode", [1, 2, 4, 8, 16], measure_until(8)))
    assert out[:3] == [{"size": 1}, {"size": 2}, {"size": 4}]
    assert out[3] == OutOfMemory(8) and len(out) == 4 and len(steps) == 3
    assert log.rows == [
        {"series": "decode", "status": "oom", "largest_ok": 4, "stopped_at": 8,
         "detail": "CUDA out of memory. Tried to allocate 4 GiB"}
    ]  # fmt: skip


def test_a_series_that_fits_is_complete_and_host_oom_counts_too() -> None:
    """All sizes run: status complete; MemoryError is out-of-memory as well."""
    log = SeriesLog(FAKE_TORCH, CPU)
    assert len(list(log.run("mlp", [(1, "a"), (2, "b")], lambda s: {"s": s}))) == 2
    assert log.rows[0]["status"] == "complete" and log.rows[0]["largest_ok"] == 2
    assert MemoryError in oom_errors(FAKE_TORCH)


def test_deadline_stops_before_the_next_size_and_is_recorded() -> None:
    """Past the deadline no size starts: the series is recorded as 'time limit' and it raises."""
    log = SeriesLog(FAKE_TORCH, CPU, deadline=time.monotonic() - 1.0)
    with pytest.raises(OutOfTimeError):
        list(log.run("prefill", [1, 2], measure_until(99)))
    assert log.rows[0]["status"] == "time limit" and log.rows[0]["stopped_at"] == 1
