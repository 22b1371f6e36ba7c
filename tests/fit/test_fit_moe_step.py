"""The step model prices a layer's routed experts as the kernel fit predicts that layer's row."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from sincere.catalog import get_accelerator, get_model
from sincere.fit.kernels import predict_family
from sincere.perf import Batch, Deployment
from sincere.perf.arch_step import ArchStep, MoEParams
from sincere.perf.calibration import default_roofline_params
from sincere.perf.kernel_tables import KernelTable

KERNELS = Path(__file__).resolve().parents[2] / "src/sincere/data/perf/kernels"
FAMILY_CASES = {
    "moe": ("qwen3-30b-a3b", "bf16"),
    "moe_fp8": ("qwen3-30b-a3b", "fp8"),
    "moe_mxfp4": ("gpt-oss-120b", "mxfp4"),
    "moe_int4": ("qwen3-30b-a3b", "int4"),
}
"""Family -> a catalog model whose experts it prices, and the weight precision."""


def _fitted() -> list[tuple[str, str]]:
    """(accelerator, family) of every shipped kernel fit with a fused-MoE family."""
    out = []
    for path in sorted(KERNELS.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        names = doc["fit"]["families"]
        out += [(doc["fit"]["accelerator"], name) for name in FAMILY_CASES if name in names]
    return out


def _layer_row(model: str, tokens: int, distribution: str, tp: int = 1) -> KernelTable:
    """The fused-MoE table row of one layer of ``model`` over ``tp`` GPUs, no EP."""
    arch = get_model(model)
    cols: dict[str, Any] = {
        "num_tokens": [tokens], "hidden_size": [arch.hidden_size],
        "inter_size": [arch.expert_intermediate_size], "topk": [arch.experts_per_token],
        "num_experts": [arch.num_experts], "moe_tp_size": [tp], "moe_ep_size": [1],
        "distribution": [distribution],
    }  # fmt: skip
    arrays = {k: np.asarray(v, dtype=float) for k, v in cols.items() if k != "distribution"}
    arrays["distribution"] = np.asarray(cols["distribution"], dtype=str)
    return KernelTable("moe", Path("/layer/moe_perf.parquet"), "0", arrays)


def _step_experts_s(
    fit: dict[str, Any], model: str, precision: str, tokens: int, skew: float, tp: int = 1
) -> float:
    """One MoE layer's routed-experts time in a decode step of ``tokens`` sequences under
    the kernel fit's constants (over the accelerator's defaults where the fit is not them),
    at the kernel benchmark's clock, as the rows were measured (no sustained-load ratio)."""
    acc = get_accelerator(fit["accelerator"])
    dep = Deployment(get_model(model), acc, tp=tp, precision=precision)
    params = default_roofline_params(acc, {**fit["params"], "sustained_compute_ratio": 1.0})
    step = ArchStep(dep, params, MoEParams(routing_skew=skew))
    parts = step.parts(Batch.of(decode=[1500] * tokens))
    return parts.experts_s / get_model(model).num_moe_layers


ROUTINGS = [(1, "power_law_1.01", 1.01), (64, "power_law_1.2", 1.2), (2048, "power_law_1.01", 1.01)]
"""(tokens, the table's routing, its Zipf skew) of the rows compared: the skewed rows, which
the fit reads as the step does (its balanced rows are dealt in turn, not drawn:
``test_balanced_rows_are_dealt_in_turn``)."""


@pytest.mark.parametrize(("accelerator", "family"), _fitted())
@pytest.mark.parametrize(("tokens", "distribution", "skew"), ROUTINGS)
def test_a_steps_experts_are_the_fits_prediction_of_the_layers_row(
    accelerator: str, family: str, tokens: int, distribution: str, skew: float
) -> None:
    """Every shipped fused-MoE fit: a step's experts part over one MoE layer is the fit's
    own prediction of that layer's row (same routing, tile, tail, overlap, weight bytes and
    compute rate), to float rounding."""
    model, precision = FAMILY_CASES[family]
    doc = yaml.safe_load((KERNELS / f"{accelerator}.yaml").read_text())
    params = {**doc["params"], "_gemm_kernel_s": doc["fit"]["gemm_kernel_s"]}
    acc = get_accelerator(accelerator)
    row = _layer_row(model, tokens, distribution)
    fitted = float(predict_family(family, row, acc, params)[0])
    fit = {"accelerator": accelerator, "params": doc["params"]}
    step = _step_experts_s(fit, model, precision, tokens, skew)
    assert step == pytest.approx(fitted, rel=1e-9)


