"""Reading served requests from record tables: validation and load derived from timestamps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sincere.core.errors import ConfigError, DataError
from sincere.core.records import LOAD_COLUMNS
from sincere.predict.records import read_lengths, read_served


def _without_load(src: Path, dst: Path) -> Path:
    table = pq.read_table(src)
    pq.write_table(table.drop_columns(list(LOAD_COLUMNS)), dst)
    return dst


def test_served_requests_come_in_arrival_order_with_their_load(hetero_runs: list[Path]) -> None:
    """Every finished request is read, sorted by arrival, with the recorded load."""
    served = read_served(hetero_runs[0] / "requests.parquet")
    table = pq.read_table(hetero_runs[0] / "requests.parquet")
    assert len(served) == table.num_rows - sum(table.column("rejected").to_pylist())
    assert np.all(np.diff(served.arrival_at) >= 0)
    assert served.num_derived == 0
    assert set(served.instances) >= {"h100-8b-0", "l40s-8b-3", "h100x4-70b"}
    assert np.all(served.running + served.waiting <= served.outstanding)


def test_derived_load_matches_what_the_router_saw(hetero_runs: list[Path], tmp_path: Path) -> None:
    """Without the arrival_* columns, outstanding is derived exactly; queues nearly so."""
    recorded = read_served(hetero_runs[0] / "requests.parquet")
    derived = read_served(_without_load(hetero_runs[0] / "requests.parquet", tmp_path / "r.pq"))
    assert derived.num_derived == len(derived)
    np.testing.assert_array_equal(derived.outstanding, recorded.outstanding)
    assert np.mean(derived.waiting == recorded.waiting) > 0.9
    assert np.mean(np.abs(derived.running - recorded.running) <= 1) > 0.9


def test_missing_file_and_non_parquet_are_clear_errors(tmp_path: Path) -> None:
    """A missing file names the path; a text file is not a Parquet record table."""
    with pytest.raises(ConfigError, match="no such records file"):
        read_served(tmp_path / "nope.parquet")
    bad = tmp_path / "bad.parquet"
    bad.write_text("arrival_at,ttft_s\n1,2\n")
    with pytest.raises(DataError, match="not a Parquet record table"):
        read_served(bad)


def test_missing_column_is_named(hetero_runs: list[Path], tmp_path: Path) -> None:
    """A table without ttft_s says which column is missing."""
    table = pq.read_table(hetero_runs[0] / "requests.parquet").drop_columns(["ttft_s"])
    pq.write_table(table, tmp_path / "r.parquet")
    with pytest.raises(DataError, match=r"column 'ttft_s'.*missing column"):
        read_served(tmp_path / "r.parquet")


def test_invalid_latency_names_the_row(tmp_path: Path) -> None:
    """A served request with a negative TTFT is reported with its line and value."""
    table = pa.table(
        {
            "instance": ["a", "a"],
            "arrival_at": [0.0, 1.0],
            "finished_at": [2.0, 3.0],
            "ttft_s": [0.1, -0.5],
            "tpot_s": [0.01, 0.01],
            "prompt_tokens": [10, 10],
            "output_tokens": [5, 5],
        }
    )
    pq.write_table(table, tmp_path / "r.parquet")
    with pytest.raises(DataError, match=r"r.parquet:3 column 'ttft_s'.*-0.5"):
        read_served(tmp_path / "r.parquet")


def test_no_served_request_is_an_error(tmp_path: Path) -> None:
    """A table where every request was rejected has nothing to learn from."""
    table = pa.table({"prompt_tokens": [10], "output_tokens": [0], "rejected": [True]})
    pq.write_table(table, tmp_path / "r.parquet")
    with pytest.raises(DataError, match="no served requests among 1 rows"):
        read_lengths([tmp_path / "r.parquet"])


def test_lengths_skip_rejected_rows_and_read_optional_columns(tmp_path: Path) -> None:
    """Rejected rows are dropped; model, tier and prompt are read when present."""
    table = pa.table(
        {
            "prompt_tokens": [10, 20, 30],
            "output_tokens": [5, 0, 7],
            "rejected": [False, True, False],
            "model": ["m", "m", "n"],
            "prompt": ["hi there", None, None],
        }
    )
    pq.write_table(table, tmp_path / "r.parquet")
    data = read_lengths([tmp_path / "r.parquet"])
    assert data.output_tokens.tolist() == [5, 7]
    assert data.model == ("m", "n")
    assert data.tier == ("default", "default")  # what a live request without a tier has
    assert data.prompt == ("hi there", None)
