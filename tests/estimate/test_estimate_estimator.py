"""FingerprintBank estimates and FingerprintEstimator as a step-time model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sincere.core.errors import ConfigError
from sincere.estimate import (
    ConfigKey,
    Exponents,
    ExponentTable,
    FingerprintBank,
    parallelism_law,
    roofline_estimate,
)
from sincere.perf.base import Batch, StepTimeModel

from .conftest import TERMS, fingerprint_rows, write_csv

EX = ExponentTable({}, Exponents(0.2, 0.9, 0.3, 1.1))
N = 32  # llama-2-7b layers


def _full(tp: int, pp: int, bs: int) -> tuple[float, float, float]:
    ttl, tto, tpl, tpo, ml, mo = TERMS[tp, pp, bs]
    return N * ttl + tto, N * tpl + tpo, N * ml + mo


def _bank(make: Callable[..., Path], **kw: object) -> FingerprintBank:
    return FingerprintBank.from_files(make(), EX, pp_reference="fingerprint", **kw)


def test_reference_configurations_are_their_full_depth(synthetic_csv: Callable[..., Path]) -> None:
    """At (1,1) the estimate is N*layer + other of the fingerprint, latency TTFT + out*TPOT."""
    est = _bank(synthetic_csv).estimate(ConfigKey("llama-2-7b", "fp16", "fp16", 1, 1, 1), 100)
    ttft, tpot, mem = _full(1, 1, 1)
    assert (est.ttft_s, est.tpot_s, est.memory_gb) == pytest.approx((ttft, tpot, mem))
    assert est.latency_s == pytest.approx(ttft + 100 * tpot)
    assert est.source == "fingerprint-law"


def test_other_parallelism_follows_the_law(synthetic_csv: Callable[..., Path]) -> None:
    """(4, 2) is the law applied to TTFT and TPOT of the three references."""
    est = _bank(synthetic_csv).estimate(ConfigKey("llama-2-7b", "fp16", "fp16", 4, 2, 1), 50)
    r, t2, p2 = _full(1, 1, 1), _full(2, 1, 1), _full(1, 2, 1)
    ex = EX.default
    assert est.ttft_s == pytest.approx(float(parallelism_law(r[0], t2[0], p2[0], 4, 2, ex)))
    assert est.tpot_s == pytest.approx(float(parallelism_law(r[1], t2[1], p2[1], 4, 2, ex)))


def test_batch_law_applies_beyond_two(synthetic_csv: Callable[..., Path]) -> None:
    """Batch 5 is batch 1 plus 4 times the batch-2 increase."""
    bank = _bank(synthetic_csv)
    est = bank.estimate(ConfigKey("llama-2-7b", "fp16", "fp16", 1, 1, 5), 10)
    one, two = _full(1, 1, 1), _full(1, 1, 2)
    assert est.tpot_s == pytest.approx(one[1] + 4 * (two[1] - one[1]))


def test_same_depth_pp_reference(synthetic_csv: Callable[..., Path]) -> None:
    """With same-depth, L(1,2) = L_ref + the PP=2 minus PP=1 fingerprint at 2 layers."""
    bank = FingerprintBank.from_files(synthetic_csv(), EX)
    est = bank.estimate(ConfigKey("llama-2-7b", "fp16", "fp16", 1, 2, 1), 10)
    tpl, tpo = TERMS[1, 1, 1][2:4]
    tpl2, tpo2 = TERMS[1, 2, 1][2:4]
    d_tpot = (2 * tpl2 + tpo2) - (2 * tpl + tpo)
    assert est.tpot_s == pytest.approx(_full(1, 1, 1)[1] + d_tpot)


def test_direct_mode_uses_the_exact_fingerprint(synthetic_csv: Callable[..., Path]) -> None:
    """Direct mode reads (2,1) off its own fingerprint and says so."""
    bank = _bank(synthetic_csv, mode="direct")
    est = bank.estimate(ConfigKey("llama-2-7b", "fp16", "fp16", 2, 1, 1), 10)
    assert est.source == "fingerprint-direct"
    assert est.tpot_s == pytest.approx(_full(2, 1, 1)[1])


def test_missing_reference_is_an_error(synthetic_csv: Callable[..., Path]) -> None:
    """Without a TP > 1 fingerprint, TP > 1 cannot be extrapolated and the error says so."""
    terms = {k: v for k, v in TERMS.items() if k[0] == 1}
    bank = FingerprintBank.from_files(synthetic_csv(terms=terms), EX)
    with pytest.raises(ConfigError, match="no TP > 1 fingerprint of llama-2-7b"):
        bank.estimate(ConfigKey("llama-2-7b", "fp16", "fp16", 4, 1, 1), 10)
    with pytest.raises(ConfigError, match="no TP=2 fingerprint of llama-2-7b"):
        bank.with_options(tp_reference="tp2").estimate(
            ConfigKey("llama-2-7b", "fp16", "fp16", 4, 1, 1), 10
        )
    with pytest.raises(ConfigError, match="no fingerprint of llama-2-7b"):
        bank.estimate(ConfigKey("llama-2-7b", "int8", "fp16", 1, 1, 1), 10)


def test_estimator_is_a_step_time_model(synthetic_csv: Callable[..., Path]) -> None:
    """Prefill iterations take TTFT(b), decode iterations TPOT(b), a batch TTFT + out*TPOT."""
    est = _bank(synthetic_csv).estimator(ConfigKey("llama-2-7b", "fp16", "fp16", 1, 1, 1))
    assert isinstance(est, StepTimeModel)
    one, two = _full(1, 1, 1), _full(1, 1, 2)
    assert est.iteration_s(Batch.of(prefill=[(100, 0)])) == pytest.approx(one[0])
    assert est.iteration_s(Batch.of(decode=[50, 60])) == pytest.approx(two[1])
    assert est.decode_steps_s(1, 100, 10) == pytest.approx(10 * one[1])
    assert est.request_batch_s([30, 40], 20) == pytest.approx(two[0] + 20 * two[1])


def test_roofline_fallback_gives_positive_figures() -> None:
    """A model without fingerprints still gets a latency and memory, marked roofline."""
    key = ConfigKey("llama-3-8b", "fp16", "fp16", 2, 1, 1)
    est = roofline_estimate(key, 100)
    assert est.source == "roofline"
    assert est.latency_s > 0 and 16 < est.memory_gb < 48
    assert roofline_estimate(key, 200).latency_s > est.latency_s


# --------------------------------------------------------------------------- TP overheads
REF = {"float16": (0.003, 0.002, 0.0007, 0.0008), "int8": (0.0032, 0.0021, 0.0004, 0.0007)}
OVH = {2: (0.0005, 0.003, 0.00005, 0.0002), 4: (0.001, 0.012, 0.0001, 0.0003)}  # X(t) terms
NOISE = (0.0004, -0.002, -0.00004, 0.0001)  # +/- per variant at TP 4: cancels when pooled


def _two_precision_bank(tmp_path: Path, exponents: ExponentTable = EX) -> FingerprintBank:
    """fp16 and int8 fingerprints whose TP overheads are equal up to opposite noise."""
    rows: list[list[object]] = []
    for sign, (dtype, ref) in zip((1, -1), REF.items(), strict=True):
        terms: dict[tuple[int, int, int], tuple[float, ...]] = {(1, 1, 1): (*ref, 0.6, 1.0)}
        for tp, x in OVH.items():
            noise = NOISE if tp == 4 else (0.0,) * 4
            layer = tuple(r / tp + xi + sign * e for r, xi, e in zip(ref, x, noise, strict=True))
            terms[tp, 1, 1] = (*layer, 0.6, 1.0 + tp)
        rows += fingerprint_rows("llama-2-7b", terms, dtype)
    return FingerprintBank.from_files(write_csv(tmp_path / "fp.csv", rows), exponents)


def _depth(terms: tuple[float, ...]) -> tuple[float, float]:
    ttl, tto, tpl, tpo = terms
    return N * ttl + tto, N * tpl + tpo


def test_tp_overhead_is_pooled_over_precisions(tmp_path: Path) -> None:
    """O(4) is the mean of the variants' residuals: the opposite noise cancels, and the
    estimate at TP 4 is each precision's own L(1,1)/4 plus that shared overhead."""
    bank = _two_precision_bank(tmp_path)
    ovh = bank.tp_overheads("llama-2-7b", 1)[4]
    assert (ovh.ttft_s, ovh.tpot_s) == pytest.approx(_depth(OVH[4]))
    assert ovh.num_variants == 2 and ovh.decode == "fingerprints"
    for dtype, precision in (("float16", "fp16"), ("int8", "int8")):
        est = bank.estimate(ConfigKey("llama-2-7b", precision, "fp16", 4, 1, 1), 10)
        ref_ttft, ref_tpot = _depth(REF[dtype])
        x_ttft, x_tpot = _depth(OVH[4])
        assert (est.ttft_s, est.tpot_s) == pytest.approx(
            (ref_ttft / 4 + x_ttft, ref_tpot / 4 + x_tpot)
        )


