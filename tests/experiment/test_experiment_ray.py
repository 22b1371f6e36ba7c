"""Cells on a local Ray cluster (the `ray` extra). Runs whenever the suite runs: a missing
Ray is a failure, not a skip, so CI installs `sincere[ray]`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from sincere.experiment import load_spec, run_experiment


@pytest.mark.ray
def test_tiny_spec_runs_on_a_local_ray_cluster_like_on_processes(
    tiny_spec: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ray runs every cell; its metrics equal the serial run's; the cluster is shut down."""
    import ray  # a missing extra fails here, loudly

    for name, value in (
        ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0"),
        ("RAY_USAGE_STATS_ENABLED", "0"),
    ):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    tiny_spec["seeds"] = [1]
    spec = load_spec(tiny_spec)
    on_ray = run_experiment(spec, tmp_path / "ray", backend="ray", workers=2)
    assert on_ray.num_run == 8 and not on_ray.failed
    assert not ray.is_initialized()
    serial = run_experiment(spec, tmp_path / "serial", backend="serial")
    ray_rows = {
        r["cell_id"]: r for r in pq.read_table(tmp_path / "ray" / "results.parquet").to_pylist()
    }
    for row in serial.rows:
        assert ray_rows[row["cell_id"]]["e2e_s.p99"] == row["e2e_s.p99"]
    assert all((tmp_path / "ray" / "cells" / c / "requests.parquet").exists() for c in ray_rows)
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "0"
