"""One GEMM's roofline (sincere.perf.gemm), shared by the dense roofline and the arch step."""

from __future__ import annotations

import math

import pytest

from sincere.perf.gemm import gemm_s, overlap_s
from sincere.perf.roofline import RooflineParams, quantisation_terms


def test_overlap_is_the_larger_at_inf_and_the_sum_at_one() -> None:
    """p = inf takes the larger term, p = 1 adds them, and no work costs nothing."""
    assert overlap_s(math.inf, 2.0, 3.0) == 3.0
    assert overlap_s(1.0, 2.0, 3.0) == pytest.approx(5.0)
    assert overlap_s(2.0, 0.0, 0.0) == 0.0
    assert overlap_s(2.0, 3.0, 4.0) == pytest.approx(5.0)


def test_gemm_tiles_tokens_and_quantisation_adds_its_kernel_and_time() -> None:
    """Tokens round up to the tile in compute only; quantised activations add a kernel and
    a time per element: fp8's or NVFP4's own, as the compute precision picks them."""
    p = RooflineParams(
        token_tile=64, fp8_gemm_kernel_s=1e-6, fp8_act_s=1e-12,
        nvfp4_gemm_kernel_s=3e-6, nvfp4_act_s=0.5e-12,
    )  # fmt: skip
    rates = (1e15, 1e30)  # compute-bound: memory is free
    assert gemm_s(p, 128, 256, 2.0, 65, rates, None) == pytest.approx(2 * 128 * 256 * 128 / 1e15)
    plain = gemm_s(p, 128, 256, 1.0, 64, (1e30, 1e12), None)
    fp8 = gemm_s(p, 128, 256, 1.0, 64, (1e30, 1e12), quantisation_terms(p, "fp8"))
    assert fp8 - plain == pytest.approx(1e-6 + 128 * 64 * 1.0 / 1e12)
    nvfp4 = gemm_s(p, 128, 256, 1.0, 64, (1e30, 1e12), quantisation_terms(p, "nvfp4"))
    assert nvfp4 - plain == pytest.approx(3e-6 + 128 * 64 * 0.5 / 1e12)
    assert quantisation_terms(p, "bf16") is None
