"""Speed of `sincere simulate` on a routed cluster: 16 instances behind each router.

16 Llama-3-8B replicas on H100s (Sarathi, chunk 512, at most 128 sequences), Poisson
arrivals at 120 req/s with Azure conv lengths, 20,000 requests, seed 0, behind
round-robin, least-outstanding and latency-optimal routers (the last predicts each
request's latency on every instance from its load and step-time model). Whole
processes, compiled modules and ``SINCERE_NATIVE=0`` in turn, ``--repeat`` times;
medians. About a minute.

    .venv/bin/python benchmarks/sim_routed.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import yaml
from sim_w1 import native_state, run_once

NUM_REQUESTS = 20_000
CONFIG = {
    "seed": 0,
    "workload": {
        "num_requests": NUM_REQUESTS,
        "arrival": {"kind": "poisson", "rate": 120.0},
        "lengths": {"kind": "trace", "source": "azure-conv-2023", "max_prompt_tokens": 4096},
        "models": {"llama-3-8b": 1.0},
    },
    "instances": [
        {
            "name": "h100",
            "model": "llama-3-8b",
            "accelerator": "H100-SXM",
            "count": 16,
            "engine": {
                "scheduler": "sarathi",
                "scheduler_params": {"chunk_size": 512},
                "max_num_seqs": 128,
            },
        }
    ],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each mode per router")
    args = parser.parse_args()
    print(native_state(), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        for router in ("round-robin", "least-outstanding", "latency-optimal"):
            path = tmp_dir / f"{router}.yaml"
            path.write_text(yaml.safe_dump(dict(CONFIG, router={"name": router})))
            walls: dict[bool, list[float]] = {True: [], False: []}
            for _ in range(max(1, args.repeat)):
                for compiled in (True, False):
                    walls[compiled].append(run_once(path, tmp_dir / router, compiled)[0])
            summary = json.loads((tmp_dir / router / "summary.json").read_text())
            wall = statistics.median(walls[True])
            row = {
                "router": router,
                "wall_s": round(wall, 2),
                "requests_per_s": round(NUM_REQUESTS / wall),
                "interpreted_wall_s": round(statistics.median(walls[False]), 2),
                "ttft_p50_s": round(summary["ttft_s"]["p50"], 3),
                "e2e_p99_s": round(summary["e2e_s"]["p99"], 2),
            }
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
