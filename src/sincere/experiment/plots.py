"""The report's figures (PNG, matplotlib's Agg backend), one function per figure.

Conventions: one panel per traffic pattern (the ``traffic`` role), one colour per
strategy, one line style per environment (solid = the baseline, e.g. non-CC; dashed =
the other, e.g. CC). Axes a figure does not vary sit at the reference slice
(:meth:`Results.reference`); seeds are pooled (request CDFs, utilisation) or averaged
(load sweeps, with the seed range shaded). Metrics come from ``results.parquet``;
latency CDFs and utilisation over time from the cells' ``requests.parquet``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pyarrow.parquet as pq

from sincere.experiment.metrics import utilization_timeline
from sincere.experiment.paths import format_value
from sincere.experiment.pd_study import pd_ratio_figure
from sincere.experiment.results import Results, Row, key, mean_of
from sincere.experiment.tables import has_prefix_cache

STYLES = ("-", "--", ":", "-.")
Fixed = dict[str, Any]


def _labels(results: Results, role: str) -> tuple[str | None, list[Any]]:
    axis = results.role(role)
    return axis, (results.axes[axis] if axis else [None])


def _fix(fixed: Fixed, axis: str | None, label: Any) -> Fixed:
    return {**fixed, axis: label} if axis else dict(fixed)


def _title(results: Results, fixed: Fixed, free: Sequence[str | None]) -> str:
    parts = [f"{a}={format_value(v)}" for a, v in fixed.items() if a not in free]
    return ", ".join(parts)


def _short(metric: str) -> str:
    return metric.removesuffix("_s").upper()


def _figure(num_panels: int, height: float = 3.4) -> tuple[Any, list[Any]]:
    fig, axes = plt.subplots(1, num_panels, figsize=(4.6 * num_panels, height), squeeze=False)
    return fig, list(axes[0])


def _color(i: int) -> Any:
    return plt.get_cmap("tab10")(i % 10)


def _save(fig: Any, path: Path, suptitle: str) -> Path:
    """Title, one legend right of the panels (labels deduplicated), PNG at 120 dpi."""
    fig.suptitle(suptitle.replace("(; ", "("), fontsize=10)
    seen: dict[str, Any] = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    fig.tight_layout()
    if seen:
        fig.legend(
            list(seen.values()),
            list(seen),
            loc="center left",
            bbox_to_anchor=(1.0, 0.5),
            fontsize=8,
            frameon=False,
        )
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _series_label(strategy: Any, env: Any) -> str:
    parts = [format_value(x) for x in (strategy, env) if x is not None]
    return " / ".join(parts) or "all"


def _pooled(results: Results, rows: list[Row], column: str) -> np.ndarray:
    chunks = []
    for row in rows:
        path = results.requests_path(row)
        if path.exists():
            values = pq.read_table(path, columns=[column]).column(column).to_numpy()
            chunks.append(values[np.isfinite(values)])
    return np.concatenate(chunks) if chunks else np.zeros(0)


def latency_cdf(results: Results, path: Path, column: str = "e2e_s") -> Path | None:
    """CDF of a per-request latency per strategy, one panel per traffic pattern."""
    t_axis, traffics = _labels(results, "traffic")
    s_axis, strategies = _labels(results, "strategy")
    e_axis, envs = _labels(results, "env")
    base = results.slice_except(t_axis, s_axis, e_axis)
    fig, panels = _figure(len(traffics))
    drawn = False
    for ax, traffic in zip(panels, traffics, strict=True):
        for i, strategy in enumerate(strategies):
            for j, env in enumerate(envs):
                fixed = _fix(_fix(_fix(base, t_axis, traffic), s_axis, strategy), e_axis, env)
                values = np.sort(_pooled(results, results.select(fixed), column))
                if not len(values):
                    continue
                y = np.arange(1, len(values) + 1) / len(values)
                ax.plot(
                    values,
                    y,
                    STYLES[j % 4],
                    color=_color(i),
                    lw=1.3,
                    label=_series_label(strategy, env),
                )
                drawn = True
        ax.set_xscale("log")
        ax.set_xlabel(f"{column.removesuffix('_s').upper()} latency (s, log)")
        ax.set_ylabel("share of requests")
        ax.set_title(format_value(traffic) if traffic is not None else "")
        ax.grid(alpha=0.3)
    if not drawn:
        plt.close(fig)
        return None
    return _save(
        fig,
        path,
        f"{_short(column)} latency CDF ({_title(results, base, [])}; seeds pooled)",
    )


def latency_percentiles(results: Results, path: Path, metric: str = "e2e_s") -> Path | None:
    """p50 / p90 / p99 per strategy (mean over seeds), one panel per traffic pattern."""
    t_axis, traffics = _labels(results, "traffic")
    s_axis, strategies = _labels(results, "strategy")
    e_axis, envs = _labels(results, "env")
    base = results.slice_except(t_axis, s_axis, e_axis)
    fig, panels = _figure(len(traffics), height=3.8)
    width = 0.8 / max(1, len(envs))
    for ax, traffic in zip(panels, traffics, strict=True):
        for j, env in enumerate(envs):
            for i, strategy in enumerate(strategies):
                rows = results.select(
                    _fix(_fix(_fix(base, t_axis, traffic), s_axis, strategy), e_axis, env)
                )
                qs = [mean_of(rows, f"{metric}.{q}") for q in ("p50", "p90", "p99")]
                if qs[0] is None or qs[2] is None:
                    continue
                x = i - 0.4 + width * (j + 0.5)
                ax.vlines(x, qs[0], qs[2], color=_color(j), lw=2)
                ax.plot(
                    [x] * 3,
                    qs,
                    "o",
                    ms=3,
                    color=_color(j),
                    label=format_value(env) if i == 0 and env is not None else None,
                )
        ax.set_xticks(range(len(strategies)))
        ax.set_xticklabels(
            [format_value(s) for s in strategies], rotation=30, ha="right", fontsize=7
        )
        ax.set_yscale("log")
        ax.set_ylabel(f"{metric} p50 / p90 / p99 (s, log)")
        ax.set_title(format_value(traffic) if traffic is not None else "")
        ax.grid(alpha=0.3, axis="y")
    return _save(
        fig,
        path,
        f"{_short(metric)} latency percentiles ({_title(results, base, [])}; mean over seeds)",
    )


def versus_load(
    results: Results, path: Path, metric: str, ylabel: str, hline: float | None = None
) -> Path | None:
    """``metric`` against the load axis per strategy and env (mean, seed range shaded); the
    axis keeps its own name (a rate, or an instance count), never called a rate it is not."""
    l_axis = results.role("load")
    if l_axis is None or not all(_numeric(v) for v in results.axes[l_axis]):
        return None
    t_axis, traffics = _labels(results, "traffic")
    s_axis, strategies = _labels(results, "strategy")
    e_axis, envs = _labels(results, "env")
    base = results.slice_except(t_axis, s_axis, e_axis, l_axis)
    loads = results.axes[l_axis]
    fig, panels = _figure(len(traffics))
    for ax, traffic in zip(panels, traffics, strict=True):
        for i, strategy in enumerate(strategies):
            for j, env in enumerate(envs):
                fixed = _fix(_fix(_fix(base, t_axis, traffic), s_axis, strategy), e_axis, env)
                _load_line(
                    results,
                    ax,
                    fixed,
                    l_axis,
                    loads,
                    metric,
                    (_color(i), STYLES[j % 4], _series_label(strategy, env)),
                )
        if hline is not None:
            ax.axhline(hline, color="grey", lw=0.8, ls=":")
        ax.set_xlabel(l_axis)  # the load axis as named: a rate, or e.g. an instance count
        ax.set_ylabel(ylabel)
        ax.set_title(format_value(traffic) if traffic is not None else "")
        ax.grid(alpha=0.3)
    return _save(fig, path, f"{ylabel} vs {l_axis} ({_title(results, base, [])}; mean over seeds)")


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _load_line(
    results: Results,
    ax: Any,
    fixed: Fixed,
    l_axis: str,
    loads: list[Any],
    metric: str,
    style: tuple[Any, str, str],
) -> None:
    xs, mean, lo, hi = [], [], [], []
    for load in loads:
        rows = results.select({**fixed, l_axis: load})
        values = [float(r[metric]) for r in rows if _numeric(r.get(metric))]
        if values:
            xs.append(float(load))
            mean.append(float(np.mean(values)))
            lo.append(min(values))
            hi.append(max(values))
    if not xs:
        return
    color, ls, label = style
    ax.plot(xs, mean, ls, marker="o", ms=3, color=color, lw=1.3, label=label)
    if len(xs) > 1 and any(h > low for h, low in zip(hi, lo, strict=True)):
        ax.fill_between(xs, lo, hi, color=color, alpha=0.12, lw=0)


def utilization_over_time(results: Results, path: Path, bin_s: float = 10.0) -> Path | None:
    """Busy share per ``bin_s`` bin over the arrival window (first seed of the reference
    slice); panels: traffic patterns (columns) x environments (rows); one line per strategy."""
    t_axis, traffics = _labels(results, "traffic")
    s_axis, strategies = _labels(results, "strategy")
    e_axis, envs = _labels(results, "env")
    base = results.slice_except(t_axis, s_axis, e_axis)
    fig, grid = plt.subplots(
        len(envs),
        len(traffics),
        figsize=(4.6 * len(traffics), 2.6 * len(envs) + 0.6),
        squeeze=False,
        sharey=True,
    )
    drawn = False
    for r, env in enumerate(envs):
        for c, traffic in enumerate(traffics):
            ax = grid[r][c]
            for i, strategy in enumerate(strategies):
                fixed = _fix(_fix(_fix(base, t_axis, traffic), s_axis, strategy), e_axis, env)
                drawn |= _utilization_line(
                    results, ax, fixed, bin_s, (_color(i), format_value(strategy))
                )
            title = " / ".join(format_value(x) for x in (traffic, env) if x is not None)
            ax.set_title(title, fontsize=9)
            ax.set_ylim(-0.02, 1.05)
            ax.grid(alpha=0.3)
            ax.set_xlabel("time (s)" if r == len(envs) - 1 else "")
        grid[r][0].set_ylabel("GPU busy share")
    if not drawn:
        plt.close(fig)
        return None
    note = f"{bin_s:g} s bins, 3-bin mean, arrival window, first seed"
    return _save(fig, path, f"GPU utilisation over time ({_title(results, base, [])}; {note})")


def _utilization_line(
    results: Results, ax: Any, fixed: Fixed, bin_s: float, style: tuple[Any, str]
) -> bool:
    rows = sorted(results.select(fixed), key=lambda r: r["seed"])
    if not rows or not results.requests_path(rows[0]).exists():
        return False
    table = pq.read_table(results.requests_path(rows[0]))
    arrivals = table.column("arrival_at").to_numpy()
    window = float(arrivals.max()) if len(arrivals) else 0.0
    t, share = utilization_timeline(table, bin_s, end_at=window)
    ax.plot(t, _smooth(share), color=style[0], lw=1.0, label=style[1])
    return True


def _smooth(values: np.ndarray, width: int = 3) -> np.ndarray:
    if len(values) < width:
        return values
    return np.convolve(values, np.ones(width) / width, mode="same")


def model_switches(results: Results, path: Path) -> Path | None:
    """Mean model switches per strategy, traffic pattern and env (reference slice)."""
    t_axis, traffics = _labels(results, "traffic")
    s_axis, strategies = _labels(results, "strategy")
    e_axis, envs = _labels(results, "env")
    base = results.slice_except(t_axis, s_axis, e_axis)
    fig, panels = _figure(len(traffics))
    width = 0.8 / max(1, len(envs))
    total = 0.0
    for ax, traffic in zip(panels, traffics, strict=True):
        for j, env in enumerate(envs):
            heights = [
                mean_of(
                    results.select(_fix(_fix(_fix(base, t_axis, traffic), s_axis, s), e_axis, env)),
                    "num_model_switches",
                )
                or 0.0
                for s in strategies
            ]
            total += sum(heights)
            xs = np.arange(len(strategies)) - 0.4 + width * (j + 0.5)
            ax.bar(
                xs,
                heights,
                width,
                color=_color(j),
                label=format_value(env) if env is not None else None,
            )
        ax.set_xticks(range(len(strategies)))
        ax.set_xticklabels(
            [format_value(s) for s in strategies], rotation=30, ha="right", fontsize=7
        )
        ax.set_yscale("symlog")
        ax.set_ylabel("model switches per run")
        ax.set_title(format_value(traffic) if traffic is not None else "")
        ax.grid(alpha=0.3, axis="y")
    if total == 0:
        plt.close(fig)
        return None
    return _save(fig, path, f"model switches ({_title(results, base, [])}; mean over seeds)")


def prefix_cache_gain(results: Results, path: Path) -> Path | None:
    """Goodput and TTFT p50 per strategy with each env side by side, one column of panels
    per traffic pattern; only for results with a prefix-cache hit rate (the env axis is
    then caching on / off, so the bars show the gain from caching)."""
    if not has_prefix_cache(results):
        return None
    t_axis, traffics = _labels(results, "traffic")
    s_axis, strategies = _labels(results, "strategy")
    e_axis, envs = _labels(results, "env")
    base = results.slice_except(t_axis, s_axis, e_axis)
    metrics = (("goodput_rps", "goodput (req/s)"), ("ttft_s.p50", "TTFT p50 (s)"))
    fig, grid = plt.subplots(
        len(metrics), len(traffics), figsize=(4.6 * len(traffics), 6.4), squeeze=False
    )
    width = 0.8 / max(1, len(envs))
    for col, traffic in enumerate(traffics):
        for row, (metric, ylabel) in enumerate(metrics):
            ax = grid[row][col]
            for j, env in enumerate(envs):
                heights = [
                    mean_of(
                        results.select(
                            _fix(_fix(_fix(base, t_axis, traffic), s_axis, s), e_axis, env)
                        ),
                        metric,
                    )
                    for s in strategies
                ]
                xs = [i - 0.4 + width * (j + 0.5) for i in range(len(strategies))]
                ax.bar(
                    [x for x, h in zip(xs, heights, strict=True) if h is not None],
                    [h for h in heights if h is not None],
                    width,
                    color=_color(j),
                    label=format_value(env) if env is not None else "all",
                )
            ax.set_xticks(range(len(strategies)))
            ax.set_xticklabels(
                [format_value(s) for s in strategies], rotation=30, ha="right", fontsize=7
            )
            ax.set_ylabel(ylabel)
            ax.set_title(format_value(traffic) if traffic is not None else "")
            ax.grid(alpha=0.3, axis="y")
    return _save(
        fig, path, f"Gain from prefix caching ({_title(results, base, [])}; mean over seeds)"
    )


FigureFn = Callable[[Results, Path], Path | None]


def all_figures(results: Results, folder: Path) -> list[tuple[str, Path]]:
    """Draw every applicable figure into ``folder``; (caption, path) pairs."""
    folder.mkdir(parents=True, exist_ok=True)
    load = results.role("load") or "load"
    specs: list[tuple[str, str, FigureFn]] = [
        ("End-to-end latency CDF per strategy", "latency_cdf.png", latency_cdf),
        ("TTFT CDF per strategy", "ttft_cdf.png", _ttft_cdf_if_distinct),
        ("Latency percentiles per strategy", "latency_percentiles.png", latency_percentiles),
        (
            f"SLA attainment vs {load}",
            "slo_vs_load.png",
            lambda r, p: versus_load(r, p, "slo_attainment", "SLA attainment"),
        ),
        (
            f"Goodput vs {load}",
            "goodput_vs_load.png",
            lambda r, p: versus_load(r, p, "goodput_rps", "goodput (req/s)"),
        ),
        (
            f"Throughput vs {load}",
            "throughput_vs_load.png",
            lambda r, p: versus_load(r, p, "throughput_rps", "throughput (req/s)"),
        ),
        (
            f"Worst-tier violation rate vs {load} (1 % line)",
            "violation_vs_load.png",
            lambda r, p: versus_load(r, p, "worst_tier_violation", "worst-tier violation", 0.01),
        ),
        ("GPU utilisation over time", "utilization_over_time.png", utilization_over_time),
        ("Model switches", "model_switches.png", model_switches),
        (
            "Gain from prefix caching: goodput and TTFT p50 per strategy, each env side by side",
            "prefix_cache_gain.png",
            prefix_cache_gain,
        ),
        (
            "Where disaggregation wins: best xPyD / colocated goodput per GPU",
            "pd_goodput_ratio.png",
            pd_ratio_figure,
        ),
    ]
    out = []
    for caption, name, draw in specs:
        drawn = draw(results, folder / name)
        if drawn is not None:
            out.append((caption, drawn))
    return out


def _ttft_cdf_if_distinct(results: Results, path: Path) -> Path | None:
    """The TTFT CDF, only when TTFT differs from E2E (not for request-level engines)."""
    distinct = any(
        r.get("ttft_s.p50") is not None and key(r.get("ttft_s.p50")) != key(r.get("e2e_s.p50"))
        for r in results.ok_rows
    )
    return latency_cdf(results, path, "ttft_s") if distinct else None
