"""An experiment sweeping a closed loop's concurrency (the dotted path into ``arrival``)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from sincere.experiment import load_spec, run_experiment

SPEC = {
    "name": "closed",
    "seeds": [1],
    "base": {
        "workload": {
            "num_requests": 30,
            "arrival": {"kind": "closed", "concurrency": 1},
            "lengths": {
                "prompt": {"kind": "fixed", "tokens": 256},
                "output": {"kind": "fixed", "tokens": 32},
            },
            "models": {"llama-3-8b": 1.0},
        },
        "instances": [{"model": "llama-3-8b", "accelerator": "A100-80GB"}],
    },
    "axes": {"concurrency": {"path": "workload.arrival.concurrency", "values": [1, 4, 16]}},
}


def test_a_concurrency_axis_sets_each_cells_clients(tmp_path: Path) -> None:
    report = run_experiment(load_spec(SPEC), tmp_path, backend="serial")
    assert report.num_run == 3 and not report.failed
    rows = pq.read_table(tmp_path / "results.parquet").to_pylist()
    by_clients = {int(r["concurrency"]): r for r in rows}
    assert sorted(by_clients) == [1, 4, 16]
    # more clients: more throughput (batching) and a longer wait for the first token
    tput = [by_clients[c]["throughput_rps"] for c in (1, 4, 16)]
    ttft = [by_clients[c]["ttft_s.mean"] for c in (1, 4, 16)]
    assert tput[0] < tput[1] < tput[2]
    assert ttft[0] < ttft[2]
