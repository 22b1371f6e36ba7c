"""``sincere report DIR``: a Markdown and a self-contained HTML report of an experiment.

The report is a list of blocks (headings, paragraphs, tables, figures) rendered twice:
``DIR/report/report.md`` links the PNGs in ``DIR/report/figures/``, and
``report.html`` embeds them (base64), so it can be mailed as one file.
``report.json`` holds every table with exact values and how each was computed
(:mod:`sincere.experiment.tables`); every number printed comes from
``results.parquet``. Numbers print with four significant digits.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sincere.experiment.answer import capacity_answer
from sincere.experiment.paths import format_value
from sincere.experiment.pd_study import pd_table
from sincere.experiment.plots import all_figures
from sincere.experiment.results import Results, load_results
from sincere.experiment.tables import (
    CAPACITY_THRESHOLD,
    TableData,
    capacity_table,
    delta_table,
    failed_rows,
    prefix_cache_table,
    summary_table,
)


@dataclass(frozen=True)
class Heading:
    """A section title."""

    level: int
    text: str


@dataclass(frozen=True)
class Para:
    """A paragraph of plain text."""

    text: str


@dataclass(frozen=True)
class Grid:
    """A table of strings."""

    headers: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Figure:
    """A PNG with a caption."""

    path: Path
    caption: str


Block = Heading | Para | Grid | Figure


@dataclass(frozen=True)
class ReportFiles:
    """What :func:`write_report` wrote."""

    markdown: Path
    html: Path
    json: Path
    figures: list[Path]


def fmt_number(value: float | None, agg: str = "mean") -> str:
    """Four significant digits; signed with a unit for deltas; ``–`` when missing."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    text = f"{value:.0f}" if abs(value) >= 1e4 else f"{value:.4g}"
    if agg == "delta_rel":
        return f"{'+' if value >= 0 else ''}{text} %"
    if agg == "delta_abs":
        return f"{'+' if value >= 0 else ''}{text} pp"
    return text


def _grid(table: TableData) -> list[Block]:
    headers = [*table.keys, *(c.header for c in table.columns)]
    rows = [
        [
            *(format_value(k) for k in keys),
            *(fmt_number(v, c.agg) for v, c in zip(values, table.columns, strict=True)),
        ]
        for keys, values in table.rows
    ]
    fixed = ", ".join(f"{a}={format_value(v)}" for a, v in table.fixed.items())
    note = table.note + (f"; slice: {fixed}" if fixed else "")
    return [Heading(2, table.title), Para(note + "."), Grid(headers, rows)]


def _intro(results: Results) -> list[Block]:
    ok = len(results.ok_rows)
    axes = "; ".join(
        f"{a} ({len(v)}): {', '.join(format_value(x) for x in v)}" for a, v in results.axes.items()
    )
    seeds = sorted({r["seed"] for r in results.rows})
    blocks: list[Block] = [Heading(1, f"Experiment {results.name}")]
    if results.description:
        blocks.append(Para(results.description))
    blocks.append(
        Para(
            f"{len(results.rows)} cells ({ok} finished) over seeds "
            f"{', '.join(map(str, seeds))}. Axes — {axes}."
        )
    )
    roles = {results.role(r) for r in ("strategy", "traffic", "env")}
    ref = (
        ", ".join(
            f"{a}={format_value(v)}" for a, v in results.reference().items() if a not in roles
        )
        or "(all axes are compared)"
    )
    blocks.append(
        Para(
            f"Reference slice for tables and single-slice figures: {ref}. "
            "Every number in the tables comes from results.parquet."
        )
    )
    return blocks


def _failures(results: Results) -> list[Block]:
    failed = failed_rows(results)
    if not failed:
        return []
    rows = [[str(r["cell_id"]), str(r.get("error") or "")[:200]] for r in failed]
    return [
        Heading(2, f"Failed cells ({len(failed)})"),
        Para(
            "Tracebacks are in cells/<cell-id>/error.txt; re-running the experiment retries them."
        ),
        Grid(["cell", "error"], rows),
    ]


