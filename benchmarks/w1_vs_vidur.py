"""W1's latencies beside Vidur's, with the A100 step times fitted to Vidur's own kernels.

Runs examples/w1.yaml (10,000 requests, seed 0) through the Python API with

* the roofline at the A100 defaults fitted to Vidur's A100 operator profiles (shipped,
  ``sincere fit gpu-profiles``) -- sincere's default;
* the same without its CPU term (``overhead_s = overhead_per_seq_s = 0``): Vidur's W1
  run does not model the CPU's work per step;
* the ``profiled`` model: Vidur's A100 operator tables composed per iteration, with and
  without the engine-steps CPU time (Llama-3-8B's attention is not in the published
  tables; Llama-2-70B TP2's table, which has the same 32 query heads per GPU, is
  scaled to Llama-3-8B's 8 KV heads). Needs ``--profiles`` (skipped without);

and prints TTFT, TPOT and E2E (p50 / p99) beside Vidur's published W1 figures, with the
time each model gives a typical Sarathi iteration (a 480-token chunk at 500 cached
tokens plus 32 decodes at 1,200 tokens of context). About 15 s.

    python benchmarks/w1_vs_vidur.py [--profiles ../shared/data/gpu-profiles]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from sincere.perf.base import StepTimeModel
from sincere.sim.api import simulate
from sincere.sim.build import build_cluster

ROOT = Path(__file__).resolve().parents[1]
NO_CPU = {"overhead_s": 0.0, "overhead_per_seq_s": 0.0}
VIDUR = "| Vidur (published, A100 profile partly derived) | – | 0.37 / 1.9 | 34 / – | 5.1 / 23 |"
PREVIOUS = (
    "| sincere roofline before the fit (datasheet: 50 % MFU, 85 % HBM, 1 ms; recorded) "
    "| 55.0 | 1.37 / 7.65 | 55 / 56 | 8.67 / 33.35 |"
)


def iteration_ms(model: StepTimeModel) -> float:
    """The model's time for one typical mixed W1 iteration (512 tokens in all)."""
    chunk, cached, decodes, ctx = 480, 500, 32, 1200
    pairs = chunk * cached + chunk * (chunk + 1) / 2.0
    return 1e3 * model.iteration_s_fast(1, chunk, cached, pairs, decodes, decodes * ctx)


def run(base: dict[str, Any], label: str, step_model: dict[str, Any]) -> str:
    """One W1 simulation with ``step_model``: a table row."""
    instance = dict(base["instances"][0], step_model=step_model)
    result = simulate(dict(base, instances=[instance]))
    engine = build_cluster(result.config, result.requests_in).engines[0]
    s = result.summary
    return (
        f"| {label} | {iteration_ms(engine.step_model):.1f} "
        f"| {s['ttft_s']['p50']:.2f} / {s['ttft_s']['p99']:.2f} "
        f"| {1e3 * s['tpot_s']['p50']:.0f} / {1e3 * s['tpot_s']['p99']:.0f} "
        f"| {s['e2e_s']['p50']:.2f} / {s['e2e_s']['p99']:.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--profiles", type=Path, default=ROOT.parent / "shared" / "data" / "gpu-profiles"
    )
    args = parser.parse_args()
    base = yaml.safe_load((ROOT / "examples" / "w1.yaml").read_text())
    cases: list[tuple[str, dict[str, Any]]] = [
        ("sincere roofline, fitted A100 defaults", {"kind": "roofline"}),
        ("sincere roofline, fitted, without the CPU term", {"kind": "roofline", "params": NO_CPU}),
    ]
    if args.profiles.is_dir():
        profiled = {"profiles": str(args.profiles), "scale_attention": True}
        cases += [
            (
                "profiled: Vidur's A100 tables composed, with CPU",
                {"kind": "profiled", "params": profiled},
            ),
            (
                "profiled: Vidur's A100 tables composed, no CPU",
                {"kind": "profiled", "params": dict(profiled, cpu=False)},
            ),
        ]
    print(
        "| model | 512-token iteration ms | TTFT p50 / p99 s | TPOT p50 / p99 ms "
        "| E2E p50 / p99 s |"
    )
    print("|---|---:|---:|---:|---:|")
    for label, step_model in cases:
        print(run(base, label, step_model), flush=True)
    print(PREVIOUS)
    print(VIDUR)


if __name__ == "__main__":
    main()
