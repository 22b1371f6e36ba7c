"""Errors of simulated InferenceX points, and the files ``sincere validate inferencex`` writes.

Per simulated point and metric (mean TTFT, mean TPOT): the signed error
``(sim − real) / real`` (positive: the simulator is slow) and its absolute value, the APE.
Per group of points (all; by backend, catalog model, system, mode, and backend with its TP
degree): the number of points, the median and mean APE and the bias (the median signed
error). The file republishes some measurements under new ids (a later dump of the same
database: same setting, means equal to the 0.01 ms they are rounded to; some of DeepSeek-R1's
under DeepSeek-V3's label): ``distinct`` scores each measurement once (:func:`repeats`), and
``points.csv``'s ``repeat_of`` names the first row of a copy.

Files: ``points.csv`` (one row per simulated point: the row's setting, how it was
simulated, the engine preset, both means and both errors), ``skipped.csv`` (one row per
point not simulated, with its reason), ``scoreboard.csv`` (one row per group),
``summary.json`` (the counts, the skip reasons and the groups), ``report.md`` and
``figures/`` (simulated against measured per metric, log axes, one colour per backend;
the APE CDFs; measured over simulated against the TP degree per backend).
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import NullFormatter

from sincere.core.output import output_folder
from sincere.experiment.inferencex import SKIP_REASONS, PointResult, Scoreboard, Skip
from sincere.experiment.serving_runs_report import of
from sincere.workload.inferencex import OperatingPoint

METRICS = ("ttft", "tpot")
LABELS = {"ttft": "mean TTFT", "tpot": "mean TPOT"}
GROUPS: dict[str, Callable[[PointResult], str]] = {
    "backend": lambda r: r.spec.point.backend,
    "model": lambda r: r.spec.catalog_model,
    "system": lambda r: r.spec.point.system,
    "mode": lambda r: r.spec.point.mode,
    # an engine's error by its TP degree: a trend here is the engine's own collectives
    # or kernels, which no model's share shows (benchmarks/README.md, "TensorRT-LLM's
    # fused all-reduce")
    "backend_tp": lambda r: f"{r.spec.point.backend} TP {r.spec.tp}",
}
"""How points are grouped in the scoreboard (besides ``all``)."""


def natural_key(text: str) -> tuple[tuple[int, int | str], ...]:
    """``text`` ordered with its digit runs as numbers: TP 2 before TP 16."""
    parts = re.split(r"(\d+)", text)
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts if p)


def real_ms(result: PointResult, metric: str) -> float:
    """The measured mean of ``metric`` (ms)."""
    point = result.spec.point
    return point.ttft_ms if metric == "ttft" else point.tpot_ms


def sim_ms(result: PointResult, metric: str) -> float:
    """The simulated mean of ``metric`` (ms)."""
    return result.sim_ttft_ms if metric == "ttft" else result.sim_tpot_ms


def signed_error(result: PointResult, metric: str) -> float:
    """``(sim − real) / real`` of ``metric`` (NaN where the simulation gave no mean)."""
    real = real_ms(result, metric)
    return (sim_ms(result, metric) - real) / real


@dataclass(frozen=True)
class GroupError:
    """One group's error on one metric."""

    group: str  # "all", or the grouping: backend, model, system, mode
    value: str  # the group's value ("all" for all)
    metric: str  # ttft or tpot
    num_points: int  # points scored
    median_ape: float | None
    mean_ape: float | None
    bias: float | None  # median signed error


def group_error(group: str, value: str, metric: str, results: Sequence[PointResult]) -> GroupError:
    """The error of ``metric`` over ``results`` (module docstring)."""
    signed = np.array([signed_error(r, metric) for r in results], dtype=np.float64)
    signed = signed[np.isfinite(signed)]
    return GroupError(
        group=group,
        value=value,
        metric=metric,
        num_points=len(signed),
        median_ape=of(np.median, np.abs(signed)),
        mean_ape=of(np.mean, np.abs(signed)),
        bias=of(np.median, signed),
    )


SAME_MEAN_MS = 0.005
"""Two rows' measured means this close (ms) are one figure: the file's copies of a
measurement carry it in full or rounded to 0.01 ms."""


