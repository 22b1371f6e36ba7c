"""Parity of simulation and live serving: one trace, the simulator vs gateway + emulators.

200 requests (Poisson, 5 req/s; prompts 1,024-3,072 tokens, outputs 16-128) for
Llama-3-8B on two A100-80GB instances (roofline step model, FCFS continuous
batching), through (a) ``sincere.sim.simulate`` and (b) sincere's gateway in front of
two emulated engines with the same config, on the wall clock, in one process. For
each router it prints the share of identical routing decisions and the p10 / p50 /
p90 of the per-request relative differences ``(live - sim) / sim`` of TTFT and E2E;
then the aggregate view (each run's share of requests on the first instance, the
mean load imbalance at arrivals, the unpaired TTFT p50 difference), the share of
live decisions off races that follow least-outstanding on the live run's own
times, the first diverging decision with the finish that crossed it, and the event
loop's lag (p99 / max: how much the machine disturbed the live run).

    python benchmarks/parity_sim_vs_live.py [--num-requests 200] [--rate 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from sincere.bench.parity import (
    RACE_S,
    ParityResult,
    follows_least_outstanding,
    parity,
    race_margins_s,
)


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


def _row(router: str, result: ParityResult, wall: float) -> str:
    summary = result.summary()
    cells = [router, f"{summary['same_instance_share']:.1%}"]
    for key in ("rel_ttft", "rel_e2e"):
        q = summary[key]
        cells.append(" / ".join(f"{q[p]:+.2%}" for p in ("p10", "p50", "p90")))
    share = summary["instance_share"]
    first = min(share["sim"])
    cells.append(f"{share['sim'][first]:.1%} / {share['live'].get(first, 0.0):.1%}")
    imb = summary["imbalance_at_arrival"]
    cells.append(f"{imb['sim']:.2f} / {imb['live']:.2f}")
    cells.append(f"{summary['ttft_quantile_rel']['p50']:+.2%}")
    live = result.live.requests
    follows = follows_least_outstanding(live)[race_margins_s(live) >= RACE_S]
    cells.append(f"{follows.mean():.1%}" if router == "least-outstanding" else "-")
    cells.append(_divergence(result))
    lag = summary["loop_lag_ms"]
    cells.append(f"{lag['p99']:.1f} / {lag['max']:.0f}")
    cells.append(f"{wall:.0f}")
    return "| " + " | ".join(cells) + " |"


def _divergence(result: ParityResult) -> str:
    div = result.divergence()
    if div is None:
        return "none"
    text = f"#{div.index} at {div.arrival_at:.3f} s (margin {div.race_margin_s * 1e3:.1f} ms)"
    if div.crossing is not None:
        text += (
            f": #{div.crossing} finished {div.crossing_sim_finish_at:.3f} sim, "
            f"{div.crossing_live_finish_at:.3f} live"
        )
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-requests", type=int, default=200)
    parser.add_argument("--rate", type=float, default=5.0)
    parser.add_argument("--routers", nargs="+", default=["round-robin", "least-outstanding"])
    args = parser.parse_args()
    print(
        "| router | same instance | TTFT rel. diff p10 / p50 / p90 | E2E rel. diff p10 / p50 / p90 "
        "| first instance's share sim / live | imbalance sim / live | TTFT p50 unpaired "
        "| live follows LO off races | first divergence | loop lag p99 / max ms "
        "| live wall s |\n|---|---|---|---|---|---|---|---|---|---|---|"
    )
    for router in args.routers:
        started = time.perf_counter()
        result = parity(config(router, args.num_requests, args.rate))
        wall = time.perf_counter() - started
        print(_row(router, result, wall), flush=True)
        print(json.dumps(result.summary()), file=sys.stderr)


if __name__ == "__main__":
    main()
