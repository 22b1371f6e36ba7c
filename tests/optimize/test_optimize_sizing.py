"""Sizing: the found rate meets the SLOs and a slightly higher one does not."""

from __future__ import annotations

import numpy as np
import pytest

from sincere.core.errors import ConfigError
from sincere.optimize.queueing import DecodePrefillParams, ReplicaBank, affine_replica, analyze
from sincere.optimize.sizing import (
    RATE_EPSILON,
    THROUGHPUT_HEADROOM,
    Targets,
    credited_rates,
    max_rate,
    max_rates,
    params_from_step_model,
)
from sincere.perf.base import Batch, StepTimeBase

GRANITE = DecodePrefillParams(20.58, 0.41, 164.64, 0.0128125)  # Inferno's sample, A100


@pytest.mark.parametrize(("ttft", "itl"), [(1000.0, 80.0), (2000.0, 160.0), (600.0, None)])
def test_found_rate_meets_targets_and_slightly_more_misses(ttft: float, itl: float | None) -> None:
    """At the found λ both SLOs hold; at 1.001·λ one of them is broken."""
    rep = affine_replica(GRANITE, 128, 1024, 14)
    targets = Targets(ttft_ms=ttft, itl_ms=itl)
    lam = max_rate(rep, targets)
    assert 0 < lam < rep.max_rate
    at = analyze(rep, lam)
    assert at.ttft_ms <= ttft * (1 + 1e-9)
    above = analyze(rep, lam * 1.001)
    assert above.ttft_ms > ttft or (itl is not None and above.itl_ms > itl)


def test_itl_target_binds_when_tight() -> None:
    """A tight ITL target (and loose TTFT) is what stops the search."""
    rep = affine_replica(GRANITE, 128, 256, 40)
    lam = max_rate(rep, Targets(ttft_ms=1e7, itl_ms=24.0))
    assert analyze(rep, lam).itl_ms == pytest.approx(24.0, rel=1e-6)


def test_unreachable_targets_give_zero() -> None:
    """If even a lone request misses the SLO, the replica sustains no load."""
    rep = affine_replica(GRANITE, 128, 1024, 14)
    assert max_rate(rep, Targets(ttft_ms=100.0)) == 0.0
    assert max_rate(rep, Targets(itl_ms=20.0)) == 0.0


def test_throughput_target_caps_at_headroom() -> None:
    """The rate never exceeds Inferno's top rate (1 − ε)·μ(N); with a throughput target it
    stays within 0.9 of that."""
    rep = affine_replica(GRANITE, 128, 1024, 14)
    top = (1.0 - RATE_EPSILON) * rep.max_rate
    assert max_rate(rep, Targets()) == pytest.approx(top)
    capped = max_rate(rep, Targets(tps=100.0))
    assert capped == pytest.approx(THROUGHPUT_HEADROOM * top)


def test_credited_rate_is_the_throughput_at_the_sized_rate() -> None:
    """Replicas are counted on X = λ(1 − p_K) at the sized λ (Inferno's optimizer): below λ,
    by a visible margin when the sized rate sits at the top (p_K of a long queue)."""
    rep = affine_replica(GRANITE, 128, 1024, 14)
    bank = ReplicaBank([rep, rep])
    targets = [Targets(), Targets(ttft_ms=100.0)]
    lam = max_rates(bank, targets)
    x = credited_rates(bank, targets)
    assert x[1] == 0.0 and lam[1] == 0.0
    assert 0.9 * lam[0] < x[0] < lam[0]
    assert x[0] == pytest.approx(analyze(rep, float(lam[0])).throughput)


def test_bad_targets_rejected() -> None:
    """Zero or negative SLOs are named in the error."""
    with pytest.raises(ConfigError, match="ttft_ms"):
        Targets(ttft_ms=0.0)


class _Linear(StepTimeBase):
    """An iteration time linear in decode sequences and prefill tokens (seconds)."""

    def iteration_s(self, batch: Batch) -> float:
        decode = 0.020 + 0.0004 * batch.num_decode_seqs if batch.num_decode_seqs else 0.0
        prefill = 0.15 + 1.2e-5 * batch.prefill_tokens if batch.num_prefill_seqs else 0.0
        return decode + prefill


def test_params_from_step_model_recovers_linear_model() -> None:
    """Fitting a step model that is exactly Inferno's form returns its coefficients (ms)."""
    p = params_from_step_model(_Linear(), in_tokens=256, out_tokens=128, max_batch=32)
    assert p.alpha == pytest.approx(20.0)
    assert p.beta == pytest.approx(0.4)
    assert p.gamma == pytest.approx(150.0)
    assert p.delta == pytest.approx(0.012)
    rep = affine_replica(p, 256, 128, 32)
    assert np.isfinite(max_rate(rep, Targets(1000.0, 80.0)))
    with pytest.raises(ConfigError, match="max_batch"):
        params_from_step_model(_Linear(), 256, 128, 0)
