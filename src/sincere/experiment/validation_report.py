"""What ``sincere validate`` writes: ``validation.csv``, an error summary and a report.

Errors per cell: attainments and shares (``slo_attainment``, ``slo_attainment_received``,
``load_time_share``) as the absolute difference in percentage points; every other metric
as the relative error ``|sim - real| / |real|`` in percent. The summary gives the median
and the 90th percentile of each over the cells, next to the targets of
:data:`TARGETS` where one is set. The report (``report.md`` linking PNGs in
``figures/``, ``report.html`` embedding them) shows one scatter of simulated against
real per metric (one point per cell, CC and non-CC coloured), the error table, and
latency CDF overlays of a few cells.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from sincere.core.errors import ConfigError
from sincere.core.output import output_folder
from sincere.experiment.report import Block, Figure, Grid, Heading, Para, to_html, to_markdown
from sincere.experiment.validation import (
    QUANTILES,
    CellComparison,
    validation_columns,
    validation_rows,
)
from sincere.sim.sincere_metrics import SINCERE_METRICS

POINT_METRICS = ("slo_attainment", "slo_attainment_received", "load_time_share")
"""Metrics compared in absolute percentage points; the others relatively."""
TARGETS: dict[str, float] = {
    "processed": 10.0,
    "throughput_rps": 10.0,
    "latency_mean_s": 10.0,
    "slo_attainment": 5.0,
    "model_switches": 10.0,
}
"""Median error each metric should stay within (percent, or points for attainments)."""
ENV_COLOURS = {"non-cc": "tab:blue", "cc": "tab:red"}


@dataclass(frozen=True)
class ErrorStat:
    """The error of one metric over the cells."""

    metric: str
    unit: str  # "%" (relative) or "pts" (absolute percentage points)
    median: float | None
    p90: float | None
    num_cells: int  # cells where both values exist
    target: float | None  # median target, when set

    @property
    def meets(self) -> bool | None:
        """Whether the median is within the target (None without one)."""
        if self.target is None or self.median is None:
            return None
        return self.median <= self.target


def cell_error(metric: str, real: float | None, sim: float | None) -> float | None:
    """The error of one cell on ``metric`` (points or percent, see the module docstring)."""
    if real is None or sim is None or not (math.isfinite(real) and math.isfinite(sim)):
        return None
    if metric in POINT_METRICS:
        return 100.0 * abs(sim - real)
    if real == 0:
        return 0.0 if sim == 0 else None
    return 100.0 * abs(sim - real) / abs(real)


def error_summary(rows: Sequence[dict[str, Any]]) -> list[ErrorStat]:
    """Median and p90 of the per-cell errors of every metric."""
    out = []
    for metric in SINCERE_METRICS:
        errors = [cell_error(metric, r[f"{metric}_real"], r[f"{metric}_sim"]) for r in rows]
        values = np.array([e for e in errors if e is not None], dtype=float)
        med = float(np.median(values)) if len(values) else None
        p90 = float(np.percentile(values, 90)) if len(values) else None
        unit = "pts" if metric in POINT_METRICS else "%"
        out.append(ErrorStat(metric, unit, med, p90, len(values), TARGETS.get(metric)))
    return out


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """``validation.csv``: one row per cell (empty cells for missing values)."""
    if not rows:
        raise ConfigError("no cells to write", where=path)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=validation_columns())
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return path


def scatter(results: Sequence[CellComparison], path: Path) -> Path:
    """One panel per metric: simulated against real, one point per cell, y = x dashed."""
    cols = 5
    lines = math.ceil(len(SINCERE_METRICS) / cols)
    fig, axes = plt.subplots(lines, cols, figsize=(3.3 * cols, 3.2 * lines), squeeze=False)
    for ax, metric in zip(axes.flat, SINCERE_METRICS, strict=False):
        for env, colour in ENV_COLOURS.items():
            pts = [
                (r.real[metric], r.sim[metric])
                for r in results
                if r.cell.env == env and r.real[metric] is not None and r.sim[metric] is not None
            ]
            if pts:
                x, y = zip(*pts, strict=True)
                ax.scatter(x, y, s=10, alpha=0.7, color=colour, label=env)
        lo, hi = ax.get_xlim()
        lo, hi = min(lo, ax.get_ylim()[0]), max(hi, ax.get_ylim()[1])
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel("real", fontsize=8)
        ax.set_ylabel("simulated", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(SINCERE_METRICS) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def cdf_cells(results: Sequence[CellComparison], num: int = 4) -> list[CellComparison]:
    """A few varied cells for CDF overlays: one per strategy, alternating environment and
    traffic, the middle matching cell (in cells.csv order) of each."""
    usable = [r for r in results if r.real_latency_q and r.sim_latency_q]
    strategies = list(dict.fromkeys(r.cell.strategy for r in usable))
    envs = sorted({r.cell.env for r in usable}, reverse=True)  # non-cc first
    traffic = list(dict.fromkeys(r.cell.traffic for r in usable))
    chosen = []
    for i, strategy in enumerate(strategies[:num]):
        same = [r for r in usable if r.cell.strategy == strategy]
        env, shape = envs[i % len(envs)], traffic[(i // len(envs)) % len(traffic)]
        match = [r for r in same if (r.cell.env, r.cell.traffic) == (env, shape)] or same
        chosen.append(match[len(match) // 2])
    return chosen


def latency_cdfs(results: Sequence[CellComparison], path: Path) -> Path | None:
    """Latency CDFs of the real run (solid) and its replay (dashed) for a few cells."""
    picked = cdf_cells(results)
    if not picked:
        return None
    fig, axes = plt.subplots(1, len(picked), figsize=(4.2 * len(picked), 3.3), squeeze=False)
    for ax, r in zip(axes[0], picked, strict=True):
        ax.plot(r.real_latency_q, QUANTILES, "-", color="k", label="real")
        ax.plot(r.sim_latency_q, QUANTILES, "--", color="tab:orange", label="simulated")
        ax.axvline(r.cell.sla_s, color="grey", lw=0.8, ls=":")
        ax.set_title(r.cell.name, fontsize=7)
        ax.set_xlabel("latency of processed requests (s)", fontsize=8)
        ax.set_ylabel("CDF", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _stat_json(s: ErrorStat) -> dict[str, Any]:
    return {"unit": s.unit, "median": s.median, "p90": s.p90, "target": s.target,
            "meets": s.meets}  # fmt: skip


def _fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def summary_grid(stats: Sequence[ErrorStat]) -> Grid:
    """The error table: metric, unit, median, p90, target, met."""
    rows = []
    for s in stats:
        met = {True: "yes", False: "no", None: ""}[s.meets]
        target = "" if s.target is None else f"≤ {s.target:g}"
        rows.append([s.metric, s.unit, _fmt(s.median), _fmt(s.p90), target, met])
    return Grid(["metric", "error", "median", "p90", "target (median)", "met"], rows)


@dataclass(frozen=True)
class ValidationFiles:
    """What :func:`write_validation` wrote."""

    csv: Path
    summary: Path
    markdown: Path
    html: Path
    figures: list[Path]
    stats: list[ErrorStat]  # the error table summary.json holds


def write_validation(
    results: Sequence[CellComparison], out_dir: str | Path, *, model: str, source: str
) -> ValidationFiles:
    """Write ``validation.csv``, ``summary.json``, ``report.md``, ``report.html``, figures."""
    out = output_folder(out_dir)
    figures_dir = output_folder(out / "figures")
    rows = validation_rows(results)
    stats = error_summary(rows)
    table = write_csv(rows, out / "validation.csv")
    summary = out / "summary.json"
    summary.write_text(
        json.dumps(
            {
                "model": model,
                "source": source,
                "num_cells": len(rows),
                "errors": {s.metric: _stat_json(s) for s in stats},
            },
            indent=1,
        ),
        encoding="utf-8",
    )
    drawn = [scatter(results, figures_dir / "scatter.png")]
    cdf = latency_cdfs(results, figures_dir / "latency_cdf.png")
    drawn += [cdf] if cdf is not None else []
    blocks = _blocks(results, stats, drawn, model=model, source=source)
    md = out / "report.md"
    md.write_text(to_markdown(blocks, out), encoding="utf-8")
    page = out / "report.html"
    page.write_text(to_html(blocks, "Validation against SINCERE's runs"), encoding="utf-8")
    return ValidationFiles(table, summary, md, page, drawn, stats)


def _blocks(
    results: Sequence[CellComparison], stats: Sequence[ErrorStat], figures: Sequence[Path],
    *, model: str, source: str,
) -> list[Block]:  # fmt: skip
    envs = sorted({r.cell.env for r in results})
    blocks: list[Block] = [
        Heading(1, "Simulated against real: SINCERE's runs, cell by cell"),
        Para(
            f"{len(results)} cells of {source} ({', '.join(envs)}), each replayed with its real "
            f"arrivals and models through the request-level engine ({model} model) up to "
            "the end of its log. Errors: attainments and shares in absolute percentage "
            "points, every other metric relative (|sim − real| / real)."
        ),
        Heading(2, "Errors over the cells"),
        summary_grid(stats),
        Heading(2, "Figures"),
    ]
    captions = {
        "scatter.png": "Simulated against real, one point per cell (dashed: y = x).",
        "latency_cdf.png": "Latency CDFs of processed requests: real (solid) and replay "
        "(dashed); dotted: the SLA.",
    }
    blocks += [Figure(p, captions.get(p.name, p.name)) for p in figures]
    return blocks
