"""Inferno's linear forms and Niyama's binned regression."""

from __future__ import annotations

import numpy as np
import pytest

from sincere.core.errors import ConfigError
from sincere.perf.base import Batch
from sincere.perf.linear import BinnedLinear, InfernoChunked, InfernoLinear, fit_binned_linear

# Inferno's sample granite_13b on A100 (docs/references.md, Inferno model-data example), ms.
GRANITE = InfernoLinear(alpha_ms=20.58, beta_ms=0.41, gamma_ms=164.64, delta_ms=0.0128125)


def test_inferno_phases_match_its_formulas() -> None:
    """Prefill is γ + δ·in·n and a decode step α + β·n, in seconds."""
    n, in_tokens = 8, 512
    prefill = GRANITE.iteration_s(Batch.of(prefill=[(in_tokens, 0)] * n))
    assert prefill == pytest.approx((164.64 + 0.0128125 * in_tokens * n) / 1e3)
    decode = GRANITE.decode_step_s(n, n * 600)
    assert decode == pytest.approx((20.58 + 0.41 * n) / 1e3)


def test_inferno_request_time_is_its_service_time() -> None:
    """A request-level batch takes prefill(n) + (out - 1)·decode(n), Inferno's service time."""
    n, in_tokens, out = 16, 256, 100
    expected = (164.64 + 0.0128125 * in_tokens * n + (out - 1) * (20.58 + 0.41 * n)) / 1e3
    assert GRANITE.request_batch_s([in_tokens] * n, out) == pytest.approx(expected)


def test_inferno_mixed_batch_is_the_sum() -> None:
    """A mixed prefill + decode iteration costs both phases."""
    mixed = Batch.of(prefill=[(300, 0)], decode=[100, 200])
    alone = GRANITE.iteration_s(Batch.of(prefill=[(300, 0)])) + GRANITE.decode_step_s(2, 300)
    assert GRANITE.iteration_s(mixed) == pytest.approx(alone)


def test_chunked_variant_reproduces_inferno_prefill_and_itl() -> None:
    """Summed over c chunks and m steps, iterations give Inferno's w_pre and mean itl(1)."""
    alpha, beta, gamma = 5.0, 0.02, 0.001
    model = InfernoChunked(alpha, beta, gamma)
    n_in, c, m = 1200, 3, 40
    chunk = n_in // c
    chunks = sum(model.iteration_s(Batch.of(prefill=[(chunk, j * chunk)])) for j in range(c))
    w_pre = (beta + gamma * (c + 1) / 2) * n_in
    assert chunks * 1e3 == pytest.approx(c * alpha + w_pre)
    decode = model.decode_steps_s(1, n_in, m) * 1e3
    assert decode / m == pytest.approx(alpha + beta + gamma * (n_in + (m + 1) / 2))


def test_binned_fit_recovers_known_coefficients() -> None:
    """Least squares on noiseless samples from two bins gives back each bin's predictions."""
    rng = np.random.default_rng(7)
    truth = BinnedLinear(
        [512], [[0.01, 1e-4, 2e-5, 3e-4, 1e-7, 2e-7], [0.02, 5e-5, 1e-5, 1e-4, 2e-7, 1e-7]]
    )
    samples = []
    for _ in range(200):
        pre = [(int(rng.integers(16, 600)), int(rng.integers(0, 2000)))]
        dec = rng.integers(1, 3000, size=int(rng.integers(0, 64))).tolist()
        batch = Batch.of(prefill=pre, decode=dec)
        samples.append((batch, truth.iteration_s(batch)))
    fitted = fit_binned_linear(samples, [512])
    for batch, seconds in samples[:50]:
        assert fitted.iteration_s(batch) == pytest.approx(seconds, rel=1e-6)


def test_binned_picks_bin_by_total_tokens() -> None:
    """Batches of up to 128 tokens use bin 0, larger ones bin 1."""
    model = BinnedLinear([128], [[1.0, 0, 0, 0, 0, 0], [2.0, 0, 0, 0, 0, 0]])
    assert model.iteration_s(Batch(num_decode_seqs=128, decode_ctx_tokens=1)) == 1.0
    assert model.iteration_s(Batch(num_decode_seqs=129, decode_ctx_tokens=1)) == 2.0


def test_bad_linear_arguments_raise() -> None:
    """Negative ms, bad bin edges and too few samples raise ConfigError."""
    with pytest.raises(ConfigError, match="alpha"):
        InfernoLinear(-1.0, 0.0, 0.0, 0.0)
    with pytest.raises(ConfigError, match="increasing"):
        BinnedLinear([10, 5], np.zeros((3, 6)))
    with pytest.raises(ConfigError, match="one row of 6"):
        BinnedLinear([10], np.zeros((3, 6)))
    with pytest.raises(ConfigError, match="at least 6 samples"):
        fit_binned_linear([(Batch(num_decode_seqs=1), 0.1)], [10])
