"""Leave-one-model-out error of the fingerprint estimator on MaverIQ's full-model runs.

For each of falcon-7b, llama-2-7b and llama-2-13b the law's constants (exponents, decode
overhead per TP degree) are fitted without that model, and its measured full-model
latencies (every TP, PP, precision, KV precision, output length 10-200, batch 1) are
predicted from its own fingerprints. Prints one summary table per estimator variant,
then the default variant's error per (TP, PP) group, next to MaverIQ's own figure
(8.6 % mean, 3.7 % median, its estimator on its own data). Deterministic (no random
draws); one warm-up fit before the timed runs.

    python benchmarks/estimate_loo.py [--data ../shared/data/maveriq]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from sincere.estimate import FingerprintBank, read_measurements
from sincere.estimate.evaluate import (
    MAVERIQ_MEAN_ERROR,
    MAVERIQ_MEDIAN_ERROR,
    LooResult,
    leave_one_model_out,
)

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "maveriq"
VARIANTS = (  # (label, bank options, fit target)
    ("pooled TP overheads, fit on others' full runs (default)", {}, "measured"),
    ("pooled TP overheads, fit on fingerprints only", {}, "fingerprint"),
    (
        "MaverIQ verbatim: TP 2 reference, PP solved per layer, fit on fingerprints",
        {"tp_reference": "tp2", "pp_reference": "fingerprint"},
        "fingerprint",
    ),
    ("direct: fingerprint of the exact configuration", {"mode": "direct"}, "measured"),
)


def _summary(label: str, results: list[LooResult], took: float) -> None:
    print(f"\n{label}  ({took:.1f} s)")
    head = f"{'held-out model':<14} {'rows':>5} {'mean':>7} {'median':>7} {'p90':>7}"
    print(f"{head} {'worst (TP,PP)':>16} {'mem mean':>9}")
    for r in results:
        (tp, pp), worst = r.worst_group
        print(
            f"{r.model:<14} {r.num_points:>5} {r.mean_error:>7.1%} {r.median_error:>7.1%} "
            f"{r.p90_error:>7.1%} {f'{tp}x{pp} {worst:.1%}':>16} {r.memory_mean_error:>9.1%}"
        )
    n = sum(r.num_points for r in results)
    mean = sum(r.mean_error * r.num_points for r in results) / n
    print(f"{'all (pooled)':<14} {n:>5} {mean:>7.1%}")


def _groups(results: list[LooResult]) -> None:
    groups = sorted({g for r in results for g in r.group_errors})
    print("\nper (TP, PP) group, default variant (mean relative latency error):")
    print(f"{'TP x PP':<8}" + "".join(f"{r.model:>13}" for r in results))
    for g in groups:
        cells = [r.group_errors.get(g) for r in results]
        text = "".join(f"{'-' if c is None else f'{c:.1%}':>13}" for c in cells)
        print(f"{g[0]}x{g[1]:<6}{text}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    files = sorted(args.data.glob("fingerprint_data_collection*.csv"))
    rows = read_measurements(args.data / "full_model_data_collection_dev.csv")
    base = FingerprintBank.from_files(files)
    leave_one_model_out(base, rows, models=["falcon-7b"])  # warm-up
    default: list[LooResult] = []
    for label, options, target in VARIANTS:
        start = time.perf_counter()
        results = leave_one_model_out(base.with_options(**options), rows, target=target)
        _summary(label, results, time.perf_counter() - start)
        default = default or results
    _groups(default)
    worst = max(r.worst_group[1] for r in default)
    means = ", ".join(f"{r.model} {r.mean_error:.1%}" for r in default)
    print(
        f"\nMaverIQ (own estimator, own data): mean {MAVERIQ_MEAN_ERROR:.1%}, "
        f"median {MAVERIQ_MEDIAN_ERROR:.1%}"
    )
    print(f"result: default leave-one-model-out mean {means}; worst group {worst:.1%}")


if __name__ == "__main__":
    main()
