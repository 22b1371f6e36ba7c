"""Where speculative decoding pays, and two published speed-ups set beside the model.

Usage: ``python benchmarks/speculation_study.py [--plot benchmarks/speculation_study.png]``
(about a second; the roofline's default constants, nothing fitted here). ``--plot`` draws
part 1 as speed-up against batch size (1 to 1,024), one line per acceptance rate, with
EAGLE-3's two published points.

1. Llama-3.1-8B on one H100 (bf16, SGLang's execution model, 2,048 tokens of context per
   sequence) with an EAGLE head drafting 3 tokens: the speed-up in time per output token
   over plain decoding, by batch size and acceptance rate (one rate for every position).
2. Published figures, each with its source, and what the model says at the same point:
   DeepSeek-V3's MTP (1.8x tokens per second at 85-90 % second-token acceptance; DeepSeek-V3
   Technical Report, sec. 5.4.3) on 8 H200s in fp8 at one sequence; EAGLE-3 on
   Llama-3.1-8B-Instruct on one H100 in SGLang: 158.34 -> 373.25 tokens/s (2.36x, SGLang's
   speculative decoding docs, MT-bench) and "a 1.38x throughput improvement at a batch size
   of 64" (EAGLE-3 paper, arXiv 2503.01840, abstract). EAGLE-3 drafts a tree there; the
   model prices the tree as SGLang's defaults size it (5 draft steps, 8 positions
   verified per sequence) with one acceptance rate along the accepted path, which is not
   published: the study finds the rate that gives 2.36x at one sequence and reports what
   that rate predicts at 64.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from sincere.catalog.loader import default_catalog
from sincere.perf.base import Deployment, StepTimeModel
from sincere.perf.execution import execution_params, with_execution
from sincere.perf.factory import StepModelConfig
from sincere.perf.speculation import SpeculationParams, SpeculativeDecode, speculation_params

CONTEXT = 2048
BATCHES = (1, 4, 16, 32, 64, 128, 256)
RATES = (0.5, 0.6, 0.7, 0.8, 0.9)


def target(
    model: str, accelerator: str, tp: int, precision: str, preset: str
) -> tuple[StepTimeModel, int]:
    """The step model of a deployment under ``preset``, and its layer count."""
    catalog = default_catalog()
    dep = Deployment(catalog.model(model), catalog.accelerator(accelerator),
                     precision=precision, tp=tp)  # fmt: skip
    inner = StepModelConfig(kind="roofline").build(dep)
    return with_execution(inner, execution_params(preset, {}), 256), dep.model.num_layers


def grid() -> None:
    """Part 1: speed-up by batch size and acceptance."""
    step, layers = target("llama-3.1-8b", "H100-SXM", 1, "bf16", "sglang")
    print("Llama-3.1-8B, 1 H100, bf16, sglang, EAGLE head, 3 drafted, context 2048")
    print("| acceptance | tokens/step | " + " | ".join(f"B={b}" for b in BATCHES) + " |")
    print("|---:|---:|" + "---:|" * len(BATCHES))
    for p in RATES:
        spec = SpeculativeDecode(step, SpeculationParams("eagle", 3, (p,)), layers)
        cells = " | ".join(f"{spec.speedup(b, b * CONTEXT):.2f}" for b in BATCHES)
        print(f"| {p} | {spec.params.tokens_per_step():.2f} | {cells} |")


def tree(rate: float) -> SpeculationParams:
    """SGLang's EAGLE defaults: 5 draft steps, 8 positions verified per sequence."""
    return SpeculationParams("eagle", 5, (rate,), verify_tokens=8)


def rate_for(step: StepTimeModel, layers: int, want: float) -> float:
    """The rate at which one sequence's speed-up under :func:`tree` is ``want``."""
    lo, hi = 0.0, 1.0
    for _ in range(50):
        mid = (lo + hi) / 2
        spec = SpeculativeDecode(step, tree(mid), layers)
        lo, hi = (mid, hi) if spec.speedup(1, CONTEXT) < want else (lo, mid)
    return (lo + hi) / 2


def published() -> None:
    """Part 2: the published figures beside the model."""
    print("\n| case | published | model |")
    print("|---|---:|---:|")
    step, layers = target("deepseek-v3", "H200", 8, "fp8", "sglang")
    mtp = SpeculativeDecode(step, speculation_params("mtp"), layers)
    print(f"| DeepSeek-V3 MTP, 8 H200 fp8, 1 sequence, acceptance 0.85 | 1.8x | "
          f"{mtp.speedup(1, CONTEXT):.2f}x |")  # fmt: skip
    step, layers = target("llama-3.1-8b", "H100-SXM", 1, "bf16", "sglang")
    rate = rate_for(step, layers, 373.25 / 158.34)
    chain = SpeculativeDecode(step, tree(rate), layers)
    print(f"| EAGLE-3, Llama-3.1-8B, 1 H100, 1 sequence | 2.36x | "
          f"{chain.speedup(1, CONTEXT):.2f}x (rate {rate:.3f} solved for it, "
          f"{chain.params.tokens_per_step():.2f} tokens/step) |")  # fmt: skip
    print(f"| EAGLE-3, same rate, batch 64 | 1.38x | {chain.speedup(64, 64 * CONTEXT):.2f}x |")


def plot(path: Path) -> None:
    """Part 1 as a figure: speed-up over plain decoding against batch size, per rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    step, layers = target("llama-3.1-8b", "H100-SXM", 1, "bf16", "sglang")
    batches = [2**i for i in range(11)]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for p in RATES:
        spec = SpeculativeDecode(step, SpeculationParams("eagle", 3, (p,)), layers)
        ax.plot(batches, [spec.speedup(b, b * CONTEXT) for b in batches], marker="o",
                markersize=3, label=f"acceptance {p}")  # fmt: skip
    ax.scatter([1, 64], [2.36, 1.38], color="black", marker="x", zorder=3,
               label="EAGLE-3 published (tree draft)")  # fmt: skip
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size (sequences, 2,048 tokens of context each)")
    ax.set_ylabel("speed-up in time per output token")
    ax.set_title("Llama-3.1-8B, 1 H100, EAGLE head drafting 3 (model)", fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    print(f"wrote {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot", type=Path, default=None, help="write part 1 as a PNG")
    args = parser.parse_args()
    started = time.perf_counter()
    grid()
    published()
    if args.plot is not None:
        plot(args.plot)
    print(f"\n{time.perf_counter() - started:.1f} s")
