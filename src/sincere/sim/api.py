"""The Python API: ``simulate(config) -> SimulationResult``, as good as the CLI.

>>> result = simulate("examples/w1.yaml", seed=1)        # doctest: +SKIP
>>> result.summary["ttft_s"]["p99"], result.requests.num_rows  # doctest: +SKIP
>>> result.write("out/")                                 # doctest: +SKIP
>>> result.plot("out/simulation.png")                    # doctest: +SKIP

``result.requests`` (a pyarrow Table, one row per request) and ``result.summary``
(a dict) are exactly what ``requests.parquet`` and ``summary.json`` hold;
``config.yaml`` is the resolved config, seed included, so a run repeats exactly.

``result.warnings`` lists, one line each, what a user should not miss: workload models
that no instance serves (their requests are rejected as ``no_instance``) and how many
requests were rejected, by reason. When no request completes at all, :func:`simulate`
also issues a :class:`SimulationWarning` (the CLI exits 1 then).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import gc
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from sincere.core.jsonsafe import dumps
from sincere.core.output import output_folder, write_requests
from sincere.core.records import RecordArrays, to_table
from sincere.core.request import RequestArrays
from sincere.engine.gaps import GapHistogram
from sincere.engine.summary import CONTEXT_REASONS, summarize
from sincere.policy.decision_log import DecisionLog, open_log
from sincere.sim.build import base_dir_of, build_cluster, canonical_requests
from sincere.sim.cluster import ClosedLoop, Cluster
from sincere.sim.config import SimulationConfig, load_config
from sincere.sim.disagg import PDRecords
from sincere.sim.frontend import engine_arrivals, front_end_of, to_client_times
from sincere.sim.runner import Progress, RunLog, run_events
from sincere.sim.sincere_metrics import cluster_sincere_metrics
from sincere.workload.config import generate


@dataclass(eq=False)
class SimulationResult:
    """Outcome of one run: the request table, the summary and what produced them."""

    config: SimulationConfig  # the resolved config (seed included)
    requests_in: RequestArrays  # the generated workload
    records: RecordArrays  # per-request outcomes
    summary: dict[str, Any]  # what summary.json holds
    log: RunLog  # loop measurements (Little's-law integral, events)
    warnings: list[str] = field(default_factory=list)  # what went wrong, one line each
    pd: PDRecords | None = None  # per-phase records of a disaggregated run
    _table: pa.Table | None = field(default=None, repr=False)

    @property
    def requests(self) -> pa.Table:
        """One row per request (the ``requests.parquet`` schema)."""
        if self._table is None:
            table = to_table(self.requests_in, self.records)
            if self.pd is not None:
                for name, column in self.pd.columns(self.records.instances).items():
                    table = table.append_column(name, column)
            self._table = table
        return self._table

    def plot(self, path: str | Path, title: str = "simulation") -> Path:
        """Write the run's figure (latency CDFs per tier, load and TTFT over time); with
        autoscaling (or a pool's actuation), also its instances over time beside it
        (``<name>_autoscaling.png``, ``<name>_actuation.png``)."""
        from sincere.sim.plots import occupancy, plot_autoscaling, plot_run

        out = plot_run(self.requests_in, self.records, path, title)
        for key in ("autoscaling", "actuation"):
            block = self.summary.get(key)
            if block is not None:
                side = out.with_name(f"{out.stem}_{key}{out.suffix}")
                occ = occupancy(self.requests_in, self.records)
                plot_autoscaling(block["timeline"], occ, side)
        return out

    def write(self, out_dir: str | Path) -> Path:
        """Write requests.parquet, summary.json and config.yaml into ``out_dir``."""
        out = output_folder(out_dir)
        write_requests(self.requests, out / "requests.parquet")
        (out / "summary.json").write_text(dumps(self.summary), encoding="utf-8")
        (out / "config.yaml").write_text(self.config.to_yaml(), encoding="utf-8")
        return out


def simulate(
    config: SimulationConfig | str | Path | dict[str, Any],
    seed: int | None = None,
    *,
    requests: RequestArrays | None = None,
    progress: Progress | None = None,
    decisions: DecisionLog | str | Path | None = None,
) -> SimulationResult:
    """Run ``config`` (an object, a YAML path or a mapping); ``seed`` overrides its seed.

    ``requests`` replaces the generated workload (e.g. a trace you built yourself).
    ``progress(done, total)`` is called every 10,000 arrivals. ``decisions`` logs every
    front-door call and outcome as JSON lines (a file path, or a
    :class:`~sincere.policy.decision_log.DecisionLog`). Raises
    :class:`~sincere.core.errors.ConfigError` for an invalid config.
    """
    cfg = config if isinstance(config, SimulationConfig) else load_config(config)
    cfg = cfg.with_seed(seed)
    if requests is None:
        requests = generate(cfg.workload, cfg.seed, base_dir=base_dir_of(cfg))
    requests = canonical_requests(requests)
    front = front_end_of(cfg)
    closed = cfg.workload.arrival is not None and cfg.workload.arrival.kind == "closed"
    sent = None if closed else requests.arrival_at
    with _decision_log(decisions) as log_to:
        cluster = build_cluster(cfg, engine_arrivals(requests, front), log_to)
        with young_collections_every(YOUNG_COLLECTION_EVERY):
            log = run_events(cluster, progress)
    if cluster.closed is not None and cluster.closed.sent:  # sends through API processes
        sent = np.asarray(cluster.closed.sent, dtype=np.float64)
    to_client_times(cluster.requests, cluster.records, front, sent)
    summary = summarize_cluster(cluster, log, horizon_s=cfg.workload.duration_s)
    notes = run_warnings(cluster)
    if len(requests) and summary["num_completed"] == 0:
        warnings.warn("; ".join(notes), SimulationWarning, stacklevel=2)
    pd = None if cluster.pd is None else cluster.pd.records
    # (the cluster's requests: a closed loop's hold the arrival times the run decided)
    return SimulationResult(cfg, cluster.requests, cluster.records, summary, log, notes, pd=pd)


YOUNG_COLLECTION_EVERY = 100_000
"""Container allocations (net of frees) between the interpreter's young-generation garbage
collections during a run: 700 by default. A run that holds millions of objects alive (a
prefix cache's block keys, a router's index) allocates and frees short-lived tuples and
lists by the million as well; every collection walks the young objects, and every tenth
and hundredth the older generations, so at 700 the collector took about 7 % of a
100k-turn, 64-instance sessions run. Results do not depend on it (nothing the simulator
runs defines a finaliser); unreachable cycles live up to that many allocations longer
(docs/simulator_speed.md, the row of `sim/api.py`)."""


@contextlib.contextmanager
def young_collections_every(allocations: int) -> Iterator[None]:
    """The collector's first threshold at ``allocations`` while the block runs (the other
    two and the previous first restored after)."""
    before = gc.get_threshold()
    gc.set_threshold(allocations, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


@contextlib.contextmanager
def _decision_log(target: DecisionLog | str | Path | None) -> Iterator[DecisionLog | None]:
    """The log to write to: ``target`` itself, a file opened at that path, or none."""
    if target is None or isinstance(target, DecisionLog):
        yield target
        return
    with open_log(target) as log:
        yield log


class SimulationWarning(UserWarning):
    """A run that served nothing (every request rejected or unfinished)."""


def run_warnings(cluster: Cluster) -> list[str]:
    """Lines about unserved models and rejected requests (empty for a clean run)."""
    requests, records = cluster.requests, cluster.records
    counts = np.bincount(requests.model, minlength=len(requests.models))
    served = sorted({m for info in cluster.infos for m in info.models})
    lines = []
    for ix, name in enumerate(requests.models):
        if counts[ix] and not cluster.serves(ix):
            close = difflib.get_close_matches(name, served, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            lines.append(
                f"workload model {name!r} is served by no instance{hint}: its "
                f"{int(counts[ix]):,} requests are rejected; the instances serve "
                f"{', '.join(served)}"
            )
    num_rejected = int(records.rejected.sum())
    if num_rejected:
        reasons = Counter(r for r in records.reject_reason if r is not None)
        text = ", ".join(f"{reason} {n:,}" for reason, n in reasons.most_common())
        total = len(requests)
        head = (
            "every request was"
            if num_rejected == total
            else f"{num_rejected:,} of {total:,} requests were"
        )
        lines.append(f"{head} rejected ({text})")
        if any(reason in reasons for reason in CONTEXT_REASONS):
            lines.append(_context_hint(cluster))
    return lines


def _context_hint(cluster: Cluster) -> str:
    """What the context rejections mean, with each instance's ``max_model_len``."""
    limits = sorted(
        {f"{e.id} {e.max_model_len:,}" for e in cluster.engines if e.max_model_len is not None}
    )
    return (
        "prompt_too_long / over_context: prompt + max_tokens is over the engine's "
        f"max_model_len ({', '.join(limits)} tokens; the model's context unless "
        "engine.max_model_len is set), refused as vLLM refuses them; serve such "
        "traffic on a model with a longer context"
    )


