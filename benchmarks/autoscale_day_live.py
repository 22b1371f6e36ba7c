"""The multi-model day replayed live: the gateway's control plane over emulated engines,
on a clock compressed by one factor, against the simulation of the same scenario.

Usage: ``python benchmarks/autoscale_day_live.py [--seed 0] [--time-scale 0.5]
[--policies dedicated,sleep+headroom] [--out rows.json]`` (about eleven minutes of wall
clock per policy on the project's 2-core VM: the replay itself, 600 s at 1/2).

**The reduced day.** :mod:`autoscale_day`'s full day (25,000 requests, about 200 output
tokens each, streamed) is too many tokens a second for one Python process on a shared
2-core VM at any compression that fits a benchmark run (the full day at 1/8 would send
56 requests a second; measured, a 1,211-request scenario sent at 40 a second lagged the
event loop by 250 ms at p99 and left 33 requests unserved), so the replay runs a reduced day
of the same shape: the day's generator with one hour ``--hour-s`` 50 s (the day is 1,200
s; a burst lasts 25 s, less than a machine's 60 s provisioning), a quarter of its
requests (each kept with probability 1/4, so every model's rate is a quarter of the
day's: a thinned Poisson process) and slots of a quarter of the batch (``max_num_seqs``
16, so a slot serves about a quarter as much and the threshold pair is a quarter of the
day's 16/4: ``4/1``); ten slots at most. Everything else is the day's: five models on
A100-80GB slots, roofline step times, Sarathi chunked prefill, readings every 10 s, 60 s
cool-down and provisioning, loads at 5 GB/s, 120 s before an empty slot is released, the
SLOs (TTFT <= 2 s, TPOT <= 100 ms).

**The compressed clock.** Every time of the scenario is multiplied by ``--time-scale``
(1/2 by default: the 1,200 s day in 600 s) -- arrivals, SLOs, the engines' step times
(``time_scale``), provisioning, load, sleep and wake times, the interval, the cool-down,
the idle and release times (:func:`sincere.sim.autoscale_time.time_scaled`); the
simulated run of the scaled scenario is the scale-1 run with every time scaled, bit for
bit with a power-of-two factor (``tests/sim/test_sim_autoscale_time.py``). The factor was
chosen by measurement: at 1/4 (seven requests, 1,400 streamed tokens a second on average)
the process got 30 % of a core on the shared VM and the live path's extra time per
request (gateway, client, the emulator's HTTP hop) weighed twice as much; the dedicated
replay then scaled up 9 times where the simulation did 5 (+11 % GPU-hours). At 1/2: 6
against 5 (+3 %).

Per policy the table gives, simulated and live (times brought back to scale 1):
actuations by kind, the share of them matched by one of the same kind and model in the
other run within one reading (:func:`sincere.bench.pool_replay.compare`), GPU-hours and
SLO attainment.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from autoscale_day import TPOT_SLO_S, TTFT_SLO_S, config, day_trace  # the sibling script

from sincere.bench.pool_replay import compare, replay
from sincere.core.request import RequestArrays
from sincere.sim.api import simulate
from sincere.sim.autoscale_time import scaled_requests, time_scaled

KEEP = 0.25  # the share of the day's requests replayed
MAX_NUM_SEQS = 16  # a quarter of the day's 64: slots of a quarter of the batch
THRESHOLDS = (4.0, 1.0)  # a quarter of the day's 16/4, requests in flight per slot
MAX_SLOTS = 10
KINDS = ("provision", "load", "wake", "sleep", "stop", "release")


def reduced_day(seed: int, hour_s: float) -> RequestArrays:
    """The day's trace with a share ``KEEP`` of its requests (seeded)."""
    day = day_trace(seed, hour_s)
    keep = np.random.default_rng(seed + 1000).uniform(size=len(day)) < KEEP
    return RequestArrays.build(
        day.arrival_at[keep], day.prompt_tokens[keep], day.output_tokens[keep],
        models=day.models, model=day.model[keep].tolist(),
    )  # fmt: skip


def reduced_config(policy: str, hour_s: float) -> dict[str, Any]:
    """The day's config of ``policy`` with the reduced day's slots."""
    cfg = config(policy, *THRESHOLDS, day_s=24 * hour_s)
    for group in cfg["instances"]:
        group["engine"]["max_num_seqs"] = MAX_NUM_SEQS
    cfg["actuation"]["max_slots"] = MAX_SLOTS
    return cfg


