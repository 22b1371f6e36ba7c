"""The engine execution model against real closed-loop points: eager (2024) vs vllm-v1.

Usage: ``python benchmarks/engine_execution.py [CSV] [--max-concurrency C]`` (default
``../shared/data/serving-runs/inferencex/blackwell_operating_points.csv`` beside the
checkout, concurrency up to 64).

The points: every colocated vLLM row of Llama-3.1-70B in fp8 on B200 (TP 1-8, 1k/1k,
1k/8k and 8k/1k tokens, 4-64 concurrent clients). Each is simulated as the benchmark ran it
(InferenceX's client: vLLM's ``benchmark_serving`` with random lengths drawn uniformly in
``[0.8 L, L]``, ``10 C`` prompts, ``--max-concurrency C``, ``--ignore-eos``; the server
with ``--max-num-seqs C --max-num-batched-tokens 8192 --no-enable-prefix-caching``): a
closed loop of ``C`` clients, no warm-up left out (the benchmark's means include the first
wave), the default step model (B200's kernel-fitted roofline), fp8 KV cache, seed 0: the
set-up of ``sincere validate inferencex`` (``experiment.inferencex.point_config``), with
the execution preset replaced. Nothing here is fitted to these points. Prints per point
the measured and simulated mean TPOT and TTFT under both execution models, and the median
absolute percentage error (bias in brackets) of each.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

from sincere.experiment.inferencex import PointSpec, Skip, point_config, point_spec
from sincere.sim.api import simulate
from sincere.workload.inferencex import OperatingPoint, read_operating_points

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CSV = ROOT.parent / "shared/data/serving-runs/inferencex/blackwell_operating_points.csv"
PRESETS = ("eager", "vllm-v1")
MODEL = "meta-llama/Llama-3.1-70B"


def points(path: Path, max_concurrency: int) -> list[PointSpec]:
    """The vLLM fp8 Llama-3.1-70B points on B200, colocated, up to ``max_concurrency``,
    set up as ``sincere validate inferencex`` sets every point up."""
    chosen = []
    for p in read_operating_points(path):
        if (p.model, p.backend, p.mode, p.precision, p.system) != (
            MODEL,
            "vllm",
            "agg",
            "fp8",
            "b200_sxm",
        ) or p.clients > max_concurrency:
            continue
        spec = point_spec(p)
        if isinstance(spec, Skip):
            raise SystemExit(f"point {p.id} is not simulated: {spec}")
        chosen.append(spec)
    return sorted(chosen, key=lambda s: (s.tp, s.point.isl, s.point.osl, s.clients))


def measure(spec: PointSpec, preset: str) -> tuple[float, float]:
    """Simulated mean TTFT and mean TPOT (seconds) of ``spec`` under ``preset``."""
    result = simulate(point_config(dataclasses.replace(spec, engine_preset=preset)))
    req, rec = result.requests_in, result.records
    ttft = rec.first_token_at - req.arrival_at
    tpot = (rec.finished_at - rec.first_token_at) / np.maximum(req.output_tokens - 1, 1)
    return float(np.mean(ttft)), float(np.mean(tpot))


def _summary(errors: list[float]) -> str:
    e = np.asarray(errors)
    return f"{100 * np.median(np.abs(e)):.1f} ({100 * np.median(e):+.1f})"


def main(argv: list[str]) -> None:
    """Simulate every point under both presets and print the table."""
    given = [a for a in argv if not a.startswith("--")]
    cap = int(argv[argv.index("--max-concurrency") + 1]) if "--max-concurrency" in argv else 64
    if "--max-concurrency" in argv:
        given.remove(str(cap))
    rows = points(Path(given[0]) if given else DEFAULT_CSV, cap)
    errors: dict[str, list[float]] = {f"{p} {m}": [] for p in PRESETS for m in ("ttft", "tpot")}
    print("| TP | in/out | C | TPOT real | eager | vllm-v1 | TTFT real | eager | vllm-v1 |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    started = time.perf_counter()
    for spec in rows:
        row: OperatingPoint = spec.point
        real_ttft, real_tpot = row.ttft_ms / 1e3, row.tpot_ms / 1e3
        sim = {p: measure(spec, p) for p in PRESETS}
        for p, (ttft, tpot) in sim.items():
            errors[f"{p} ttft"].append((ttft - real_ttft) / real_ttft)
            errors[f"{p} tpot"].append((tpot - real_tpot) / real_tpot)
        print(f"| {spec.tp} | {row.isl}/{row.osl} | {spec.clients} | "
              f"{real_tpot * 1e3:.2f} | {sim['eager'][1] * 1e3:.2f} | "
              f"{sim['vllm-v1'][1] * 1e3:.2f} | {real_ttft * 1e3:.0f} | "
              f"{sim['eager'][0] * 1e3:.0f} | {sim['vllm-v1'][0] * 1e3:.0f} |")  # fmt: skip
    print(f"\n{len(rows)} points, {time.perf_counter() - started:.0f} s")
    print("| execution model | TTFT median APE % (bias) | TPOT median APE % (bias) |")
    print("|---|---:|---:|")
    for p in PRESETS:
        print(f"| {p} | {_summary(errors[f'{p} ttft'])} | {_summary(errors[f'{p} tpot'])} |")


if __name__ == "__main__":
    main(sys.argv[1:])