def summarize_cluster(
    cluster: Cluster, log: RunLog, horizon_s: float | None = None
) -> dict[str, Any]:
    """The summary of a finished run of ``cluster``.

    With request-level engines it also holds ``sincere``: SINCERE's metrics over the
    horizon ``horizon_s`` (the workload's duration; the run's end when not set), see
    :mod:`sincere.sim.sincere_metrics`.
    """
    num_tiers = len(cluster.requests.tiers)
    gaps = [GapHistogram() for _ in range(num_tiers)]
    for engine in cluster.engines:
        for t, hist in enumerate(engine.gaps):
            gaps[t].merge(hist)
    stats = [engine.stats() for engine in cluster.engines]
    summary = summarize(cluster.requests, cluster.records, log.end_at, cluster.infos, stats, gaps)
    summary["mean_num_in_system"] = log.num_in_system_area / log.end_at if log.end_at else 0.0
    if cluster.pd is not None:
        summary["disaggregation"] = cluster.pd.summary(cluster.requests.arrival_at)
    if cluster.extension is not None:
        cluster.extension.report(summary, log.end_at)
    block = cluster_sincere_metrics(cluster, horizon_s or log.end_at)
    if block is not None:
        summary["sincere"] = block
    if cluster.closed is not None:
        _closed_loop_summary(summary, cluster, cluster.closed, log.end_at, gaps, stats)
    return summary


