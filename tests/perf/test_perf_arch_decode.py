"""Closed-form decode runs of mixture-of-experts, MLA, sliding-window and hybrid
linear-attention models: the sum equals the iterations one by one (within float rounding)
on every path of the formula."""

from __future__ import annotations

import pytest

from sincere.catalog.loader import default_catalog
from sincere.perf.base import Batch, Deployment
from sincere.perf.factory import StepModelConfig
from sincere.perf.roofline import Roofline

CASES = [
    # model, accelerator, tp, pp, ep, precision: windows + experts, MLA + EP, plain MoE,
    # MoE under pipeline parallelism
    ("gpt-oss-120b", "H100-SXM", 2, 1, 1, "mxfp4"),
    ("gpt-oss-20b", "B200", 1, 1, 1, "mxfp4"),
    ("deepseek-v3", "H200", 8, 1, 8, "fp8"),
    ("qwen3-30b-a3b", "H100-SXM", 1, 1, 1, "bf16"),
    ("mixtral-8x7b", "A100-80GB", 2, 2, 1, "bf16"),
    # Gated DeltaNet layers beside full attention (a fixed state: a constant decode cost)
    ("qwen3.5-397b-a17b", "B200", 4, 1, 1, "fp8"),
    ("qwen3.5-397b-a17b", "A100-80GB", 8, 2, 1, "bf16"),
    ("qwen3.5-27b", "H100-SXM", 1, 1, 1, "fp8"),  # a dense hybrid
    ("qwen3-next-80b-a3b", "H200", 2, 1, 2, "bf16"),
]
RUNS = [(1, 100, 50), (8, 8 * 120, 300), (64, 64 * 3000, 500), (32, 32 * 127, 2000), (5, 0, 10)]


def _step(model: str, acc: str, tp: int, pp: int, ep: int, precision: str) -> Roofline:
    catalog = default_catalog()
    dep = Deployment(catalog.model(model), catalog.accelerator(acc), precision=precision, tp=tp,
                     pp=pp, ep=ep)  # fmt: skip
    step = StepModelConfig(kind="roofline").build(dep)
    assert isinstance(step, Roofline)
    return step


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize(("seqs", "ctx", "steps"), RUNS)
def test_decode_runs_sum_their_iterations(
    case: tuple[str, str, int, int, int, str], seqs: int, ctx: int, steps: int
) -> None:
    """gpt-oss's windows fill (128 tokens) inside some runs and are full from the start in
    others; DeepSeek's MLA; both sides of attention's compute/memory ridge."""
    step = _step(*case)
    one_by_one = sum(
        step.iteration_s(Batch(num_decode_seqs=seqs, decode_ctx_tokens=ctx + j * seqs))
        for j in range(steps)
    )
    assert step.decode_steps_s(seqs, ctx, steps) == pytest.approx(one_by_one, rel=1e-12)


def test_nothing_to_sum_is_zero() -> None:
    step = _step(*CASES[0])
    assert step.decode_steps_s(0, 0, 10) == 0.0 and step.decode_steps_s(4, 400, 0) == 0.0
