"""A closed-loop concurrency sweep simulated and run live: do the two agree at every load?

One Llama-3-8B engine on an A100-80GB (the roofline, and the engine a deployment runs when
its block names no preset: vLLM V1 with its CUDA graphs, asynchronous scheduling and 2 ms
intake; ``--preset`` to run another), ``C`` clients in a closed loop (each sends its next
request when its last one ends, as vLLM's ``bench serve --max-concurrency``, GuideLLM and
InferenceX run), ``10 C`` requests (at least 40) with prompts uniform in 256-2,048 tokens
and outputs in 16-128. Each point runs (a) through ``sincere.sim.simulate`` and (b) live:
sincere's gateway in front of an emulated engine built from the same config, on the wall
clock, driven by ``sincere bench``'s closed loop on 127.0.0.1 (``sincere.bench.parity``).
Both sides' throughput, mean TTFT and mean TPOT, and live / simulated - 1; the event
loop's lag (p99 / max) says how much the machine disturbed the live side.

    python benchmarks/closed_loop_sweep.py [--concurrency 1 2 4 8 16 32] [--preset vllm-v1]

One JSON line per point goes to stderr; the table to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import numpy as np

from sincere.bench.parity import LoopLag, live_run
from sincere.sim import simulate


def config(concurrency: int, preset: str | None, seed: int) -> dict[str, Any]:
    """The sweep point's simulation config (the live side is built from it)."""
    engine = {} if preset is None else {"preset": preset}
    return {
        "seed": seed,
        "workload": {
            "num_requests": max(40, 10 * concurrency),
            "arrival": {"kind": "closed", "concurrency": concurrency},
            "lengths": {
                "prompt": {"kind": "uniform", "low": 256, "high": 2048},
                "output": {"kind": "uniform", "low": 16, "high": 128},
            },
            "models": {"llama-3-8b": 1.0},
        },
        "instances": [{"model": "llama-3-8b", "accelerator": "A100-80GB", "engine": engine}],
    }


def point(concurrency: int, preset: str | None, seed: int) -> dict[str, Any]:
    """One concurrency: the simulated and the live summary's figures."""
    sim = simulate(config(concurrency, preset, seed))
    lag = LoopLag()
    started = time.perf_counter()
    live = asyncio.run(
        live_run(
            sim.config, sim.requests_in, list(sim.records.instances), lag, concurrency=concurrency
        )
    )
    out: dict[str, Any] = {
        "concurrency": concurrency,
        "requests": len(sim.requests_in),
        "preset": sim.config.instances[0].engine.preset,  # type: ignore[union-attr]
        "live_wall_s": round(time.perf_counter() - started, 1),
        "lag_p99_ms": float(np.percentile(lag.samples, 99)) * 1e3 if lag.samples else 0.0,
        "lag_max_ms": max(lag.samples, default=0.0) * 1e3,
    }
    for side, summary in (("sim", sim.summary), ("live", live.summary)):
        out[f"{side}_completed"] = summary["num_completed"]
        out[f"{side}_rps"] = summary["throughput_rps"]
        out[f"{side}_ttft_ms"] = summary["ttft_s"]["mean"] * 1e3
        out[f"{side}_tpot_ms"] = summary["tpot_s"]["mean"] * 1e3
    return out


def _rel(row: dict[str, Any], key: str) -> str:
    return f"{100 * (row[f'live_{key}'] / row[f'sim_{key}'] - 1):+.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--preset", default=None, help="engine preset (default: none given)")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for c in args.concurrency:
        row = point(c, args.preset, args.seed)
        print(json.dumps(row), file=sys.stderr, flush=True)
        rows.append(row)
    print("| clients | requests | req/s sim / live (%) | mean TTFT ms sim / live (%) | "
          "mean TPOT ms sim / live (%) | loop lag p99 / max ms |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['concurrency']} | {r['requests']} "
            f"| {r['sim_rps']:.2f} / {r['live_rps']:.2f} ({_rel(r, 'rps')}) "
            f"| {r['sim_ttft_ms']:.1f} / {r['live_ttft_ms']:.1f} ({_rel(r, 'ttft_ms')}) "
            f"| {r['sim_tpot_ms']:.2f} / {r['live_tpot_ms']:.2f} ({_rel(r, 'tpot_ms')}) "
            f"| {r['lag_p99_ms']:.1f} / {r['lag_max_ms']:.1f} |"
        )


if __name__ == "__main__":
    main()