_REQUEST_KEYS = (
    "num_requests", "num_completed", "num_rejected", "throughput_rps", "output_tokens_per_s",
    "total_tokens_per_s", "ttft_s", "tpot_s", "e2e_s", "queue_s", "slo_attainment",
    "goodput_rps", "tiers",
)  # fmt: skip
"""The summary's figures over requests, which a closed loop's warm-up is left out of."""

_SHARED = ("models", "tiers", "instances", "block_tokens")  # not one value per row


def _closed_loop_summary(
    summary: dict[str, Any],
    cluster: Cluster,
    closed: ClosedLoop,
    end_at: float,
    gaps: list[GapHistogram],
    stats: list[Any],
) -> None:
    """Add ``closed_loop`` to ``summary``; with a warm-up, its request figures become those
    of the measured requests (from the first one after the warm-up to the run's end)."""
    w = closed.num_warmup
    start = float(cluster.requests.arrival_at[w]) if w < len(cluster.requests) else end_at
    summary["closed_loop"] = {
        "concurrency": closed.concurrency,
        "num_warmup": w,
        "measured_from_s": start,
    }
    if not w:
        return
    requests, records = _rows_from(cluster.requests, w), _rows_from(cluster.records, w)
    window = end_at - start
    measured = summarize(requests, records, window, cluster.infos, stats, gaps)
    for key in _REQUEST_KEYS:
        summary[key] = measured[key]


def _rows_from(table: Any, start: int) -> Any:
    """A per-request dataclass (requests or records) without its first ``start`` rows."""
    fields = dataclasses.fields(table)
    return dataclasses.replace(
        table, **{f.name: getattr(table, f.name)[start:] for f in fields if f.name not in _SHARED}
    )
