"""Invariants every step-time model must keep (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sincere.catalog import get_accelerator, get_model
from sincere.perf.base import Batch, Deployment, StepTimeBase
from sincere.perf.cc import CCParams, Confidential
from sincere.perf.linear import BinnedLinear, InfernoChunked, InfernoLinear
from sincere.perf.roofline import Roofline, RooflineParams
from sincere.perf.series import sum_max_affine
from sincere.perf.table import IterationTable, sincere_profile


def _models() -> dict[str, StepTimeBase]:
    h100 = get_accelerator("H100-SXM")
    small = Deployment(get_model("llama-3-8b"), h100)
    big = Deployment(get_model("llama-2-70b"), h100, tp=4, pp=2)
    return {
        "roofline": Roofline(small),
        "roofline-tp4-pp2": Roofline(big, RooflineParams(pp_microbatches=2)),
        "inferno": InfernoLinear(20.58, 0.41, 164.64, 0.0128125),
        "inferno-chunked": InfernoChunked(5.0, 0.02, 0.0005),
        "niyama-binned": BinnedLinear(
            [256], [[-0.002, 1e-5, 2e-5, 1e-4, 2e-7, 1e-7], [0.01, 5e-5, 1e-5, 1e-4, 2e-7, 1e-7]]
        ),
        "sincere-table": sincere_profile("llama3-8b"),
        "iteration-table": IterationTable([1, 512], [1, 256], [[0.01, 0.02], [0.05, 0.08]]),
        "cc-roofline": Confidential(Roofline(small), CCParams(min_iteration_s=0.012)),
    }


MODELS = _models()


@pytest.mark.parametrize("name", sorted(MODELS))
@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 256), ctx=st.integers(1, 4096), steps=st.integers(0, 600))
def test_decode_steps_equal_sum_of_iterations(name: str, n: int, ctx: int, steps: int) -> None:
    """decode_steps_s is exactly the sum of the decode iterations it stands for."""
    model = MODELS[name]
    loop = sum(model.decode_step_s(n, n * ctx + k * n) for k in range(steps))
    assert model.decode_steps_s(n, n * ctx, steps) == pytest.approx(loop, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("name", ["roofline", "roofline-tp4-pp2", "inferno", "inferno-chunked"])
@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 256),
    ctx=st.integers(1, 4096),
    chunk=st.integers(1, 4096),
    more=st.integers(1, 512),
)
def test_time_grows_with_work(name: str, n: int, ctx: int, chunk: int, more: int) -> None:
    """More decode sequences, longer context or a longer prefill chunk never take less time."""
    model = MODELS[name]
    base = model.decode_step_s(n, n * ctx)
    assert model.decode_step_s(n + more, (n + more) * ctx) >= base
    assert model.decode_step_s(n, n * (ctx + more)) >= base
    pre = model.iteration_s(Batch.of(prefill=[(chunk, ctx)]))
    assert model.iteration_s(Batch.of(prefill=[(chunk + more, ctx)])) >= pre > 0


@settings(max_examples=200, deadline=None)
@given(
    a=st.floats(-10, 10),
    sa=st.floats(-1, 1),
    b=st.floats(-10, 10),
    sb=st.floats(-1, 1),
    k=st.integers(0, 300),
)
def test_sum_max_affine_matches_loop(a: float, sa: float, b: float, sb: float, k: int) -> None:
    """The split-at-crossing sum equals summing max() step by step."""
    loop = sum(max(a + sa * i, b + sb * i) for i in range(k))
    assert sum_max_affine(a, sa, b, sb, k) == pytest.approx(loop, rel=1e-9, abs=1e-9)
