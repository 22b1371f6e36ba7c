"""Fixtures: synthetic fingerprint CSVs built from known per-layer terms."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest

HEADER = [
    "Model",
    "TP",
    "PP",
    "PP_Map",
    "DTYPE",
    "INT8_KV_Cache",
    "Output_Lenght",
    "Batch_Size",
    "Latency",
    "Memory-Pre-Run",
    "Memory-After-Run",
]

# (ttft_layer, ttft_other, tpot_layer, tpot_other, mem_layer, mem_other) per (tp, pp, batch)
TERMS: dict[tuple[int, int, int], tuple[float, ...]] = {
    (1, 1, 1): (0.003, 0.002, 0.0007, 0.0008, 0.6, 1.0),
    (2, 1, 1): (0.002, 0.004, 0.0004, 0.0012, 0.62, 2.0),
    (1, 2, 1): (0.003, 0.006, 0.0007, 0.0016, 0.6, 1.8),
    (1, 1, 2): (0.004, 0.003, 0.0008, 0.0009, 0.61, 1.1),
    (2, 1, 2): (0.003, 0.005, 0.0005, 0.0013, 0.63, 2.1),
    (1, 2, 2): (0.004, 0.007, 0.0008, 0.0017, 0.61, 1.9),
}


def fingerprint_rows(
    model: str, terms: dict[tuple[int, int, int], tuple[float, ...]], dtype: str = "float16"
) -> list[list[object]]:
    """CSV rows of 1/2-layer (PP=1) or p/p+1-layer (PP=p) fingerprints from exact terms."""
    rows: list[list[object]] = []
    for (tp, pp, bs), (ttl, tto, tpl, tpo, ml, mo) in terms.items():
        for extra in (0, 1):
            stages = [1 + extra] + [1] * (pp - 1)
            n = sum(stages)
            for o in (10, 20):
                lat = tto + n * ttl + o * (tpo + n * tpl)
                mem = mo + n * ml
                rows.append(
                    [
                        model,
                        tp,
                        pp,
                        " ".join(map(str, stages)),
                        dtype,
                        "False",
                        o,
                        bs,
                        lat,
                        mem - 0.05,
                        mem,
                    ]
                )
    return rows


def write_csv(path: Path, rows: list[list[object]]) -> Path:
    """Write ``rows`` under the MaverIQ header."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        writer.writerows(rows)
    return path


@pytest.fixture()
def synthetic_csv(tmp_path: Path) -> Callable[..., Path]:
    """Factory: a fingerprint CSV of ``model`` from :data:`TERMS` (or given terms)."""

    def make(model: str = "llama-2-7b", terms: dict | None = None, name: str = "fp.csv") -> Path:
        return write_csv(tmp_path / name, fingerprint_rows(model, terms or TERMS))

    return make