def _over_context(results: Results) -> list[Block]:
    """A loud section when cells refused requests over their model's context length."""
    hit = [
        (str(r["cell_id"]), int(n), int(r.get("num_requests") or 0))
        for r in results.ok_rows
        if (n := r.get("num_rejected_over_context"))
    ]
    if not hit:
        return []
    total = sum(n for _, n, _ in hit)
    rows = [[cell, f"{n:,}", f"{n / max(1, of):.1%}"] for cell, n, of in hit]
    return [
        Heading(2, f"Warning: {total:,} requests over the model's context"),
        Para(
            f"{len(hit)} cells refused requests whose prompt + max_tokens is over the "
            "engine's max_model_len (the model's context unless engine.max_model_len is "
            "set), as vLLM refuses them; they count as SLO misses. Serve this traffic on a "
            "model with a longer context to compare the strategies on all of it"
        ),
        Grid(["cell", "refused", "share of its requests"], rows),
    ]


def _answer(results: Results, capacity: TableData | None) -> str:
    """The report's first sentence (:mod:`sincere.experiment.answer`)."""
    load = results.role("load")
    if capacity is None or load is None:
        return (
            "No load axis with numbers: this report cannot say up to which load a strategy "
            "meets the SLO (give the spec a rate axis, or run `sincere capacity`)."
        )
    loads = sorted(float(x) for x in results.axes[load])
    has_strategy = results.role("strategy") is not None
    swept = [a for a, labels in results.axes.items() if len(labels) > 1]
    return capacity_answer(capacity, load, loads, CAPACITY_THRESHOLD, has_strategy, swept)


def build_blocks(
    results: Results, figures: list[tuple[str, Path]]
) -> tuple[list[Block], list[TableData]]:
    """The report's blocks and the tables they print."""
    tables = [
        t
        for t in (
            summary_table(results),
            delta_table(results),
            capacity_table(results),
            prefix_cache_table(results),
            pd_table(results),
        )
        if t is not None
    ]
    blocks = _intro(results)
    capacity = next((t for t in tables if t.columns[0].agg == "capacity"), None)
    blocks.insert(1, Para(_answer(results, capacity)))
    blocks[2:2] = _over_context(results)
    for table in tables:
        blocks += _grid(table)
    if figures:
        blocks.append(Heading(2, "Figures"))
        blocks += [Figure(path, caption) for caption, path in figures]
    blocks += _failures(results)
    return blocks, tables


def to_markdown(blocks: list[Block], base: Path) -> str:
    """Markdown with images linked relative to ``base``."""
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}\n")
        elif isinstance(b, Para):
            out.append(b.text + "\n")
        elif isinstance(b, Grid):
            out.append("| " + " | ".join(b.headers) + " |")
            out.append("|" + "|".join(" --- " for _ in b.headers) + "|")
            out += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in b.rows]
            out.append("")
        else:
            out.append(f"![{b.caption}]({b.path.relative_to(base).as_posix()})\n")
            out.append(f"*{b.caption}*\n")
    return "\n".join(out)


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1400px;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse;font-size:13px;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
    "th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
    "img{max-width:100%}figcaption{font-style:italic;color:#555}"
)


def to_html(blocks: list[Block], title: str) -> str:
    """One self-contained HTML page (figures embedded as base64 PNG)."""
    body: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            body.append(f"<h{b.level}>{html.escape(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            body.append(f"<p>{html.escape(b.text)}</p>")
        elif isinstance(b, Grid):
            head = "".join(f"<th>{html.escape(h)}</th>" for h in b.headers)
            rows = "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                for row in b.rows
            )
            body.append(f"<table><tr>{head}</tr>{rows}</table>")
        else:
            data = base64.b64encode(b.path.read_bytes()).decode("ascii")
            body.append(
                f'<figure><img alt="{html.escape(b.caption)}" '
                f'src="data:image/png;base64,{data}"><figcaption>'
                f"{html.escape(b.caption)}</figcaption></figure>"
            )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title><style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n"
    )


def write_report(out_dir: str | Path, *, figures: bool = True) -> ReportFiles:
    """Write ``report/report.md``, ``report.html``, ``report.json`` and the figures."""
    results = load_results(out_dir)
    folder = Path(out_dir) / "report"
    folder.mkdir(parents=True, exist_ok=True)
    drawn = all_figures(results, folder / "figures") if figures else []
    blocks, tables = build_blocks(results, drawn)
    md = folder / "report.md"
    md.write_text(to_markdown(blocks, folder), encoding="utf-8")
    page = folder / "report.html"
    page.write_text(to_html(blocks, f"Experiment {results.name}"), encoding="utf-8")
    data: dict[str, Any] = {"tables": [t.as_json() for t in tables]}
    js = folder / "report.json"
    js.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    return ReportFiles(md, page, js, [p for _, p in drawn])