def _setting(point: OperatingPoint) -> tuple[object, ...]:
    """What a row measured: every setting but where the file says it came from (id, line,
    release label, the source's concurrency note) and the model's label: 146 rows of the
    file labelled DeepSeek-V3 repeat DeepSeek-R1 rows to the 0.01 ms, both means (their ids
    start ``dsr1_``, R1's scripts; the two share one architecture), and no two models
    measure the same pair of means."""
    p = point
    return (
        p.backend, p.system, p.precision, p.gemm_quant, p.moe_quant, p.mode,
        p.isl, p.osl, p.batch_size, p.tp, p.pp, p.attention_dp, p.moe_tp, p.moe_ep,
        p.prefill, p.decode,
    )  # fmt: skip


def repeats(results: Sequence[PointResult]) -> dict[int, int]:
    """The rows that repeat an earlier row's measurement, by line -> that row's line: the
    same setting (:func:`_setting`) and both means within :data:`SAME_MEAN_MS`. The file
    holds such copies under new ids and release labels (``nightly-dev`` beside
    ``nightly-dev-20260216-d3bae71e``) and model labels (:func:`_setting`)."""
    kept: dict[tuple[object, ...], list[OperatingPoint]] = {}
    out: dict[int, int] = {}
    for point in sorted((r.spec.point for r in results), key=lambda p: p.line):
        earlier = kept.setdefault(_setting(point), [])
        twin = next(
            (
                k
                for k in earlier
                if abs(k.ttft_ms - point.ttft_ms) <= SAME_MEAN_MS
                and abs(k.tpot_ms - point.tpot_ms) <= SAME_MEAN_MS
            ),
            None,
        )
        if twin is None:
            earlier.append(point)
        else:
            out[point.line] = twin.line
    return out


def group_errors(results: Sequence[PointResult]) -> list[GroupError]:
    """All points, each measurement once (``distinct``: :func:`repeats` left out), then
    each group of :data:`GROUPS` by value, each on both metrics."""
    out = [group_error("all", "all", m, results) for m in METRICS]
    copies = repeats(results)
    distinct = [r for r in results if r.spec.point.line not in copies]
    out += [group_error("distinct", "all", m, distinct) for m in METRICS]
    for group, key in GROUPS.items():
        for value in sorted({key(r) for r in results}, key=natural_key):
            members = [r for r in results if key(r) == value]
            out += [group_error(group, value, m, members) for m in METRICS]
    return out


def skip_counts(skips: Sequence[Skip]) -> dict[str, int]:
    """Skipped points per reason (key of :data:`SKIP_REASONS`), most first."""
    return dict(Counter(s.reason for s in skips).most_common())


def point_row(r: PointResult, repeat_of: int | None = None) -> dict[str, object]:
    """One ``points.csv`` row; ``repeat_of``: the line of the row whose measurement this
    one repeats (:func:`repeats`), None for the first."""
    s, p = r.spec, r.spec.point
    row: dict[str, object] = {
        "id": p.id,
        "line": p.line,
        "repeat_of": "" if repeat_of is None else repeat_of,
        "backend": p.backend,
        "backend_version": p.backend_version,
        "engine_preset": s.engine_preset,
        "model": p.model,
        "catalog_model": s.catalog_model,
        "system": p.system,
        "accelerator": s.accelerator,
        "precision": p.precision,
        "sim_precision": s.precision,
        "mode": p.mode,
        "isl": p.isl,
        "osl": p.osl,
        "clients": s.clients,
        "tp": s.tp,
        "pp": s.pp,
        "ep": s.ep,
        "attention_dp": s.attention_dp,
        "fleet": "" if s.pd is None else s.pd.label(),  # a P/D point's workers and slice
        "num_requests": s.num_requests,
        "num_measured": r.num_measured,
    }
    for m in METRICS:
        row[f"{m}_real_ms"] = real_ms(r, m)
        row[f"{m}_sim_ms"] = sim_ms(r, m)
        row[f"{m}_error"] = signed_error(r, m)
        row[f"{m}_ape"] = abs(signed_error(r, m))
    row["wall_s"] = round(r.wall_s, 3)
    return row


def skip_row(s: Skip) -> dict[str, object]:
    """One ``skipped.csv`` row."""
    p = s.point
    return {
        "id": p.id,
        "line": p.line,
        "backend": p.backend,
        "model": p.model,
        "system": p.system,
        "precision": p.precision,
        "mode": p.mode,
        "reason": s.reason,
        "why": SKIP_REASONS[s.reason],
        "detail": s.detail,
    }


