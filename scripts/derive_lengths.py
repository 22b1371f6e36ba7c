"""Regenerate the shipped length tables in src/sincere/data/lengths/ from the Azure traces.

Usage: python scripts/derive_lengths.py [DATA_DIR]   (default: ../shared/data beside the repo)

For each Azure LLM inference trace 2023 (conversation and code services) it writes
1001 quantiles of ContextTokens and of GeneratedTokens plus a 32 x 32 grid copula of
their ranks (see sincere.workload.lengths.CopulaLengths), with the trace's attribution.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from sincere.workload.lengths import CopulaLengths
from sincere.workload.traces import read_trace

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "sincere" / "data" / "lengths"
ATTRIBUTION = (
    "Derived from the Azure LLM inference trace 2023 ({file}), Microsoft, CC-BY 4.0, "
    "https://github.com/Azure/AzurePublicDataset; described in Patel et al., "
    "'Splitwise: Efficient Generative LLM Inference Using Phase Splitting', ISCA 2024."
)


def summary(x: np.ndarray) -> dict[str, float]:
    """Mean and percentiles of one column, for humans reading the file."""
    p50, p90, p99 = np.percentile(x, [50, 90, 99])
    return {
        "mean": round(float(x.mean()), 2),
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "max": float(x.max()),
    }


def derive(trace: Path, name: str) -> None:
    """Write ``name``.json from one trace file."""
    req = read_trace(trace, format="azure")
    fit = CopulaLengths.fit(req.prompt_tokens, req.output_tokens, num_quantiles=1001, grid=32)
    table = {
        "name": name.replace("_", "-"),
        "attribution": ATTRIBUTION.format(file=trace.name),
        "license": "CC-BY-4.0",
        "num_pairs": len(req),
        "levels": "1001 equally spaced probabilities 0..1 (linear interpolation)",
        "prompt_quantiles": [round(float(v), 1) for v in fit.prompt_quantiles],
        "output_quantiles": [round(float(v), 1) for v in fit.output_quantiles],
        "copula_grid": int(fit.counts.shape[0]),
        "copula_counts": fit.counts.tolist(),
        "summary": {"prompt": summary(req.prompt_tokens), "output": summary(req.output_tokens)},
    }
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(table, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"{path.relative_to(ROOT)}: {len(req)} pairs, {path.stat().st_size // 1024} KiB")


def main() -> None:
    """Derive both tables."""
    data = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "data"
    for service in ("conv", "code"):
        derive(data / "traces" / f"AzureLLMInferenceTrace_{service}.csv", f"azure_{service}_2023")


if __name__ == "__main__":
    main()
