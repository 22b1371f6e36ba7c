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


def _help(*args: str) -> str:
    """The help of ``sincere ARGS --help``, whitespace collapsed."""
    load_verb(args[0])
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def test_help_lists_exactly_the_registered_names() -> None:
    """Help texts that list names (written out so --help imports nothing heavy) name exactly
    what the registries hold: deploy's cost types and placements, fit's models and default
    bins, estimate fit's targets, validate's set-ups."""
    from sincere.estimate.fit import TARGETS
    from sincere.experiment.validation import REPLAY_MODELS
    from sincere.fit.models import DEFAULT_BIN_EDGES, FITTERS
    from sincere.optimize.deploy import COST_TYPES
    from sincere.optimize.placement import PLACEMENT_STRATEGIES

    deploy = _help("deploy")
    assert f"One of: {', '.join(COST_TYPES)}." in deploy
    assert f"Placement: {', '.join(PLACEMENT_STRATEGIES.names())}." in deploy
    fit = _help("fit", "profile")
    assert f"what to fit: {', '.join(FITTERS.names())}" in fit
    assert f"[default: {','.join(f'{e:g}' for e in DEFAULT_BIN_EDGES)}]" in fit
    *others, last = TARGETS
    assert f"Fit target: {', '.join(others)} or {last} " in _help("estimate", "fit")
    *others, last = REPLAY_MODELS
    assert f"simulator set-up: {', '.join(others)} or {last} " in _help("validate", "sincere-runs")


def test_step_help_names_only_registered_step_models() -> None:
    """`sincere step --help` gives examples of step-model kinds; each is a registered one."""
    from sincere.perf.factory import STEP_MODELS

    said = _help("step").split("step-time model kind: ", 1)[1].split("...", 1)[0]
    examples = [name.strip() for name in said.split(",") if name.strip()]
    assert examples and set(examples) <= set(STEP_MODELS.names())
