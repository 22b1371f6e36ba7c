"""Tables stay readable: plain text when piped, compact or one record per row when narrow."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
import yaml
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


def _verb(args: list[str], terminal: bool) -> str:
    """Standard output of ``sincere ARGS`` at 80 columns, on a terminal or into a pipe."""
    load_verb(args[0])
    env = {"COLUMNS": "80", "TTY_COMPATIBLE": "1" if terminal else "0", "FORCE_COLOR": None}
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    return re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", result.stdout)  # styles, cursor


def _whole(value: str, text: str) -> bool:
    """``value`` appears in ``text`` as a whole word (not cut, not glued to another)."""
    return re.search(rf"(?<!\S){re.escape(value)}(?=[\s,]|$)", text) is not None


def _readable(text: str, values: list[str], terminal: bool) -> None:
    """No ellipsis and every value whole; piped: no box; terminal: no line past 80."""
    assert "…" not in text
    if terminal:
        lines = [line for line in text.splitlines() if not line.startswith("reproduce: ")]
        assert max(len(line) for line in lines) <= 80  # a command line to copy stays whole
    else:
        assert not BOX & set(text)
    missing = [v for v in values if not _whole(v, text)]
    assert not missing, text


@pytest.mark.parametrize("terminal", [False, True], ids=["piped", "80-columns"])
def test_estimate_table_is_readable(terminal: bool) -> None:
    """`sincere estimate` piped is a plain table; at 80 columns every label and value is whole."""
    text = _verb(["estimate", "llama-2-7b", "--tp", "2", "--output-len", "50"], terminal)
    _readable(text, ["llama-2-7b", "fp16", "roofline", "A6000,", "(GPUs)"], terminal)
    assert "2 x 1 (2)" in " ".join(text.split())
    if not terminal:
        rows = {line.split("  ")[0]: line.split()[-1] for line in text.splitlines()}
        assert rows["output tokens"] == "50" and rows["source"] == "roofline"


@pytest.mark.parametrize("terminal", [False, True], ids=["piped", "80-columns"])
def test_deploy_table_is_readable(terminal: bool) -> None:
    """`sincere deploy` shows the chosen configuration and runners-up whole, as --json has them."""
    args = ["deploy", "llama-2-7b", "--output-len", "100", "--gpus", "8xA6000"]
    text = _verb(args, terminal)
    load_verb("deploy")
    decision = json.loads(CliRunner().invoke(app, [*args, "--json"]).stdout)
    values = []
    for c in (decision["chosen"], *decision["runners_up"]):
        values += [f"{c['tp']}x{c['pp']}", f"{c['precision']}/{c['kv_precision']}"]
        values += [",".join(map(str, c["gpus"])), "/".join(map(str, c["layer_split"]))]
        values += [f"{c['latency_s']:.3f}", f"{c['memory_gb']:.1f}", f"{c['score']:.4g}"]
    _readable(text, values, terminal)


@pytest.mark.parametrize("terminal", [False, True], ids=["piped", "80-columns"])
def test_fit_table_is_readable(synthetic_profiles: Path, tmp_path: Path, terminal: bool) -> None:
    """`sincere fit gpu-profiles` names every fitted constant whole, piped or at 80 columns."""
    out = tmp_path / "roofline.yaml"
    args = ["fit", "gpu-profiles", str(synthetic_profiles), "--accelerator", "H100-SXM"]
    text = _verb([*args, "--out", str(out)], terminal)
    constants = [k for k in yaml.safe_load(out.read_text())["params"] if not k.startswith("_")]
    assert len(constants) > 10
    _readable(text, ["H100-SXM", *constants], terminal)
