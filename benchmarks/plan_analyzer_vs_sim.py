"""Where Inferno's analyzer is off: analyzer sizing vs simulated sizing over a grid of loads.

One server of llama-3-8b on NVIDIA L4 (71 ¢/h), its Inferno parameters fitted (as
``sincere fit profile --model inferno`` would) to the ``roofline`` step model at each
mix's mean lengths, max batch 64. For every length mix (short chat to RAG-like), Poisson
rate and SLO pair, the planner runs twice:

* analyzer sizing (Inferno's model): replicas, the analyzer's predicted mean TTFT, and
  what the simulator measures for that allocation (mean TTFT, attainment);
* simulated sizing (``--sizing simulate``): replicas from the simulator's capacity search
  (mean TTFT and ITL within the SLOs, every request finished, ≥ 90 % of requests within
  both), and the simulated TTFT of that allocation.

The simulator runs the same ``inferno`` step model with the mix's full length
distribution; the analyzer sees only the means. Fixed seed 0; the capacity searches are
cached in a temporary directory, so the rates of one (mix, SLO) share one search.

    python benchmarks/plan_analyzer_vs_sim.py [--requests 300] [--workers 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from sincere.catalog import get_accelerator, get_model
from sincere.optimize.data import (
    AcceleratorSpec,
    CurrentAlloc,
    Load,
    ModelPerf,
    OptimizerSpec,
    Problem,
    Server,
    ServiceClass,
)
from sincere.optimize.plan import solve
from sincere.optimize.simsize import SimSettings, simulated_sizer, verify
from sincere.optimize.sizing import Targets, params_from_step_model
from sincere.perf import Deployment, make_step_model
from sincere.workload.config import LengthsConfig

L4_CENTS_PER_H = 71.0
MAX_BATCH = 64
MIXES: dict[str, dict[str, Any]] = {
    "short chat (~150 in / ~250 out)": {
        "prompt": {"kind": "lognormal", "mean": 150, "std": 100, "max_tokens": 2048},
        "output": {"kind": "lognormal", "mean": 250, "std": 150, "max_tokens": 1024},
    },
    "Azure conv (≤2048 / ≤256)": {
        "source": "azure-conv-2023",
        "max_prompt_tokens": 2048,
        "max_output_tokens": 256,
    },
    "long output (~128 in / ~1024 out)": {
        "prompt": {"kind": "lognormal", "mean": 128, "std": 64, "max_tokens": 1024},
        "output": {"kind": "lognormal", "mean": 1024, "std": 256, "max_tokens": 2048},
    },
    "RAG-like (~3000 in / ~100 out)": {
        "prompt": {"kind": "lognormal", "mean": 3000, "std": 1000, "max_tokens": 6000},
        "output": {"kind": "lognormal", "mean": 100, "std": 60, "max_tokens": 512},
    },
}
RATES = (1.0, 3.5, 8.0)  # req/s
SLOS = {
    "TTFT 2 s / ITL 150 ms": Targets(2000.0, 150.0),
    "TTFT 0.5 s / ITL 100 ms": Targets(500.0, 100.0),
}


def mean_lengths(block: dict[str, Any]) -> tuple[float, float]:
    """Mean prompt and output tokens of a ``lengths`` block (100,000 draws, seed 0)."""
    prompt, output = LengthsConfig(**block).build().sample(np.random.default_rng(0), 100_000)
    return float(prompt.mean()), float(output.mean())


def problem_for(in_tokens: float, out_tokens: float, rate: float, targets: Targets) -> Problem:
    """One llama-3-8b server on L4 with Inferno parameters fitted at these lengths."""
    dep = Deployment(get_model("llama-3-8b"), get_accelerator("L4"))
    params = params_from_step_model(
        make_step_model("roofline", dep), round(in_tokens), round(out_tokens), MAX_BATCH
    )
    load = Load(rate * 60.0, in_tokens, out_tokens)
    return Problem(
        accelerators={"L4": AcceleratorSpec("L4", "L4", 1, 24.0, L4_CENTS_PER_H)},
        models={("llama-3-8b", "L4"): ModelPerf("llama-3-8b", "L4", 1, MAX_BATCH, 0, params)},
        classes={"C": ServiceClass("C", 1, {"llama-3-8b": targets})},
        servers=(Server("s", "C", "llama-3-8b", CurrentAlloc(load)),),
        optimizer=OptimizerSpec(unlimited=True),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=300, help="requests per simulated replica")
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    print(
        "| mix | rate req/s | SLO | analyzer: replicas, ¢/h | analyzer TTFT ms | sim TTFT ms "
        "at analyzer's | sim attain. | simulated sizing: replicas, ¢/h | sim TTFT ms | "
        "analyzer |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---|")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        for mix, block in MIXES.items():
            in_t, out_t = mean_lengths(block)
            settings = SimSettings(
                num_requests=args.requests, lengths=block, workers=args.workers,
                cache_dir=Path(cache),
            )  # fmt: skip
            for slo_name, targets in SLOS.items():
                for rate in RATES:
                    row(mix, slo_name, rate, problem_for(in_t, out_t, rate, targets), settings)
    print(f"\n{time.perf_counter() - t0:.1f} s")


def row(mix: str, slo: str, rate: float, problem: Problem, settings: SimSettings) -> None:
    """One table row: both sizings of one cell."""
    ana = solve(problem)
    sim = solve(problem, sizer=simulated_sizer(settings))
    (a,), (s,) = ana.allocations, sim.allocations
    (va,) = verify(problem, ana, settings) or [None]
    vs = verify(problem, sim, settings)
    sim_ttft = f"{vs[0].sim.ttft_ms:.0f}" if vs else "-"
    if va is None:
        print(
            f"| {mix} | {rate:g} | {slo} | none fits | | | | {s.num_replicas}, "
            f"{s.cost:.0f} | {sim_ttft} | |"
        )
        return
    verdict = "right"
    if a.num_replicas > s.num_replicas:
        verdict = f"over (+{a.num_replicas - s.num_replicas})"
    elif a.num_replicas < s.num_replicas:
        verdict = f"under (−{s.num_replicas - a.num_replicas})"
    if s.num_replicas == 0:
        verdict = "sim: none fits"
    print(
        f"| {mix} | {rate:g} | {slo} | {a.num_replicas}, {a.cost:.0f} | {a.ttft_ms:.0f} | "
        f"{va.sim.ttft_ms:.0f} | {va.sim.attainment:.0%} | {s.num_replicas}, {s.cost:.0f} | "
        f"{sim_ttft} | {verdict} |"
    )


if __name__ == "__main__":
    main()
