"""Print rich tables so they stay readable: plain text when piped, compact when narrow.

* Not a terminal (a pipe, a file, a test): a plain text table -- columns separated by
  two spaces, a dashed rule under the header, no box characters, no colour and no width
  limit, so nothing is cut, wrapped or ellipsised and ``grep`` / ``awk`` work on it.
* A terminal wide enough for the table: the rich table as it is.
* A narrower terminal: a compact table (no vertical rules, headers wrapped at spaces,
  every column at least as wide as its longest word, so a number is never cut).
* Narrower still: one record per row, ``first cell: column value, column value, ...``,
  wrapped at the terminal's width.

Every verb prints its tables through :func:`print_table`.
"""

from __future__ import annotations

import copy
import textwrap
from typing import Any

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

GAP = "  "  # between columns of a plain table


def cell_text(cell: Any) -> str:
    """The plain text of a table cell (markup such as ``[green]..[/green]`` removed)."""
    if isinstance(cell, Text):
        return cell.plain
    if isinstance(cell, str):
        return Text.from_markup(cell).plain
    return str(cell)


def _grid(table: Table) -> tuple[list[str], list[list[str]]]:
    """Header labels (one line each) and the rows as plain strings."""
    headers = [" ".join(cell_text(c.header).split()) for c in table.columns]
    columns = [[cell_text(cell) for cell in c.cells] for c in table.columns]
    return headers, [list(row) for row in zip(*columns, strict=True)] if columns else []


def plain_text(table: Table) -> str:
    """The table as plain, aligned text (no width limit)."""
    headers, rows = _grid(table)
    widths = [
        max([len(h), *(len(line) for r in rows for line in r[i].splitlines() or [""])])
        for i, h in enumerate(headers)
    ]
    right = [c.justify == "right" for c in table.columns]

    def line(cells: list[str]) -> str:
        parts = [
            cell.rjust(w) if r else cell.ljust(w)
            for cell, w, r in zip(cells, widths, right, strict=True)
        ]
        return GAP.join(parts).rstrip()

    out = [cell_text(table.title)] if table.title else []
    if table.show_header:
        out += [line(headers), GAP.join("-" * w for w in widths)]
    out += [line([" ".join(c.split()) for c in row]) for row in rows]
    return "\n".join(out)


def _longest_word(texts: list[str]) -> int:
    return max((len(word) for t in texts for word in t.split()), default=1)


def compact(table: Table) -> Table:
    """A copy without vertical rules whose columns never cut a word."""
    small = copy.deepcopy(table)
    small.box = box.SIMPLE_HEAD
    small.padding = (0, 1)
    small.collapse_padding = True
    small.pad_edge = False
    headers, rows = _grid(table)
    for i, column in enumerate(small.columns):
        texts = [r[i] for r in rows]
        column.min_width = max(_longest_word(texts), _longest_word([headers[i]]))
        column.overflow = "fold"
    return small


def records(table: Table, width: int) -> str:
    """One wrapped record per row: ``first cell: header value, header value, ...``."""
    headers, rows = _grid(table)
    out = [cell_text(table.title)] if table.title else []
    for row in rows:
        fields = ", ".join(f"{h} {v}" for h, v in zip(headers[1:], row[1:], strict=True) if v)
        text = f"{row[0]}: {fields}" if fields else row[0]
        out += textwrap.wrap(text, width=width, subsequent_indent="    ") or [""]
    return "\n".join(out)


def print_table(table: Table, console: Console | None = None) -> None:
    """Print ``table`` in the most readable form for where it goes (module docstring)."""
    console = console or Console()
    if not console.is_terminal:
        console.print(plain_text(table), markup=False, highlight=False, soft_wrap=True)
        return
    unlimited = console.options.update_width(10_000)
    if Measurement.get(console, unlimited, table).maximum <= console.width:
        console.print(table)
        return
    small = compact(table)
    if Measurement.get(console, unlimited, small).minimum <= console.width:
        console.print(small)
    else:
        console.print(records(table, console.width), markup=False, highlight=False)
