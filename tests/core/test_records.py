"""Per-request records: latencies, SLO checks and the Parquet schema."""

from __future__ import annotations

import math

import numpy as np

from sincere.core import RequestArrays, Tier
from sincere.core.records import REQUEST_COLUMNS, RecordArrays, latencies, slo_met, to_table


def _two_requests() -> tuple[RequestArrays, RecordArrays]:
    tiers = (Tier("fast", ttft_s=0.5, tbt_s=0.05), Tier("batch", ttlt_s=10.0))
    reqs = RequestArrays.build([0.0, 1.0], [100, 200], [11, 5], tiers=tiers, tier=[0, 1])
    rec = RecordArrays.empty(2, ["gpu0"])
    rec.instance[:] = 0
    rec.first_scheduled_at[:] = [0.1, 1.5]
    rec.first_token_at[:] = [0.3, 2.0]
    rec.finished_at[:] = [0.8, 12.0]
    rec.output_tokens[:] = [11, 5]
    return reqs, rec


def test_latencies_follow_vllm_definitions() -> None:
    """TTFT, TPOT = (E2E - TTFT)/(n - 1), E2E and queueing delay per request."""
    reqs, rec = _two_requests()
    lat = latencies(reqs, rec)
    assert np.allclose(lat["ttft_s"], [0.3, 1.0])
    assert np.allclose(lat["e2e_s"], [0.8, 11.0])
    assert np.allclose(lat["tpot_s"], [0.05, 2.5])
    assert np.allclose(lat["queue_s"], [0.1, 0.5])


def test_slo_met_checks_each_tier_target() -> None:
    """The first meets TTFT and TBT exactly at target; the second misses its TTLT."""
    reqs, rec = _two_requests()
    assert list(slo_met(reqs, rec)) == [True, False]


def test_rejected_requests_never_meet_slo() -> None:
    """A rejected request has no latencies and does not count as meeting its SLO."""
    reqs, rec = _two_requests()
    rec.finished_at[1] = math.nan
    rec.reject(1, "budget")
    table = to_table(reqs, rec)
    assert table.column("rejected").to_pylist() == [False, True]
    assert table.column("slo_met").to_pylist()[1] is False
    assert table.column("reject_reason").to_pylist() == [None, "budget"]
    assert list(rec.unfinished()) == []


def test_table_has_every_column_in_order() -> None:
    """requests.parquet carries the documented columns in the documented order."""
    reqs, rec = _two_requests()
    table = to_table(reqs, rec)
    assert tuple(table.column_names) == REQUEST_COLUMNS
    assert table.column("instance").to_pylist() == ["gpu0", "gpu0"]
    assert table.column("tier").to_pylist() == ["fast", "batch"]


def test_load_at_arrival_is_null_until_noted() -> None:
    """The arrival_* columns are null for unseen requests and carry what note_load kept."""
    reqs, rec = _two_requests()
    rec.note_load(1, running=3, waiting=2, waiting_prefill_tokens=900, outstanding=5)
    table = to_table(reqs, rec)
    assert table.column("arrival_num_running").to_pylist() == [None, 3]
    assert table.column("arrival_num_waiting").to_pylist() == [None, 2]
    assert table.column("arrival_waiting_prefill_tokens").to_pylist() == [None, 900]
    assert table.column("arrival_num_outstanding").to_pylist() == [None, 5]


def test_table_columns_equal_pyarrow_built_from_python_values() -> None:
    """Buffer-built columns equal pa.array of the same values (nulls, bools, strings)."""
    import pyarrow as pa

    req, rec = _two_requests()
    rec.reject(1, "kv_capacity")
    rec.note_load(0, 3, -1, 7, 2)
    table = to_table(req, rec)
    assert table.column("reject_reason").to_pylist() == [None, "kv_capacity"]
    assert table.column("rejected").to_pylist() == [False, True]
    assert table.column("arrival_num_waiting").to_pylist() == [None, None]
    assert table.column("arrival_num_running").to_pylist() == [3, None]
    expected = pa.array(req.arrival_at.tolist(), type=pa.float64())
    assert table.column("arrival_at").combine_chunks().equals(expected)
    assert table.column("model").to_pylist() == [req.models[m] for m in req.model]


def test_table_numeric_columns_share_the_arrays_memory() -> None:
    """Int and float columns point at the NumPy arrays' memory: no second copy of each
    column (at 1M requests the copies were ~150 MiB of the simulator's peak)."""
    reqs, rec = _two_requests()
    table = to_table(reqs, rec)
    shared = {
        "arrival_at": reqs.arrival_at,
        "prompt_tokens": reqs.prompt_tokens,
        "finished_at": rec.finished_at,
        "output_tokens": rec.output_tokens,
        "num_preemptions": rec.num_preemptions,
    }
    for name, values in shared.items():
        data = table.column(name).chunk(0).buffers()[1]
        assert data.address == values.ctypes.data, name
    assert table.column("finished_at").to_pylist() == [0.8, 12.0]
