"""One results row per cell, and what the report derives from a cell's request table.

A row flattens the simulator's ``summary.json`` (sincere.engine.summary): scalars as they
are, ``{mean, p50, p90, p99}`` blocks as ``ttft_s.p99`` and so on, each tier's SLO
attainment as ``tier.<name>.slo_attainment``. Added here:

* ``worst_tier_violation`` -- the largest share of a tier's requests that missed a
  target (Niyama's capacity criterion); ``worst_tier`` names that tier.
* ``prefix_cache.hit_rate`` -- share of prompt tokens served from the engines' prefix
  caches (the summary's ``prefix_cache`` block; absent when no request carried block ids).
* ``num_model_loads`` -- model loads over all instances (the engines' ``num_swaps``).
* ``num_model_switches`` -- consecutive batches of different models on one instance
  (SINCERE's switch count), rebuilt from ``requests.parquet``: a request-level batch is
  the requests of one instance sharing a start time (``first_scheduled_at``).
* ``tokens_per_step`` -- prompt and output tokens processed per iteration (or batch), over
  all instances: how full the steps were (a continuous engine is busy nearly all the time
  under load, so its busy share alone says little).
* ``busy_fraction`` -- mean over instances of the union of in-service intervals
  (first scheduled -> finished) over the run; for request-level engines this is
  SINCERE's "fraction of time in inference".
* ``sincere.<metric>`` -- with request-level engines, SINCERE's metrics over the
  workload's duration (the summary's ``sincere`` block, :mod:`sincere.sim.sincere_metrics`):
  processed requests, throughput and inference throughput, latency of processed
  requests, SLA attainment over processed and over received requests, model switches,
  load-time share and GPU busy share.

:func:`utilization_timeline` gives busy share per time bin from the same intervals
(GPU utilisation over time, approximated by "some request is in service").
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

FloatArray = npt.NDArray[np.float64]
Scalar = float | int | str | bool | None
_STAT_KEYS = ("mean", "p50", "p90", "p99")


def flatten_summary(summary: dict[str, Any]) -> dict[str, Scalar]:
    """Top-level scalars and ``metric.stat`` columns of a summary."""
    row: dict[str, Scalar] = {}
    for key, value in summary.items():
        if isinstance(value, dict) and set(value) <= set(_STAT_KEYS):
            for stat in _STAT_KEYS:
                row[f"{key}.{stat}"] = value.get(stat)
        elif value is None or isinstance(value, int | float | str | bool):
            row[key] = value
    prefix = summary.get("prefix_cache")
    if isinstance(prefix, dict):
        row["prefix_cache.hit_rate"] = prefix.get("hit_rate")
    over_context = summary.get("rejected_over_context")
    if isinstance(over_context, dict):
        row["num_rejected_over_context"] = int(sum(over_context.values()))
    return row


def tier_columns(summary: dict[str, Any]) -> dict[str, Scalar]:
    """Per-tier attainment, the worst tier and its violation rate."""
    row: dict[str, Scalar] = {}
    worst_name: str | None = None
    worst = -1.0
    for name, tier in (summary.get("tiers") or {}).items():
        attained = tier.get("slo_attainment")
        row[f"tier.{name}.slo_attainment"] = attained
        if attained is None or not tier.get("num_requests"):
            continue
        if 1.0 - attained > worst:
            worst, worst_name = 1.0 - attained, name
    row["worst_tier"] = worst_name
    row["worst_tier_violation"] = worst if worst_name is not None else None
    return row


def _column(table: pa.Table, name: str) -> npt.NDArray[Any]:
    return np.asarray(table.column(name).to_numpy(zero_copy_only=False))


def _served(table: pa.Table) -> npt.NDArray[np.bool_]:
    start, end = _column(table, "first_scheduled_at"), _column(table, "finished_at")
    return np.isfinite(start.astype(np.float64)) & np.isfinite(end.astype(np.float64))


def _intervals(table: pa.Table) -> tuple[npt.NDArray[np.object_], FloatArray, FloatArray]:
    """(instance, start, end) of every request that was served."""
    served = _served(table)
    inst = _column(table, "instance").astype(object)[served]
    start = _column(table, "first_scheduled_at").astype(np.float64)[served]
    end = _column(table, "finished_at").astype(np.float64)[served]
    return inst, start, end


def num_model_switches(table: pa.Table) -> int:
    """Consecutive batches (per instance) that serve different models."""
    inst, start, _ = _intervals(table)
    if not len(start):
        return 0
    model = _column(table, "model").astype(object)[_served(table)]
    inst_code = np.unique(inst.astype(str), return_inverse=True)[1]
    order = np.lexsort((start, inst_code))
    inst_code, start, model = inst_code[order], start[order], model[order]
    new_batch = np.ones(len(start), dtype=bool)
    new_batch[1:] = (inst_code[1:] != inst_code[:-1]) | (start[1:] != start[:-1])
    b_inst, b_model = inst_code[new_batch], model[new_batch]
    same_inst = b_inst[1:] == b_inst[:-1]
    return int(np.sum(same_inst & (b_model[1:] != b_model[:-1])))


def merge_intervals(start: FloatArray, end: FloatArray) -> tuple[FloatArray, FloatArray]:
    """The union of ``[start, end)`` intervals as sorted disjoint intervals."""
    if not len(start):
        return start, end
    order = np.argsort(start, kind="stable")
    s, e = start[order], np.maximum.accumulate(end[order])
    new = np.ones(len(s), dtype=bool)
    new[1:] = s[1:] > e[:-1]
    groups = np.cumsum(new) - 1
    merged_end = np.zeros(int(groups[-1]) + 1)
    np.maximum.at(merged_end, groups, e)
    return s[new], merged_end


def busy_until(start: FloatArray, end: FloatArray, at: FloatArray) -> FloatArray:
    """Busy time in ``[0, t]`` for each ``t`` of ``at``, given disjoint sorted intervals."""
    if not len(start):
        return np.zeros(len(at))
    length = end - start
    before = np.concatenate(([0.0], np.cumsum(length)))
    j = np.searchsorted(start, at, side="right")  # intervals started by t
    last = np.maximum(j - 1, 0)
    partial = np.clip(at - start[last], 0.0, length[last])
    return np.where(j > 0, before[last] + partial, 0.0)


def utilization_timeline(
    table: pa.Table, bin_s: float, end_at: float | None = None
) -> tuple[FloatArray, FloatArray]:
    """Bin starts and the mean busy share of the instances in each ``bin_s`` bin."""
    inst, start, end = _intervals(table)
    horizon = float(end_at if end_at is not None else (end.max() if len(end) else 0.0))
    edges = np.arange(0.0, horizon + bin_s, bin_s)
    if len(edges) < 2:
        return np.zeros(0), np.zeros(0)
    names = sorted(set(inst.tolist())) or [""]
    share = np.zeros(len(edges) - 1)
    for name in names:
        sel = inst == name
        s, e = merge_intervals(start[sel], end[sel])
        share += np.diff(busy_until(s, e, edges)) / bin_s
    return edges[:-1], share / len(names)


def busy_fraction(table: pa.Table, duration_s: float | None) -> float | None:
    """Mean over instances of the share of ``[0, duration_s]`` with a request in service."""
    if not duration_s:
        return None
    inst, start, end = _intervals(table)
    names = sorted(set(inst.tolist()))
    if not names:
        return 0.0
    at = np.array([duration_s])
    total = 0.0
    for name in names:
        s, e = merge_intervals(start[inst == name], end[inst == name])
        total += float(busy_until(s, e, at)[0]) / duration_s
    return total / len(names)


def tokens_per_step(summary: dict[str, Any]) -> float | None:
    """Prompt and output tokens processed per iteration (or request-level batch), over all
    instances: how full the engine's steps were; ``None`` when nothing ran."""
    steps = sum(int(v.get("num_steps", 0)) for v in (summary.get("instances") or {}).values())
    rate, duration = summary.get("total_tokens_per_s"), summary.get("duration_s")
    if not steps or rate is None or duration is None:
        return None
    return float(rate) * float(duration) / steps


def cell_metrics(summary: dict[str, Any], table: pa.Table) -> dict[str, Scalar]:
    """Every metric column of a finished cell."""
    row = flatten_summary(summary)
    row.update(tier_columns(summary))
    instances = summary.get("instances") or {}
    row["num_model_loads"] = int(sum(int(v.get("num_swaps", 0)) for v in instances.values()))
    row["num_model_switches"] = num_model_switches(table)
    row["busy_fraction"] = busy_fraction(table, summary.get("duration_s"))
    row["tokens_per_step"] = tokens_per_step(summary)
    for name, value in (summary.get("sincere") or {}).items():
        row[f"sincere.{name}"] = value
    return row
