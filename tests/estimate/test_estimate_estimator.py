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

from .conftest import TERMS

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
    """Without a TP=2 fingerprint, TP > 1 cannot be extrapolated and the error says so."""
    terms = {k: v for k, v in TERMS.items() if k[0] == 1}
    bank = FingerprintBank.from_files(synthetic_csv(terms=terms), EX)
    with pytest.raises(ConfigError, match="no TP=2 fingerprint"):
        bank.estimate(ConfigKey("llama-2-7b", "fp16", "fp16", 4, 1, 1), 10)
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
