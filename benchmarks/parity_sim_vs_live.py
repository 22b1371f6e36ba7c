"""Parity of simulation and live serving: one trace, the simulator vs gateway + emulators.

200 requests (Poisson, 5 req/s; prompts 1,024-3,072 tokens, outputs 16-128) for
Llama-3-8B on two A100-80GB instances (roofline step model, FCFS continuous
batching), through (a) ``sincere.sim.simulate`` and (b) sincere's gateway in front of
two emulated engines with the same config, on the wall clock, in one process. For
each router it prints the share of identical routing decisions and the p10 / p50 /
p90 of the per-request relative differences ``(live - sim) / sim`` of TTFT and E2E.

    python benchmarks/parity_sim_vs_live.py [--num-requests 200] [--rate 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from sincere.bench.parity import parity


def config(router: str, num_requests: int, rate: float) -> dict[str, Any]:
    """The shared simulation config (the live side is built from it)."""
    return {
        "seed": 7,
        "workload": {
            "num_requests": num_requests,
            "arrival": {"kind": "poisson", "rate": rate},
            "lengths": {
                "prompt": {"kind": "uniform", "low": 1024, "high": 3072},
                "output": {"kind": "uniform", "low": 16, "high": 128},
            },
            "models": {"llama-3-8b": 1.0},
        },
        "instances": [{"model": "llama-3-8b", "accelerator": "A100-80GB", "count": 2}],
        "router": {"name": router},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-requests", type=int, default=200)
    parser.add_argument("--rate", type=float, default=5.0)
    parser.add_argument("--routers", nargs="+", default=["round-robin", "least-outstanding"])
    args = parser.parse_args()
    print(
        "| router | same instance | TTFT rel. diff p10 / p50 / p90 | E2E rel. diff p10 / p50 / p90 "
        "| live wall s |\n|---|---|---|---|---|"
    )
    for router in args.routers:
        started = time.perf_counter()
        summary = parity(config(router, args.num_requests, args.rate)).summary()
        wall = time.perf_counter() - started
        cells = [router, f"{summary['same_instance_share']:.1%}"]
        for key in ("rel_ttft", "rel_e2e"):
            q = summary[key]
            cells.append(" / ".join(f"{q[p]:+.2%}" for p in ("p10", "p50", "p90")))
        cells.append(f"{wall:.0f}")
        print("| " + " | ".join(cells) + " |", flush=True)
        print(json.dumps(summary), file=sys.stderr)


if __name__ == "__main__":
    main()
