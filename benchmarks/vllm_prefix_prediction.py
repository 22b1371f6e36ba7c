"""The simulator's prediction for the real vLLM (CPU) prefix-caching measurement.

Simulates the request pattern of ``tests/serve/gateway/test_vllm_prefix.py``: the tiny random-weight
Llama (``tiny-llama``) on the ``cpu`` accelerator, continuous batching with prefix caching
on and vLLM's CPU block size (128 tokens), five prompts of 753 tokens (the measured 3,765
queried tokens over five requests) whose first 750 tokens are shared, one cold request then
four warm ones, 2 output tokens each, sent one after another (1 s apart, each long done
before the next). The step time comes from each fit recorded for that engine in
``examples/profiles/vllm-cpu-tiny-llama/`` (its ``params_file``). Prints, per fit, the
predicted cold TTFT, the warm median TTFT, the reduction and the prefix-cache hit tokens.

Run: ``python benchmarks/vllm_prefix_prediction.py [--fits inferno,table,niyama,roofline]``.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from sincere.core.request import RequestArrays
from sincere.sim import simulate

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ROOT / "examples" / "profiles" / "vllm-cpu-tiny-llama"
FITS = {"inferno": "inferno", "table": "iteration-table", "niyama": "niyama-binned",
        "roofline": "roofline"}  # fmt: skip
BLOCK_TOKENS = 128  # vLLM's default block size on CPU; the measured hits (4 x 640) agree
PROMPT_TOKENS = 753  # 3,765 queried tokens over the five requests
SHARED_TOKENS = 750  # BOS + the repeated sentence; the last words differ per request
NUM_WARM = 4
GAP_S = 1.0


def requests() -> RequestArrays:
    """One cold then four warm requests; block ids mark the shared full blocks."""
    shared = SHARED_TOKENS // BLOCK_TOKENS  # full blocks inside the shared prefix
    num_blocks = -(-PROMPT_TOKENS // BLOCK_TOKENS)
    ids = [
        [*range(shared), *(1000 * (r + 1) + b for b in range(shared, num_blocks))]
        for r in range(1 + NUM_WARM)
    ]
    n = len(ids)
    return RequestArrays.build(
        [k * GAP_S for k in range(n)],
        [PROMPT_TOKENS] * n,
        [2] * n,
        models=("tiny-llama",),
        block_ids=ids,
        block_tokens=BLOCK_TOKENS,
    )


def config(fit: str) -> dict[str, Any]:
    """One tiny-llama instance on the CPU with the fit's step model, caching on."""
    return {
        "seed": 0,
        "workload": {  # only validated: requests() replaces the generated workload
            "num_requests": 1 + NUM_WARM,
            "models": {"tiny-llama": 1.0},
            "arrival": {"kind": "poisson", "rate": 1.0 / GAP_S},
            "lengths": {
                "prompt": {"kind": "fixed", "tokens": PROMPT_TOKENS},
                "output": {"kind": "fixed", "tokens": 2},
            },
        },
        "instances": [
            {
                "name": "cpu",
                "model": "tiny-llama",
                "accelerator": "cpu",
                "precision": "bf16",
                "step_model": {"kind": FITS[fit], "params_file": str(PROFILES / f"{fit}.yaml")},
                "engine": {
                    "kind": "continuous",
                    "enable_prefix_caching": True,
                    "block_size": BLOCK_TOKENS,
                },
            }
        ],
    }


def predict(fit: str) -> dict[str, float]:
    """Cold TTFT, warm median TTFT, reduction and hit tokens predicted with ``fit``."""
    result = simulate(config(fit), requests=requests())
    table = result.requests.sort_by("arrival_at").to_pydict()
    ttft = [float(t) for t in table["ttft_s"]]
    warm = statistics.median(ttft[1:])
    return {
        "cold_s": ttft[0],
        "warm_s": warm,
        "reduction": 1.0 - warm / ttft[0],
        "hit_tokens": float(sum(table["cached_tokens"])),
    }


def main() -> None:
    """Print one Markdown row per fit."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fits", default=",".join(FITS), help="comma-separated fits")
    fits = parser.parse_args().fits.split(",")
    print("| fit | cold TTFT (s) | warm TTFT, median (s) | reduction | hit tokens |")
    print("|---|---|---|---|---|")
    for fit in fits:
        p = predict(fit)
        print(
            f"| {fit} | {p['cold_s']:.3f} | {p['warm_s']:.3f} | {p['reduction']:.0%} "
            f"| {p['hit_tokens']:.0f} |"
        )


if __name__ == "__main__":
    main()
