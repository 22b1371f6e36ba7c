"""Help text is plain text: square brackets and backquotes reach the user as written."""

from __future__ import annotations

from typer.testing import CliRunner

from sincere.cli.app import app, load_verb


def test_extras_in_brackets_survive_in_help() -> None:
    """`sincere native build --help` names the extra to install: sincere[native]."""
    load_verb("native")
    result = CliRunner().invoke(app, ["native", "build", "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0
    assert "pip install 'sincere[native]'" in " ".join(result.output.split())


def test_root_help_lists_every_verb_with_its_summary() -> None:
    """`sincere --help` lists the verb table's names and summaries."""
    from sincere.cli.app import VERBS

    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    said = " ".join(result.output.split())
    for name, verb in VERBS.items():
        assert f" {name} {verb.summary}" in said
