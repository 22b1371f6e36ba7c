"""Tables stay readable: plain text when piped, compact or one record per row when narrow."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console
from rich.table import Table
from typer.testing import CliRunner

from sincere.cli.app import app, load_verb
from sincere.cli.tables import plain_text, print_table

BOX = set("┏┃━│┡└─┌")


def _capacity_like() -> Table:
    """A table with long cells, like the capacity search's."""
    table = Table(title="capacity (worst tier violation ≤ 1%)")
    for col in ("policy", "capacity (req/s)", "bracket (req/s)", "violation at ends (min–max)"):
        table.add_column(col, justify="left" if col == "policy" else "right")
    table.add_row("fcfs", "33.1", "[32, 64]", "0.00% (0.0%–0.0%) / 29.25% (29.2%–29.3%)")
    table.add_row(
        "[green]niyama[/green]", "41.7", "[40, 48]", "0.80% (0.5%–1.1%) / 2.10% (1.8%–2.4%)"
    )
    return table


def _render(table: Table, width: int, terminal: bool) -> str:
    console = Console(width=width, file=io.StringIO(), force_terminal=terminal, no_color=True)
    print_table(table, console)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    return re.sub(r"\x1b\[[0-9;]*m", "", str(out))  # styles (bold, italic) off


def test_piped_tables_are_plain_aligned_text_with_every_cell_whole() -> None:
    """Off a terminal: no box characters, no ellipsis, no markup, every value whole."""
    text = _render(_capacity_like(), 80, terminal=False)
    assert not BOX & set(text) and "…" not in text and "[green]" not in text
    lines = text.splitlines()
    assert lines[0] == "capacity (worst tier violation ≤ 1%)"
    assert lines[1].split("  ")[0] == "policy" and set(lines[2]) == {"-", " "}
    assert "0.00% (0.0%–0.0%) / 29.25% (29.2%–29.3%)" in lines[3]
    assert lines[4].startswith("niyama")
    assert text == plain_text(_capacity_like()) + "\n"


@pytest.mark.parametrize("width", [80, 60, 40])
def test_narrow_terminals_never_cut_a_value(width: int) -> None:
    """At 80 columns and less every value appears whole and no line is wider than the screen."""
    text = _render(_capacity_like(), width, terminal=True)
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= width
    joined = " ".join(text.split())
    for value in ("33.1", "(29.2%–29.3%)", "niyama", "[40, 48]"):
        assert value in joined


def test_wide_terminals_keep_the_rich_table() -> None:
    """When the table fits, it is printed as rich draws it (with its box)."""
    text = _render(_capacity_like(), 160, terminal=True)
    assert BOX & set(text)


@pytest.mark.parametrize("verb", [["catalog", "accelerators"], ["catalog", "models"]])
def test_catalog_tables_piped_at_80_columns_are_whole(verb: list[str]) -> None:
    """`sincere catalog ...` into a pipe at 80 columns prints every name and figure whole."""
    load_verb("catalog")
    result = CliRunner().invoke(app, verb, env={"COLUMNS": "80"})
    assert result.exit_code == 0
    assert "…" not in result.output and not BOX & set(result.output)
    names = {"H100-SXM", "A100-80GB", "MI300X"} if verb[1] == "accelerators" else {"llama-3-8b"}
    for line in result.output.splitlines()[3:]:
        names.discard(line.split("  ")[0].strip())
    assert not names
