"""The engine's ITL histogram (engine/gaps.py) against DDSketch and HdrHistogram.

Records every call the engines make to their :class:`~sincere.engine.gaps.GapHistogram`
during a W1 run (examples/w1.yaml, ``--requests`` requests, seed 0): closed-form decode runs
(``steps`` gaps growing affinely, each ``weight`` times), single iterations and preemption
gaps. Then replays those calls into

* ``GapHistogram`` (200 log bins per decade, runs buffered and binned with NumPy);
* ``ddsketch.DDSketch`` (relative accuracy 0.5 %, about our bins' half-width), one weighted
  ``add`` per gap (a run expanded into its gaps);
* ``hdrh.histogram.HdrHistogram`` (1 µs to 1e5 s, 3 significant digits), one
  ``record_value`` per gap in integer microseconds with the weight as its count;

and compares CPU time of the replay (best of ``--repeat``) and the p50 / p90 / p99 / p99.9
against the exact weighted quantiles of all gaps (every run expanded in NumPy).

    .venv/bin/python benchmarks/itl_sketch.py --requests 10000

Needs ``ddsketch`` and ``hdrhistogram`` (measurement only; not dependencies of sincere).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from ddsketch import DDSketch
from hdrh.histogram import HdrHistogram

from sincere.engine.gaps import GapHistogram
from sincere.sim import simulate

Call = tuple[str, tuple[Any, ...]]
QUANTILES = (0.5, 0.9, 0.99, 0.999)


def record_calls(num_requests: int) -> list[Call]:
    """Every add_run / add_each call the engines make on W1."""
    calls: list[Call] = []
    add_run, add_each = GapHistogram.add_run, GapHistogram.add_each

    def run(self: GapHistogram, *a: Any) -> None:
        calls.append(("run", a))
        add_run(self, *a)

    def each(self: GapHistogram, gaps: Any, *a: Any) -> None:
        calls.append(("each", (tuple(gaps), *a)))
        add_each(self, gaps, *a)

    cfg = yaml.safe_load(Path("examples/w1.yaml").read_text(encoding="utf-8"))
    cfg["workload"]["num_requests"] = num_requests
    GapHistogram.add_run, GapHistogram.add_each = run, each  # type: ignore[method-assign]
    try:
        simulate(cfg)
    finally:
        GapHistogram.add_run, GapHistogram.add_each = add_run, add_each  # type: ignore[method-assign]
    return calls


def gaps_of(calls: list[Call]) -> tuple[np.ndarray, np.ndarray]:
    """Every gap and its weight, expanded."""
    values: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    for kind, args in calls:
        if kind == "run":
            first, slope, steps, weight, _ = args
            values.append(first + slope * np.arange(steps))
            weights.append(np.full(steps, weight))
        else:
            gaps, weight, _ = args
            values.append(np.asarray(gaps, dtype=np.float64))
            weights.append(np.full(len(gaps), weight))
    return np.concatenate(values), np.concatenate(weights)


def exact(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """Weighted quantile: the smallest value with at least ``q`` of the weight at or below."""
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cum, q * cum[-1])])


def replay_ours(calls: list[Call]) -> Callable[[float], float]:
    hist = GapHistogram()
    for kind, args in calls:
        if kind == "run":
            hist.add_run(*args)
        else:
            hist.add_each(*args)
    hist.flush()
    return hist.quantile


def replay_dd(calls: list[Call]) -> Callable[[float], float]:
    sketch = DDSketch(relative_accuracy=0.005)
    add = sketch.add
    for kind, args in calls:
        if kind == "run":
            first, slope, steps, weight, _ = args
            for j in range(steps):
                add(first + j * slope, weight)
        else:
            gaps, weight, _ = args
            for g in gaps:
                add(g, weight)
    return lambda q: float(sketch.get_quantile_value(q))


def replay_hdr(calls: list[Call]) -> Callable[[float], float]:
    hist = HdrHistogram(1, 100_000_000_000, 3)  # microseconds
    record = hist.record_value
    for kind, args in calls:
        if kind == "run":
            first, slope, steps, weight, _ = args
            for j in range(steps):
                record(round((first + j * slope) * 1e6), int(weight))
        else:
            gaps, weight, _ = args
            for g in gaps:
                record(round(g * 1e6), int(weight))
    return lambda q: hist.get_value_at_percentile(q * 100) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    calls = record_calls(args.requests)
    values, weights = gaps_of(calls)
    truth = {q: exact(values, weights, q) for q in QUANTILES}
    print(json.dumps({"calls": len(calls), "gaps": int(weights.sum())}), flush=True)
    for name, replay in (("gaps.py", replay_ours), ("ddsketch", replay_dd), ("hdrh", replay_hdr)):
        best, quantile = float("inf"), None
        for _ in range(max(1, args.repeat)):
            started = time.process_time()
            quantile = replay(calls)
            best = min(best, time.process_time() - started)
        assert quantile is not None
        errors = {
            f"p{q * 100:g}_err_pct": round(100 * (quantile(q) / truth[q] - 1), 3) for q in QUANTILES
        }
        row = {"sketch": name, "replay_cpu_s": round(best, 3), **errors}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
