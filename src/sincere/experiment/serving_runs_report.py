"""Errors of replayed serving runs, and the files ``sincere validate runs`` writes.

Per run and metric (:data:`~sincere.experiment.serving_runs.METRICS`): the absolute
percentage error of every request, ``|sim − real| / real``, summarised by its median and
mean, and the bias, the median signed error ``(sim − real) / real`` (negative: the
simulator is fast). Queue time is scored only over the requests that really waited at
least :data:`QUEUE_FLOOR_S` (a relative error of a near-zero wait says nothing); every
metric also gets the real and simulated median and mean.

Files: ``requests.csv`` (one row per request and run, real and simulated metrics),
``scoreboard.csv`` (one row per run and metric), ``summary.json`` (the same, and each
run's setting), ``report.md`` and ``figures/<run>.png`` (TTFT and E2E CDFs, real solid,
simulated dashed).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt

from sincere.core.output import output_folder
from sincere.experiment.serving_runs import METRICS, RunComparison

FloatArray = npt.NDArray[np.float64]
QUEUE_FLOOR_S = 0.1
"""Queue times below this (real) are left out of the queue-time error."""
LABELS = {"ttft_s": "TTFT", "tpot_s": "TPOT", "e2e_s": "E2E", "queue_s": "queue"}


@dataclass(frozen=True)
class ErrorStat:
    """One run's error on one metric."""

    run: str
    metric: str
    num_requests: int  # requests scored
    median_ape: float | None  # of |sim - real| / real
    mean_ape: float | None
    bias: float | None  # median of (sim - real) / real
    real_median_s: float | None
    sim_median_s: float | None
    real_mean_s: float | None
    sim_mean_s: float | None


def of(reduce: Callable[[FloatArray], Any], values: FloatArray) -> float | None:
    """``reduce(values)`` as a float; None over no values or where it is not finite."""
    if not len(values):
        return None
    value = float(reduce(values))
    return value if np.isfinite(value) else None


def error_stat(comparison: RunComparison, metric: str) -> ErrorStat:
    """The error of ``metric`` over ``comparison``'s requests (module docstring)."""
    real, sim = comparison.real[metric], comparison.sim[metric]
    keep = np.isfinite(real) & np.isfinite(sim) & (real > 0)
    if metric == "queue_s":
        keep &= real >= QUEUE_FLOOR_S
    signed = (sim[keep] - real[keep]) / real[keep]
    n = int(keep.sum())

    return ErrorStat(
        run=comparison.run.name,
        metric=metric,
        num_requests=n,
        median_ape=of(np.median, np.abs(signed)),
        mean_ape=of(np.mean, np.abs(signed)),
        bias=of(np.median, signed),
        real_median_s=of(np.nanmedian, real),
        sim_median_s=of(np.nanmedian, sim),
        real_mean_s=of(np.nanmean, real),
        sim_mean_s=of(np.nanmean, sim),
    )


def error_stats(comparisons: Sequence[RunComparison]) -> list[ErrorStat]:
    """Every run's error on every metric, runs in order."""
    return [error_stat(c, m) for c in comparisons for m in METRICS]


@dataclass(frozen=True)
class RunsFiles:
    """What :func:`write_runs_report` wrote."""

    requests_csv: Path
    scoreboard_csv: Path
    summary: Path
    markdown: Path
    figures: list[Path]
    stats: list[ErrorStat]


def _request_rows(comparisons: Sequence[RunComparison]) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for c in comparisons:
        run = c.run
        for i in range(len(run)):
            row: dict[str, object] = {
                "run": run.name,
                "request_id": run.request_id[i],
                "input_tokens": int(run.input_tokens[i]),
                "output_tokens": int(run.output_tokens[i]),
                "sim_cached_tokens": int(c.sim_cached_tokens[i]),
                "real_frontend_s": float(c.frontend_s[i]),
            }
            for m in METRICS:
                row[f"{m.removesuffix('_s')}_real_s"] = float(c.real[m][i])
                row[f"{m.removesuffix('_s')}_sim_s"] = float(c.sim[m][i])
            rows.append(row)
    return rows


