"""Where the simulated TTFT falls short: the fixed and per-token parts, real against simulated.

Usage: ``python benchmarks/ttft_intercepts.py POINTS_CSV [--clients C]`` where
``POINTS_CSV`` is the ``points.csv`` that ``benchmarks/validate_inferencex.py --out OUT``
(or ``sincere validate inferencex --out OUT``) writes; ``C`` (default 4) picks the points of
that many concurrent clients.

For every deployment (backend, model, system, precision, TP, EP, attention DP) with points at
both 1k- and 8k-token prompts, a line through the two mean TTFTs (median over the output
lengths), with the mean prompt the benchmark draws (0.9 L: lengths uniform in [0.8 L, L]):
the slope is what a prompt token costs, the intercept what a request pays whatever its
prompt (the wait for the iteration in flight, the decode steps it shares, the front end, any
fixed cost of a prefill iteration). Both lines, real and simulated, side by side, so a
missing fixed cost shows as an intercept gap and a wrong prefill speed as a slope gap.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

GROUP = ["backend", "catalog_model", "system", "precision", "tp", "ep", "attention_dp"]
SHORT, LONG = 1024, 8192
MEAN_SHARE = 0.9  # the benchmark's lengths are uniform in [0.8 L, L]


def lines(points: pd.DataFrame, clients: int) -> pd.DataFrame:
    """Per deployment, the real and simulated TTFT lines (ms, and µs per prompt token)."""
    chosen = points[(points.clients == clients) & points.isl.isin([SHORT, LONG])]
    ttft = chosen.groupby([*GROUP, "isl"])[["ttft_real_ms", "ttft_sim_ms"]].median()
    rows = []
    for key, group in ttft.groupby(level=GROUP):
        by_isl = group.droplevel(GROUP)
        if len(by_isl) < 2:
            continue
        span = MEAN_SHARE * (LONG - SHORT)
        row = dict(zip(GROUP, key, strict=True))
        for side in ("real", "sim"):
            short, long = by_isl.loc[SHORT, f"ttft_{side}_ms"], by_isl.loc[LONG, f"ttft_{side}_ms"]
            slope = (long - short) / span
            row[f"{side}_icpt_ms"] = short - slope * MEAN_SHARE * SHORT
            row[f"{side}_us_per_tok"] = 1000 * slope
        rows.append(row)
    table = pd.DataFrame(rows)
    if not table.empty:
        table["icpt_gap_ms"] = table.real_icpt_ms - table.sim_icpt_ms
    return table


def main(argv: list[str]) -> None:
    """Print the table of :func:`lines` as markdown."""
    given = [a for a in argv if not a.startswith("--")]
    clients = int(argv[argv.index("--clients") + 1]) if "--clients" in argv else 4
    if "--clients" in argv:
        given.remove(str(clients))
    if not given:
        raise SystemExit(__doc__)
    table = lines(pd.read_csv(Path(given[0])), clients)
    if table.empty:
        raise SystemExit(f"no deployment has {clients}-client points at both 1k and 8k tokens")
    cols = [*GROUP, "real_icpt_ms", "sim_icpt_ms", "icpt_gap_ms", "real_us_per_tok",
            "sim_us_per_tok"]  # fmt: skip
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for row in table[cols].itertuples(index=False):
        cells = [f"{v:.1f}" if isinstance(v, float) else str(v) for v in row]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
