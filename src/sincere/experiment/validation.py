"""Replay SINCERE's real runs cell by cell through the simulator and compare.

For each cell of a runs folder (layout: :mod:`sincere.workload.sincere_runs`) the
replay takes the real arrivals exactly (times and models), SINCERE's strategy, SLA and
environment (CC or not) of the cell, and runs the request-level engine over the cell's
real span: the horizon is the end of the cell's log, and what the simulated server
has not processed by then stays unprocessed, as in the real run. Both the real run and
its replay are then measured with the same definitions
(:func:`sincere.sim.sincere_metrics.sincere_metrics`).

A :class:`ReplayModel` says how the simulator is set up: ``calibrated`` (the default:
the step-time model fitted on the runs by ``sincere fit sincere-runs`` and SINCERE's
server dispatch) or ``profile`` (SINCERE's standalone profiles and an idealised
scheduler: what the simulator did before it was calibrated on the runs).

Cells run in worker processes; each returns its real and simulated metrics and the
latency quantiles of both (for CDF overlays). :func:`validation_rows` flattens them
into the rows of ``validation.csv`` (``cell``, the cell's setting, and ``M_real`` /
``M_sim`` for every metric ``M`` of :data:`~sincere.sim.sincere_metrics.SINCERE_METRICS`;
the cells' settings are in ``cells.csv``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sincere.core.errors import ConfigError
from sincere.engine.batch_log import BatchLog
from sincere.engine.build import canonical_model
from sincere.policy.batching import parse_strategy_name
from sincere.sim.build import build_cluster, canonical_requests
from sincere.sim.config import SimulationConfig, load_config
from sincere.sim.runner import run_events
from sincere.sim.sincere_metrics import SINCERE_METRICS, RunTimeline, sincere_metrics
from sincere.workload.mixes import sincere_sla
from sincere.workload.sincere_runs import (
    NOMINAL_PROMPT_TOKENS,
    SINCERE_OUTPUT_TOKENS,
    CellLog,
    RunCell,
    read_cell,
    read_cells,
    select_cells,
)

FloatArray = npt.NDArray[np.float64]
Metrics = dict[str, float | None]
OnCell = Callable[[int, int, str], None]  # (done, total, cell name)

SINCERE_RULES = {
    "FCFS": "fcfs",
    "BestBatch": "best-batch",
    "Timer": "timer",
    "SelectBatch": "select-batch",
    "PartialBatch": "partial-batch",
}
"""SINCERE's strategy components and the rules that implement them."""
QUANTILES = np.linspace(0.0, 1.0, 101)


@dataclass(frozen=True)
class ReplayModel:
    """How the simulator is set up for a replay."""

    name: str  # a label for reports
    step_model: dict[str, Any]  # the instance's step_model block
    engine: dict[str, Any] = field(default_factory=dict)  # extra request-level engine fields

    def with_calibration(self, path: Path | None) -> ReplayModel:
        """This model with its step-time parameters read from ``path`` (when given)."""
        if path is None:
            return self
        params = {**self.step_model.get("params", {}), "calibration": str(path)}
        return ReplayModel(self.name, {**self.step_model, "params": params}, dict(self.engine))


REPLAY_MODELS: dict[str, ReplayModel] = {
    "calibrated": ReplayModel("calibrated", {"kind": "sincere-runs"}, {"dispatch": "server"}),
    "profile": ReplayModel(
        "profile", {"kind": "sincere-table"}, {"dispatch": "idle", "max_batch_size": 64}
    ),
}
"""``calibrated``: timing fitted on the runs and SINCERE's server dispatch (default).
``profile``: SINCERE's standalone profiles and the idealised scheduler, as the simulator
was before calibration (batches capped at 64, below the profiled out-of-memory size)."""


def replay_model(name: str, calibration: Path | None = None) -> ReplayModel:
    """The replay model called ``name`` (see :data:`REPLAY_MODELS`)."""
    if name not in REPLAY_MODELS:
        raise ConfigError("unknown replay model", value=name, allowed=REPLAY_MODELS)
    if calibration is not None and REPLAY_MODELS[name].step_model["kind"] != "sincere-runs":
        raise ConfigError(
            "a calibration file only applies to the calibrated model", value=str(calibration)
        )
    return REPLAY_MODELS[name].with_calibration(calibration)


