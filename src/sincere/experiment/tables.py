"""The report's tables, computed from ``results.parquet`` only.

Each table is a :class:`TableData`: its rows' axis labels, and per column the metric
and how it was aggregated over that row's cells (all of the reference slice's cells
for the other axes, every seed):

* ``mean`` -- mean of the metric column over the cells;
* ``count`` -- number of finished cells;
* ``delta_rel`` -- (mean of the other env - mean of the baseline) / baseline, in %;
* ``delta_abs`` -- that difference in points (x100, for shares such as attainment);
* ``capacity`` -- the load where the mean worst-tier violation crosses the threshold,
  interpolated linearly between the last passing and the first failing load (Niyama's
  capacity over a sweep); ``capacity_lo`` / ``capacity_hi`` are those two loads.

``report.json`` stores these (exact values, metric names, filters), so a reader can
check every printed number against the table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sincere.experiment.results import Results, Row, mean_of

SUMMARY_COLUMNS = (
    ("SLA attainment", "slo_attainment"),
    ("goodput (req/s)", "goodput_rps"),
    ("throughput (req/s)", "throughput_rps"),
    ("E2E p50 (s)", "e2e_s.p50"),
    ("E2E p99 (s)", "e2e_s.p99"),
    ("TTFT p99 (s)", "ttft_s.p99"),
    ("busy share (a step running)", "utilization"),
    ("tokens / step", "tokens_per_step"),
    ("model switches", "num_model_switches"),
)
"""Generic columns. A continuous engine is "busy" whenever an iteration runs, which under
any steady load is nearly always, so the busy share is labelled as what it is and the
tokens per iteration show how full those iterations are; model switches are left out
when no engine of the results loaded or switched models (continuous engines serve one)."""
DELTA_METRICS = (
    ("E2E p50", "e2e_s.p50", "delta_rel"),
    ("E2E p99", "e2e_s.p99", "delta_rel"),
    ("SLA attainment", "slo_attainment", "delta_abs"),
    ("throughput", "throughput_rps", "delta_rel"),
    ("busy share", "utilization", "delta_rel"),
    ("tokens / step", "tokens_per_step", "delta_rel"),
)
SINCERE_SUMMARY_COLUMNS = (
    ("SLA attainment (processed)", "sincere.slo_attainment"),
    ("SLA attainment (received)", "sincere.slo_attainment_received"),
    ("throughput (req/s)", "sincere.throughput_rps"),
    ("inference throughput (req/s)", "sincere.inference_throughput_rps"),
    ("latency mean (s)", "sincere.latency_mean_s"),
    ("latency p99 (s)", "sincere.latency_p99_s"),
    ("GPU busy share", "sincere.gpu_busy_share"),
    ("model switches", "sincere.model_switches"),
)
SINCERE_DELTA_METRICS = (
    ("latency mean", "sincere.latency_mean_s", "delta_rel"),
    ("latency p99", "sincere.latency_p99_s", "delta_rel"),
    ("SLA attainment (received)", "sincere.slo_attainment_received", "delta_abs"),
    ("throughput", "sincere.throughput_rps", "delta_rel"),
    ("inference throughput", "sincere.inference_throughput_rps", "delta_rel"),
    ("GPU busy share", "sincere.gpu_busy_share", "delta_abs"),
    ("model switches", "sincere.model_switches", "delta_rel"),
)
"""With request-level engines the tables report SINCERE's metrics (over the workload's
duration, processed requests only; :mod:`sincere.sim.sincere_metrics`)."""


def _sincere(results: Results) -> bool:
    """Whether the cells carry SINCERE's metrics (request-level engines)."""
    return any("sincere.throughput_rps" in r for r in results.ok_rows)


def _switching(results: Results) -> bool:
    """Whether any finished cell loaded or switched models (engines that can switch)."""
    keys = ("num_model_switches", "num_model_loads")
    return any((r.get(k) or 0) > 0 for r in results.ok_rows for k in keys)


def summary_columns(results: Results) -> tuple[tuple[str, str], ...]:
    """The summary table's (header, metric) columns for these results."""
    if _sincere(results):
        return SINCERE_SUMMARY_COLUMNS
    if _switching(results):
        return SUMMARY_COLUMNS
    return tuple(c for c in SUMMARY_COLUMNS if c[1] != "num_model_switches")


