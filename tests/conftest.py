"""Shared fixtures: where the published measurements and traces live."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout (published traces and measurements)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"published data not found at {SHARED_DATA}")
    return SHARED_DATA


SYNTHETIC_CELLS = (
    ("non-cc", "BestBatch+Timer"),
    ("non-cc", "SelectBatch+Timer"),
    ("cc", "BestBatch+Timer"),
    ("cc", "BestBatch"),
)


@pytest.fixture(scope="session")
def simulated_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small runs folder in SINCERE's layout whose logs the calibrated model produced.

    Four 300 s cells (gamma arrivals at 6 req/s, SINCERE's model mix, SLA 40 s) served by
    the shipped calibration with SINCERE's server dispatch: the fitter must recover that
    calibration from them and a replay must reproduce them.
    """
    import numpy as np

    from sincere.experiment.validation import replay_model, simulated_log
    from sincere.workload.sincere_runs import CellLog, RunCell, write_runs

    root = tmp_path_factory.mktemp("simulated-runs")
    logs = []
    for k, (env, strategy) in enumerate(SYNTHETIC_CELLS):
        rng = np.random.default_rng(k)
        arrival = np.cumsum(rng.exponential(1 / 6.0, size=1800))
        arrival = np.round(arrival[arrival < 300.0] - arrival[0], 3)
        model = rng.choice(3, size=len(arrival), p=[0.1, 0.3, 0.6])
        name = f"{env}_{strategy}_gamma_mean6_sla40"
        cell = RunCell(name, env, strategy, "gamma", 6.0, 40.0, 300.0, len(arrival), 0, 0, 0)
        empty = np.zeros(0)
        log = CellLog(
            cell, root / name, ("granite-7b", "gemma-7b", "llama3-8b"), arrival,
            model.astype(np.int64), np.full(len(arrival), np.nan), empty, empty,
            empty.astype(np.int64), empty.astype(np.int64), empty, empty, empty.astype(np.int64),
        )  # fmt: skip
        logs.append(simulated_log(log, replay_model("calibrated"), seed=k))
    return write_runs(root, logs)
