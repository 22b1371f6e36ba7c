"""docs/planning.md's ``--sizing simulate`` example prints what the page shows."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from typer.testing import CliRunner

import sincere.cli.plan  # noqa: F401  (registers the command)
from sincere.cli.app import app

ROOT = Path(__file__).resolve().parents[2]


def _words(text: str) -> str:
    return " ".join(text.split())


def test_the_simulated_sizing_example_prints_the_documented_output(tmp_path: Path) -> None:
    """The command in the page, run with a fresh cache, prints every line of the page's
    output block (the ``wrote`` line aside: the path differs)."""
    page = (ROOT / "docs" / "planning.md").read_text(encoding="utf-8")
    found = re.search(
        r"```bash\n(sincere plan [^\n]*--sizing simulate[^\n]*)\n```\n+```text\n(.*?)```",
        page,
        re.S,
    )
    assert found is not None, "the example and its output block"
    args = shlex.split(found.group(1))[1:]
    args[1] = str(ROOT / args[1])  # the example directory, from any working directory
    args[args.index("--out") + 1] = str(tmp_path / "l4.json")
    args[args.index("--sim-cache") + 1] = str(tmp_path / "cache")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    printed = _words(result.output)
    for line in found.group(2).splitlines():
        if line.strip() and not line.startswith("wrote "):
            assert _words(line) in printed, line
