"""Simulating mixture-of-experts and sliding-window models: closed-form decode runs against
summing their iterations one by one, in the same process.

Usage: ``python benchmarks/moe_decode_speed.py [--requests N]`` (default 3,000).

For each model (GPT-OSS-20B: experts and sliding windows, MXFP4, one H100; Qwen3-30B-A3B:
experts, bf16, one H100; DeepSeek-V3: MLA and experts, fp8, 8 H200s with EP 8), a Poisson
workload of ``N`` requests (ShareGPT-like lengths, seed 0) at about 70 % of one engine's
throughput; and GPT-OSS-120B on a B200 in a closed loop of 64 clients (640 requests of 1k
in, 1k out: InferenceX's shape, where decode runs are long). Each is simulated twice: with
the step model's closed-form sum of a decode run (``Roofline.decode_steps_s``, what the
simulator uses) and with the iterations summed one by one (what it did before for these
models), each the best of two runs after an untimed one. Prints each wall time, the ratio
and the largest relative difference of any request's finish time (float rounding only).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np

from sincere.perf.base import Batch
from sincere.perf.roofline import Roofline
from sincere.sim.api import simulate
from sincere.sim.config import load_config

CASES = (
    ("gpt-oss-20b", "H100-SXM", 1, 1, "mxfp4", 30.0),
    ("qwen3-30b-a3b", "H100-SXM", 1, 1, "bf16", 12.0),
    ("deepseek-v3", "H200", 8, 8, "fp8", 8.0),
    ("gpt-oss-120b", "B200", 1, 1, "mxfp4", 0.0),  # a closed loop of 64 clients, 1k/1k
)


def config(model: str, acc: str, tp: int, ep: int, precision: str, rate: float, n: int) -> Any:
    """The workload of one case (``rate`` 0: InferenceX's closed loop of 64 clients, 1k/1k)."""
    lengths: dict[str, Any] = {
        "prompt": {"kind": "lognormal", "median": 600, "sigma": 1.0, "max_tokens": 4000},
        "output": {"kind": "lognormal", "median": 250, "sigma": 0.8, "max_tokens": 2000},
    }
    arrival: dict[str, Any] = {"kind": "poisson", "rate": rate}
    if rate == 0.0:
        arrival = {"kind": "closed", "concurrency": 64}
        lengths = {k: {"kind": "uniform", "low": 819, "high": 1024} for k in lengths}
        n = 640
    return load_config({
        "seed": 0,
        "workload": {"num_requests": n, "arrival": arrival, "lengths": lengths,
                     "models": {model: 1.0}},
        "instances": [{"model": model, "accelerator": acc, "tp": tp, "ep": ep,
                       "precision": precision, "kv_precision": "fp8" if precision == "fp8"
                       else "fp16"}],
    })  # fmt: skip


def one_by_one(self: Roofline, num_seqs: int, ctx_tokens: int, num_steps: int) -> float:
    """The previous path: every iteration of the run priced and summed."""
    total = 0.0
    for step in range(max(num_steps, 0)):
        batch = Batch(num_decode_seqs=num_seqs, decode_ctx_tokens=ctx_tokens + step * num_seqs)
        total += self.iteration_s(batch)
    return total


def timed(cfg: Any, repeats: int = 2) -> tuple[float, Any]:
    """Best wall time of ``repeats`` runs (after one untimed), and the result."""
    result = simulate(cfg)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        result = simulate(cfg)
        best = min(best, time.perf_counter() - started)
    return best, result


def main(argv: list[str]) -> None:
    n = int(argv[argv.index("--requests") + 1]) if "--requests" in argv else 3000
    closed_form = Roofline.decode_steps_s
    print("| model | closed form s | one by one s | ratio | max rel. diff of finish times |")
    print("|---|---:|---:|---:|---:|")
    for case in CASES:
        cfg = config(*case, n)
        fast, a = timed(cfg)
        Roofline.decode_steps_s = one_by_one  # type: ignore[method-assign]
        try:
            slow, b = timed(cfg)
        finally:
            Roofline.decode_steps_s = closed_form  # type: ignore[method-assign]
        fa, fb = a.records.finished_at, b.records.finished_at
        ok = np.isfinite(fa) & np.isfinite(fb)
        diff = float(np.max(np.abs(fa[ok] - fb[ok]) / np.maximum(fb[ok], 1e-9)))
        print(f"| {case[0]} | {fast:.2f} | {slow:.2f} | {slow / fast:.1f}x | {diff:.1e} |")


if __name__ == "__main__":
    main(sys.argv[1:])
