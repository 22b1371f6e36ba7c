"""Step times interpolated from measured profiles.

:class:`BatchProfileTable` is request-level: SINCERE profiled whole HF-pipeline
calls (a batch of prompts, 50 new tokens) on one H100 for each batch size, several
runs each (``batch_profiling_results_*.csv``; columns ``model``, ``batch_size``,
``processing time (s)``, ``throughput (qps)`` and monitor columns; a ``None`` time
marks the out-of-memory batch size). The table keeps the median time per batch
size and answers ``request_batch_s`` by piecewise-linear interpolation in the
batch size, extrapolating the last segment linearly. It ignores prompt lengths and
the requested output length (it is what was measured: SINCERE's prompts, 50
tokens). ``iteration_s`` is the call time spread evenly over its forward passes.
Load / unload times come from ``model_loading_times_*.csv``.

:func:`sincere_profile` loads the figures derived from those files and shipped in
``sincere/data/perf/sincere_h100.yaml`` (regenerate with ``scripts/derive_perf.py``).

:class:`IterationTable` is iteration-level: a grid of measured or fitted iteration
times over (tokens in the batch, sequences in the batch), bilinearly interpolated
and linearly extrapolated beyond the grid.
"""

from __future__ import annotations

import csv
import functools
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sincere.core.errors import ConfigError, DataError
from sincere.core.types import Seconds
from sincere.core.yaml_data import load_yaml
from sincere.perf.base import Batch, StepTimeBase, SwapTime

SINCERE_OUTPUT_TOKENS = 50  # new tokens per request in SINCERE's profiles
SHIPPED_PROFILE = "sincere_h100.yaml"
MODEL_ALIASES = {"llama-3-8b": "llama3-8b"}  # catalog name -> SINCERE file name
_TIME_COL = "processing time (s)"


class BatchProfileTable(StepTimeBase):
    """Request-level batch times interpolated over measured batch sizes."""

    def __init__(
        self,
        batch_sizes: Sequence[int],
        times_s: Sequence[float],
        *,
        load: SwapTime | None = None,
        unload: SwapTime | None = None,
        output_tokens: int = SINCERE_OUTPUT_TOKENS,
        oom_batch_size: int | None = None,
    ) -> None:
        super().__init__(load, unload)
        sizes = np.asarray(batch_sizes, dtype=float)
        times = np.asarray(times_s, dtype=float)
        if sizes.ndim != 1 or len(sizes) < 2 or sizes.shape != times.shape:
            raise ConfigError("need >= 2 batch sizes with one time each", value=len(sizes))
        if np.any(np.diff(sizes) <= 0) or sizes[0] < 1:
            raise ConfigError("batch sizes must be >= 1 and increasing", value=list(sizes))
        if np.any(times <= 0):
            raise ConfigError("batch times must be > 0 s", value=list(times))
        self.batch_sizes = sizes
        self.times_s = times
        self.output_tokens = output_tokens  # new tokens per request in the profile
        self.oom_batch_size = oom_batch_size  # first batch size that ran out of memory
        self._last_slope = (times[-1] - times[-2]) / (sizes[-1] - sizes[-2])

    def batch_time_s(self, batch_size: float) -> Seconds:
        """Interpolated time of one call with ``batch_size`` prompts."""
        if batch_size <= 0:
            return 0.0
        if batch_size > self.batch_sizes[-1]:
            extra = batch_size - self.batch_sizes[-1]
            return float(self.times_s[-1] + self._last_slope * extra)
        return float(np.interp(batch_size, self.batch_sizes, self.times_s))

    def request_batch_s(self, prompt_tokens: Sequence[int], output_tokens: int) -> Seconds:
        """Time of the call for ``len(prompt_tokens)`` prompts (lengths not modelled)."""
        return self.batch_time_s(len(prompt_tokens))

    def iteration_s(self, batch: Batch) -> Seconds:
        """The call time at ``num_seqs`` spread over its ``output_tokens`` forward passes."""
        return self.batch_time_s(batch.num_seqs) / self.output_tokens

    @classmethod
    def from_csv(
        cls,
        batch_paths: Sequence[str | Path],
        model: str,
        loading_path: str | Path | None = None,
    ) -> BatchProfileTable:
        """Build from SINCERE's batch-profiling CSVs (and optionally its loading times)."""
        profiles = read_batch_profiles(batch_paths)
        if model not in profiles:
            raise ConfigError("model not in the profiles", value=model, allowed=profiles)
        sizes, medians, oom = profiles[model]
        load = unload = None
        if loading_path is not None:
            swaps = read_loading_times(loading_path)
            if model not in swaps:
                raise DataError(f"no loading times for {model!r}", path=loading_path)
            load, unload = swaps[model]
        return cls(sizes, medians, load=load, unload=unload, oom_batch_size=oom)