def delta_metrics(results: Results) -> tuple[tuple[str, str, str], ...]:
    """The delta table's (header, metric, aggregation) columns for these results."""
    return SINCERE_DELTA_METRICS if _sincere(results) else DELTA_METRICS


@dataclass(frozen=True)
class Column:
    """One numeric column of a report table."""

    header: str  # as printed
    metric: str  # the results.parquet column it comes from
    agg: str  # mean, count, delta_rel, delta_abs, capacity, capacity_lo, capacity_hi
    env: Any = None  # for per-env columns of the delta table: which env label


@dataclass(frozen=True)
class TableData:
    """A table: key columns (axis labels) then numeric columns."""

    title: str
    note: str  # how it was computed, printed under the title
    keys: list[str]  # axis names of the key columns
    fixed: dict[str, Any]  # the labels of the other axes (the slice)
    columns: list[Column]
    rows: list[tuple[list[Any], list[float | None]]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return {
            "title": self.title,
            "keys": self.keys,
            "fixed": self.fixed,
            "columns": [c.__dict__ for c in self.columns],
            "rows": [{"keys": k, "values": v} for k, v in self.rows],
        }


def _combos(results: Results, axes: list[str]) -> list[list[Any]]:
    combos: list[list[Any]] = [[]]
    for axis in axes:
        combos = [[*c, label] for c in combos for label in results.axes[axis]]
    return combos


def _key_axes(results: Results, *roles: str) -> list[str]:
    return [a for a in (results.role(r) for r in roles) if a is not None]


def summary_table(results: Results) -> TableData:
    """Main metrics per strategy x traffic x env at the reference slice."""
    keys = _key_axes(results, "strategy", "traffic", "env")
    fixed = results.slice_except(*keys)
    columns = [Column(h, m, "mean") for h, m in summary_columns(results)]
    columns.append(Column("cells", "cell_id", "count"))
    table = TableData("Results at the reference slice", "mean over seeds", keys, fixed, columns)
    for combo in _combos(results, keys):
        rows = results.select({**fixed, **dict(zip(keys, combo, strict=True))})
        if rows:
            values = [mean_of(rows, c.metric) for c in columns[:-1]] + [float(len(rows))]
            table.rows.append((combo, values))
    return table


def _delta(base: float | None, other: float | None, agg: str) -> float | None:
    if base is None or other is None:
        return None
    if agg == "delta_abs":
        return (other - base) * 100.0
    return (other - base) / base * 100.0 if base != 0 else None


def delta_table(results: Results) -> TableData | None:
    """Each other env against the baseline, per strategy x traffic (reference slice)."""
    env = results.role("env")
    if env is None or len(results.axes[env]) < 2:
        return None
    labels = results.axes[env]
    baseline = results.roles.get("baseline")
    base = next((x for x in labels if str(x) == str(baseline)), labels[0])
    others = [x for x in labels if x is not base]
    keys = _key_axes(results, "strategy", "traffic")
    fixed = results.slice_except(*keys, env)
    columns = []
    attainment = "sincere.slo_attainment" if _sincere(results) else "slo_attainment"
    for other in others:
        columns += [
            Column(f"SLA attainment {base}", attainment, "mean", base),
            Column(f"SLA attainment {other}", attainment, "mean", other),
        ]
        columns += [
            Column(f"Δ {header} ({'pp' if agg == 'delta_abs' else '%'})", metric, agg, other)
            for header, metric, agg in delta_metrics(results)
        ]
    note = f"mean over seeds; Δ = {others[0]} − {base}, relative (%) or in points (pp)"
    table = TableData(f"{env}: {', '.join(map(str, others))} vs {base}", note, keys, fixed, columns)
    for combo in _combos(results, keys):
        sel = {**fixed, **dict(zip(keys, combo, strict=True))}
        means = {
            (c.metric, str(label)): mean_of(results.select({**sel, env: label}), c.metric)
            for c in columns
            for label in (base, c.env)
        }
        values = [
            means[(c.metric, str(c.env))]
            if c.agg == "mean"
            else _delta(means[(c.metric, str(base))], means[(c.metric, str(c.env))], c.agg)
            for c in columns
        ]
        if any(v is not None for v in values):
            table.rows.append((combo, values))
    return table


def crossing(
    loads: list[float], violations: list[float], threshold: float
) -> tuple[float | None, float | None, float | None]:
    """(capacity, last passing load, first failing load) over an increasing sweep.

    The capacity is interpolated linearly where the violation crosses ``threshold``
    after the last passing load; ``None`` parts when the sweep never passes / fails.
    """
    last_pass: int | None = None
    for i, v in enumerate(violations):
        if v <= threshold:
            last_pass = i
        else:
            break
    if last_pass is None:
        return None, None, loads[0] if loads else None
    if last_pass == len(loads) - 1:
        return None, loads[last_pass], None
    x0, x1 = loads[last_pass], loads[last_pass + 1]
    y0, y1 = violations[last_pass], violations[last_pass + 1]
    cap = x0 + (threshold - y0) * (x1 - x0) / (y1 - y0) if y1 != y0 else x0
    return cap, x0, x1


CAPACITY_THRESHOLD = 0.01
"""Niyama's capacity criterion: the worst tier misses its targets for at most 1 %."""


def capacity_table(results: Results, threshold: float = CAPACITY_THRESHOLD) -> TableData | None:
    """Capacity per strategy x traffic x env from the load sweep (reference slice)."""
    load = results.role("load")
    if load is None or not all(isinstance(x, int | float) for x in results.axes[load]):
        return None
    keys = _key_axes(results, "strategy", "traffic", "env")
    fixed = results.slice_except(*keys, load)
    columns = [
        Column("capacity (interpolated)", "worst_tier_violation", "capacity"),
        Column("last passing load", "worst_tier_violation", "capacity_lo"),
        Column("first failing load", "worst_tier_violation", "capacity_hi"),
    ]
    note = (
        f"capacity: the load where the mean worst-tier violation over seeds crosses "
        f"{threshold:.0%}, interpolated between the last passing and the first failing load; "
        "– as last passing load: the lowest load tried already failed; – as first failing "
        "load: no load of the sweep failed; either way the capacity lies outside the sweep (–)"
    )
    table = TableData(f"Capacity over {load}", note, keys, fixed, columns)
    loads = sorted(float(x) for x in results.axes[load])
    for combo in _combos(results, keys):
        sel = {**fixed, **dict(zip(keys, combo, strict=True))}
        means = [mean_of(results.select({**sel, load: x}), "worst_tier_violation") for x in loads]
        pairs = [(x, m) for x, m in zip(loads, means, strict=True) if m is not None]
        if pairs:
            cap, lo, hi = crossing([p[0] for p in pairs], [p[1] for p in pairs], threshold)
            table.rows.append((combo, [cap, lo, hi]))
    return table


PREFIX_HIT_RATE = "prefix_cache.hit_rate"
"""The results column that marks a study of prefix caching (cells with a prefix cache)."""
PREFIX_CACHE_COLUMNS = (
    ("prefix hit rate", PREFIX_HIT_RATE),
    ("TTFT p50 (s)", "ttft_s.p50"),
    ("TTFT p99 (s)", "ttft_s.p99"),
    ("goodput (req/s)", "goodput_rps"),
)


def has_prefix_cache(results: Results) -> bool:
    """Whether any finished cell reports a prefix-cache hit rate."""
    return mean_of(results.ok_rows, PREFIX_HIT_RATE) is not None


def prefix_cache_table(results: Results) -> TableData | None:
    """Hit rate, TTFT and goodput per traffic x strategy x env (reference slice).

    Only for results that carry ``prefix_cache.hit_rate`` (:func:`has_prefix_cache`).
    """
    if not has_prefix_cache(results):
        return None
    keys = _key_axes(results, "traffic", "strategy", "env")
    fixed = results.slice_except(*keys)
    columns = [Column(h, m, "mean") for h, m in PREFIX_CACHE_COLUMNS]
    note = (
        "mean over seeds; prefix hit rate = share of the prompt tokens found cached when "
        "each request was first admitted (0 or – where caching was off)"
    )
    table = TableData("Prefix caching: hit rate, TTFT and goodput", note, keys, fixed, columns)
    for combo in _combos(results, keys):
        rows = results.select({**fixed, **dict(zip(keys, combo, strict=True))})
        if rows:
            table.rows.append((combo, [mean_of(rows, c.metric) for c in columns]))
    return table


def failed_rows(results: Results) -> list[Row]:
    """Rows of failed cells."""
    return [r for r in results.rows if r.get("status") != "ok"]
