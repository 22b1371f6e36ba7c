"""`sincere deploy`: unmeasured accuracy is said, the summary line is words, not a dict."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from sincere.cli.app import app, load_verb

runner = CliRunner()


def _deploy(*args: str) -> str:
    load_verb("deploy")
    result = runner.invoke(app, ["deploy", *args], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def test_an_unmeasured_choice_is_flagged() -> None:
    """qwen3-30b-a3b's int4 (no accuracy figure) is marked unknown and a note says why."""
    out = _deploy("qwen3-30b-a3b", "--output-len", "128", "--gpus", "8xH100")
    chosen = next(line for line in out.splitlines() if line.lstrip().startswith("chosen"))
    assert "int4/" in chosen and "unknown" in chosen
    assert "accuracy unknown for int4 weights of qwen3-30b-a3b (the chosen configuration)" in out
    assert "--min-accuracy" in out


def test_the_json_form_carries_the_note() -> None:
    """--json keeps accuracy null and lists the same note under "notes"."""
    doc = json.loads(_deploy("deepseek-v3", "--output-len", "128", "--gpus", "8xH100", "--json"))
    assert doc["chosen"]["accuracy"] is None
    assert any("accuracy unknown for int4" in n for n in doc["notes"])


def test_measured_choices_carry_no_note_and_dropped_reads_as_words() -> None:
    """With an accuracy floor only measured rows remain: no note, and `dropped accuracy N`."""
    out = _deploy("llama-2-7b", "--output-len", "100", "--gpus", "8xA6000", "--min-accuracy", "95")
    assert "unknown" not in out and "note:" not in out
    summary = next(line for line in out.splitlines() if line.startswith("considered"))
    assert "{" not in summary and "dropped accuracy " in summary
    assert "slo 0" not in summary  # reasons that dropped nothing are left out
