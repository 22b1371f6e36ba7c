"""The estimator on MaverIQ's published measurements (needs ../shared/data)."""

from __future__ import annotations

from pathlib import Path

from sincere.estimate import FingerprintBank, read_measurements
from sincere.estimate.evaluate import leave_one_model_out


def test_leave_one_model_out_error_is_sane(shared_data: Path) -> None:
    """Held out of the fit, llama-2-7b's full runs are predicted with mean error < 25 %."""
    d = shared_data / "maveriq"
    bank = FingerprintBank.from_files(sorted(d.glob("fingerprint_data_collection*.csv")))
    rows = read_measurements(d / "full_model_data_collection_dev.csv")
    (result,) = leave_one_model_out(bank, rows, models=["llama-2-7b"])
    assert result.num_points == 490
    assert result.mean_error < 0.25
    assert result.median_error < 0.12
    assert result.memory_mean_error < 0.2
