"""The report's first sentence: which strategy meets the SLO, up to which load.

Read from the capacity table (:func:`sincere.experiment.tables.capacity_table`): a
strategy *meets the SLO at a load* when the seed-mean worst-tier violation is at most the
threshold (Niyama's 1 %) at that load and every lower load of the sweep, for every other
key of the table (traffic pattern, environment). The sentence names the strategies that
meet it and their highest such load (best first); says when one never failed within the
sweep (try higher loads); or, when none meets it anywhere, says so with the lowest load
tried and what to try (lower loads, a looser SLA, ``sincere capacity``). The table is
the reference slice of the axes it does not compare; when one of those was swept over
several values the sentence opens by naming the slice, so it is not read as the whole
sweep's answer.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass

from sincere.experiment.paths import format_value
from sincere.experiment.tables import TableData


@dataclass(frozen=True, slots=True)
class StrategyReach:
    """How far one strategy meets the SLO across the table's other keys."""

    name: str  # the strategy's label
    met_up_to: float | None  # highest load met in every combination; None: not in all
    never_failed: bool  # no combination failed at any load of the sweep
    best_case: tuple[float, str] | None  # (load, combination) where it goes furthest


def _fmt(load: float) -> str:
    return f"{load:.4g}"


def _reach(name: str, rows: list[tuple[list[object], list[float | None]]]) -> StrategyReach:
    """``rows``: (other keys, [capacity, last passing, first failing]) of one strategy."""
    passing = [values[1] for _, values in rows]
    met = None if any(p is None for p in passing) else min(p for p in passing if p is not None)
    never_failed = all(values[2] is None for _, values in rows)
    cases = [(values[1], keys) for keys, values in rows if values[1] is not None]
    best = max(cases, key=lambda c: c[0]) if cases else None
    label = (best[0], ", ".join(format_value(k) for k in best[1])) if best else None
    return StrategyReach(name, met, never_failed, label)


def strategy_reach(table: TableData, has_strategy: bool) -> list[StrategyReach]:
    """Each strategy's reach (one anonymous entry when the table has no strategy key)."""
    groups: dict[str, list[tuple[list[object], list[float | None]]]] = defaultdict(list)
    for keys, values in table.rows:
        name = format_value(keys[0]) if has_strategy and keys else "the config"
        rest = list(keys[1:]) if has_strategy else list(keys)
        groups[name].append((rest, values))
    return [_reach(name, rows) for name, rows in groups.items()]


def slice_scope(table: TableData, swept: Collection[str]) -> str:
    """``"In the reference slice sla=60 (…): "`` when the table holds axes of the sweep
    (``swept``: axes with several values) at one value; empty when it covers the sweep."""
    held = {a: v for a, v in table.fixed.items() if a in swept}
    if not held:
        return ""
    where = ", ".join(f"{a}={format_value(v)}" for a, v in held.items())
    names = ", ".join(held)
    return (
        f"In the reference slice {where} (the sweep's other {names} values are not in this "
        "sentence; see results.parquet): "
    )


def capacity_answer(
    table: TableData,
    load_axis: str,
    loads: list[float],
    threshold: float,
    has_strategy: bool,
    swept: Collection[str] = (),
) -> str:
    """One sentence: which strategy meets the SLO up to which load, or that none does;
    it opens with the slice it speaks of when the table holds swept axes fixed."""
    scope = slice_scope(table, swept)
    sentence = _answer(table, load_axis, loads, threshold, has_strategy)
    return scope + sentence[0].lower() + sentence[1:] if scope else sentence


def _answer(
    table: TableData, load_axis: str, loads: list[float], threshold: float, has_strategy: bool
) -> str:
    reach = strategy_reach(table, has_strategy)
    fixed = ", ".join(f"{a}={format_value(v)}" for a, v in table.fixed.items())
    slo = f"the SLO (worst-tier violation ≤ {threshold:.0%}{f', {fixed}' if fixed else ''})"
    over = " in every " + " × ".join(table.keys[1:] if has_strategy else table.keys)
    over = over if len(table.keys) > (1 if has_strategy else 0) else ""
    meeting = sorted(
        (r for r in reach if r.met_up_to is not None),
        key=lambda r: (-(r.met_up_to or 0.0), r.name),
    )
    if meeting:
        parts = [
            f"{r.name} up to {load_axis} {_fmt(r.met_up_to or 0.0)}"
            + (" (never failed: try higher loads)" if r.never_failed else "")
            for r in meeting
        ]
        missing = [r.name for r in reach if r.met_up_to is None]
        tail = f"; {', '.join(missing)} not at any load of the sweep" if missing else ""
        return f"Meets {slo}{over}: {'; '.join(parts)}{tail}."
    lowest = _fmt(min(loads)) if loads else "?"
    partial = [r for r in reach if r.best_case is not None]
    if partial:
        best = max(partial, key=lambda r: r.best_case[0] if r.best_case else 0.0)
        load, case = best.best_case or (0.0, "")
        return (
            f"No strategy meets {slo}{over} at any load of the sweep; the furthest is "
            f"{best.name} up to {load_axis} {_fmt(load)} for {case} only. Try lower loads "
            f"than {lowest} or a looser SLA."
        )
    return (
        f"No strategy meets {slo} at any load of the sweep: every one fails already at the "
        f"lowest, {load_axis} {lowest}. Try lower loads (a {load_axis} axis below {lowest}, or "
        "`sincere capacity` to search for the rate), a looser SLA, or more capacity."
    )
