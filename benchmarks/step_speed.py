"""Cost of one step-time answer on the simulator's hot path: the roofline against a baseline.

Times ``iteration_s_fast`` (the engines' per-iteration call) and ``decode_steps_s`` (a run
of identical decode iterations in closed form) of the roofline with the A100 defaults on
50,000 W1-like batches (60 % mixed: a chunk of up to 480 tokens at up to 3,000 cached plus
up to 32 decodes; 40 % decode-only: 1–128 sequences at 100–4,000 tokens of context; seed 0),
beside Inferno's linear form (a few multiplications, reached through the base class's
generic path, which builds a ``Batch`` per call), in the same process: the ratio is what to
compare across machines. CPU time, best of 5 after a
warm-up; the compiled modules are used when a current build exists (``sincere native``).

    python benchmarks/step_speed.py
    python benchmarks/step_speed.py --allreduce   # + Llama-3-70B over 4 H100s, the
                                                   # all-reduce's factor by size on and off
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from sincere import native
from sincere.catalog import get_accelerator, get_model
from sincere.perf import Deployment, InfernoLinear, Roofline, StepTimeModel
from sincere.perf.calibration import default_roofline_params

Call = tuple[int, int, int, float, int, int]


def batches(count: int, seed: int = 0) -> list[Call]:
    """W1-like ``iteration_s_fast`` arguments."""
    rng = random.Random(seed)
    out: list[Call] = []
    for _ in range(count):
        if rng.random() < 0.6:
            chunk, cached, n = rng.randint(1, 480), rng.randint(0, 3000), rng.randint(0, 32)
            pairs = chunk * cached + chunk * (chunk + 1) / 2
            out.append((1, chunk, cached, pairs, n, n * rng.randint(100, 4000)))
        else:
            n = rng.randint(1, 128)
            out.append((0, 0, 0, 0.0, n, n * rng.randint(100, 4000)))
    return out


def best_us(work: Callable[[], None], calls: int, repeats: int = 5) -> float:
    """Best CPU microseconds per call over ``repeats`` runs of ``work``."""
    work()  # warm-up (fills the roofline's per-token memo)
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        work()
        best = min(best, time.process_time() - start)
    return best / calls * 1e6


def measure(model: StepTimeModel, calls: Sequence[Call]) -> tuple[float, float]:
    """Microseconds per ``iteration_s_fast`` and per ``decode_steps_s`` (50-step runs)."""
    fast = model.iteration_s_fast

    def iterations() -> None:
        for c in calls:
            fast(*c)

    runs = calls[:20_000]

    def decode_runs() -> None:
        for c in runs:
            model.decode_steps_s(c[4] or 1, c[5] or 100, 50)

    return best_us(iterations, len(calls)), best_us(decode_runs, len(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--allreduce",
        action="store_true",
        help="also time Llama-3-70B over 4 H100s with the all-reduce's factor by message "
        "size and without it (the other factors by shape kept), in the same process",
    )
    args = parser.parse_args()
    dep = Deployment(get_model("llama-3-8b"), get_accelerator("A100-80GB"))
    calls = batches(50_000)
    roofline = measure(Roofline(dep), calls)
    inferno = measure(InfernoLinear(20.0, 0.4, 160.0, 0.013), calls)
    print(native.status().line())
    print("| model | iteration_s_fast µs/call | decode_steps_s µs/call |")
    print("|---|---:|---:|")
    print(f"| roofline (A100 defaults) | {roofline[0]:.3f} | {roofline[1]:.3f} |")
    if args.allreduce:
        h100 = get_accelerator("H100-SXM")
        tp4 = Deployment(get_model("llama-3-70b"), h100, tp=4)
        params = default_roofline_params(h100)
        form = replace(params, allreduce_grid=None)
        for label, p in (("factor by message size", params), ("form alone", form)):
            got = measure(Roofline(tp4, p), calls)
            print(f"| roofline, 70B over 4 H100s, all-reduce {label} | {got[0]:.3f} "
                  f"| {got[1]:.3f} |")  # fmt: skip
    print(f"| inferno (baseline) | {inferno[0]:.3f} | {inferno[1]:.3f} |")
    print(
        f"one-line: roofline / inferno per call: iteration {roofline[0] / inferno[0]:.2f}x, "
        f"decode run {roofline[1] / inferno[1]:.2f}x"
    )


if __name__ == "__main__":
    main()