def _write_csv(rows: Sequence[dict[str, object]], path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def cdf_figure(comparison: RunComparison, path: Path) -> Path:
    """TTFT and E2E CDFs of one run, real (solid) and simulated (dashed)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("ttft_s", "e2e_s"), strict=True):
        for side, values, style in (("real", comparison.real, "-"), ("sim", comparison.sim, "--")):
            v = np.sort(values[metric][np.isfinite(values[metric])])
            ax.plot(v, np.arange(1, len(v) + 1) / len(v), style, label=side)
        ax.set_xlabel(f"{LABELS[metric]} (s)")
        ax.set_ylabel("share of requests")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(comparison.run.name)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _fmt(value: float | None, scale: float = 1.0, digits: int = 1) -> str:
    return "—" if value is None else f"{value * scale:.{digits}f}"


def scoreboard_rows(stats: Sequence[ErrorStat]) -> list[tuple[str, ...]]:
    """Per run: its name, then the median APE (%) of each metric of METRICS."""
    by_run: dict[str, dict[str, ErrorStat]] = {}
    for s in stats:
        by_run.setdefault(s.run, {})[s.metric] = s
    return [(run, *(_fmt(row[m].median_ape, 100) for m in METRICS)) for run, row in by_run.items()]


def scoreboard_table(stats: Sequence[ErrorStat]) -> list[str]:
    """Markdown lines of :func:`scoreboard_rows`."""
    lines = ["| run | " + " | ".join(f"{LABELS[m]} median APE %" for m in METRICS) + " |"]
    lines.append("|---|" + "---:|" * len(METRICS))
    return lines + ["| " + " | ".join(row) + " |" for row in scoreboard_rows(stats)]


def _run_section(
    c: RunComparison, stats: Sequence[ErrorStat], figure: Path, out: Path
) -> list[str]:
    s, run = c.setup, c.run
    hit = c.sim_cached_tokens.sum() / max(int(run.input_tokens.sum()), 1)
    lines = [
        f"## {run.name}",
        "",
        f"- model: {s.model_note}; GPU {run.accelerator} → `{s.accelerator}`; vLLM "
        f"{run.engine.vllm_version}, TP {s.tp}, {s.instances} engine(s) behind `{s.router}`, "
        f"EP {s.ep} per engine"
        + (f" (attention DP {s.attention_dp}: one MoE group)" if s.attention_dp > 1 else "")
        + f"; max_num_seqs {s.max_num_seqs}, "
        f"max_num_batched_tokens {s.max_num_batched_tokens}"
        + (f" ({s.limits_note})" if s.limits_note else "")
        + f", chunked prefill, prefix caching {'on' if run.engine.enable_prefix_caching else 'off'}"
        + f"; weights {s.precision}, KV cache {s.kv_precision}",
        f"- step model: {s.step_model}",
        f"- engine execution model: {s.preset} (docs/engine.md)"
        + (f", with the run's resolved settings: {s.taken}" if s.taken else ""),
        f"- {len(run)} requests; simulated: prefix-cache hits {hit:.1%} of prompt tokens, "
        f"{c.sim_preemptions} preemptions; real front-end time (queued − arrival) median "
        f"{np.median(c.frontend_s) * 1e3:.0f} ms",
        *(f"- not modelled: {n}" for n in s.notes),
        "",
        "| metric | n | median APE % | mean APE % | bias % | real median s | sim median s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for e in stats:
        lines.append(
            f"| {LABELS[e.metric]} | {e.num_requests} | {_fmt(e.median_ape, 100)} | "
            f"{_fmt(e.mean_ape, 100)} | {_fmt(e.bias, 100)} | {_fmt(e.real_median_s, 1, 3)} | "
            f"{_fmt(e.sim_median_s, 1, 3)} |"
        )
    return [*lines, "", f"![{run.name}]({figure.relative_to(out).as_posix()})", ""]


def write_runs_report(
    comparisons: Sequence[RunComparison], out_dir: str | Path, *, source: str
) -> RunsFiles:
    """Write the CSVs, ``summary.json``, ``report.md`` and the figures into ``out_dir``."""
    out = output_folder(out_dir)
    figures_dir = output_folder(out / "figures")
    stats = error_stats(comparisons)
    requests_csv = _write_csv(_request_rows(comparisons), out / "requests.csv")
    scoreboard_csv = _write_csv([asdict(s) for s in stats], out / "scoreboard.csv")
    summary = out / "summary.json"
    doc = {
        "source": source,
        "runs": [{"run": c.run.name, **asdict(c.setup)} for c in comparisons],
        "errors": [asdict(s) for s in stats],
    }
    summary.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    figures = [cdf_figure(c, figures_dir / f"{c.run.name}.png") for c in comparisons]
    lines = [f"# Simulated against real serving runs ({source})", "", *scoreboard_table(stats), ""]
    for c, figure in zip(comparisons, figures, strict=True):
        lines += _run_section(c, [s for s in stats if s.run == c.run.name], figure, out)
    markdown = out / "report.md"
    markdown.write_text("\n".join(lines), encoding="utf-8")
    return RunsFiles(requests_csv, scoreboard_csv, summary, markdown, figures, stats)