def read_batch_profiles(
    paths: Iterable[str | Path],
) -> dict[str, tuple[list[int], list[float], int | None]]:
    """Per model: sorted batch sizes, median time (s) of each, first OOM batch size."""
    runs: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    ooms: dict[str, int] = {}
    for path in paths:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            for col in ("model", "batch_size", _TIME_COL):
                if col not in (reader.fieldnames or ()):
                    raise DataError("missing column", path=path, column=col)
            for line, row in enumerate(reader, start=2):
                _add_run(runs, ooms, row, path, line)
    out: dict[str, tuple[list[int], list[float], int | None]] = {}
    for model, by_size in runs.items():
        sizes = sorted(by_size)
        out[model] = (sizes, [statistics.median(by_size[s]) for s in sizes], ooms.get(model))
    return out


def _add_run(
    runs: dict[str, dict[int, list[float]]],
    ooms: dict[str, int],
    row: dict[str, str],
    path: str | Path,
    line: int,
) -> None:
    model, size_text, time_text = row["model"], row["batch_size"], row[_TIME_COL]
    try:
        size = int(size_text)
    except ValueError:
        raise DataError(
            "batch_size is not an integer", path=path, line=line, value=size_text
        ) from None
    if time_text in ("None", ""):  # the run that ran out of memory
        ooms[model] = min(size, ooms.get(model, size))
        return
    try:
        runs[model][size].append(float(time_text))
    except ValueError:
        raise DataError("time is not a number", path=path, line=line, value=time_text) from None


def read_loading_times(path: str | Path) -> dict[str, tuple[SwapTime, SwapTime]]:
    """Per model: (load, unload) mean and std from a ``model_loading_times`` CSV."""
    cols = (
        "model_name",
        "mean_loading_time /s",
        "std_loading_time /s",
        "mean_unloading_time /s",
        "std_unloading_time /s",
    )
    out: dict[str, tuple[SwapTime, SwapTime]] = {}
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        for col in cols:
            if col not in (reader.fieldnames or ()):
                raise DataError("missing column", path=path, column=col)
        for line, row in enumerate(reader, start=2):
            try:
                values = [float(row[c]) for c in cols[1:]]
            except ValueError:
                raise DataError("non-numeric time", path=path, line=line) from None
            out[row["model_name"]] = (SwapTime(*values[:2]), SwapTime(*values[2:]))
    return out


@functools.cache
def load_shipped_profiles() -> dict[str, Any]:
    """The parsed ``sincere_h100.yaml`` shipped with the package."""
    text = resources.files("sincere").joinpath("data", "perf", SHIPPED_PROFILE).read_text()
    data: dict[str, Any] = load_yaml(text)
    return data


def sincere_profile(model: str, cc: bool = False) -> BatchProfileTable:
    """SINCERE's measured H100 profile of ``model`` (granite-7b, gemma-7b, llama3-8b)."""
    data = load_shipped_profiles()
    key = MODEL_ALIASES.get(model, model)
    if key not in data["models"]:
        raise ConfigError("no SINCERE profile for model", value=model, allowed=data["models"])
    entry = data["models"][key]["cc" if cc else "noncc"]
    return BatchProfileTable(
        entry["batch_sizes"],
        entry["median_s"],
        load=SwapTime(**entry["load"]),
        unload=SwapTime(**entry["unload"]),
        output_tokens=int(data["output_tokens"]),
        oom_batch_size=entry.get("oom_batch_size"),
    )


class IterationTable(StepTimeBase):
    """Iteration times on a (tokens, sequences) grid, bilinear in between."""

    def __init__(
        self,
        token_grid: Sequence[float],
        seq_grid: Sequence[float],
        times_s: npt.ArrayLike,
        *,
        load: SwapTime | None = None,
        unload: SwapTime | None = None,
    ) -> None:
        super().__init__(load, unload)
        self.token_grid = _axis(token_grid, "token_grid")
        self.seq_grid = _axis(seq_grid, "seq_grid")
        table = np.asarray(times_s, dtype=float)
        if table.shape != (len(self.token_grid), len(self.seq_grid)):
            raise ConfigError(
                "times_s must have shape (len(token_grid), len(seq_grid))", value=table.shape
            )
        self.times_s = table

    def iteration_s(self, batch: Batch) -> Seconds:
        """Bilinear interpolation (linear extrapolation outside), clamped at zero."""
        if batch.num_tokens == 0:
            return 0.0
        i, u = _cell(self.token_grid, batch.num_tokens)
        j, v = _cell(self.seq_grid, batch.num_seqs)
        t = self.times_s
        low = t[i, j] * (1 - v) + t[i, j + 1] * v
        high = t[i + 1, j] * (1 - v) + t[i + 1, j + 1] * v
        return max(0.0, float(low * (1 - u) + high * u))


def _axis(values: Sequence[float], name: str) -> npt.NDArray[np.float64]:
    axis = np.asarray(values, dtype=float)
    if axis.ndim != 1 or len(axis) < 2 or np.any(np.diff(axis) <= 0):
        raise ConfigError(f"{name} needs >= 2 increasing values", value=list(axis))
    return axis


def _cell(axis: npt.NDArray[np.float64], x: float) -> tuple[int, float]:
    """Left index of the grid cell used for ``x`` and the fraction along it."""
    i = int(np.clip(np.searchsorted(axis, x, side="right") - 1, 0, len(axis) - 2))
    return i, float((x - axis[i]) / (axis[i + 1] - axis[i]))
