"""Inferno's queueing analyzer vs the discrete-event simulator: one replica, then whole plans.

Part 1. For Inferno's sample granite-13b profile on A100 (docs/references.md, Inferno:
α 20.58, β 0.41,
γ 164.64, δ 0.0128125 ms; max batch 32) and two request shapes, sweeps the arrival rate
from 10 % to 95 % of the analyzer's maximum ``μ(N)`` and prints predicted vs simulated
mean TTFT and ITL (ms) with the relative error (predicted − simulated) / simulated.

Part 2. The planner's two batch rules on whole plans: each case of ``examples/plan`` is
solved with ``batch_rule`` ``inferno`` and ``kv``; every allocated server is simulated as
one replica at its planned per-replica Poisson rate, with ``max_num_seqs`` = the planned
batch and a KV cache that holds what the model data says (``maxBatchSize`` sequences of
``atTokens`` tokens), and its simulated mean TTFT and ITL are held against the class's
SLOs (Inferno's SLOs are on means). Fixed seed; the first point is run twice (warm-up).

    python benchmarks/plan_vs_sim.py [--requests 20000] [--plan-requests 4000]
        [--cases unlimited,inferno-sample]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from sincere.optimize.data import BATCH_RULES, Problem, load_problem
from sincere.optimize.plan import ServerAllocation, solve
from sincere.optimize.queueing import DecodePrefillParams
from sincere.optimize.xcheck import ReplicaCheck, check_replica, max_rate_per_s

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "plan"

GRANITE_13B_A100 = DecodePrefillParams(alpha=20.58, beta=0.41, gamma=164.64, delta=0.0128125)
MAX_BATCH = 32
SHAPES = {
    "long output (in 128, out 1024)": (128, 1024),
    "short output (in 1024, out 64)": (1024, 64),
}
LOADS = (0.10, 0.30, 0.50, 0.70, 0.80, 0.90, 0.95)


def blocking_rate_per_s(in_tokens: int, out_tokens: int) -> float:
    """Most req/s when every prompt is prefilled alone and stalls a full decode batch.

    Each request then holds the engine for ``prefill(1) + (out − 1)·decode(N)/N`` ms.
    """
    p = GRANITE_13B_A100
    prefill_ms = p.gamma + p.delta * in_tokens
    decode_share_ms = (out_tokens - 1) * (p.alpha + p.beta * MAX_BATCH) / MAX_BATCH
    return 1e3 / (prefill_ms + decode_share_ms)


def sweep(name: str, in_tokens: int, out_tokens: int, num_requests: int) -> None:
    """Print one markdown table of the load grid for one request shape."""
    mu = max_rate_per_s(
        GRANITE_13B_A100, in_tokens=in_tokens, out_tokens=out_tokens, max_batch=MAX_BATCH
    )
    print(f"\n### {name}: analyzer μ(N) = {mu:.3f} req/s, ", end="")
    print(f"prefill-blocking bound = {blocking_rate_per_s(in_tokens, out_tokens):.3f} req/s\n")
    print("| load | λ req/s | sim req/s | TTFT pred | TTFT sim | err | ITL pred | ITL sim | err |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for frac in LOADS:
        c = check_replica(
            GRANITE_13B_A100,
            in_tokens=in_tokens,
            out_tokens=out_tokens,
            max_batch=MAX_BATCH,
            rate_per_s=frac * mu,
            num_requests=num_requests,
        )
        print(
            f"| {frac:.0%} | {c.rate_per_s:.3f} | {c.measured_throughput_rps:.3f} "
            f"| {c.predicted_ttft_ms:.0f} | {c.measured_ttft_ms:.0f} | {c.ttft_rel_error:+.1%} "
            f"| {c.predicted_itl_ms:.2f} | {c.measured_itl_ms:.2f} | {c.itl_rel_error:+.1%} |"
        )


def _simulate(
    problem: Problem, alloc: ServerAllocation, num_requests: int, *, kv_bound: bool = True
) -> ReplicaCheck:
    """One replica of ``alloc`` at its share of the load, KV cache as the model data says
    (``kv_bound=False``: a cache that never fills, as the analyzer assumes)."""
    srv = next(s for s in problem.servers if s.name == alloc.server)
    perf = problem.models[(srv.model, alloc.accelerator or "")]
    load = alloc.load
    return check_replica(
        perf.params,
        in_tokens=max(1, round(load.avg_in_tokens)),
        out_tokens=max(1, round(load.avg_out_tokens)),
        max_batch=alloc.max_batch,
        rate_per_s=load.arrival_rate / 60.0 / alloc.num_replicas,
        num_requests=num_requests,
        queue_factor=problem.optimizer.queue_factor,
        kv_tokens=perf.max_batch * perf.at_tokens if kv_bound else None,
    )


def _kv_seqs(problem: Problem, alloc: ServerAllocation) -> int:
    """Whole requests (in + out tokens) the model data's KV cache holds."""
    srv = next(s for s in problem.servers if s.name == alloc.server)
    perf = problem.models[(srv.model, alloc.accelerator or "")]
    return int(
        perf.max_batch * perf.at_tokens / (alloc.load.avg_in_tokens + alloc.load.avg_out_tokens)
    )


