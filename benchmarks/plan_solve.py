"""Capacity-planning solve time: greedy vs MILP on synthetic fleets (fixed seed).

For 10, 100 and 1,000 servers over 8 accelerator types, unlimited and limited (each
type holds 40 % of the units the fleet would need on it alone), it times
``build_candidates`` (the analyzer sizing every (server, accelerator) pair), the
greedy and the MILP (HiGHS via SciPy), after one warm-up, best of ``--repeat`` runs,
and reports the greedy's cost gap to the MILP optimum (cost plus switching charges;
limited fleets compare servers left out too).

Run: ``python benchmarks/plan_solve.py [--repeat 3] [--batch-rule inferno|kv]
[--simulated 10] [--sim-requests 100] [--workers 1]``; a line times the sizing of the
1,000-server fleet under both batch rules, alternately, as a ratio measured in the same
run. The last line times the greedy with simulated sizing (``--sizing simulate``) on the
first ``--simulated`` servers of the fleet: cold (an empty capacity cache: one capacity
search per distinct candidate) and warm (the same plan again, every capacity a cache
read), against the analyzer's sizing of the same fleet.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from sincere.optimize import build_candidates, solve
from sincere.optimize.data import BATCH_RULES, Problem
from sincere.optimize.simsize import SimSettings, simulated_sizer
from sincere.optimize.synthetic import synthetic_problem

SEED = 20240601
NUM_TYPES = 8


def best_of(fn: Callable[[], object], repeat: int) -> float:
    """Fastest wall time of ``repeat`` calls after one warm-up."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def fleet(num: int, limited: bool, rule: str) -> Problem:
    """The synthetic fleet of ``num`` servers, planned with batch rule ``rule``."""
    p = synthetic_problem(
        num, NUM_TYPES, np.random.default_rng(SEED), capacity_share=0.4 if limited else None
    )
    return replace(p, optimizer=replace(p.optimizer, batch_rule=rule))


def row(num: int, limited: bool, repeat: int, rule: str) -> str:
    """One Markdown table row for a fleet of ``num`` servers."""
    p = fleet(num, limited, rule)
    t_cand = best_of(lambda: build_candidates(p), repeat)
    t_greedy = best_of(lambda: solve(p, solver="greedy"), repeat)
    t_milp = best_of(lambda: solve(p, solver="milp"), repeat)
    g, m = solve(p, solver="greedy"), solve(p, solver="milp")
    gap = 100.0 * (g.total_value - m.total_value) / m.total_value
    left_g = sum(a.saturated for a in g.allocations)
    left_m = sum(a.saturated for a in m.allocations)
    mode = "limited" if limited else "unlimited"
    return (
        f"| {num:>5} | {mode:9} | {t_cand:7.3f} | {t_greedy:7.3f} | {t_milp:7.3f} | "
        f"{gap:+6.2f} % | {left_g} / {left_m} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch-rule", default="inferno", choices=BATCH_RULES)
    parser.add_argument("--simulated", type=int, default=10, help="servers, simulated sizing")
    parser.add_argument("--sim-requests", type=int, default=100)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--only-simulated", action="store_true")
    args = parser.parse_args()
    if args.only_simulated:
        print(simulated_row(args.simulated, args.sim_requests, args.workers, args.batch_rule))
        return
    print(
        f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, "
        f"python {platform.python_version()}, seed {SEED}"
    )
    print(
        "| servers | mode | sizing s | greedy s (with sizing) | MILP s (with sizing) "
        "| greedy gap | left out (g / m) |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|")
    for num in (10, 100, 1000):
        for limited in (False, True):
            print(row(num, limited, args.repeat, args.batch_rule), flush=True)
    times = {rule: [] for rule in BATCH_RULES}  # type: dict[str, list[float]]
    problems = {rule: fleet(1000, False, rule) for rule in BATCH_RULES}
    for _ in range(args.repeat):
        for rule, problem in problems.items():
            times[rule].append(best_of(lambda p=problem: build_candidates(p), 1))
    sizes = {r: float(build_candidates(p).max_batch.mean()) for r, p in problems.items()}
    print(
        "sizing 1,000 servers, best of alternate runs: "
        + ", ".join(f"{r} {min(t):.3f} s (mean batch {sizes[r]:.0f})" for r, t in times.items())
        + f"; inferno / kv = {min(times['inferno']) / min(times['kv']):.2f}"
    )
    print(simulated_row(args.simulated, args.sim_requests, args.workers, args.batch_rule))


def simulated_row(num: int, requests: int, workers: int, rule: str) -> str:
    """Greedy with simulated sizing on ``num`` servers: cold and warm cache, one run each."""
    p = fleet(num, False, rule)
    t_ana = best_of(lambda: solve(p, solver="greedy"), 1)
    with tempfile.TemporaryDirectory() as cache:
        settings = SimSettings(num_requests=requests, workers=workers, cache_dir=Path(cache))
        t0 = time.perf_counter()
        cold = solve(p, solver="greedy", sizer=simulated_sizer(settings))
        t_cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        solve(p, solver="greedy", sizer=simulated_sizer(settings))
        t_warm = time.perf_counter() - t0
        searches = len(list(Path(cache).glob("*.json")))
    ana = solve(p, solver="greedy")
    return (
        f"simulated sizing, {num} servers ({searches} capacity searches, {requests} requests "
        f"per simulated replica, {workers} worker(s)): cold {t_cold:.1f} s, warm {t_warm:.3f} s, "
        f"analyzer {t_ana:.3f} s; cost {cold.total_cost:.0f} vs analyzer {ana.total_cost:.0f} ¢/h"
    )


if __name__ == "__main__":
    main()
