"""Capacity-planning solve time: greedy vs MILP on synthetic fleets (fixed seed).

For 10, 100 and 1,000 servers over 8 accelerator types, unlimited and limited (each
type holds 40 % of the units the fleet would need on it alone), it times
``build_candidates`` (the analyzer sizing every (server, accelerator) pair), the
greedy and the MILP (HiGHS via SciPy), after one warm-up, best of ``--repeat`` runs,
and reports the greedy's cost gap to the MILP optimum (cost plus switching charges;
limited fleets compare servers left out too).

Run: ``python benchmarks/plan_solve.py [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import numpy as np

from sincere.optimize import build_candidates, solve
from sincere.optimize.data import Problem
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


def row(num: int, limited: bool, repeat: int) -> str:
    """One Markdown table row for a fleet of ``num`` servers."""
    p: Problem = synthetic_problem(
        num, NUM_TYPES, np.random.default_rng(SEED), capacity_share=0.4 if limited else None
    )
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
    args = parser.parse_args()
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
            print(row(num, limited, args.repeat), flush=True)


if __name__ == "__main__":
    main()