def write_rows(rows: Sequence[dict[str, object]], columns: Sequence[str], path: Path) -> Path:
    """A CSV of ``rows`` under ``columns`` (a header only when there are none)."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _saved(fig: Any, path: Path) -> Path:
    """``fig`` laid out, written to ``path`` and closed."""
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def scatter_figure(results: Sequence[PointResult], path: Path) -> Path:
    """Simulated against measured, per metric, log axes, one colour per backend; y = x."""
    fig, axes = plt.subplots(1, len(METRICS), figsize=(11, 4.8))
    for ax, metric in zip(axes, METRICS, strict=True):
        for backend in sorted({r.spec.point.backend for r in results}):
            members = [r for r in results if r.spec.point.backend == backend]
            ax.scatter(
                [real_ms(r, metric) for r in members],
                [sim_ms(r, metric) for r in members],
                s=12,
                alpha=0.6,
                label=backend,
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_minor_formatter(NullFormatter())  # decades labelled only
        lo = min(ax.get_xlim()[0], ax.get_ylim()[0])
        hi = max(ax.get_xlim()[1], ax.get_ylim()[1])
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xlabel(f"measured {LABELS[metric]} (ms)")
        ax.set_ylabel(f"simulated {LABELS[metric]} (ms)")
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    return _saved(fig, path)


def ape_cdf_figure(results: Sequence[PointResult], path: Path) -> Path:
    """The APE CDF per metric: all points, and each backend."""
    fig, axes = plt.subplots(1, len(METRICS), figsize=(11, 4.2))
    backends = sorted({r.spec.point.backend for r in results})
    for ax, metric in zip(axes, METRICS, strict=True):
        for label in ("all", *backends):
            members = [r for r in results if label in ("all", r.spec.point.backend)]
            ape = np.sort(np.abs([signed_error(r, metric) for r in members])) * 100
            ax.plot(
                ape,
                np.arange(1, len(ape) + 1) / max(len(ape), 1),
                lw=2 if label == "all" else 1,
                label=label,
            )
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xlabel(f"APE of the {LABELS[metric]} (%)")
        ax.set_ylabel("share of points")
        ax.grid(alpha=0.3)
        ax.legend()
    return _saved(fig, path)


def tp_trend_figure(results: Sequence[PointResult], path: Path) -> Path:
    """Measured over simulated per metric against the TP degree, one line per backend: the
    median and the quartiles at each TP (log2 axis). A line that slopes is the engine's
    own collectives or kernels, which an engine-wide setting can carry (the way TensorRT-
    LLM's all-reduce share was found)."""
    fig, axes = plt.subplots(1, len(METRICS), figsize=(11, 4.2))
    backends = sorted({r.spec.point.backend for r in results})
    for ax, metric in zip(axes, METRICS, strict=True):
        for i, backend in enumerate(backends):
            members = [r for r in results if r.spec.point.backend == backend]
            tps = sorted({r.spec.tp for r in members})
            mid, low, high = [], [], []
            for tp in tps:
                ratios = [real_ms(r, metric) / sim_ms(r, metric) for r in members
                          if r.spec.tp == tp and sim_ms(r, metric) > 0]  # fmt: skip
                q1, q2, q3 = np.percentile(ratios, [25, 50, 75]) if ratios else (np.nan,) * 3
                mid.append(q2)
                low.append(q2 - q1)
                high.append(q3 - q2)
            shift = 1.0 + 0.03 * (i - (len(backends) - 1) / 2)  # backends side by side
            ax.errorbar([t * shift for t in tps], mid, yerr=[low, high], marker="o",
                        capsize=3, label=backend)  # fmt: skip
        ax.axhline(1.0, color="k", ls="--", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("TP degree")
        ax.set_ylabel(f"measured / simulated {LABELS[metric]}")
        ax.grid(alpha=0.3)
        ax.legend()
    return _saved(fig, path)


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def scoreboard_rows(errors: Sequence[GroupError]) -> list[tuple[str, ...]]:
    """Per group value: group, value, points, then median APE, mean APE and bias (%) of
    the mean TTFT and of the mean TPOT."""
    by_key: dict[tuple[str, str], dict[str, GroupError]] = {}
    for e in errors:
        by_key.setdefault((e.group, e.value), {})[e.metric] = e
    rows = []
    for (group, value), row in by_key.items():
        cells = [
            _fmt(getattr(row[m], f)) for m in METRICS for f in ("median_ape", "mean_ape", "bias")
        ]
        rows.append((group, value, str(row[METRICS[0]].num_points), *cells))
    return rows


SCOREBOARD_HEADERS = (
    "group",
    "value",
    "points",
    "TTFT median APE %",
    "TTFT mean APE %",
    "TTFT bias %",
    "TPOT median APE %",
    "TPOT mean APE %",
    "TPOT bias %",
)


def _markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|---|" + "---:|" * (len(headers) - 1)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


@dataclass(frozen=True)
class InferenceXFiles:
    """What :func:`write_inferencex_report` wrote."""

    points_csv: Path
    skipped_csv: Path
    scoreboard_csv: Path
    summary: Path
    markdown: Path
    figures: list[Path]
    errors: list[GroupError]


def _summary(
    board: Scoreboard, errors: Sequence[GroupError], num_repeats: int, source: str
) -> dict[str, Any]:
    return {
        "source": source,
        "num_points": board.num_points,
        "num_simulated": len(board.results),
        "num_repeats": num_repeats,
        "num_sampled": board.num_sampled,
        "num_skipped": len(board.skips),
        "skipped": {
            k: {"count": n, "why": SKIP_REASONS[k]} for k, n in skip_counts(board.skips).items()
        },
        "errors": [asdict(e) for e in errors],
        "wall_s": round(sum(r.wall_s for r in board.results), 1),
    }


def _markdown(
    board: Scoreboard,
    errors: Sequence[GroupError],
    num_repeats: int,
    figures: Sequence[Path],
    out: Path,
    source: str,
) -> list[str]:
    sampled = "" if board.num_sampled is None else f" ({board.num_sampled} drawn by --sample)"
    skips = [(SKIP_REASONS[k], str(n)) for k, n in skip_counts(board.skips).items()]
    return [
        f"# Simulated against InferenceX's closed-loop points ({source})",
        "",
        f"{board.num_points} points: {len(board.results)} simulated{sampled}, "
        f"{len(board.skips)} skipped. Errors: (sim − real) / real of each point's mean; "
        "bias is the median signed error (+: the simulator is slow). "
        f"{num_repeats} simulated rows repeat an earlier row's measurement "
        "(the file's copies under new ids): `distinct` scores each measurement once.",
        "",
        *_markdown_table(SCOREBOARD_HEADERS, scoreboard_rows(errors)),
        "",
        "## Skipped points",
        "",
        *_markdown_table(("reason", "points"), skips),
        "",
        *(f"![{f.stem}]({f.relative_to(out).as_posix()})" for f in figures),
        "",
    ]


def write_inferencex_report(
    board: Scoreboard, out_dir: str | Path, *, source: str
) -> InferenceXFiles:
    """Write the CSVs, ``summary.json``, ``report.md`` and the figures into ``out_dir``."""
    out = output_folder(out_dir)
    figures_dir = output_folder(out / "figures")
    errors = group_errors(board.results)
    copies = repeats(board.results)
    point_rows = [point_row(r, copies.get(r.spec.point.line)) for r in board.results]
    columns = list(point_rows[0]) if point_rows else ["id"]
    points_csv = write_rows(point_rows, columns, out / "points.csv")
    skip_columns = (
        "id",
        "line",
        "backend",
        "model",
        "system",
        "precision",
        "mode",
        "reason",
        "why",
        "detail",
    )
    skipped_csv = write_rows([skip_row(s) for s in board.skips], skip_columns, out / "skipped.csv")
    scoreboard_csv = write_rows(
        [asdict(e) for e in errors], list(GroupError.__dataclass_fields__), out / "scoreboard.csv"
    )
    figures = []
    if board.results:
        figures = [
            scatter_figure(board.results, figures_dir / "sim_vs_real.png"),
            ape_cdf_figure(board.results, figures_dir / "ape_cdf.png"),
            tp_trend_figure(board.results, figures_dir / "tp_trend.png"),
        ]
    summary = out / "summary.json"
    facts = _summary(board, errors, len(copies), source)
    summary.write_text(json.dumps(facts, indent=1), encoding="utf-8")
    markdown = out / "report.md"
    report = _markdown(board, errors, len(copies), figures, out, source)
    markdown.write_text("\n".join(report), encoding="utf-8")
    return InferenceXFiles(
        points_csv, skipped_csv, scoreboard_csv, summary, markdown, figures, errors
    )
