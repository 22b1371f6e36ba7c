"""Where the TTFT of a replayed vLLM run goes, real against simulated.

Usage: ``python benchmarks/ttft_split.py [RUNS_DIR]`` (default
``../shared/data/serving-runs/llmservingsim-vllm`` beside the checkout). Each run is
replayed as ``sincere validate runs`` replays it (seed 0, the ``vllm-v1`` execution model,
the run's own vLLM release's kernels), and its TTFT split in two, from the request's
arrival on the engine clock:

* **wait**: real ``scheduled_ts − arrival`` (the front end, then the engine's queue; an
  asynchronously scheduling engine admits a request one iteration before the iteration
  that computes it), simulated arrival to the start of the iteration that computes it
  (the preset's intake, the queue and the one-iteration lag);
* **prefill**: the rest, up to the first token.

Printed per run: the medians over all requests, then over the requests that met a short
queue (real wait < 0.1 s) by prompt length. Last, a lockstep test on the times of the
token events (every request's first and last token, i.e. iteration ends): the share of
gaps between consecutive events that fall between 4 ms and half the run's median TPOT.
Engines that step on their own put events of one inside the other's iterations (a
large share); engines that step together (data-parallel ranks of one expert-parallel
group, which meet at every MoE layer) end their iterations at the same instants (a
share near zero).

With the run's ``timeseries.csv`` (per second: prompt and generated tokens, running
requests), a rough real step time: in each second with more than 20 requests running,
iterations per second per engine ≈ generated tokens / running requests, and a least-squares
line of the step time on the prompt tokens per iteration (of all engines together) and the
running requests per engine. It prices a prompt token inside an iteration, to compare with
the step model's prefill chunk.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt

from sincere.experiment.serving_runs import RunComparison, compare_run
from sincere.workload.serving_runs import read_serving_runs

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RUNS = ROOT.parent / "shared" / "data" / "serving-runs" / "llmservingsim-vllm"
BINS = ((0, 300), (300, 1000), (1000, 3000), (3000, 1 << 30))
SHORT_WAIT_S = 0.1

FloatArray = npt.NDArray[np.float64]


def _ms(values: FloatArray) -> str:
    return f"{1e3 * float(np.median(values)):.0f}" if len(values) else "—"


def _mid_gaps(events: FloatArray, tpot_s: float) -> float:
    """Share of the gaps between consecutive events in (4 ms, tpot / 2)."""
    gaps = np.diff(np.sort(events))
    return float(np.mean((gaps > 0.004) & (gaps < tpot_s / 2)))


def step_regression(c: RunComparison) -> str | None:
    """The timeseries line of the real step time (module docstring), or None."""
    path = c.run.folder / "timeseries.csv"
    if not path.is_file():
        return None
    table = np.genfromtxt(path, delimiter=",", names=True)
    keep = (table["running"] > 20) & (table["gen_throughput"] > 0)
    running, gen = table["running"][keep], table["gen_throughput"][keep]
    if keep.sum() < 4:
        return None
    per_s = gen / running  # iterations per second of each engine
    prompt = table["prompt_throughput"][keep] / per_s
    x = np.column_stack([np.ones(len(per_s)), prompt, running / c.run.engine.dp])
    coef = np.linalg.lstsq(x, 1.0 / per_s, rcond=None)[0]
    return (
        f"real step ≈ {1e3 * coef[0]:.1f} ms + {1e6 * coef[1]:.0f} µs per prompt token "
        f"(all engines) + {1e3 * coef[2]:.2f} ms per running request of an engine "
        f"({int(keep.sum())} seconds)"
    )


def split(c: RunComparison) -> None:
    """Print ``c``'s TTFT split and its lockstep test."""
    real, sim = c.real, c.sim
    parts = {
        "real": (real["queue_s"], real["ttft_s"] - real["queue_s"], real["ttft_s"]),
        "sim": (sim["queue_s"], sim["ttft_s"] - sim["queue_s"], sim["ttft_s"]),
    }
    print(f"\n## {c.run.name} (DP {c.run.engine.dp}, TP {c.run.engine.tp})")
    print("| requests | side | wait ms | prefill ms | TTFT ms |")
    print("|---|---|---:|---:|---:|")
    for side, (wait, pre, ttft) in parts.items():
        print(f"| all {len(ttft)} | {side} | {_ms(wait)} | {_ms(pre)} | {_ms(ttft)} |")
    short = real["queue_s"] < SHORT_WAIT_S
    prompt = c.run.input_tokens
    for lo, hi in BINS:
        sel = short & (prompt >= lo) & (prompt < hi)
        if not sel.any():
            continue
        label = f"short wait, {lo}-{hi if hi < 1 << 30 else '…'} prompt tokens: {int(sel.sum())}"
        for side, (wait, pre, ttft) in parts.items():
            print(f"| {label} | {side} | {_ms(wait[sel])} | {_ms(pre[sel])} | {_ms(ttft[sel])} |")
    tpot = float(np.nanmedian(real["tpot_s"]))
    arrival = c.run.arrival_ts
    real_events = np.concatenate([c.run.first_token_ts, c.run.last_token_ts])
    sim_events = np.concatenate([arrival + sim["ttft_s"], arrival + sim["e2e_s"]])
    print(
        f"lockstep test, gaps in (4 ms, {1e3 * tpot / 2:.0f} ms): real "
        f"{100 * _mid_gaps(real_events, tpot):.1f} %, "
        f"simulated {100 * _mid_gaps(sim_events, tpot):.1f} %"
    )
    line = step_regression(c)
    if line is not None:
        print(line)


def main(argv: list[str]) -> None:
    """Replay every run and print its split."""
    runs = read_serving_runs(Path(argv[0]) if argv else DEFAULT_RUNS)
    for run in runs:
        split(compare_run(run, seed=0))


if __name__ == "__main__":
    main(sys.argv[1:])
