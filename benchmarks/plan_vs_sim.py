"""Inferno's queueing analyzer vs the discrete-event simulator on one replica.

For Inferno's sample granite-13b profile on A100 (REFERENCE.md §2: α 20.58, β 0.41,
γ 164.64, δ 0.0128125 ms; max batch 32) and two request shapes, sweeps the arrival
rate from 10 % to 95 % of the analyzer's maximum ``μ(N)`` and prints predicted vs
simulated mean TTFT and ITL (ms) with the relative error (predicted − simulated) /
simulated. Fixed seed; the first point is run twice (warm-up).

    python benchmarks/plan_vs_sim.py [--requests 20000]
"""

from __future__ import annotations

import argparse
import time

from sincere.optimize.queueing import DecodePrefillParams
from sincere.optimize.xcheck import check_replica, max_rate_per_s

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


def main() -> None:
    """Run both shapes and print the tables and the wall time."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="requests per point")
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


if __name__ == "__main__":
    main()
