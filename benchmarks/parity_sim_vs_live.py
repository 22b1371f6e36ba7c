"""Parity of simulation and live serving: every router, admission on, one trace both ways.

Llama-3-8B on an A100-80GB (dearer, quality 0.9) and an H100 (roofline step models, FCFS
continuous batching), admission on; ``--num-requests`` (100) Poisson arrivals at
``--rate`` (5 req/s), prompts 1,024-3,072 tokens, outputs 16-128; one request in ten in a
tier no instance can meet (1 ms TTFT), one in four with a budget that caps its output, one
in fifty with a budget that buys nothing. The trace runs (a) through
``sincere.sim.simulate`` and (b) through sincere's gateway in front of two emulated engines
built from the same config, on the wall clock, in one process, for every router
(join-shortest-queue by requests and by tokens; price-optimal with the budgets).

Per router, one row: the share of requests the two paths decided identically (route /
hold / reject, instance, ``max_tokens`` cap, rejection code), the differing decisions
(and how many of them the logs explain by differing inputs), the two replays (each log's
inputs through a front door built by the other path: calls / mismatches), the share of
requests served by the same instance, the median relative TTFT and E2E difference, the
first differing decision with the first input the logs show differing, and the event
loop's lag (p99 / max: how much the machine disturbed the live run). Machine-readable
summaries go to stderr, one JSON line per router.

With ``--prefix`` the trace is prefix-heavy instead (``sincere.bench.parity.prefix_sessions``:
four-turn sessions behind a shared 512-token system prompt, each turn resending the whole
conversation, 16-token blocks), no tiers or budgets, for the prefix-routing family
(least-outstanding as the baseline, prefix-aware, session-affinity, weighted-score): the
simulator reads the block ids, the load generator sends text reproducing them and the
gateway and the emulators hash that text back into block ids (``text_block_ids``), so both
paths route and cache on the same structure.

    python benchmarks/parity_sim_vs_live.py [--num-requests 100] [--rate 5] [--routers NAME...]
    python benchmarks/parity_sim_vs_live.py --prefix [--routers NAME...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from typing import Any

import numpy as np

from sincere.bench.parity import ParityResult, parity, prefix_sessions
from sincere.core.request import RequestArrays, Tier
from sincere.sim import load_config
from sincere.sim.build import base_dir_of
from sincere.workload.config import generate

ROUTERS: dict[str, tuple[str, dict[str, Any]]] = {
    "random": ("random", {}),
    "round-robin": ("round-robin", {}),
    "least-outstanding": ("least-outstanding", {}),
    "jsq-requests": ("join-shortest-queue", {}),
    "jsq-tokens": ("join-shortest-queue", {"metric": "tokens"}),
    "power-of-two": ("power-of-two", {}),
    "latency-optimal": ("latency-optimal", {}),
    "cost-optimal": ("cost-optimal", {}),
    "price-optimal": ("price-optimal", {}),
    "relevance-optimal": ("relevance-optimal", {}),
    "small-model-first": ("small-model-first", {}),
}

PREFIX_ROUTERS: dict[str, tuple[str, dict[str, Any]]] = {
    "least-outstanding": ("least-outstanding", {}),
    "prefix-aware": ("prefix-aware", {}),
    "session-affinity": ("session-affinity", {}),
    "weighted-score": ("weighted-score", {}),
}


def config(router: str, params: dict[str, Any], num_requests: int, rate: float) -> dict[str, Any]:
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
        "instances": [
            {
                "name": "a100",
                "model": "llama-3-8b",
                "accelerator": "A100-80GB",
                "price_out_per_mtok_usd": 2.0,
                "quality": 0.9,
            },
            {
                "name": "h100",
                "model": "llama-3-8b",
                "accelerator": "H100-SXM",
                "price_out_per_mtok_usd": 1.0,
            },
        ],
        "router": {"name": router, "params": params},
        "admission": {"enabled": True},
    }


def requests_of(cfg: dict[str, Any]) -> RequestArrays:
    """The workload with a strict tier on every tenth request and budgets on others."""
    loaded = load_config(cfg)
    req = generate(loaded.workload, loaded.seed, base_dir=base_dir_of(loaded))
    n = len(req)
    tier = np.zeros(n, dtype=np.int64)
    tier[::10] = 1
    budget = np.full(n, np.nan)
    budget[1::4] = 40e-6  # 40 tokens on the H100, 20 on the A100
    budget[3::50] = 1e-8  # not one token
    tiers = (Tier("standard", ttlt_s=600.0), Tier("strict", ttft_s=0.001))
    return dataclasses.replace(req, tier=tier, tiers=tiers, budget_usd=budget)


def _row(name: str, result: ParityResult, wall: float) -> str:
    s = result.summary()
    _, diffs = result.decision_diffs()
    cells = [name, f"{s['same_decision_share']:.1%}"]
    cells.append(f"{len(diffs)} ({sum(d.explained for d in diffs)} explained)")
    for key in ("replay_sim_on_live", "replay_live_on_sim"):
        cells.append(f"{s[key]['calls']} / {s[key]['mismatches']}")
    cells.append(f"{s['same_instance_share']:.1%}")
    for key in ("rel_ttft", "rel_e2e"):
        p50 = s[key]["p50"]
        cells.append("-" if p50 is None else f"{p50:+.2%}")
    first = diffs[0] if diffs else None
    cells.append("none" if first is None else f"#{first.position}: {(first.inputs or ('?',))[0]}")
    lag = s["loop_lag_ms"]
    cells.append(f"{lag['p99']:.1f} / {lag['max']:.0f}")
    cells.append(f"{wall:.0f}")
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-requests", type=int, default=100)
    parser.add_argument("--rate", type=float, default=5.0)
    parser.add_argument("--routers", nargs="+", choices=sorted({*ROUTERS, *PREFIX_ROUTERS}))
    parser.add_argument("--prefix", action="store_true", help="the prefix-heavy workload")
    args = parser.parse_args()
    table = PREFIX_ROUTERS if args.prefix else ROUTERS
    names = args.routers or list(table)
    print(
        "| router | same decision | differing (explained by inputs) | replay sim→live "
        "calls / mismatches | replay live→sim | same instance | TTFT rel. diff p50 "
        "| E2E rel. diff p50 | first differing decision | loop lag p99 / max ms | wall s |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|"
    )
    for name in names:
        router, params = table[name]
        cfg = config(router, params, args.num_requests, args.rate)
        started = time.perf_counter()
        if args.prefix:
            requests = prefix_sessions(args.num_requests, args.rate, seed=cfg["seed"])
        else:
            requests = requests_of(cfg)
        result = parity(cfg, requests=requests)
        wall = time.perf_counter() - started
        print(_row(name, result, wall), flush=True)
        print(json.dumps({"router": name, **result.summary()}), file=sys.stderr)


if __name__ == "__main__":
    main()
