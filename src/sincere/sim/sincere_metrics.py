"""SINCERE's metric definitions over a finite horizon, for simulated and real runs alike.

SINCERE's runs last a fixed time; whatever has not been processed by the end of the
run never is. Its metrics (docs/references.md, SINCERE) therefore count *processed* requests: those
whose batch finished by the horizon. With ``duration_s`` the nominal length of the run
and ``horizon_s`` its end (its log's last entry; ``duration_s`` for a simulation):

* ``received`` -- requests that arrived by the horizon;
* ``processed`` -- requests whose batch ended by the horizon;
* ``throughput_rps`` = processed / duration_s (SINCERE's overall throughput);
* ``inference_throughput_rps`` = processed / time spent in batch inference (batches
  that ended by the horizon);
* ``latency_mean_s``, ``latency_p50_s``, ``latency_p99_s`` -- of processed requests,
  batch end - arrival;
* ``slo_attainment`` = processed within the SLA / processed;
  ``slo_attainment_received`` = processed within the SLA / received;
* ``model_switches`` -- model loads that ended by the horizon, the first one included
  (what SINCERE's log counts as its switch count);
* ``load_time_share`` = time spent loading models within the horizon / duration_s;
* ``gpu_busy_share`` = time spent in batch inference within the horizon / duration_s:
  SINCERE's GPU utilisation as the share of time the GPU computes, loads not counted
  (a batch cut by the horizon counts up to the horizon).

Shares and attainments are fractions in [0, 1]; a metric of no processed request is
``None``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from sincere.core.errors import ConfigError
from sincere.core.types import Seconds
from sincere.sim.cluster import Cluster

FloatArray = npt.NDArray[np.float64]

SINCERE_METRICS: tuple[str, ...] = (
    "processed",
    "throughput_rps",
    "inference_throughput_rps",
    "latency_mean_s",
    "latency_p50_s",
    "latency_p99_s",
    "slo_attainment",
    "slo_attainment_received",
    "model_switches",
    "load_time_share",
)
"""The metrics a real run and its replay are compared on, in report order."""


@dataclass(frozen=True, eq=False)
class RunTimeline:
    """What SINCERE's metrics need from one run (times in seconds from its start)."""

    arrival_s: FloatArray  # per request
    finished_s: FloatArray  # per request: end of its batch; NaN if it never ran
    batch_start_s: FloatArray  # per batch: inference start (after any load)
    batch_end_s: FloatArray
    load_start_s: FloatArray  # per model load
    load_end_s: FloatArray

    def __post_init__(self) -> None:
        pairs = (
            ("arrival_s", "finished_s"),
            ("batch_start_s", "batch_end_s"),
            ("load_start_s", "load_end_s"),
        )
        for a, b in pairs:
            if len(getattr(self, a)) != len(getattr(self, b)):
                raise ConfigError(f"RunTimeline: {a} and {b} differ in length")


def _overlap_s(start: FloatArray, end: FloatArray, horizon_s: Seconds) -> float:
    """Total length of the intervals within [0, horizon_s]."""
    return float(np.clip(np.minimum(end, horizon_s) - start, 0.0, None).sum())


def _stat(values: FloatArray, q: float | None) -> float | None:
    if not len(values):
        return None
    return float(values.mean() if q is None else np.percentile(values, q))


def sincere_metrics(
    run: RunTimeline, sla_s: Seconds, duration_s: Seconds, horizon_s: Seconds | None = None
) -> dict[str, float | None]:
    """SINCERE's metrics of ``run`` (see the module docstring); ``horizon_s`` defaults
    to ``duration_s``."""
    horizon = duration_s if horizon_s is None else horizon_s
    if not (duration_s > 0 and horizon > 0 and sla_s > 0):  # sla_s may be inf: no SLA
        raise ConfigError(
            "sincere_metrics: sla_s, duration_s and horizon_s must be > 0",
            value=(sla_s, duration_s, horizon),
        )
    received = run.arrival_s <= horizon
    done = received & (run.finished_s <= horizon)  # NaN compares False
    latency = run.finished_s[done] - run.arrival_s[done]
    num_received, num_done = int(received.sum()), int(done.sum())
    met = int((latency <= sla_s).sum())
    batch_done = run.batch_end_s <= horizon
    infer_s = float((run.batch_end_s - run.batch_start_s)[batch_done].sum())
    return {
        "received": float(num_received),
        "processed": float(num_done),
        "throughput_rps": num_done / duration_s,
        "inference_throughput_rps": num_done / infer_s if infer_s > 0 else None,
        "latency_mean_s": _stat(latency, None),
        "latency_p50_s": _stat(latency, 50.0),
        "latency_p99_s": _stat(latency, 99.0),
        "slo_attainment": met / num_done if num_done else None,
        "slo_attainment_received": met / num_received if num_received else None,
        "model_switches": float(int((run.load_end_s <= horizon).sum())),
        "load_time_share": _overlap_s(run.load_start_s, run.load_end_s, horizon) / duration_s,
        "gpu_busy_share": _overlap_s(run.batch_start_s, run.batch_end_s, horizon) / duration_s,
    }


def cluster_sincere_metrics(cluster: Cluster, horizon_s: Seconds) -> dict[str, Any] | None:
    """SINCERE's metrics of a finished run of ``cluster``; ``None`` without request-level
    engines. Batches and loads of every request-level engine are pooled; the shares are
    their mean per engine; the SLA is the requests' end-to-end target (their first tier's)."""
    logs = [log for e in cluster.engines if (log := e.batch_log()) is not None]
    sla = next((t.ttlt_s for t in cluster.requests.tiers if t.ttlt_s is not None), None)
    if not logs or horizon_s <= 0:
        return None
    starts = np.concatenate([b.start_at for b in logs])
    swaps = np.concatenate([b.swap_s for b in logs])
    run = RunTimeline(
        arrival_s=cluster.requests.arrival_at,
        finished_s=np.where(cluster.records.rejected, np.nan, cluster.records.finished_at),
        batch_start_s=starts,
        batch_end_s=np.concatenate([b.end_at for b in logs]),
        load_start_s=(starts - swaps)[swaps > 0],
        load_end_s=starts[swaps > 0],
    )
    metrics = sincere_metrics(run, sla or math.inf, horizon_s)
    for share in ("load_time_share", "gpu_busy_share"):
        value = metrics[share]
        metrics[share] = None if value is None else value / len(logs)
    if sla is None:
        metrics["slo_attainment"] = metrics["slo_attainment_received"] = None
    return {"horizon_s": horizon_s, **metrics}
