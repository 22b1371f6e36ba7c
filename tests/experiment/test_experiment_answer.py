"""The report opens with one sentence saying which strategy meets the SLO up to which load
(or that none does in the sweep, and what to try); the capacity legend says what `–` means;
a quick run's description says what it left out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sincere.experiment import load_spec, run_experiment
from sincere.experiment.answer import capacity_answer
from sincere.experiment.builtin import resolve_spec
from sincere.experiment.grid import apply_quick
from sincere.experiment.report import write_report
from sincere.experiment.tables import Column, TableData

LOADS = [4.0, 8.0, 12.0]


def _table(rows: list[tuple[list[Any], list[float | None]]]) -> TableData:
    """A capacity table over strategy x env at sla=60 with (capacity, last pass, first fail)."""
    aggs = ("capacity", "capacity_lo", "capacity_hi")
    columns = [Column("c", "worst_tier_violation", agg) for agg in aggs]
    return TableData("Capacity over rate", "", ["strategy", "env"], {"sla": 60}, columns, rows)


def test_the_sentence_names_who_meets_the_slo_and_up_to_which_load() -> None:
    """Strategies are named best first with the load met in every env; others are listed."""
    table = _table([
        (["A", "non-cc"], [9.0, 8.0, 12.0]), (["A", "cc"], [5.0, 4.0, 8.0]),
        (["B", "non-cc"], [None, 12.0, None]), (["B", "cc"], [10.0, 8.0, 12.0]),
        (["C", "non-cc"], [None, None, 4.0]), (["C", "cc"], [None, None, 4.0]),
    ])  # fmt: skip
    text = capacity_answer(table, "rate", LOADS, 0.01, has_strategy=True)
    assert text.startswith("Meets the SLO (worst-tier violation ≤ 1%, sla=60) in every env:")
    assert "B up to rate 8; A up to rate 4; C not at any load of the sweep." in text


def test_a_strategy_that_never_fails_says_to_try_higher_loads() -> None:
    """No failing load anywhere: the sentence says so."""
    table = _table([(["A", "non-cc"], [None, 12.0, None]), (["A", "cc"], [None, 12.0, None])])
    text = capacity_answer(table, "rate", LOADS, 0.01, has_strategy=True)
    assert "A up to rate 12 (never failed: try higher loads)" in text


def test_when_every_load_fails_the_sentence_says_none_and_what_to_try() -> None:
    """All failing at the lowest load: no strategy, the lowest load, and lower loads to try."""
    table = _table([(["A", "non-cc"], [None, None, 4.0]), (["B", "cc"], [None, None, 4.0])])
    text = capacity_answer(table, "rate", LOADS, 0.01, has_strategy=True)
    assert text.startswith("No strategy meets the SLO")
    assert "fails already at the lowest, rate 4" in text
    assert "lower loads" in text and "looser SLA" in text


def test_passing_in_some_envs_only_is_not_called_meeting_the_slo() -> None:
    """A strategy passing in one env but failing at every load in another is named as the
    furthest case, not as meeting the SLO."""
    table = _table([(["A", "non-cc"], [6.0, 4.0, 8.0]), (["A", "cc"], [None, None, 4.0])])
    text = capacity_answer(table, "rate", LOADS, 0.01, has_strategy=True)
    assert text.startswith("No strategy meets the SLO")
    assert "A up to rate 4 for non-cc only" in text


def test_the_report_opens_with_the_answer_and_the_legend_is_right(
    tmp_path: Path, tiny_spec: dict[str, Any]
) -> None:
    """An SLA nothing can meet: the report's first paragraph says none does; the capacity
    legend no longer claims the violation was never crossed."""
    tiny_spec["base"]["workload"]["tiers"] = [{"name": "strict", "ttlt_s": 0.001}]
    tiny_spec["seeds"] = [1]
    run_experiment(load_spec(tiny_spec), tmp_path, backend="serial")
    text = write_report(tmp_path, figures=False).markdown.read_text()
    first = text.split("\n\n")[1]
    assert first.startswith("No strategy meets the SLO"), first
    assert "rate 2" in first
    assert "never crossed within the sweep" not in text
    assert "– as last passing load: the lowest load tried already failed" in text


def test_a_quick_run_says_what_it_left_out() -> None:
    """sincere-study --quick: the description names the one SLA, the seed and the duration."""
    spec = apply_quick(resolve_spec("sincere-study"))
    assert "3 SLAs" not in spec.description
    assert "Quick run (sla 60 only; seed 1; workload.duration_s = 600)." in spec.description


def test_the_sentence_names_the_slice_when_a_swept_axis_is_held() -> None:
    """A capacity table at sla=60 of a sweep that also ran other SLAs opens by naming that
    slice, so it is not read as the answer for the whole sweep."""
    table = _table([(["A", "non-cc"], [9.0, 8.0, 12.0]), (["A", "cc"], [5.0, 4.0, 8.0])])
    text = capacity_answer(table, "rate", LOADS, 0.01, has_strategy=True, swept=["sla", "env"])
    assert text.startswith("In the reference slice sla=60 (the sweep's other sla values are not")
    assert "meets the SLO (worst-tier violation ≤ 1%, sla=60) in every env: A up to rate 4" in text
    alone = capacity_answer(table, "rate", LOADS, 0.01, has_strategy=True, swept=["env"])
    assert alone.startswith("Meets the SLO")  # sla took one value: nothing else to name


def test_a_custom_sweep_over_instances_is_labelled_as_such(
    tmp_path: Path, tiny_spec: dict[str, Any]
) -> None:
    """Load axis = instance count, and a swept batch size held at its reference: the figures
    say "vs instances" (never "offered load") and the headline names the batch slice."""
    tiny_spec["base"]["workload"]["arrival"]["rate"] = 4
    tiny_spec["seeds"] = [1]
    tiny_spec["axes"] = {
        "instances": {"path": "instances.0.count", "values": [1, 2]},
        "batch": {"path": "instances.0.engine.max_batch_size", "values": [16, 64]},
    }
    tiny_spec["report"] = {"load": "instances", "reference": {"batch": 64}}
    run_experiment(load_spec(tiny_spec), tmp_path, backend="serial")
    text = write_report(tmp_path).markdown.read_text()
    first = text.split("\n\n")[1]
    assert first.startswith("In the reference slice batch=64 (the sweep's other batch"), first
    assert "Goodput vs instances" in text and "offered load" not in text
