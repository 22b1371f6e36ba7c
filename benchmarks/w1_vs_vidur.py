"""W1's latencies beside Vidur's, and how they move with the roofline's compute efficiency.

Runs examples/w1.yaml (10,000 requests, seed 0) through the Python API with the roofline's
``mfu_efficiency`` at the default 0.5 and at 0.6 / 0.7, and prints TTFT, TPOT and E2E
(p50 / p99) beside Vidur's published W1 figures, with the time our model gives a typical
Sarathi iteration (a 480-token chunk at 500 cached tokens plus 32 decodes at 1,200 tokens
of context). About 10 s.

    .venv/bin/python benchmarks/w1_vs_vidur.py
"""

from __future__ import annotations

from pathlib import Path

import yaml

from sincere.perf.roofline import Roofline
from sincere.sim.api import simulate
from sincere.sim.build import build_cluster

ROOT = Path(__file__).resolve().parents[1]


def iteration_ms(model: Roofline) -> float:
    """The model's time for one typical mixed W1 iteration (512 tokens in all)."""
    chunk, cached, decodes, ctx = 480, 500, 32, 1200
    pairs = chunk * cached + chunk * (chunk + 1) / 2.0
    return 1e3 * model.iteration_s_fast(1, chunk, cached, pairs, decodes, decodes * ctx)


def main() -> None:
    base = yaml.safe_load((ROOT / "examples" / "w1.yaml").read_text())
    columns = ["model", "512-token iteration ms", "TTFT p50 / p99 s", "TPOT p50 / p99 ms"]
    print("| " + " | ".join([*columns, "E2E p50 / p99 s"]) + " |")
    print("|---|---:|---:|---:|---:|")
    for mfu in (0.5, 0.6, 0.7):
        instance = dict(base["instances"][0])
        instance["step_model"] = {"kind": "roofline", "params": {"mfu_efficiency": mfu}}
        cfg = dict(base, instances=[instance])
        result = simulate(cfg)
        engine = build_cluster(result.config, result.requests_in).engines[0]
        step = engine.step_model
        s = result.summary
        print(
            f"| sincere roofline, MFU {mfu:.1f}{' (default)' if mfu == 0.5 else ''} "
            f"| {iteration_ms(step):.1f} "
            f"| {s['ttft_s']['p50']:.2f} / {s['ttft_s']['p99']:.2f} "
            f"| {1e3 * s['tpot_s']['p50']:.0f} / {1e3 * s['tpot_s']['p99']:.0f} "
            f"| {s['e2e_s']['p50']:.2f} / {s['e2e_s']['p99']:.2f} |"
        )
    print("| Vidur (published, A100 profile partly derived) | – | 0.37 / 1.9 | 34 / – | 5.1 / 23 |")


if __name__ == "__main__":
    main()
