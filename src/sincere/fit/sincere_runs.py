"""Fit request-level timing to SINCERE's real runs: ``sincere fit sincere-runs DIR``.

Reads the runs (layout: :mod:`sincere.workload.sincere_runs`) and fits, per environment,
the forms of :mod:`sincere.perf.sincere_runs`, by least squares over every logged event:

* batch time ``fixed_s + per_request_s · n`` per model, on every batch (duration, size);
* swaps ``release_s[previous] + load_s[new]`` on every load but a run's first (the
  previous model is the one loaded before it); only sums are identified, so the
  cheapest release is set to 0;
* the cold load: the median of each run's first load;
* after-batch work ``fixed_s + per_request_s · n`` on the gap between a batch's end and
  the server's next action when that gap is under :data:`MAX_AFTER_GAP_S` (longer gaps
  are the server waiting for work, not working);
* the scheduler's planning: which standalone profile (non-CC or CC) and which
  SelectBatch horizon (``swap-and-batch``: λ̂·T_adj, or ``sla-slack``: λ̂·(SLA − T_adj))
  explain the most SelectBatch batches of a target size (λ̂ from the model's last 100
  inter-arrival times at the request that completed the batch).

The timer thread's polling period is not identifiable from the logs (timer firings
scatter by ±0.5 s around their due time); the document carries SINCERE's code value
with that source. The document records what it was fitted on and by which command.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sincere.core.errors import ConfigError
from sincere.engine.request_level import SINCERE_POLL_PERIOD_S
from sincere.fit.output import write_params
from sincere.perf.sincere_runs import (
    CALIBRATION_KIND,
    PROFILES,
    SELECT_HORIZONS,
    parse_calibration,
)
from sincere.perf.table import sincere_profile
from sincere.policy.batching import closest_size
from sincere.policy.batching.base import SelectBatchParams, swap_budget_s
from sincere.workload.sincere_runs import CellLog, RunCell, read_cell, read_cells, select_cells

FloatArray = npt.NDArray[np.float64]

MAX_AFTER_GAP_S = 0.5  # a gap after a batch longer than this is waiting, not work
_SELECT = SelectBatchParams.model_fields
SELECT_WINDOW: int = _SELECT["select_window"].default  # SelectBatch's window (SINCERE's)
SELECT_SIZES: tuple[int, ...] = _SELECT["select_sizes"].default  # its candidate sizes
EST_BATCH_TIME_S: float = _SELECT["est_batch_time_s"].default  # SINCERE's hand-set estimate
POLL_PERIOD_S = SINCERE_POLL_PERIOD_S
POLL_SOURCE = (
    "SINCERE's scheduler code sleeps 0.1 s between passes of its timer thread; not "
    "identifiable from the logs"
)


@dataclass
class _Samples:
    """Observations of one environment, gathered over its cells."""

    batches: dict[str, list[tuple[int, float]]] = field(default_factory=lambda: defaultdict(list))
    swaps: list[tuple[str, str, float]] = field(default_factory=list)  # (new, previous, s)
    cold: list[float] = field(default_factory=list)
    after: list[tuple[int, float]] = field(default_factory=list)  # (batch size, gap s)
    num_cells: int = 0


def _gather(log: CellLog, s: _Samples) -> None:
    names = log.models
    s.num_cells += 1
    durations = log.batch_end_s - log.batch_start_s
    for m, n, d in zip(log.batch_model, log.batch_size, durations, strict=True):
        s.batches[names[m]].append((int(n), float(d)))
    previous: str | None = None
    for m, a, b in zip(log.load_model, log.load_start_s, log.load_end_s, strict=True):
        if previous is None:
            s.cold.append(float(b - a))
        else:
            s.swaps.append((names[m], previous, float(b - a)))
        previous = names[m]
    starts = np.sort(np.concatenate([log.batch_start_s, log.load_start_s]))
    for end, n in zip(log.batch_end_s, log.batch_size, strict=True):
        k = int(np.searchsorted(starts, end, side="left"))
        if k < len(starts) and starts[k] - end <= MAX_AFTER_GAP_S:
            s.after.append((int(n), float(starts[k] - end)))


def _affine(points: Sequence[tuple[int, float]]) -> tuple[dict[str, float], float]:
    x = np.array([p[0] for p in points], dtype=float)
    y = np.array([p[1] for p in points], dtype=float)
    design = np.column_stack([np.ones_like(x), x])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    rms = float(np.sqrt(np.mean((design @ coef - y) ** 2)))
    fit = {"fixed_s": round(float(coef[0]), 5), "per_request_s": round(float(coef[1]), 6)}
    return fit, rms


def _swaps(
    swaps: Sequence[tuple[str, str, float]],
) -> tuple[dict[str, float], dict[str, float], float]:
    models = sorted({s[0] for s in swaps} | {s[1] for s in swaps})
    ix = {m: i for i, m in enumerate(models)}
    design = np.zeros((len(swaps), 2 * len(models)))
    for row, (new, prev, _) in enumerate(swaps):
        design[row, ix[new]] = 1.0
        design[row, len(models) + ix[prev]] = 1.0
    y = np.array([s[2] for s in swaps])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    rms = float(np.sqrt(np.mean((design @ coef - y) ** 2)))
    release = coef[len(models) :]
    shift = float(release.min())  # only sums are identified: cheapest release = 0
    load = {m: round(float(coef[ix[m]] + shift), 4) for m in models}
    rel = {m: round(float(release[ix[m]] - shift), 4) for m in models}
    return load, rel, rms


def _env_document(s: _Samples) -> dict[str, Any]:
    if not s.swaps or not s.cold or len(s.after) < 2:
        counts = {"loads": len(s.swaps) + len(s.cold), "gaps": len(s.after)}
        raise ConfigError("too few loads or batches to fit an environment", value=counts)
    batch, sq = {}, []
    for model, points in sorted(s.batches.items()):
        if len({p[0] for p in points}) < 2:
            raise ConfigError("batch time needs two batch sizes or more", value=model)
        batch[model], rms = _affine(points)
        sq.append(rms**2 * len(points))
    load, release, swap_rms = _swaps(s.swaps)
    after, _ = _affine(s.after)
    num_batches = sum(len(p) for p in s.batches.values())
    return {
        "batch": batch,
        "batch_rms_s": round(float(np.sqrt(sum(sq) / num_batches)), 4),
        "load": load,
        "release": release,
        "swap_rms_s": round(swap_rms, 4),
        "cold_load_s": round(float(np.median(s.cold)), 4),
        "after_batch": after,
        "num_cells": s.num_cells,
        "num_batches": num_batches,
        "num_loads": len(s.swaps) + len(s.cold),
        "num_after_gaps": len(s.after),
    }


def _t_adj(model: str, profile: str) -> float:
    p = sincere_profile(model, cc=profile == "cc")
    return swap_budget_s(p.load_time(), p.unload_time(), EST_BATCH_TIME_S)


def _select_evidence(logs: Sequence[CellLog]) -> dict[str, dict[str, float]]:
    """Share of SelectBatch batches of a candidate size each (profile, horizon) explains."""
    hits: dict[str, int] = defaultdict(int)
    total = 0
    for log in logs:
        if "SelectBatch" not in log.cell.strategy:
            continue
        for model_ix, rate, size in _select_batches(log):
            total += 1
            model = log.models[model_ix]
            for profile in PROFILES:
                t_adj = _t_adj(model, profile)
                for horizon in SELECT_HORIZONS:
                    span = t_adj if horizon == "swap-and-batch" else log.cell.sla_s - t_adj
                    hits[f"{profile}/{horizon}"] += closest_size(rate * span, SELECT_SIZES) == size
    return {key: {"share": round(hits[key] / total, 4) if total else 0.0, "batches": total}
            for key in (f"{p}/{h}" for p in PROFILES for h in SELECT_HORIZONS)}  # fmt: skip


def _select_batches(log: CellLog) -> list[tuple[int, float, int]]:
    """(model, estimated rate, size) of each batch whose size is a SelectBatch candidate."""
    out = []
    done = np.isfinite(log.finished_s)
    for end, size, model_ix in zip(log.batch_end_s, log.batch_size, log.batch_model, strict=True):
        if int(size) not in SELECT_SIZES:
            continue
        members = done & (log.finished_s == end) & (log.request_model == model_ix)
        if int(members.sum()) != int(size):
            continue
        last = float(log.arrival_s[members].max())
        times = log.arrival_s[(log.request_model == model_ix) & (log.arrival_s <= last)]
        window = times[-(SELECT_WINDOW + 1) :]
        if len(window) >= 2 and window[-1] > window[0]:
            out.append(
                (int(model_ix), (len(window) - 1) / float(window[-1] - window[0]), int(size))
            )
    return out


def fit_runs(root: str | Path, cells: str | None = None) -> tuple[dict[str, Any], list[RunCell]]:
    """The calibration document of the runs in ``root`` (``cells``: globs to keep)."""
    chosen = select_cells(read_cells(root), cells)
    samples: dict[str, _Samples] = defaultdict(_Samples)
    logs = []
    for cell in chosen:
        log = read_cell(root, cell)
        _gather(log, samples[cell.env])
        logs.append(log)
    evidence = _select_evidence(logs)
    best = max(evidence, key=lambda k: (evidence[k]["share"], k == "noncc/swap-and-batch"))
    profile, horizon = best.split("/")
    document: dict[str, Any] = {
        "kind": CALIBRATION_KIND,
        "source": (
            f"SINCERE's real runs on one NVIDIA H100 80GB (HF transformers pipeline, "
            f"granite-7b / gemma-7b / llama3-8b swapped in and out), {len(chosen)} cells "
            f"of {Path(root).name}/"
        ),
        "envs": {env: _env_document(samples[env]) for env in sorted(samples)},
        "scheduler": {
            "planning_profile": profile,
            "select_horizon": horizon,
            "select_evidence": evidence,
            "poll_period_s": POLL_PERIOD_S,
            "poll_period_source": POLL_SOURCE,
        },
        "fitted_on": _fitted_on(chosen, cells),
    }
    parse_calibration(document, "fitted calibration")  # the engine must be able to read it
    return document, chosen


def _fitted_on(cells: Sequence[RunCell], pattern: str | None) -> dict[str, Any]:
    return {
        "num_cells": len(cells),
        "cells": pattern or "all",
        "envs": sorted({c.env for c in cells}),
        "strategies": sorted({c.strategy for c in cells}),
        "traffic": sorted({c.traffic for c in cells}),
        "mean_rates": sorted({c.mean_rate for c in cells}),
        "slas_s": sorted({c.sla_s for c in cells}),
    }


def write_calibration(document: dict[str, Any], path: str | Path) -> Path:
    """Write ``document`` as YAML (JSON for ``.json``) under a do-not-edit header."""
    out = write_params(document, path)
    if out.suffix != ".json":
        command = document.get("command", "sincere fit sincere-runs")
        header = f"# Generated by `{command}`; do not edit.\n"
        out.write_text(header + out.read_text(encoding="utf-8"), encoding="utf-8")
    return out