def rules_of(strategy: str) -> str:
    """Our canonical strategy name for SINCERE's (``BestBatch+Timer`` -> ``best-batch+timer``)."""
    parts = [p.strip() for p in strategy.split("+")]
    unknown = [p for p in parts if p not in SINCERE_RULES]
    if unknown:
        raise ConfigError("unknown SINCERE strategy component", value=unknown[0],
                          allowed=SINCERE_RULES)  # fmt: skip
    return "+".join(parse_strategy_name("+".join(SINCERE_RULES[p] for p in parts)))


def replay_config(log: CellLog, model: ReplayModel, seed: int = 0) -> SimulationConfig:
    """The simulation config that replays ``log`` under ``model``."""
    cell = log.cell
    engine = {
        "kind": "request-level",
        "strategy": rules_of(cell.strategy),
        "sla_s": cell.sla_s,
        **model.engine,
    }
    data: dict[str, Any] = {
        "seed": seed,
        "workload": {
            "duration_s": log.end_s,
            "arrival": {"kind": "trace", "path": str(log.folder), "format": "sincere-runs"},
            "lengths": {
                "prompt": {"kind": "fixed", "tokens": NOMINAL_PROMPT_TOKENS},
                "output": {"kind": "fixed", "tokens": SINCERE_OUTPUT_TOKENS},
            },
            "tiers": [{"name": t.name, "ttlt_s": t.ttlt_s} for t in sincere_sla(cell.sla_s)],
            "max_tokens": SINCERE_OUTPUT_TOKENS,
        },
        "instances": [
            {
                "name": "h100",
                "models": list(log.models),
                "accelerator": "H100-SXM",
                "cc": cell.cc,
                "step_model": model.step_model,
                "engine": engine,
            }
        ],
    }
    return load_config(data)


def _replay(log: CellLog, model: ReplayModel, seed: int) -> tuple[RunTimeline, BatchLog]:
    """Run the replay; the simulated timeline and the engine's batch log."""
    config = replay_config(log, model, seed)
    requests = canonical_requests(log.to_requests())
    cluster = build_cluster(config, requests)
    run_events(cluster)
    engine = cluster.engines[0]
    batches = engine.batch_log()
    if batches is None:
        raise ConfigError("a replay needs a request-level engine", value=type(engine).__name__)
    loaded = batches.swap_s > 0
    timeline = RunTimeline(
        arrival_s=requests.arrival_at,
        finished_s=cluster.records.finished_at.copy(),
        batch_start_s=batches.start_at,
        batch_end_s=batches.end_at,
        load_start_s=(batches.start_at - batches.swap_s)[loaded],
        load_end_s=batches.start_at[loaded],
    )
    return timeline, batches


def simulated_timeline(log: CellLog, model: ReplayModel, seed: int = 0) -> RunTimeline:
    """Replay ``log`` under ``model``: the simulated run's timeline."""
    return _replay(log, model, seed)[0]


def simulated_log(log: CellLog, model: ReplayModel, seed: int = 0) -> CellLog:
    """``log``'s arrivals served by the simulator, as a log of the same layout.

    Runs synthesised this way read, fit and validate like real ones (the tests' use;
    also a way to make runs of traffic shapes that were never measured).
    """
    sim, batches = _replay(log, model, seed)
    horizon = log.end_s
    done = sim.finished_s <= horizon
    batch_done = batches.end_at <= horizon
    loaded = batches.swap_s > 0
    index = {canonical_model(m): i for i, m in enumerate(log.models)}
    batch_model = np.array([index[m] for m in batches.model], dtype=np.int64)
    load_done = batches.start_at[loaded] <= horizon
    cell = dataclasses.replace(
        log.cell,
        processed=int(done.sum()),
        num_batches=int(batch_done.sum()),
        model_switches=int(load_done.sum()),
        total_time_s=None,
        total_inference_time_s=None,
    )
    return dataclasses.replace(
        log,
        cell=cell,
        finished_s=np.where(done, sim.finished_s, np.nan),
        batch_start_s=batches.start_at[batch_done],
        batch_end_s=batches.end_at[batch_done],
        batch_size=batches.size[batch_done],
        batch_model=batch_model[batch_done],
        load_start_s=sim.load_start_s[load_done],
        load_end_s=sim.load_end_s[load_done],
        load_model=batch_model[loaded][load_done],
    )


