"""The roofline's folded scalar path equals its term-by-term definition."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sincere.catalog import get_accelerator, get_model
from sincere.perf.base import Batch, Deployment, StepTimeBase
from sincere.perf.roofline import Roofline, RooflineParams

SETUPS = [(1, 1, 1), (2, 1, 1), (8, 1, 1), (1, 2, 1), (2, 4, 3), (4, 2, 8)]  # tp, pp, mbs
MODELS = [
    Roofline(
        Deployment(get_model("llama-3-8b"), get_accelerator("A100-80GB"), tp=tp, pp=pp),
        RooflineParams(pp_microbatches=mbs),
    )
    for tp, pp, mbs in SETUPS
]


def by_terms(model: Roofline, batch: Batch) -> float:
    """The module docstring's formula, from the unfolded terms."""
    if batch.num_tokens == 0:
        return 0.0
    t = model._terms(batch)
    return t.fixed_s + t.scale * (max(t.compute_s, t.memory_s) + t.comm_s)


batches = st.builds(
    Batch.of,
    st.lists(st.tuples(st.integers(1, 4096), st.integers(0, 8192)), max_size=6),
    st.lists(st.integers(1, 8192), max_size=64),
)


@given(st.sampled_from(range(len(MODELS))), batches)
def test_iteration_time_matches_the_terms(k: int, batch: Batch) -> None:
    """``iteration_s`` (the folded path) is the term-by-term roofline to round-off."""
    model = MODELS[k]
    assert model.iteration_s(batch) == pytest.approx(by_terms(model, batch), rel=1e-12)


@given(st.sampled_from(range(len(MODELS))), st.integers(1, 256), st.integers(1, 400))
@settings(max_examples=50)
def test_decode_runs_sum_the_iterations(k: int, n: int, steps: int) -> None:
    """``decode_steps_s`` equals the sum of the decode iterations it stands for."""
    model, ctx = MODELS[k], 300 * n
    one_by_one = sum(
        by_terms(model, Batch(num_decode_seqs=n, decode_ctx_tokens=ctx + j * n))
        for j in range(steps)
    )
    assert model.decode_steps_s(n, ctx, steps) == pytest.approx(one_by_one, rel=1e-9)


class Flat(StepTimeBase):
    """2 ms plus 1 us per token."""

    def iteration_s(self, batch: Batch) -> float:
        return 0.002 + 1e-6 * batch.num_tokens


def test_base_fast_path_builds_the_batch() -> None:
    """Without an override, ``iteration_s_fast`` is ``iteration_s`` of the same batch."""
    batch = Batch(2, 700, 300, 5e5, 10, 4000)
    assert Flat().iteration_s_fast(2, 700, 300, 5e5, 10, 4000) == Flat().iteration_s(batch)
