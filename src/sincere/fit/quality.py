"""Goodness of a fit: the fitted step-time model against the samples it was fitted on.

Predictions come from the model ``sincere simulate`` would build from the written
parameters (:func:`sincere.perf.factory.make_step_model`), so the reported error is
the simulator's error on the profiled points. Reported: R² of the times, the mean and
median relative error ``|pred − measured| / measured``, and a per-point table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sincere.fit.models import FArray, FitResult
from sincere.fit.samples import Sample
from sincere.perf.base import Deployment
from sincere.perf.factory import make_step_model


@dataclass(frozen=True, slots=True)
class PointError:
    """One sample's prediction."""

    label: str  # the sample's description
    measured_s: float  # measured iteration time
    predicted_s: float  # the fitted model's time

    @property
    def relative_error(self) -> float:
        """``|predicted − measured| / measured``."""
        return abs(self.predicted_s - self.measured_s) / self.measured_s


@dataclass(frozen=True, slots=True)
class FitQuality:
    """Summary of a fit's error over its samples."""

    r2: float  # coefficient of determination of the times
    mean_relative_error: float  # mean of |pred − measured| / measured
    median_relative_error: float  # median of the same
    points: tuple[PointError, ...]  # per-sample detail

    def as_dict(self) -> dict[str, float | int]:
        """The summary figures (for the params file and JSON output)."""
        return {
            "r2": self.r2,
            "mean_relative_error": self.mean_relative_error,
            "median_relative_error": self.median_relative_error,
            "num_samples": len(self.points),
        }


def r_squared(measured: FArray, predicted: FArray) -> float:
    """``1 − SS_res / SS_tot`` (1.0 when the measurements are all equal and matched)."""
    ss_res = float(np.sum((measured - predicted) ** 2))
    ss_tot = float(np.sum((measured - measured.mean()) ** 2))
    if ss_tot == 0.0:
        return 1.0 if ss_res == 0.0 else 0.0
    return 1.0 - ss_res / ss_tot


def evaluate(result: FitResult, samples: Sequence[Sample], deployment: Deployment) -> FitQuality:
    """Errors of the model built from ``result`` on ``samples``."""
    model = make_step_model(result.kind, deployment, result.params)
    points = tuple(PointError(s.label, s.time_s, model.iteration_s(s.batch)) for s in samples)
    measured = np.array([p.measured_s for p in points])
    predicted = np.array([p.predicted_s for p in points])
    rel = np.abs(predicted - measured) / measured
    return FitQuality(
        r2=r_squared(measured, predicted),
        mean_relative_error=float(rel.mean()),
        median_relative_error=float(np.median(rel)),
        points=points,
    )
