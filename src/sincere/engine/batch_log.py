"""The batches a request-level engine ran: one record each, and a run's log as arrays.

:class:`BatchRecord` is one batch (start, end, model, size, the swap before it, the rule
that fired); :class:`BatchLog` packs a run's records into arrays for SINCERE's reports
(batch throughput, model switches, the share of time in inference).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sincere.core.errors import ConfigError
from sincere.core.types import ModelName, Seconds

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """One batch the engine ran."""

    start_at: Seconds  # inference start (after any swap)
    end_at: Seconds  # inference end = when its requests finished
    model: ModelName
    size: int  # requests in the batch
    swap_s: Seconds  # unload + load time paid right before it (0 when resident)
    reason: str = ""  # the strategy's reason (which rule fired)


@dataclass(frozen=True, eq=False)
class BatchLog:
    """Every batch of a run as arrays, for SINCERE's reports."""

    start_at: FloatArray
    end_at: FloatArray
    size: IntArray
    swap_s: FloatArray
    model: tuple[ModelName, ...]

    @classmethod
    def of(cls, batches: list[BatchRecord]) -> BatchLog:
        """Pack batch records into arrays."""
        return cls(
            start_at=np.array([b.start_at for b in batches], dtype=np.float64),
            end_at=np.array([b.end_at for b in batches], dtype=np.float64),
            size=np.array([b.size for b in batches], dtype=np.int64),
            swap_s=np.array([b.swap_s for b in batches], dtype=np.float64),
            model=tuple(b.model for b in batches),
        )

    def __len__(self) -> int:
        return len(self.size)

    @property
    def duration_s(self) -> FloatArray:
        """Inference time of each batch."""
        return self.end_at - self.start_at

    @property
    def batch_throughput(self) -> FloatArray:
        """Requests per second of inference, per batch (SINCERE's batch throughput)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.size / self.duration_s

    @property
    def num_model_switches(self) -> int:
        """Consecutive batches of different models (SINCERE's model switch count)."""
        return sum(a != b for a, b in zip(self.model, self.model[1:], strict=False))

    def inference_fraction(self, total_s: Seconds) -> float:
        """Share of ``total_s`` spent in inference (not swapping, not idle)."""
        if not total_s > 0:
            raise ConfigError("inference_fraction: total_s must be > 0", value=total_s)
        return float(self.duration_s.sum() / total_s)