def real_timeline(log: CellLog) -> RunTimeline:
    """The real run's timeline as its log gives it."""
    return RunTimeline(
        arrival_s=log.arrival_s,
        finished_s=log.finished_s,
        batch_start_s=log.batch_start_s,
        batch_end_s=log.batch_end_s,
        load_start_s=log.load_start_s,
        load_end_s=log.load_end_s,
    )


def _latency_quantiles(run: RunTimeline, horizon_s: float) -> list[float]:
    done = run.finished_s <= horizon_s
    latency = run.finished_s[done] - run.arrival_s[done]
    if not len(latency):
        return []
    return [float(v) for v in np.quantile(latency, QUANTILES)]


@dataclass(frozen=True)
class CellComparison:
    """One cell: its setting, the real and simulated metrics, latency quantiles."""

    cell: RunCell
    horizon_s: float  # end of the real log, the replay's horizon
    real: Metrics
    sim: Metrics
    real_latency_q: list[float]  # latency at QUANTILES (empty: nothing processed)
    sim_latency_q: list[float]


def compare_cell(log: CellLog, model: ReplayModel, seed: int = 0) -> CellComparison:
    """Replay one cell's log and measure both runs the same way."""
    cell = log.cell
    real = real_timeline(log)
    sim = simulated_timeline(log, model, seed)
    horizon = log.end_s
    return CellComparison(
        cell=cell,
        horizon_s=horizon,
        real=sincere_metrics(real, cell.sla_s, cell.duration_s, horizon),
        sim=sincere_metrics(sim, cell.sla_s, cell.duration_s, horizon),
        real_latency_q=_latency_quantiles(real, horizon),
        sim_latency_q=_latency_quantiles(sim, horizon),
    )


def validate_runs(
    root: str | Path,
    model: ReplayModel,
    *,
    cells: str | None = None,
    workers: int | None = None,
    seed: int = 0,
    on_cell: OnCell | None = None,
) -> list[CellComparison]:
    """Replay every cell of ``root`` matching ``cells`` (globs); results in cells.csv order.

    ``workers`` processes (default: the CPU count; 1 runs in this process). Every cell's
    files are checked before any replay starts.
    """
    # every cell is read first: a malformed folder fails before any replay starts
    logs = [read_cell(root, cell) for cell in select_cells(read_cells(root), cells)]
    num_workers = max(1, min(workers or os.cpu_count() or 1, len(logs)))
    if num_workers == 1:
        return _serial(logs, model, seed, on_cell)
    return _parallel(logs, model, seed, num_workers, on_cell)


def _serial(
    logs: Sequence[CellLog], model: ReplayModel, seed: int, on_cell: OnCell | None
) -> list[CellComparison]:
    out = []
    for k, log in enumerate(logs, start=1):
        out.append(compare_cell(log, model, seed))
        if on_cell is not None:
            on_cell(k, len(logs), log.cell.name)
    return out


def _parallel(
    logs: Sequence[CellLog], model: ReplayModel, seed: int, num_workers: int,
    on_cell: OnCell | None,
) -> list[CellComparison]:  # fmt: skip
    results: dict[str, CellComparison] = {}
    with ProcessPoolExecutor(max_workers=num_workers) as pool:
        pending: set[Future[CellComparison]] = {
            pool.submit(compare_cell, log, model, seed) for log in logs
        }
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                result = future.result()
                results[result.cell.name] = result
                if on_cell is not None:
                    on_cell(len(results), len(logs), result.cell.name)
    return [results[log.cell.name] for log in logs]


def validation_columns() -> list[str]:
    """The columns of ``validation.csv``: ``cell``, then ``M_real`` and ``M_sim`` per metric."""
    return ["cell", *(f"{m}_{side}" for m in SINCERE_METRICS for side in ("real", "sim"))]


def validation_rows(results: Sequence[CellComparison]) -> list[dict[str, Any]]:
    """One row per cell: its name, then ``M_real`` and ``M_sim`` for every metric."""
    rows = []
    for r in results:
        row: dict[str, Any] = {"cell": r.cell.name}
        for name in SINCERE_METRICS:
            row[f"{name}_real"] = r.real[name]
            row[f"{name}_sim"] = r.sim[name]
        rows.append(row)
    return rows
