"""The queueing analyzer against textbook M/M/1/K, brute force and Inferno's formulas."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sincere.core.errors import ConfigError
from sincere.optimize.queueing import (
    AffineReplica,
    DecodePrefillParams,
    PerfParams,
    ReplicaBank,
    affine_replica,
    analyze,
)


def _textbook_mm1k(lam: float, mu: float, k: int) -> tuple[float, float]:
    """Closed-form L and p_K of M/M/1/K (Kleinrock), rho != 1."""
    rho = lam / mu
    p0 = (1 - rho) / (1 - rho ** (k + 1))
    mean = rho / (1 - rho) - (k + 1) * rho ** (k + 1) / (1 - rho ** (k + 1))
    return mean, p0 * rho**k


def _brute(rep: AffineReplica, lam: float) -> dict[str, float]:
    """Balance equations over all K states, directly."""
    n_max, k = rep.max_batch, rep.max_batch * (1 + rep.queue_factor)
    n = np.arange(k + 1)
    busy = np.minimum(n, n_max)
    mu = busy[1:] / (rep.t0 + rep.t1 * busy[1:])
    logp = np.concatenate([[0.0], np.cumsum(np.log(lam / mu))])
    p = np.exp(logp - logp.max())
    p /= p.sum()
    x = lam * (1 - p[-1])
    return {"L": float(n @ p), "busy": float(busy @ p), "X": x, "pK": float(p[-1])}


@pytest.mark.parametrize("lam", [0.01, 0.05, 0.09, 0.13, 0.3])
def test_single_server_equals_textbook_mm1k(lam: float) -> None:
    """With N = 1 the analyzer is the textbook M/M/1/K with K = 11."""
    rep = AffineReplica(4.0, 6.0, 5.0, 0.0, 1.0, 0.0, max_batch=1, queue_factor=10)
    m = analyze(rep, lam)
    mean, p_k = _textbook_mm1k(lam, 0.1, 11)
    assert m.mean_in_system == pytest.approx(mean, rel=1e-9)
    assert m.block_prob == pytest.approx(p_k, rel=1e-9)
    assert m.throughput == pytest.approx(lam * (1 - p_k), rel=1e-9)
    assert m.response_ms == pytest.approx(mean / (lam * (1 - p_k)), rel=1e-9)
    assert m.service_ms == pytest.approx(10.0, rel=1e-9)


def test_constant_rate_batch_equals_textbook_mm1k() -> None:
    """With t0 = 0, μ(n) is constant, so any N gives M/M/1/K's distribution (K = 11N)."""
    rep = AffineReplica(0.0, 5.0, 5.0, 0.0, 1.0, 0.0, max_batch=8, queue_factor=10)
    m = analyze(rep, 0.15)
    mean, p_k = _textbook_mm1k(0.15, 0.2, 88)
    assert m.mean_in_system == pytest.approx(mean, rel=1e-9)
    assert m.block_prob == pytest.approx(p_k, rel=1e-9)


@settings(max_examples=40, deadline=None)
@given(
    t0=st.floats(1.0, 5000.0),
    t1=st.floats(0.1, 500.0),
    n_max=st.integers(1, 64),
    q=st.integers(0, 12),
    load=st.floats(0.01, 3.0),
)
def test_closed_form_tail_matches_brute_force(
    t0: float, t1: float, n_max: int, q: int, load: float
) -> None:
    """The O(N) evaluation with a geometric tail equals summing all K states."""
    rep = AffineReplica(t0, t1, 1.0, 0.1, 1.0, 0.1, n_max, q)
    lam = load * rep.max_rate
    got = analyze(rep, lam)
    ref = _brute(rep, lam)
    assert got.mean_in_system == pytest.approx(ref["L"], rel=1e-6, abs=1e-9)
    assert got.mean_in_service == pytest.approx(ref["busy"], rel=1e-6, abs=1e-9)
    assert got.throughput == pytest.approx(ref["X"], rel=1e-6)
    assert got.block_prob == pytest.approx(ref["pK"], rel=1e-5, abs=1e-12)


