"""The generic report columns: a busy share labelled as what it is, tokens per step, and no
column of zero model switches for engines that cannot switch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sincere.experiment.metrics import tokens_per_step
from sincere.experiment.results import Results
from sincere.experiment.tables import summary_columns


def _results(rows: list[dict[str, Any]]) -> Results:
    return Results(Path("."), [{"status": "ok", **r} for r in rows], {}, {}, "t", "")


def test_continuous_cells_get_no_model_switch_column_and_no_gpu_utilisation_label() -> None:
    """Cells where nothing loaded or switched models: no switches column; the busy share is
    not called GPU utilisation; tokens per step is there."""
    columns = dict(summary_columns(_results([{"num_model_switches": 0, "num_model_loads": 0}])))
    assert "model switches" not in columns
    assert columns["busy share (a step running)"] == "utilization"
    assert columns["tokens / step"] == "tokens_per_step"
    assert not any("utilisation" in header for header in columns)


def test_cells_that_switch_models_keep_the_column() -> None:
    """One cell with model switches: the column stays."""
    rows = [{"num_model_switches": 0, "num_model_loads": 0}, {"num_model_switches": 3}]
    assert "model switches" in dict(summary_columns(_results(rows)))


def test_tokens_per_step_is_the_tokens_processed_over_all_steps() -> None:
    """1,000 tokens/s over 10 s in 40 + 60 steps: 100 tokens a step; no steps: None."""
    summary = {
        "total_tokens_per_s": 1000.0,
        "duration_s": 10.0,
        "instances": {"a": {"num_steps": 40}, "b": {"num_steps": 60}},
    }
    assert tokens_per_step(summary) == pytest.approx(100.0)
    assert tokens_per_step({**summary, "instances": {}}) is None