@pytest.mark.parametrize(("tp", "width"), [(4, 720), (8, 360)])
def test_narrow_and_unaligned_experts_are_priced_as_fitted(tp: int, width: int) -> None:
    """GPT-OSS-120B's bf16 experts (2,880 wide) over 4 and 8 H100s: the step's experts part is
    the fit's prediction of that layer's row at that TP, narrow-expert compute and all; at TP 8
    the width of 360 is off a multiple of 16 and costs Hopper's fitted factor (2.12: the
    database's Nemotron 3 Nano rows at TP 8, 232 wide, ran twice the aligned form's time)."""
    doc = yaml.safe_load((KERNELS / "H100-SXM.yaml").read_text())
    params = {**doc["params"], "_gemm_kernel_s": doc["fit"]["gemm_kernel_s"]}
    assert params["moe_unaligned_factor"] > 1.8 and params["moe_width_offset"] > 0.0
    fit = {"accelerator": "H100-SXM", "params": doc["params"]}
    for tokens in (1, 64, 2048):
        row = _layer_row("gpt-oss-120b", tokens, "power_law_1.01", tp)
        fitted = float(predict_family("moe", row, get_accelerator("H100-SXM"), params)[0])
        step = _step_experts_s(fit, "gpt-oss-120b", "bf16", tokens, 1.01, tp)
        assert step == pytest.approx(fitted, rel=1e-9)
        aligned = _step_experts_s(
            {**fit, "params": {**doc["params"], "moe_unaligned_factor": 1.0}},
            "gpt-oss-120b", "bf16", tokens, 1.01, tp,
        )  # fmt: skip
        factor = params["moe_unaligned_factor"] if width % 16 else 1.0
        assert step == pytest.approx(aligned * factor, rel=1e-9)


def test_balanced_rows_are_dealt_in_turn() -> None:
    """The database's balanced rows deal ``T k`` routed tokens to ``min(E, T k)`` experts in
    turn (its collector's ``balanced_logits``); the fit reads them so, while a step draws
    its tokens' experts at random: at 16 tokens of Qwen3-30B-A3B (128 experts, top-8)
    128 experts are read against about 82.4 drawn, and one token reads its 8 either way."""
    from sincere.perf.moe import expected_distinct_experts, round_robin_load

    assert round_robin_load(16, 128, 8, 16) == (128.0, 128.0 * 16, 1.0)
    assert expected_distinct_experts(16, 128, 8) == pytest.approx(82.4, abs=0.1)
    assert round_robin_load(1, 128, 8, 16)[0] == expected_distinct_experts(1, 128, 8) == 8
    assert round_robin_load(64, 128, 8, 16) == (128.0, 128.0 * 16, 4.0)
    assert round_robin_load(0, 128, 8, 16) == (0.0, 0.0, 0.0)


DATABASE = Path(__file__).resolve().parents[3] / "shared" / "data" / "kernels" / "aiconfigurator"


@pytest.mark.skipif(not (DATABASE / "b200_sxm").is_dir(), reason="the kernel database is not here")
def test_a_steps_experts_reproduce_the_measured_rows_of_its_layer() -> None:
    """Qwen3-30B-A3B's bf16 experts on B200: a step's experts part over one layer at each
    measured row's token count reproduces vLLM's fused-MoE rows of that shape under the
    balanced routing the fit takes within the fit's reported mean error over every shape,
    although the step draws its tokens' experts where those rows deal them (fewer experts
    read at 2-64 tokens)."""
    from sincere.fit.kernels import COLUMNS, family_rows, skew_of
    from sincere.perf.kernel_tables import read_table

    doc = yaml.safe_load((KERNELS / "B200.yaml").read_text())
    table = read_table(DATABASE / "b200_sxm", "moe", COLUMNS["moe"])
    assert table is not None
    rows = family_rows("moe", table)
    arch = get_model("qwen3-30b-a3b")
    shape = (arch.hidden_size, arch.expert_intermediate_size, arch.num_experts)
    keep = (rows.num("moe_tp_size") == 1) & (rows.num("num_tokens") <= 2048)
    for column, value in zip(("hidden_size", "inter_size", "num_experts"), shape, strict=True):
        keep &= rows.num(column) == value
    rows = rows.where(keep)
    assert rows.num_rows >= 15 and set(rows.columns["distribution"]) == {"balanced"}
    fit = {"accelerator": "B200", "params": doc["params"]}
    errors = [
        _step_experts_s(fit, "qwen3-30b-a3b", "bf16", int(t), skew_of(str(d))) / (ms * 1e-3) - 1
        for t, d, ms in zip(
            rows.num("num_tokens"), rows.columns["distribution"], rows.num("latency"), strict=True
        )
    ]
    assert float(np.mean(np.abs(errors))) < doc["fit"]["families"]["moe"]["mean_error"]


def test_only_hopper_pays_for_unaligned_experts() -> None:
    """The shipped fits: Hopper's bf16 experts run 2-2.5x as long at widths off a multiple of
    16 (the Triton kernel there), L40S's, RTX PRO 6000's and B200's within 25 % of the
    aligned form; every fit with fused-MoE rows has a narrow-expert offset (0 where the rows
    want none)."""
    factors = {}
    for name in ("H100-SXM", "H200", "L40S", "RTX-PRO-6000", "B200"):
        params = yaml.safe_load((KERNELS / f"{name}.yaml").read_text())["params"]
        factors[name] = params["moe_unaligned_factor"]
        assert params["moe_width_offset"] >= 0.0
    assert all(2.0 < factors[n] < 2.5 for n in ("H100-SXM", "H200"))
    assert all(0.8 < factors[n] < 1.25 for n in ("L40S", "RTX-PRO-6000", "B200"))