def test_more_load_means_higher_ttft_and_itl() -> None:
    """TTFT and ITL rise with the arrival rate (the sizing search relies on it)."""
    rep = affine_replica(DecodePrefillParams(20.58, 0.41, 164.64, 0.0128125), 128, 1024, 14)
    rates = np.linspace(0.01, 0.999, 60) * rep.max_rate
    out = ReplicaBank([rep] * len(rates)).evaluate(rates)
    assert np.all(np.diff(out["ttft_ms"]) > 0)
    assert np.all(np.diff(out["itl_ms"]) >= 0)
    assert out["concurrency"][-1] <= 14


def test_separate_variant_reduces_to_inferno_forms() -> None:
    """prefill(n) = γ + δ·in·n, decode(n) = α + β·n, T(n) = prefill + (out−1)·decode."""
    p = DecodePrefillParams(20.0, 0.5, 150.0, 0.01)
    rep = affine_replica(p, 200, 101, 16)
    n = 7
    assert rep.p0 + rep.p1 * n == pytest.approx(150.0 + 0.01 * 200 * n)
    assert rep.d0 + rep.d1 * n == pytest.approx(20.0 + 0.5 * n)
    assert rep.t0 + rep.t1 * n == pytest.approx(150.0 + 2.0 * n + 100 * (20.0 + 0.5 * n))


def test_current_form_reduces_to_inferno_forms() -> None:
    """perfParms: it(n) = α + n(β·c + γ·m), prefill = it + (β+γ)·in, decode = it + β + γ·m,
    T = prefill + out·decode, with c = (in+out)/(out+1) and m = in + out/2."""
    a, b, g, n_in, out = 9.0, 0.02, 1e-4, 1000.0, 300.0
    rep = affine_replica(PerfParams(a, b, g), n_in, out, 32)
    c, m, n = (n_in + out) / (out + 1), n_in + out / 2, 5.0
    it = a + n * (b * c + g * m)
    assert rep.p0 + rep.p1 * n == pytest.approx(it + (b + g) * n_in)
    assert rep.d0 + rep.d1 * n == pytest.approx(it + b + g * m)
    assert rep.t0 + rep.t1 * n == pytest.approx(it + (b + g) * n_in + out * (it + b + g * m))
    assert rep.decodes == out


def test_current_form_reads_metrics_at_mean_in_service() -> None:
    """Current form: ITL = (S − prefill(L_s))/out and TTFT = W + prefill(L_s) + ITL."""
    rep = affine_replica(PerfParams(17.15, 0.034, 0.0010625), 128, 1024, 38)
    got = analyze(rep, 0.4 * rep.max_rate)
    prefill = rep.p0 + rep.p1 * got.mean_in_service
    itl = (got.service_ms - prefill) / 1024
    assert got.itl_ms == pytest.approx(itl, rel=1e-9)
    assert got.ttft_ms == pytest.approx(got.wait_ms + prefill + itl, rel=1e-9)
    assert got.concurrency == pytest.approx(got.mean_in_service)


def test_overload_stays_finite() -> None:
    """Far above μ(N) the finite queue turns requests away; numbers stay finite."""
    rep = AffineReplica(100.0, 10.0, 5.0, 1.0, 1.0, 0.1, 256, 10)
    m = analyze(rep, 50 * rep.max_rate)
    assert np.isfinite(m.ttft_ms)
    assert m.block_prob > 0.9
    assert m.throughput == pytest.approx(rep.max_rate, rel=1e-6)


def test_bad_inputs_raise() -> None:
    """Negative rates, an empty batch or a flat service time are rejected with the value."""
    rep = AffineReplica(1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 4)
    with pytest.raises(ConfigError, match="arrival rate"):
        analyze(rep, -1.0)
    with pytest.raises(ConfigError, match="max batch"):
        AffineReplica(1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0)
    with pytest.raises(ConfigError, match="t1 > 0"):
        AffineReplica(1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 4)