def test_unprofiled_tp_extrapolates_from_the_largest_profiled_degree(tmp_path: Path) -> None:
    """TP 8 (not profiled) is O(4) * (7/3)^beta; MaverIQ verbatim scales TP 2 by 7^beta."""
    bank = _two_precision_bank(tmp_path)
    key = ConfigKey("llama-2-7b", "fp16", "fp16", 8, 1, 1)
    beta = EX.default.beta
    x_tpot = _depth(OVH[4])[1]
    ref_tpot = _depth(REF["float16"])[1]
    est = bank.estimate(key, 10)
    assert est.tpot_s == pytest.approx(ref_tpot / 8 + x_tpot * (7 / 3) ** beta)
    verbatim = bank.with_options(tp_reference="tp2").estimate(key, 10)
    tp2 = _depth(tuple(r / 2 + x for r, x in zip(REF["float16"], OVH[2], strict=True)))
    assert verbatim.tpot_s == pytest.approx(ref_tpot / 8 + (tp2[1] - ref_tpot / 2) * 7**beta)


def test_calibrated_decode_overhead_keeps_the_level_at_the_middle_output(tmp_path: Path) -> None:
    """With a decode calibration u(4), O_tpot = N*u and TTFT + 15*TPOT of O(4) is unchanged."""
    u = 0.0002
    table = ExponentTable({}, EX.default, "test", {4: u})
    ovh = _two_precision_bank(tmp_path, table).tp_overheads("llama-2-7b", 1)[4]
    x_ttft, x_tpot = _depth(OVH[4])
    assert ovh.decode == "calibration"
    assert ovh.tpot_s == pytest.approx(N * u)
    assert ovh.ttft_s + 15 * ovh.tpot_s == pytest.approx(x_ttft + 15 * x_tpot)
