"""Decode attention's second fixed cost: ``attn_decode_grouped_s`` on calls of two or
more sequences at two or more KV heads a GPU (FlashAttention-2's path on A100, L40S and
RTX PRO 6000), in one iteration and in the closed-form sum of many."""

from __future__ import annotations

import dataclasses

import pytest

from sincere.catalog import get_accelerator, get_model
from sincere.perf import Batch, Deployment, Roofline, default_roofline_params
from sincere.perf.roofline import RooflineParams

L40S = get_accelerator("L40S")
GROUPED = 4e-6


def _pair(model: str, tp: int = 1, pp: int = 1) -> tuple[Roofline, Roofline]:
    """The same deployment priced without and with the grouped cost."""
    dep = Deployment(get_model(model), L40S, tp=tp, pp=pp)
    base = dataclasses.replace(default_roofline_params(L40S), attn_decode_grouped_s=0.0)
    return Roofline(dep, base), Roofline(
        dep, dataclasses.replace(base, attn_decode_grouped_s=GROUPED)
    )


@pytest.mark.parametrize("model", ["llama-3-8b", "mixtral-8x7b"])
def test_a_call_of_two_or_more_sequences_pays_it_once_per_layer(model: str) -> None:
    """Dense and MoE (the architecture step): one sequence pays nothing more, two or more
    pay ``layers x attn_decode_grouped_s``, a prefill nothing."""
    without, with_ = _pair(model)
    layers = get_model(model).num_layers
    assert with_.decode_step_s(1, 2048) == without.decode_step_s(1, 2048)
    for n in (2, 7, 64):
        extra = with_.decode_step_s(n, n * 1024) - without.decode_step_s(n, n * 1024)
        assert extra == pytest.approx(layers * GROUPED, rel=1e-9)
    prefill = Batch.of(prefill=[(512, 0)])
    assert with_.iteration_s(prefill) == without.iteration_s(prefill)


def test_one_kv_head_a_gpu_pays_nothing() -> None:
    """Llama-3-8B's 8 KV heads over TP 8: one a GPU, the path without the second cost."""
    without, with_ = _pair("llama-3-8b", tp=8)
    assert with_.decode_step_s(16, 16 * 1024) == without.decode_step_s(16, 16 * 1024)


@pytest.mark.parametrize(("model", "tp", "pp"), [("llama-3-8b", 1, 1), ("llama-2-70b", 2, 2),
                                                 ("mixtral-8x7b", 2, 1)])  # fmt: skip
@pytest.mark.parametrize("n", [1, 2, 3, 5, 40])
def test_the_closed_form_sum_is_the_iterations_sum(model: str, tp: int, pp: int, n: int) -> None:
    """``decode_steps_s`` with the cost equals its iterations one by one, micro-batches of
    one sequence (n at most the micro-batches) and of more alike."""
    _, with_ = _pair(model, tp=tp, pp=pp)
    steps, ctx = 37, n * 900
    loop = sum(with_.decode_step_s(n, ctx + k * n) for k in range(steps))
    assert with_.decode_steps_s(n, ctx, steps) == pytest.approx(loop, rel=1e-9)


def test_the_shipped_fits_carry_it_where_measured() -> None:
    """FlashAttention-2's GPUs take their fitted cost (a few us); Hopper's and B200's
    kernels have none, exactly."""
    assert 2e-6 < default_roofline_params(L40S).attn_decode_grouped_s < 6e-6
    assert default_roofline_params(get_accelerator("RTX-PRO-6000")).attn_decode_grouped_s > 2e-6
    for name in ("H100-SXM", "H200", "B200"):
        assert default_roofline_params(get_accelerator(name)).attn_decode_grouped_s == 0.0
    with pytest.raises(Exception, match="attn_decode_grouped_s must be >= 0"):
        RooflineParams(attn_decode_grouped_s=-1e-6)