def _slo_cell(pred: float, sim: float, target: float | None) -> tuple[str, bool]:
    ok = target is None or sim <= target
    mark = "" if ok else " ✗"
    return f"{pred:.0f} / {sim:.0f}{mark} / {target or '-':g}", ok


def _row(problem: Problem, a: ServerAllocation, rule: str, num_requests: int) -> bool:
    """Simulate one allocated server, print its table row; whether it met both SLOs."""
    c = _simulate(problem, a, num_requests)
    ttft, ok_ttft = _slo_cell(c.predicted_ttft_ms, c.measured_ttft_ms, a.slo_ttft_ms)
    itl, ok_itl = _slo_cell(c.predicted_itl_ms, c.measured_itl_ms, a.slo_itl_ms)
    holds = _kv_seqs(problem, a)
    free = "-"  # the cache binds only where the planned batch exceeds what it holds
    if a.max_batch > holds:
        free = f"{_simulate(problem, a, num_requests, kv_bound=False).measured_ttft_ms:.0f}"
    shape = f"{a.load.avg_in_tokens:.0f}/{a.load.avg_out_tokens:.0f}"
    print(
        f"| {a.server} ({shape}) | {rule} | {a.accelerator} × {a.num_replicas} "
        f"| {a.max_batch} | {holds} | {a.cost:.0f} | {ttft} | {itl} | {free} |"
    )
    return ok_ttft and ok_itl


def batch_rules(case: str, num_requests: int) -> dict[str, tuple[float, int, int, int]]:
    """Plan ``case`` under each batch rule, simulate every server, print one table.

    Returns ``{rule: (cost ¢/h, servers meeting both SLOs in simulation, servers
    allocated, servers left unallocated)}``.
    """
    base = load_problem(EXAMPLES / case)
    print(f"\n### {case}\n")
    print(
        "| server (in/out) | rule | accelerator × replicas | batch | KV holds | ¢/h "
        "| TTFT ms pred / sim / SLO | ITL ms pred / sim / SLO | TTFT sim, KV unbounded |"
    )
    print("|---|---|---|---:|---:|---:|---|---|---:|")
    totals: dict[str, tuple[float, int, int, int]] = {}
    for rule in BATCH_RULES:
        problem = replace(base, optimizer=replace(base.optimizer, batch_rule=rule))
        solution = solve(problem)
        placed = [a for a in solution.allocations if a.num_replicas > 0 and a.accelerator]
        met = sum(_row(problem, a, rule, num_requests) for a in placed)
        left = len(solution.allocations) - len(placed)
        totals[rule] = (solution.total_cost, met, len(placed), left)
    for rule, (cost, met, num, left) in totals.items():
        print(
            f"\n{case}, {rule}: {cost:.0f} ¢/h, {met}/{num} allocated servers meet both SLOs "
            f"in simulation, {left} left unallocated"
        )
    return totals


def main() -> None:
    """Run both parts and print the tables and the wall time."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="requests per point")
    parser.add_argument(
        "--plan-requests", type=int, default=4_000, help="requests per simulated server"
    )
    parser.add_argument("--cases", default="unlimited,inferno-sample", help="examples/plan cases")
    args = parser.parse_args()
    in_tokens, out_tokens = next(iter(SHAPES.values()))
    check_replica(  # warm-up: imports, catalog loading
        GRANITE_13B_A100,
        in_tokens=in_tokens,
        out_tokens=out_tokens,
        max_batch=MAX_BATCH,
        rate_per_s=0.1,
        num_requests=200,
    )
    started = time.perf_counter()
    for name, (n_in, n_out) in SHAPES.items():
        sweep(name, n_in, n_out, args.requests)
    wall = time.perf_counter() - started
    num_points = len(SHAPES) * len(LOADS)
    print(f"\nplan_vs_sim: {num_points} points x {args.requests} requests, {wall:.1f} s")
    started = time.perf_counter()
    results = {case: batch_rules(case, args.plan_requests) for case in args.cases.split(",")}
    wall = time.perf_counter() - started
    line = "; ".join(
        f"{case} {rule} {met}/{num + left} at {cost:.0f} ¢/h"
        for case, totals in results.items()
        for rule, (cost, met, num, left) in totals.items()
    )
    print(f"\nbatch rules, servers meeting SLOs in simulation: {line} ({wall:.1f} s)")


if __name__ == "__main__":
    main()