def measure(policy: str, trace: RequestArrays, hour_s: float, factor: float) -> dict[str, Any]:
    """One policy: the scaled scenario simulated, then replayed live; figures at scale 1."""
    cfg = time_scaled(reduced_config(policy, hour_s), factor)
    requests = scaled_requests(trace, factor)
    sim = simulate(cfg, requests=requests)
    block = sim.summary["actuation"]
    end_s = block["timeline"]["at_s"][-1]
    started = time.perf_counter()
    live = asyncio.run(replay(sim, cfg["actuation"], end_s, time_limit_s=end_s + 60.0))
    wall_s = time.perf_counter() - started
    interval_s = cfg["actuation"]["scaling"]["interval_s"]
    slo = (TTFT_SLO_S * factor, TPOT_SLO_S * factor)
    return {
        "policy": policy,
        "compare": compare(block["events"], live.events, interval_s, end_s),
        "gpu_hours": (block["gpu_hours"] / factor, live.slot_hours / factor),
        "attainment": (_attainment(sim, slo), _attainment(live.bench, slo)),
        "num_completed": (sim.summary["num_completed"], live.bench.summary["num_completed"]),
        "loop_lag_p99_ms": float(np.percentile(live.loop_lag_s, 99) * 1e3),
        "loop_lag_max_ms": float(live.loop_lag_s.max() * 1e3),
        "wall_s": wall_s,
        "events": {  # times at scale 1
            "sim": [{**e, "at_s": e["at_s"] / factor} for e in block["events"]],
            "live": [{**e, "at_s": e["at_s"] / factor} for e in live.events],
        },
    }


def _attainment(result: Any, slo: tuple[float, float]) -> float:
    """Requests meeting both SLOs ``(TTFT, TPOT)`` over all requests: the day's rule
    (:func:`autoscale_day.attained`), with the scaled targets."""
    req, rec = result.requests_in, result.records
    ttft = rec.first_token_at - req.arrival_at
    tpot = (rec.finished_at - rec.first_token_at) / np.maximum(rec.output_tokens - 1, 1)
    with np.errstate(invalid="ignore"):
        met = (ttft <= slo[0]) & (tpot <= slo[1]) & ~rec.rejected
    return float(np.mean(met))


def table(rows: list[dict[str, Any]]) -> str:
    """Simulated / live, per policy."""
    head = " | ".join(f"{k}s" for k in KINDS)
    lines = [
        f"| policy | {head} | matched within one reading (sim / live) | GPU-h | attainment "
        "| loop lag p99 / max ms |",
        "|---|" + "---:|" * (len(KINDS) + 4),
    ]
    for r in rows:
        c = r["compare"]
        counts = c["counts"]
        cells = " | ".join("{} / {}".format(*counts.get(k, (0, 0))) for k in KINDS)
        (gs, gl), (a_s, a_l) = r["gpu_hours"], r["attainment"]
        lines.append(
            f"| {r['policy']} | {cells} | {c['num_matched'] / c['num_sim']:.0%} / "
            f"{c['num_matched'] / c['num_live']:.0%} | {gs:.2f} / {gl:.2f} ({gl / gs - 1:+.1%}) "
            f"| {a_s:.3f} / {a_l:.3f} ({a_l - a_s:+.3f}) "
            f"| {r['loop_lag_p99_ms']:.0f} / {r['loop_lag_max_ms']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hour-s", type=float, default=50.0)
    parser.add_argument("--time-scale", type=float, default=0.5)
    parser.add_argument("--policies", default="dedicated,sleep+headroom")
    parser.add_argument("--out", type=Path, help="write every figure and actuation (JSON)")
    args = parser.parse_args()
    trace = reduced_day(args.seed, args.hour_s)
    print(f"{len(trace):,} requests over {24 * args.hour_s:.0f} s (seed {args.seed}), "
          f"replayed at x{args.time_scale:g}")  # fmt: skip
    rows = []
    for policy in args.policies.split(","):
        rows.append(measure(policy, trace, args.hour_s, args.time_scale))
        r = rows[-1]
        print(f"{policy}: {r['wall_s']:.0f} s live, completed {r['num_completed']}", flush=True)
    print(table(rows))
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
