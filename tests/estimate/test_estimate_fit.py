"""Fitting the decode overhead per TP degree from full-model runs, and the whole law."""

from __future__ import annotations

from pathlib import Path

import pytest

from sincere.estimate import ConfigKey, FingerprintBank, Measurement
from sincere.estimate.fit import decode_from_runs, fit_law

from .conftest import TERMS, fingerprint_rows, write_csv

N = 32  # llama-2-7b layers


def _runs(tpot_1: float, extra_per_layer: dict[int, float]) -> list[Measurement]:
    """Full-model rows at TP 1 and each TP of ``extra_per_layer``, TTFT 0.1 s, PP 1."""
    rows = []
    for tp, extra in {1: 0.0, **extra_per_layer}.items():
        tpot = tpot_1 / tp + N * extra
        key = ConfigKey("llama-2-7b", "fp16", "fp16", tp, 1, 1)
        for out in (10, 50, 200):
            rows.append(Measurement(key, N, out, 0.1 + out * tpot, 14.0))
    return rows


def test_decode_overhead_from_runs_is_per_layer_beyond_the_tp_share() -> None:
    """(TPOT(t) - TPOT(1)/t) / N_L comes back per TP degree; PP > 1 rows are ignored."""
    rows = _runs(0.024, {2: 5e-5, 4: 1e-4, 8: 2.5e-4})
    pp_row = Measurement(ConfigKey("llama-2-7b", "fp16", "fp16", 2, 2, 1), N, 10, 9.0, 14.0)
    got = decode_from_runs([*rows, pp_row], lambda model: N)
    assert got == pytest.approx({2: 5e-5, 4: 1e-4, 8: 2.5e-4})


def test_fit_law_on_runs_calibrates_the_bank(tmp_path: Path) -> None:
    """`fit_law(target="measured")` stores the runs' decode overhead and its estimates use it."""
    bank = FingerprintBank.from_files(
        write_csv(tmp_path / "fp.csv", fingerprint_rows("llama-2-7b", TERMS))
    )
    table, fits = fit_law(bank, _runs(0.024, {2: 6e-5}), target="measured", source="test")
    assert table.decode_s_per_layer == pytest.approx({2: 6e-5})
    assert fits["default"].num_samples == 6
    est = bank.with_options(exponents=table).estimate(
        ConfigKey("llama-2-7b", "fp16", "fp16", 2, 1, 1), 10
    )
    assert est.tpot_s == pytest.approx(
        bank.full_depth(est.key.with_parallelism(1, 1)).tpot_s / 2 + N * 6e-5
    )
