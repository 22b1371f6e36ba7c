"""Times and speeds the docs quote are the figures recorded in benchmarks/README.md.

A small Markdown table parser reads the recorded tables (by section heading); each quote
below names the doc, the sentence pattern holding the figure, and the table cell it must
equal. Benchmarks print no peer ratio from a hard-coded figure either.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks" / "README.md"


def tables(markdown: str) -> dict[str, list[dict[str, str]]]:
    """Every pipe table under each ``#`` heading: rows as {column header: cell text}.

    Several tables under one heading are concatenated (their rows keep their own headers).
    """
    out: dict[str, list[dict[str, str]]] = {}
    heading = ""
    header: list[str] | None = None
    for line in markdown.splitlines():
        if line.startswith("#"):
            heading, header = line.lstrip("#").strip(), None
            continue
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
        elif not all(re.fullmatch(r":?-+:?", c) for c in cells):
            out.setdefault(heading, []).append(dict(zip(header, cells, strict=False)))
    return out


def cell(section: str, key_column: str, key_prefix: str, column: str) -> str:
    """The ``column`` cell of the row of ``section`` whose ``key_column`` starts with
    ``key_prefix`` (exactly one such row)."""
    rows = [
        r
        for r in tables(BENCHMARKS.read_text(encoding="utf-8")).get(section, [])
        if r.get(key_column, "").startswith(key_prefix)
    ]
    assert len(rows) == 1, f"{section!r}: {len(rows)} rows start with {key_prefix!r}"
    return rows[0][column]


# (doc, regex with one group: the quoted figure, (section, key column, key prefix, column))
QUOTES = [
    (
        "README.md",
        r"one whole run took ([\d.]+ min)",
        ("Time of the checks", "command", "`bash scripts/test.sh`", "recorded"),
    ),
    (
        "README.md",
        r"\(([\d.]+ s)\s+for the whole `sincere native build`",
        ("Time of the checks", "command", "`sincere native build`", "recorded"),
    ),
    (
        "README.md",
        r"2 workers in the recorded run, ([\d–]+ s) across runs",
        ("Time of the checks", "command", "`sincere experiment sincere-study`", "recorded"),
    ),
    (
        "README.md",
        r"cells; ([\d.]+) s with 2 workers in the recorded run",
        ("Experiment sweeps: the full `sincere-study`", "backend", "processes", "wall s"),
    ),
    (
        "docs/experiments.md",
        r"810 cells, ([\d–]+ s) with 2 workers here",
        ("Time of the checks", "command", "`sincere experiment sincere-study`", "recorded"),
    ),
]


def test_the_table_parser_reads_rows_by_header() -> None:
    """Rows come back keyed by their header, separator rows dropped, per heading."""
    text = "## A\n\n| x | y |\n|---|--:|\n| 1 | 2 |\n| 3 | 4 |\n\n## B\n| z |\n|-|\n| 5 |\n"
    assert tables(text) == {"A": [{"x": "1", "y": "2"}, {"x": "3", "y": "4"}], "B": [{"z": "5"}]}


@pytest.mark.parametrize(("doc", "pattern", "where"), QUOTES, ids=[q[1] for q in QUOTES])
def test_quoted_figure_is_the_recorded_one(
    doc: str, pattern: str, where: tuple[str, str, str, str]
) -> None:
    """The figure a doc quotes equals the cell of the recorded benchmark table."""
    text = re.sub(r"\s+", " ", (ROOT / doc).read_text(encoding="utf-8"))
    found = re.search(pattern, text)
    assert found is not None, f"{doc}: no quote matching {pattern!r}"
    assert found.group(1) == cell(*where), f"{doc} quotes {found.group(1)!r}"


def test_simulator_scaling_table_records_1_8_and_64_instances() -> None:
    """The scaling section records the 1 / 8 / 64-instance rows the docs speak of."""
    rows = tables(BENCHMARKS.read_text(encoding="utf-8"))["Simulator cost and fleet size"]
    assert {r["instances"] for r in rows} >= {"1", "8", "64"}


def test_benchmarks_print_no_ratio_to_a_constant_peer_figure() -> None:
    """No benchmark divides by a hard-coded Vidur rate, and no table has a 'vs Vidur' column."""
    for script in (ROOT / "benchmarks").glob("*.py"):
        source = script.read_text(encoding="utf-8")
        assert not re.search(r"\bVIDUR_RPS\b|\bvs_vidur\b", source), script.name
    for rows in tables(BENCHMARKS.read_text(encoding="utf-8")).values():
        for row in rows:
            assert not any(h.lower().startswith("vs vidur") for h in row), row
