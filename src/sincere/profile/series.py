"""Series of growing shapes that stop at out-of-memory or a deadline, and how each ended.

Both PyTorch profilers measure along series whose sizes grow (batch sizes, token counts):
once a size runs out of memory the larger ones would too, so the series ends there and
``series.csv`` records it -- ``complete``, ``oom`` (the largest size that ran and the one
that did not, with the allocator's message) or ``time limit`` -- as SINCERE's profiler
walked batch sizes until out-of-memory and kept where it stopped. The other series still
run, and the run writes every file.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

SERIES_COLUMNS = ["series", "status", "largest_ok", "stopped_at", "detail"]


class OutOfTimeError(Exception):
    """The run's time limit has passed."""


@dataclass(frozen=True, slots=True)
class OutOfMemory:
    """The size a series ran out of memory at (yielded once, last)."""

    size: Any


def oom_errors(torch: Any) -> tuple[type[BaseException], ...]:
    """The exceptions that mean out-of-memory (the device's and the host's)."""
    cuda_oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return (cuda_oom, MemoryError)


def release(torch: Any, device: Any) -> None:
    """Return cached device memory (after a series, and after out-of-memory)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


class SeriesLog:
    """Runs series (module docstring) and keeps one ``series.csv`` row per series."""

    def __init__(
        self,
        torch: Any,
        device: Any,
        deadline: float | None = None,
        on_step: Callable[[], None] | None = None,
    ) -> None:
        self.torch, self.device = torch, device
        self.deadline = deadline  # time.monotonic() after which no new size starts
        self.on_step = on_step
        self.rows: list[dict[str, Any]] = []

    def run(
        self, name: str, sizes: Iterable[Any], measure: Callable[[Any], dict[str, Any]]
    ) -> Iterator[dict[str, Any] | OutOfMemory]:
        """``measure(size)`` for growing sizes; an :class:`OutOfMemory` ends the series.

        Raises :class:`OutOfTimeError` (after recording it) once the deadline has passed.
        """
        largest: Any = None
        for size in sizes:
            if self.deadline is not None and time.monotonic() > self.deadline:
                self.record(name, "time limit", largest, size, "time limit reached")
                raise OutOfTimeError
            try:
                row = measure(size)
            except oom_errors(self.torch) as exc:
                release(self.torch, self.device)
                self.record(name, "oom", largest, size, str(exc).splitlines()[0][:200])
                yield OutOfMemory(size)
                return
            largest = size
            if self.on_step is not None:
                self.on_step()
            yield row
        self.record(name, "complete", largest, None, "")

    def record(self, name: str, status: str, largest: Any, stopped: Any, detail: str) -> None:
        """Add how the series ``name`` ended."""
        self.rows.append(
            {"series": name, "status": status, "largest_ok": _label(largest),
             "stopped_at": _label(stopped), "detail": detail}
        )  # fmt: skip


def _label(size: Any) -> Any:
    """A series size for ``series.csv`` (a tuple point by its first field, the batch size)."""
    return size[0] if isinstance(size, tuple) else size
