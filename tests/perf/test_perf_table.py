"""Measured-profile tables: SINCERE's batch profiles and the iteration grid."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import pytest

from sincere.core.errors import ConfigError, DataError
from sincere.perf.base import Batch
from sincere.perf.table import (
    BatchProfileTable,
    IterationTable,
    read_batch_profiles,
    read_loading_times,
    sincere_profile,
)

MODELS = ("granite-7b", "gemma-7b", "llama3-8b")


def _raw_median(path: Path, model: str, size: int) -> float:
    times = []
    for line in path.read_text().splitlines()[1:]:
        cols = line.split(",")
        if cols[0] == model and cols[1] == str(size) and cols[2] != "None":
            times.append(float(cols[2]))
    return statistics.median(times)


def test_table_reproduces_csv_medians(shared_data: Path) -> None:
    """At measured batch sizes the shipped non-CC table equals the raw CSV's median times."""
    path = next((shared_data / "sincere").glob("batch_profiling_results_*_noncc.csv"))
    for model in MODELS:
        table = sincere_profile(model, cc=False)
        for size in (1, 8, 32, 64):
            expected = _raw_median(path, model, size)
            assert table.request_batch_s([100] * size, 50) == pytest.approx(expected, abs=1e-3)


def test_reader_matches_shipped_figures(shared_data: Path) -> None:
    """Reading the CSVs again gives the shipped medians and load times (CC mode)."""
    folder = shared_data / "sincere"
    table = BatchProfileTable.from_csv(
        sorted(folder.glob("batch_profiling_results_*_ccmode.csv")),
        "llama3-8b",
        next(folder.glob("model_loading_times_*_cc.csv")),
    )
    shipped = sincere_profile("llama-3-8b", cc=True)
    np.testing.assert_allclose(table.times_s, shipped.times_s, atol=1e-3)
    assert table.load_time() == shipped.load_time()
    assert table.oom_batch_size == 191


def test_interpolates_between_and_extrapolates_beyond() -> None:
    """Linear between measured sizes, the last segment's slope beyond the largest."""
    table = BatchProfileTable([1, 4, 8], [1.0, 2.5, 4.5])
    assert table.batch_time_s(2) == pytest.approx(1.5)
    assert table.batch_time_s(6) == pytest.approx(3.5)
    assert table.batch_time_s(12) == pytest.approx(6.5)
    assert table.iteration_s(Batch(num_decode_seqs=4)) == pytest.approx(2.5 / 50)


def test_loading_times_reader(shared_data: Path) -> None:
    """The loading CSV gives SINCERE's published granite load mean (8.97 s CC, 3.55 s not)."""
    folder = shared_data / "sincere"
    cc = read_loading_times(next(folder.glob("model_loading_times_*_cc.csv")))
    noncc = read_loading_times(next(folder.glob("model_loading_times_*_noncc.csv")))
    assert cc["granite-7b"][0].mean_s == pytest.approx(8.9661)
    assert noncc["granite-7b"][0].mean_s == pytest.approx(3.5534)


def test_malformed_profile_names_file_and_line(tmp_path: Path) -> None:
    """A non-numeric time raises DataError with the path and line."""
    bad = tmp_path / "p.csv"
    bad.write_text("model,batch_size,processing time (s)\nm,1,0.5\nm,2,fast\n")
    with pytest.raises(DataError, match=r"p\.csv:3"):
        read_batch_profiles([bad])
    with pytest.raises(ConfigError, match="no SINCERE profile"):
        sincere_profile("gpt-5")


def test_iteration_table_is_bilinear() -> None:
    """The grid is reproduced at its nodes and interpolated bilinearly between them."""
    tokens, seqs = [1, 100, 1000], [1, 10, 100]
    grid = np.add.outer(np.array(tokens) * 1e-4, np.array(seqs) * 1e-3) + 0.005
    table = IterationTable(tokens, seqs, grid)
    assert table.iteration_s(Batch(num_decode_seqs=10, prefill_tokens=90, num_prefill_seqs=0)) == (
        pytest.approx(0.005 + 100e-4 + 10e-3)
    )
    mid = Batch(num_decode_seqs=55, prefill_tokens=495)  # 550 tokens, 55 seqs
    assert table.iteration_s(mid) == pytest.approx(0.005 + 550e-4 + 55e-3)
    with pytest.raises(ConfigError, match="shape"):
        IterationTable(tokens, seqs, np.zeros((2, 3)))
