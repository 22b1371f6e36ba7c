"""One GEMM's roofline (sincere.perf.gemm), shared by the dense roofline and the arch step."""

from __future__ import annotations

import math

import pytest

from sincere.perf.gemm import gemm_s, overlap_s
from sincere.perf.roofline import RooflineParams


def test_overlap_is_the_larger_at_inf_and_the_sum_at_one() -> None:
    """p = inf takes the larger term, p = 1 adds them, and no work costs nothing."""
    assert overlap_s(math.inf, 2.0, 3.0) == 3.0
    assert overlap_s(1.0, 2.0, 3.0) == pytest.approx(5.0)
    assert overlap_s(2.0, 0.0, 0.0) == 0.0
    assert overlap_s(2.0, 3.0, 4.0) == pytest.approx(5.0)


def test_gemm_tiles_tokens_and_quantisation_adds_its_kernel_and_bytes() -> None:
    """Tokens round up to the tile in compute only; fp8 activations add a kernel and bytes."""
    p = RooflineParams(token_tile=64, fp8_gemm_kernel_s=1e-6, fp8_act_bytes=1.0)
    rates = (1e15, 1e30)  # compute-bound: memory is free
    assert gemm_s(p, 128, 256, 2.0, 65, rates, False) == pytest.approx(2 * 128 * 256 * 128 / 1e15)
    plain = gemm_s(p, 128, 256, 1.0, 64, (1e30, 1e12), False)
    quantised = gemm_s(p, 128, 256, 1.0, 64, (1e30, 1e12), True)
    assert quantised - plain == pytest.approx(1e-6 + 128 * 64 * 1.0 / 1e12)
