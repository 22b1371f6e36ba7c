"""Confidential-computing wrapper: calibration on SINCERE's H100 data and its algebra."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from sincere.core.errors import ConfigError
from sincere.perf.base import Batch, Deployment
from sincere.perf.cc import CCParams, Confidential, fit_call_floor, sincere_cc_params
from sincere.perf.linear import InfernoChunked, InfernoLinear
from sincere.perf.roofline import Roofline
from sincere.perf.table import (
    load_shipped_profiles,
    read_batch_profiles,
    read_loading_times,
    sincere_profile,
)

MODELS = ("granite-7b", "gemma-7b", "llama3-8b")


def _errors(model: str, params: CCParams) -> tuple[np.ndarray, np.ndarray]:
    """Relative error of wrapped non-CC vs measured CC, per common batch size."""
    noncc, cc = sincere_profile(model), sincere_profile(model, cc=True)
    wrapped = Confidential(noncc, params)
    sizes = np.array([s for s in cc.batch_sizes if s in set(noncc.batch_sizes)])
    pred = np.array([wrapped.request_batch_s([100] * int(s), 50) for s in sizes])
    meas = np.array([cc.batch_time_s(s) for s in sizes])
    return sizes, np.abs(pred - meas) / meas


@pytest.mark.parametrize("model", MODELS)
def test_wrapper_reproduces_cc_load_time(model: str) -> None:
    """Non-CC load x the calibrated slowdown is within 10 % of the measured CC load."""
    for params in (CCParams(), sincere_cc_params(model)):
        wrapped = Confidential(sincere_profile(model), params)
        measured = sincere_profile(model, cc=True).load_time().mean_s
        assert wrapped.load_time().mean_s == pytest.approx(measured, rel=0.10)


@pytest.mark.parametrize("model", MODELS)
def test_wrapper_reproduces_cc_batch_times(model: str) -> None:
    """Wrapped non-CC times are within 10 % of CC ones: each batch 1-7, and on average."""
    sizes, err = _errors(model, sincere_cc_params(model))
    assert np.all(err[sizes <= 7] < 0.10)
    assert err.mean() < 0.10


def test_cc_overhead_vanishes_at_large_batch() -> None:
    """Batch 1 costs ~1.4 s in CC vs ~0.85 s without; by batch 64 the wrapper adds < 5 %."""
    noncc = sincere_profile("llama3-8b")
    wrapped = Confidential(noncc, sincere_cc_params("llama3-8b"))
    assert wrapped.request_batch_s([100], 50) > 1.6 * noncc.request_batch_s([100], 50)
    big = noncc.request_batch_s([100] * 64, 50)
    assert big < wrapped.request_batch_s([100] * 64, 50) < 1.05 * big


def test_shipped_cc_fit_matches_raw_files(shared_data: Path) -> None:
    """Refitting on the raw CSVs gives the shipped floor, extra and load ratio per model."""
    folder = shared_data / "sincere"
    cc = read_batch_profiles(sorted(folder.glob("batch_profiling_results_*_ccmode.csv")))
    nc = read_batch_profiles(sorted(folder.glob("batch_profiling_results_*_noncc.csv")))
    cc_load = read_loading_times(next(folder.glob("model_loading_times_*_cc.csv")))
    nc_load = read_loading_times(next(folder.glob("model_loading_times_*_noncc.csv")))
    shipped = load_shipped_profiles()["cc_fit"]["per_model"]
    for model in MODELS:
        c_t, n_t = dict(zip(*cc[model][:2], strict=True)), dict(zip(*nc[model][:2], strict=True))
        common = sorted(set(c_t) & set(n_t))
        floor, extra, _ = fit_call_floor([n_t[s] for s in common], [c_t[s] for s in common])
        assert floor == pytest.approx(shipped[model]["call_floor_s"], abs=1e-3)
        assert extra == pytest.approx(shipped[model]["per_call_s"], abs=1e-3)
        ratio = cc_load[model][0].mean_s / nc_load[model][0].mean_s
        assert 2.5 < ratio < 2.7
        assert ratio == pytest.approx(shipped[model]["load_slowdown"], abs=1e-3)


def test_defaults_are_the_shipped_mean() -> None:
    """CCParams() defaults equal the three-model mean stored in the yaml."""
    assert dataclasses.asdict(CCParams()) == dataclasses.asdict(sincere_cc_params())


def test_floor_only_binds_short_iterations(llama8b_h100: Deployment) -> None:
    """A step faster than the floor takes the floor; a long prefill only pays the I/O."""
    inner = Roofline(llama8b_h100)
    params = CCParams(min_iteration_s=0.02, per_call_s=0.0)
    wrapped = Confidential(inner, params)
    decode = Batch(num_decode_seqs=1, decode_ctx_tokens=100)
    assert wrapped.iteration_s(decode) == pytest.approx(0.02, rel=1e-3)
    prefill = Batch.of(prefill=[(8192, 0)])
    io_s = 8.0 * (8192 + 1) / 4e9
    assert wrapped.iteration_s(prefill) == pytest.approx(inner.iteration_s(prefill) + io_s)


def test_cc_decode_steps_cross_the_floor() -> None:
    """Steps under the floor then above it sum exactly, as iterating would."""
    flat = InfernoLinear(alpha_ms=1.0, beta_ms=0.0, gamma_ms=0.0, delta_ms=0.0)
    growing = InfernoChunked(alpha_ms=1.0, beta_ms=0.01, gamma_ms=0.001)  # 1.3 ms -> 5.4 ms
    for model in (flat, growing):
        wrapped = Confidential(model, CCParams(min_iteration_s=0.0035, per_iteration_s=1e-4))
        loop = sum(wrapped.decode_step_s(4, 1000 + 4 * k) for k in range(300))
        assert wrapped.decode_steps_s(4, 1000, 300) == pytest.approx(loop, rel=1e-9)


def test_bad_cc_params_raise() -> None:
    """Non-positive bandwidths and slowdowns raise ConfigError naming the field."""
    with pytest.raises(ConfigError, match="bounce_gbps"):
        CCParams(bounce_gbps=0.0)
    with pytest.raises(ConfigError, match="slowdowns"):
        CCParams(load_slowdown=-1.0)
    with pytest.raises(ConfigError, match="no CC fit"):
        sincere_cc_params("gpt-5")
