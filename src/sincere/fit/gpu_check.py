"""How far a roofline fit of operator profiles is to be trusted, said out loud.

:func:`~sincere.fit.gpu_profiles.fit_gpu_profiles` fits each part on its own rows. Two
things can go wrong without its per-part table showing them clearly: the parts can fit
their operators well and still miss whole iterations, and a constant can stop at the
edge of its search range (an efficiency of 0.05), which means the rows did not pin it.
This module checks both:

* :func:`iteration_check` rebuilds the roofline from the fitted constants and times
  every measured row of the ``iterations.csv`` that ``sincere profile gpu`` writes next
  to the operator files (prefill, decode and mixed iterations of the full shard) by its
  GPU work (the CPU part and the all-reduces, which a shard timed alone on one GPU does
  not run, left out), and reports the relative error;
* :func:`fit_warnings` turns a part's large error on its own rows, a constant at a
  search bound, and a large error on whole iterations into one line each, naming the
  part, the constant and the figures.

A CPU profile (``--device cpu``) is the usual case where they fire: its kernels follow
no GPU roofline.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sincere.catalog.loader import Catalog
from sincere.catalog.specs import Accelerator
from sincere.fit.gpu_profiles import GpuProfileFit
from sincere.fit.output import TORCH_DTYPES
from sincere.perf.base import Batch, Deployment, StepBreakdown, StepTimeModel
from sincere.perf.factory import make_step_model
from sincere.profile.csvio import read_profile_csv

LARGE_ERROR = 0.25  # a mean relative error above this is warned about
ITERATIONS_FILE = "iterations.csv"


@dataclass(frozen=True, slots=True)
class IterationCheck:
    """The fitted roofline against measured whole iterations."""

    num_rows: int  # measured iterations compared
    mean_relative_error: float  # mean of |predicted - measured| / measured
    max_relative_error: float  # the largest of the same
    worst: str  # the row with the largest error, e.g. "decode batch 2 ctx 16"

    def as_dict(self) -> dict[str, Any]:
        """For the provenance block of the parameter file."""
        return {
            "file": ITERATIONS_FILE,
            "rows": self.num_rows,
            "mean_relative_error": round(self.mean_relative_error, 4),
            "max_relative_error": round(self.max_relative_error, 4),
            "worst": self.worst,
        }


def _batch(row: Mapping[str, Any]) -> Batch:
    prefill = [(int(row["prefill_chunk"]), int(row["prefill_ctx"]))] * int(row["prefill_seqs"])
    return Batch.of(prefill=prefill, decode=[int(row["decode_ctx"])] * int(row["decode_seqs"]))


def _label(row: Mapping[str, Any]) -> str:
    return f"{row['phase']} batch {row['batch_size']} ctx {row['context_tokens']}"


def iteration_check(
    fit: GpuProfileFit, folder: Path, catalog: Catalog, accelerator: Accelerator
) -> IterationCheck | None:
    """The fit's error on ``folder/iterations.csv`` (None when the file or its measured
    rows are missing, or name models the catalog does not know)."""
    path = folder / ITERATIONS_FILE
    if not path.is_file():
        return None
    rows = [
        r
        for r in read_profile_csv(path)
        if r.get("status") in (None, "ok") and isinstance(r.get("iteration_s"), int | float)
    ]
    rows = [r for r in rows if r["iteration_s"] > 0 and catalog.has_model(str(r["model"]))]
    if not rows:
        return None
    errors: list[tuple[float, str]] = []
    for row in rows:
        precision = TORCH_DTYPES.get(str(row.get("dtype")), "bf16")
        dep = Deployment(
            catalog.model(str(row["model"])), accelerator, precision, tp=int(row.get("tp") or 1)
        )
        predicted = gpu_seconds(make_step_model("roofline", dep, fit.params), _batch(row))
        measured = float(row["iteration_s"])
        errors.append((abs(predicted - measured) / measured, _label(row)))
    worst = max(errors)
    mean = statistics.fmean(e for e, _ in errors)
    return IterationCheck(len(errors), mean, worst[0], worst[1])


def gpu_seconds(step: StepTimeModel, batch: Batch) -> float:
    """What one GPU's shard computes in ``batch``: the step's parts less its CPU work and
    its communication (``profile gpu`` times a TP shard alone on one GPU, no engine
    around it, so its iterations hold neither)."""
    if not isinstance(step, StepBreakdown):
        return step.iteration_s(batch)
    parts = step.parts(batch)
    return parts.total_s - parts.overhead_s - parts.communication_s - parts.all_to_all_s


def fit_warnings(
    fit: GpuProfileFit, check: IterationCheck | None, limit: float = LARGE_ERROR
) -> list[str]:
    """One line per reason not to trust the fit as it is (module docstring)."""
    out = []
    for part in fit.parts:
        if part.mean_relative_error > limit:
            out.append(
                f"{part.name}: error on its own {part.num_rows} rows is mean "
                f"{100 * part.mean_relative_error:.0f} % (max "
                f"{100 * part.max_relative_error:.0f} %): the roofline does not describe "
                "these kernels"
            )
        for name in part.at_bounds:
            value = part.params.get(name, part.params.get(f"_{name}"))
            shown = f"{name} = {value:.4g}" if isinstance(value, float) else name
            out.append(
                f"{part.name}: {shown} sits at the edge of its search range: "
                "the rows do not pin it, so it is a guess, not a measurement"
            )
    if check is not None and check.mean_relative_error > limit:
        out.append(
            f"whole iterations ({ITERATIONS_FILE}, {check.num_rows} rows): predicted vs "
            f"measured error mean {100 * check.mean_relative_error:.0f} % (max "
            f"{100 * check.max_relative_error:.0f} %, {check.worst})"
        )
    return out
