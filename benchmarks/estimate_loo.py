"""Leave-one-model-out error of the fingerprint estimator on MaverIQ's full-model runs.

For each of falcon-7b, llama-2-7b and llama-2-13b the parallelism-law exponents are
fitted without that model, and its measured full-model latencies (every TP, PP,
precision, KV precision, output length 10-200, batch 1) are predicted from its own
fingerprints. Prints one table per estimator variant, next to MaverIQ's own figure
(8.6 % mean, 3.7 % median, its estimator on its own data).

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
    leave_one_model_out,
)

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "maveriq"
VARIANTS = (  # (label, bank options, fit target)
    ("law, same-depth PP reference, fit on fingerprints (default)", {}, "fingerprint"),
    ("law, same-depth PP reference, fit on others' full runs", {}, "measured"),
    (
        "law, PP reference solved per layer (MaverIQ verbatim)",
        {"pp_reference": "fingerprint"},
        "fingerprint",
    ),
    ("direct: fingerprint of the exact configuration", {"mode": "direct"}, "fingerprint"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    files = sorted(args.data.glob("fingerprint_data_collection*.csv"))
    rows = read_measurements(args.data / "full_model_data_collection_dev.csv")
    base = FingerprintBank.from_files(files)
    for label, options, target in VARIANTS:
        start = time.perf_counter()
        results = leave_one_model_out(base.with_options(**options), rows, target=target)
        took = time.perf_counter() - start
        print(f"\n{label}  ({took:.1f} s)")
        head = f"{'held-out model':<14} {'rows':>5} {'mean':>7} {'median':>7} {'p90':>7}"
        print(f"{head} {'mem mean':>9}")
        for r in results:
            print(
                f"{r.model:<14} {r.num_points:>5} {r.mean_error:>7.1%} {r.median_error:>7.1%} "
                f"{r.p90_error:>7.1%} {r.memory_mean_error:>9.1%}"
            )
        n = sum(r.num_points for r in results)
        mean = sum(r.mean_error * r.num_points for r in results) / n
        print(f"{'all (pooled)':<14} {n:>5} {mean:>7.1%}")
    print(
        f"\nMaverIQ (own estimator, own data): mean {MAVERIQ_MEAN_ERROR:.1%}, "
        f"median {MAVERIQ_MEDIAN_ERROR:.1%}"
    )


if __name__ == "__main__":
    main()
