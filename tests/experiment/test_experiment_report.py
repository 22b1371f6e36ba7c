"""The report: files exist, figures are PNGs, and every table number matches results.parquet."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from sincere.experiment import load_spec, run_experiment
from sincere.experiment.report import write_report
from sincere.experiment.tables import crossing


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory, tiny_spec_session: dict[str, Any]) -> Path:
    """The tiny spec run serially, then reported."""
    out = tmp_path_factory.mktemp("report")
    run_experiment(load_spec(tiny_spec_session), out, backend="serial")
    write_report(out)
    return out


def _md_tables(text: str) -> dict[tuple[str, ...], list[list[str]]]:
    """Markdown tables keyed by their header row."""
    tables: dict[tuple[str, ...], list[list[str]]] = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("| ") and i + 1 < len(lines) and lines[i + 1].startswith("| ---"):
            header = tuple(c.strip() for c in line.strip("|").split("|"))
            body = []
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                body.append([c.strip() for c in row.strip("|").split("|")])
            tables[header] = body
    return tables


def _parse(cell: str) -> float | None:
    if cell == "–":
        return None
    return float(re.sub(r"\s*(%|pp)$", "", cell))


def _expected(
    rows: list[dict[str, Any]], table: dict[str, Any], keys: list[Any], column: dict[str, Any]
) -> float | None:
    """Recompute one cell of a report table straight from the results rows."""
    want = {**table["fixed"], **dict(zip(table["keys"], keys, strict=True))}

    def mean(extra: dict[str, Any]) -> float | None:
        sel = [
            r
            for r in rows
            if r["status"] == "ok"
            and all(str(r[a]) == str(v) for a, v in {**want, **extra}.items())
        ]
        vals = [r[column["metric"]] for r in sel if r[column["metric"]] is not None]
        return float(np.mean(vals)) if vals else None

    env = next((a for a in ("env",) if a in rows[0]), None)
    if column["agg"] == "count":
        return float(
            len(
                [
                    r
                    for r in rows
                    if r["status"] == "ok" and all(str(r[a]) == str(v) for a, v in want.items())
                ]
            )
        )
    if column["agg"] == "mean":
        return mean({env: column["env"]} if column["env"] is not None and env else {})
    base, other = mean({env: "non-cc"}), mean({env: column["env"]})
    if base is None or other is None:
        return None
    if column["agg"] == "delta_abs":
        return (other - base) * 100
    return (other - base) / base * 100


def test_report_files_exist_and_html_embeds_the_figures(reported: Path) -> None:
    """report.md links PNGs that exist; report.html is self-contained (base64 images)."""
    folder = reported / "report"
    md = (folder / "report.md").read_text()
    links = re.findall(r"\]\((figures/[^)]+\.png)\)", md)
    assert len(links) >= 6
    for link in links:
        assert (folder / link).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (folder / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(links)
    assert "<table>" in page and "cc vs non-cc" in page


def test_every_table_number_matches_results_parquet(reported: Path) -> None:
    """Each number printed in report.md equals the value recomputed from results.parquet."""
    rows = pq.read_table(reported / "results.parquet").to_pylist()
    meta = json.loads((reported / "report" / "report.json").read_text())
    md_tables = _md_tables((reported / "report" / "report.md").read_text())
    assert len(meta["tables"]) >= 3
    checked = 0
    for table in meta["tables"]:
        header = tuple([*table["keys"], *(c["header"] for c in table["columns"])])
        body = md_tables[header]
        assert len(body) == len(table["rows"])
        for printed, stored in zip(body, table["rows"], strict=True):
            nkeys = len(table["keys"])
            assert printed[:nkeys] == [str(k) for k in stored["keys"]]
            for cell, column in zip(printed[nkeys:], table["columns"], strict=True):
                value = _parse(cell)
                if column["agg"].startswith("capacity"):
                    continue  # checked below
                expected = _expected(rows, table, stored["keys"], column)
                if expected is None:
                    assert value is None
                else:
                    assert value is not None
                    assert math.isclose(value, expected, rel_tol=1e-3, abs_tol=1e-9)
                    checked += 1
    assert checked > 40


def test_capacity_table_interpolates_the_mean_violation_over_rates(reported: Path) -> None:
    """Capacity rows equal a linear crossing of the seed-mean worst-tier violation."""
    rows = [
        r for r in pq.read_table(reported / "results.parquet").to_pylist() if r["status"] == "ok"
    ]
    meta = json.loads((reported / "report" / "report.json").read_text())
    table = next(t for t in meta["tables"] if t["title"].startswith("Capacity"))
    for stored in table["rows"]:
        want = dict(zip(table["keys"], stored["keys"], strict=True))
        means = []
        for rate in (2, 6):
            sel = [
                r["worst_tier_violation"]
                for r in rows
                if r["rate"] == rate and all(str(r[a]) == str(v) for a, v in want.items())
            ]
            means.append(float(np.mean(sel)))
        expected = crossing([2.0, 6.0], means, 0.01)
        for got, exp in zip(stored["values"], expected, strict=True):
            assert (got is None and exp is None) or math.isclose(got, exp, rel_tol=1e-9)


def test_crossing_interpolates_between_last_pass_and_first_fail() -> None:
    """0 % at 10, 3 % at 20 -> 1 % is crossed at 13.33; never/always-failing sweeps say so."""
    cap, lo, hi = crossing([10.0, 20.0, 30.0], [0.0, 0.03, 0.2], 0.01)
    assert (lo, hi) == (10.0, 20.0)
    assert cap == pytest.approx(10 + 10 / 3)
    assert crossing([1.0, 2.0], [0.5, 0.6], 0.01) == (None, None, 1.0)
    assert crossing([1.0, 2.0], [0.0, 0.0], 0.01) == (None, 2.0, None)


def test_report_of_a_folder_without_results_says_what_is_missing(tmp_path: Path) -> None:
    """sincere report on an empty folder raises naming results.parquet."""
    from sincere.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"results\.parquet"):
        write_report(tmp_path)


def test_request_level_cells_are_reported_with_sincere_metrics(reported: Path) -> None:
    """Request-level cells carry sincere.* columns and the tables print SINCERE's metrics."""
    columns = pq.read_table(reported / "results.parquet").column_names
    assert {"sincere.processed", "sincere.gpu_busy_share", "sincere.slo_attainment"} <= set(columns)
    md = (reported / "report" / "report.md").read_text()
    assert "SLA attainment (received)" in md and "Δ inference throughput (%)" in md
