"""benchmarks/ttft_intercepts.py: the TTFT lines through the 1k- and 8k-token points."""

from __future__ import annotations

from types import ModuleType

import pandas as pd
import pytest
from tests.conftest import benchmark_script


def _script() -> ModuleType:
    return benchmark_script("ttft_intercepts")


def _point(isl: int, osl: int, clients: int, real: float, sim: float, tp: int = 8) -> dict:
    keys = {"backend": "vllm", "catalog_model": "m", "system": "b200_sxm",
            "precision": "fp8", "tp": tp, "ep": 1, "attention_dp": 1}  # fmt: skip
    return {**keys, "isl": isl, "osl": osl, "clients": clients,
            "ttft_real_ms": real, "ttft_sim_ms": sim}  # fmt: skip


def test_lines_recover_intercept_and_slope_at_the_benchmarks_mean_prompt() -> None:
    """TTFT = a + b * 0.9 L, built exactly: the line gives a and b back, real and simulated,
    the median over output lengths taken, other concurrencies and lone deployments left out."""
    s = _script()

    def ttft(a: float, b_us: float, isl: int) -> float:
        return a + b_us / 1000 * 0.9 * isl

    rows = [
        _point(1024, 1024, 4, ttft(80, 26, 1024), ttft(25, 26, 1024)),
        _point(1024, 8192, 4, ttft(80, 26, 1024), ttft(25, 26, 1024)),
        _point(8192, 1024, 4, ttft(80, 26, 8192), ttft(25, 26, 8192)),
        _point(1024, 1024, 8, 999.0, 1.0),  # another concurrency: not in the C=4 line
        _point(1024, 1024, 4, 50.0, 40.0, tp=2),  # no 8k point: no line
    ]
    table = s.lines(pd.DataFrame(rows), clients=4)
    assert len(table) == 1
    row = table.iloc[0]
    assert row.real_icpt_ms == pytest.approx(80)
    assert row.sim_icpt_ms == pytest.approx(25)
    assert row.icpt_gap_ms == pytest.approx(55)
    assert row.real_us_per_tok == pytest.approx(26)
    assert row.sim_us_per_tok == pytest.approx(26)
