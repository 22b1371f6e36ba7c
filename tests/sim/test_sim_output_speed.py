"""Fast output paths: Arrow string columns, reject reasons, Parquet write, one-tier summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from sincere.core.output import write_requests
from sincere.core.records import RecordArrays, to_table
from sincere.core.request import RequestArrays, Tier
from sincere.sim.api import simulate

ROOT = Path(__file__).resolve().parents[2]


def _config() -> dict[str, Any]:
    """W1 at 60 requests."""
    cfg: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "w1.yaml").read_text())
    cfg["workload"]["num_requests"] = 60
    return cfg


def _requests() -> RequestArrays:
    tiers = (Tier("fast", ttft_s=1.0), Tier("slow", ttft_s=9.0))
    return RequestArrays.build(
        np.arange(4.0), [5, 6, 7, 8], [1, 2, 3, 4], tiers=tiers, tier=[0, 1, 1, 0]
    )


def test_string_columns_follow_the_indices() -> None:
    """model, tier and instance hold the names their indices point at; -1 gives ''."""
    req = _requests()
    rec = RecordArrays.empty(4, ["x", "y"])
    rec.instance[:] = [1, -1, 0, 1]
    table = to_table(req, rec)
    assert table["instance"].to_pylist() == ["y", "", "x", "y"]
    assert table["tier"].to_pylist() == ["fast", "slow", "slow", "fast"]
    assert table["model"].to_pylist() == [req.models[m] for m in req.model]
    assert table.schema.field("instance").type == pa.string()


def test_reject_reason_is_null_unless_rejected() -> None:
    """No rejection: an all-null string column; with one, its reason in place."""
    req = _requests()
    rec = RecordArrays.empty(4, ["x"])
    clean = to_table(req, rec)["reject_reason"]
    assert clean.type == pa.string() and clean.null_count == 4
    rec.reject(2, "kv_capacity")
    assert to_table(req, rec)["reject_reason"].to_pylist() == [None, None, "kv_capacity", None]


def test_parquet_write_reads_back_the_same_table(tmp_path: Path) -> None:
    """write_requests keeps every value and logical type of the table."""
    result = simulate(_config())
    path = tmp_path / "r.parquet"
    write_requests(result.requests, path)
    back = pq.read_table(path)
    assert back.schema == result.requests.schema
    assert back.equals(result.requests)


def test_one_tier_summary_equals_everyone_and_is_a_copy() -> None:
    """With one tier its group is the whole run's, as separate (mutable) objects."""
    summary = simulate(_config()).summary
    (tier,) = summary["tiers"].values()
    for key in ("num_requests", "num_completed", "ttft_s", "e2e_s", "goodput_rps"):
        assert tier[key] == summary[key]
    assert tier["ttft_s"] is not summary["ttft_s"]
    assert summary["num_completed"] > 0
