"""Default roofline constants: an accelerator's own fit, else the shipped prior."""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

from sincere.catalog import get_accelerator, get_model
from sincere.catalog.loader import default_catalog
from sincere.core.errors import DataError
from sincere.perf import Batch, Deployment, Roofline, make_step_model
from sincere.perf.calibration import (
    FIT_TRANSFER,
    GDN_PREFILL,
    KERNEL_PARTS,
    PRIOR_FIELDS,
    QUANT_EXPERT_PRIORS,
    default_roofline_params,
    fit_documents,
    kernel_fit_for,
    kernel_fits,
    power_headroom,
    roofline_defaults,
    shipped_fits,
)
from sincere.perf.kernel_choice import prefill_attention_kernel
from sincere.perf.roofline import Gemm, RooflineParams

CLASS_PRIOR_FIELDS = (
    set(GDN_PREFILL)
    | set(KERNEL_PARTS["mla_decode"])
    | set(KERNEL_PARTS["expert_parallel"])
    | set(KERNEL_PARTS["experts"])
    | set(QUANT_EXPERT_PRIORS["moe_mxfp4"])
    | set(QUANT_EXPERT_PRIORS["moe_int4"])
)
"""Constants A100 and L4 take from the GPUs running the same kernel (no rows of their own in
their default fits: A100's kernel fit, EP rows included, is not its default), or whose
kernels use the same tensor-core instructions (bf16, MXFP4 and INT4 experts)."""
COLLECTIVE_FIELDS = set(KERNEL_PARTS["communication"]) | set(KERNEL_PARTS["all_to_all"])
"""Constants every kernel fit gives its GPU (A100's too, whose fit is not its default), and
L4 takes over its link from the L40S's."""


def test_a_family_fitted_on_skewed_routings_alone_does_not_stand_in() -> None:
    """A kernel fit's family stands in for other GPUs unless its notes say it was fitted on
    skewed routings alone (A100's fused-MoE tables time no balanced routing)."""
    from sincere.perf.calibration import stands_in
    from sincere.perf.moe import SKEWED_ROUTING_NOTE

    a100 = kernel_fits()["A100-80GB"]
    assert SKEWED_ROUTING_NOTE in a100["fit"]["families"]["moe_ep"]["notes"]
    assert not stands_in(a100, "moe_ep")
    assert stands_in(kernel_fits()["H100-SXM"], "moe_ep")
    assert stands_in({"params": {}}, "moe_ep")  # a fit without notes stands in


def test_a_blackwell_takes_the_flashinfer_fused_moes_expert_parallel_terms() -> None:
    """Under EP vLLM runs FlashInfer's fused MoE from compute capability 10 on (TensorRT-LLM's
    kernel on B200, CUTLASS's on RTX PRO 6000), which takes only the GPU's own routed pairs:
    one class, whose prior is those two fits' mean, not the Triton GPUs' pass."""
    from sincere.perf.calibration import CLASS_PRIORS, RooflineDefaults, _with_class_prior
    from sincere.perf.kernel_choice import moe_ep_kernel

    kinds = {n: moe_ep_kernel(get_accelerator(n)) for n in ("B200", "RTX-PRO-6000", "H100")}
    assert kinds == {"B200": "moe_flashinfer", "RTX-PRO-6000": "moe_flashinfer",
                     "H100": "moe_triton"}  # fmt: skip
    fields, family = CLASS_PRIORS["expert_parallel"]
    bare = RooflineDefaults({}, "prior", {})
    prior = _with_class_prior(get_accelerator("B300"), bare, "expert_parallel", fields, family)
    theirs = [kernel_fits()[n]["params"] for n in ("B200", "RTX-PRO-6000")]
    for name in fields:
        assert prior.params[name] == pytest.approx(sum(p[name] for p in theirs) / 2), name
    assert "FlashInfer's fused MoE" in prior.parts["expert_parallel"]


@pytest.mark.parametrize(
    ("gpu", "kind"),
    [("A100", "experts_mma"), ("A10G", "experts_mma"), ("A6000", "experts_mma"),
     ("L4", "experts_mma"), ("L40S", "experts_mma"), ("RTX-PRO-6000", "experts_mma"),
     ("H100-PCIe", "experts_wgmma"), ("H200", "experts_wgmma"), ("B200", "experts_tcgen05"),
     ("GB300", "experts_tcgen05"), ("MI300X", None)],
)  # fmt: skip
def test_experts_are_classed_by_the_tensor_core_instructions(gpu: str, kind: str | None) -> None:
    """The fused MoE's share of the peak follows the tensor-core instructions its kernel
    compiles to, not its library (Triton on L40S, CUTLASS on RTX PRO 6000, both warp-level
    MMA): warp-level MMA on 8.x and 12.x, Hopper's warp-group MMA, the data-centre
    Blackwells' tcgen05, for the bf16 experts and the MXFP4 and INT4 ones alike; a GPU that
    is not CUDA has no class."""
    from sincere.perf.kernel_choice import KERNEL_CLASSES

    acc = get_accelerator(gpu)
    assert {KERNEL_CLASSES[f](acc) for f in ("moe", "moe_mxfp4", "moe_int4")} == {kind}


def test_fp8_and_fp4_experts_have_no_class_without_their_tensor_cores() -> None:
    """fp8 experts below compute capability 8.9 run dequantised (the bf16 experts' constants
    price them), NVFP4 and MXFP4 x MXFP8 experts need fp4 tensor cores: no class there."""
    from sincere.perf.kernel_choice import KERNEL_CLASSES

    a100, l4, rtx = (get_accelerator(n) for n in ("A100", "L4", "RTX-PRO-6000"))
    assert KERNEL_CLASSES["moe_fp8"](a100) is None
    assert KERNEL_CLASSES["moe_fp8"](l4) == "experts_mma"
    for family in ("moe_nvfp4", "moe_mxfp4_mxfp8"):
        assert KERNEL_CLASSES[family](l4) is None
        assert KERNEL_CLASSES[family](rtx) == "experts_mma"
    assert KERNEL_CLASSES["moe_int4"](a100) == KERNEL_CLASSES["moe_mxfp4"](a100) == "experts_mma"


def test_a_gpu_without_quantised_expert_rows_takes_its_classs_mean() -> None:
    """L4 (8.9, no kernel rows) takes its fp8, MXFP4 and INT4 experts' constants from L40S
    and RTX PRO 6000, averaged, and says so; A100 its MXFP4 and INT4 experts' alone (its fp8
    experts run dequantised); H100-PCIe keeps the constants of the H100-SXM it is a variant
    of."""
    l4 = roofline_defaults(get_accelerator("L4"))
    a100 = roofline_defaults(get_accelerator("A100"))
    theirs = [kernel_fits()[n]["params"] for n in ("L40S", "RTX-PRO-6000")]
    for family in ("moe_fp8", "moe_mxfp4", "moe_int4"):
        for name in QUANT_EXPERT_PRIORS[family]:
            mean = sum(float(p[name]) for p in theirs) / 2
            assert l4.params[name] == pytest.approx(mean), name
            if family != "moe_fp8":
                assert a100.params[name] == pytest.approx(mean), name
    assert "moe_fp8_mfu_efficiency" not in a100.params
    assert not any(n in l4.params for n in QUANT_EXPERT_PRIORS["moe_nvfp4"])
    assert l4.parts["quantised_experts"].startswith(
        "prior: the fp8, MXFP4 and INT4 experts of the L40S and RTX-PRO-6000 kernel fits "
        "averaged (warp-level MMA (compute capability 8.x and 12.x), the tensor-core"
    )
    assert a100.parts["quantised_experts"].startswith("prior: the MXFP4 and INT4 experts of")
    assert a100.parts["quantised_experts"].endswith(
        "fp8 experts run dequantised to bf16 (no fp8 tensor cores): the bf16 experts' constants"
    )
    pcie = roofline_defaults(get_accelerator("H100-PCIe"))
    sxm = kernel_fits()["H100-SXM"]["params"]
    assert pcie.parts["quantised_experts"].startswith("transferred: measured vLLM")
    assert pcie.params["moe_int4_mfu_efficiency"] == sxm["moe_int4_mfu_efficiency"]
    assert roofline_defaults(get_accelerator("MI300X")).parts["quantised_experts"] == (
        "prior: the bf16 experts' constants (no quantised-expert kernel of its class measured)"
    )


def test_a_gpu_without_bf16_expert_rows_takes_its_classs_mean() -> None:
    """L4, A10G, A6000 and A100 (whose kernel fit, fitted on skewed routings alone, is not
    its default) take their bf16 experts from L40S and RTX PRO 6000, averaged, and say so;
    a GPU of a class nobody else measured keeps its fit; MI300X keeps the datasheet's."""
    theirs = [kernel_fits()[n]["params"] for n in ("L40S", "RTX-PRO-6000")]
    for gpu in ("L4", "A10G", "A6000", "A100", "A100-40GB"):
        defaults = roofline_defaults(get_accelerator(gpu))
        for name in KERNEL_PARTS["experts"]:
            mean = sum(float(p[name]) for p in theirs) / 2
            assert defaults.params[name] == pytest.approx(mean), (gpu, name)
        assert defaults.parts["experts"] == (
            "prior: the bf16 experts (the fused MoE without expert parallelism) of the L40S "
            "and RTX-PRO-6000 kernel fits averaged (warp-level MMA (compute capability 8.x "
            "and 12.x), the tensor-core instructions this GPU's peak needs too, which set the "
            "share of it vLLM's fused-MoE kernels reach)"
        ), gpu
    a100 = roofline_defaults(get_accelerator("A100")).params
    assert a100["moe_mfu_efficiency"] != kernel_fits()["A100-80GB"]["params"]["moe_mfu_efficiency"]
    b200 = roofline_defaults(get_accelerator("GB200"))
    assert b200.parts["experts"].startswith("transferred: measured vLLM")
    mi300x = roofline_defaults(get_accelerator("MI300X"))
    assert mi300x.parts["experts"] == "datasheet assumptions"
    assert "moe_mfu_efficiency" not in mi300x.params


def test_a_bf16_moe_on_a100_is_priced_from_its_classs_experts() -> None:
    """A bf16 MoE on A100 runs its experts at its class's fitted shares and fixed costs,
    not at the Vidur-fitted GEMMs' shares with none: its prefill's experts take longer."""
    import dataclasses as dc

    a100 = get_accelerator("A100")
    dep = Deployment(get_model("qwen3-30b-a3b"), a100, tp=2)
    batch = Batch.of(prefill=[(2048, 0)])
    params = default_roofline_params(a100)
    bare = {n: getattr(RooflineParams(), n) for n in KERNEL_PARTS["experts"]}
    priced = Roofline(dep, params).parts(batch).experts_s
    datasheet = Roofline(dep, dc.replace(params, **bare)).parts(batch).experts_s
    assert priced > 1.1 * datasheet


def test_an_int4_moe_on_l4_is_priced_from_the_marlin_class() -> None:
    """An INT4 MoE deployment on L4 runs its experts at the class's share of L4's bf16 peak,
    not at the bf16 experts' datasheet assumptions: its experts' time changes with the
    prior."""
    import dataclasses as dc

    dep = Deployment(get_model("qwen3-30b-a3b"), get_accelerator("L4"), "int4")
    batch = Batch.of(prefill=[(2048, 0)])
    params = default_roofline_params(get_accelerator("L4"))
    without = dc.replace(params, **{n: None for n in QUANT_EXPERT_PRIORS["moe_int4"]})
    priced = Roofline(dep, params).parts(batch).experts_s
    assert priced != pytest.approx(Roofline(dep, without).parts(batch).experts_s, rel=0.01)


def shipped_a100() -> dict[str, object]:
    """The shipped A100 fit, read straight from the package data."""
    text = (
        resources.files("sincere")
        .joinpath("data", "perf", "roofline", "A100-80GB.yaml")
        .read_text()
    )
    doc: dict[str, object] = yaml.safe_load(text)
    return doc


def test_a100_uses_its_own_fit() -> None:
    """A100-80GB's defaults are the fitted file's parameters, said to be fitted (and, for
    the linear-attention layers and MLA decode its fit has no rows of, the priors of the
    Triton delta rule and the Triton MLA kernel; its collectives, its kernel fit's)."""
    defaults = roofline_defaults(get_accelerator("A100"))
    others = CLASS_PRIOR_FIELDS | COLLECTIVE_FIELDS
    own = {k: v for k, v in defaults.params.items() if k not in others}
    assert own == {k: v for k, v in shipped_a100()["params"].items() if k not in others}
    assert set(defaults.params) - set(own) == others
    assert defaults.parts["mla_decode"].startswith("prior: MLA decode of the L40S and")
    assert defaults.parts["expert_parallel"].startswith(
        "prior: the fused MoE's pass over other GPUs' routed pairs and cost per call under "
        "expert parallelism of the H100-SXM, H200, L40S kernel fits averaged (vLLM's Triton "
        "fused MoE"
    )  # A100's own EP rows time skewed routings only: its fit does not stand in
    triton = [kernel_fits()[g]["params"] for g in ("H100-SXM", "H200", "L40S")]
    for name in KERNEL_PARTS["expert_parallel"]:
        assert defaults.params[name] == pytest.approx(sum(p[name] for p in triton) / 3)
    # the collectives: vLLM's all-reduce and NCCL's all-to-all measured on A100 itself
    kernels = kernel_fits()["A100-80GB"]["params"]
    for name in COLLECTIVE_FIELDS:
        assert defaults.params[name] == kernels[name], name
    assert defaults.parts["communication"].startswith("fitted: measured vLLM 0.14.0 kernels")
    assert defaults.parts["all_to_all"].startswith("fitted: measured NCCL")
    assert defaults.origin.startswith("fitted: sincere/data/perf/roofline/A100-80GB.yaml; ")
    assert "collectives fitted: measured vLLM" in defaults.origin
    assert Roofline(
        Deployment(get_model("llama-3-8b"), get_accelerator("A100"))
    ).params == default_roofline_params(get_accelerator("A100"))


def test_the_fit_names_its_sources_and_command() -> None:
    """The shipped file carries the profile files, the models and the command that made it."""
    info = shipped_a100()["fit"]
    assert isinstance(info, dict)
    assert info["command"].startswith("sincere fit gpu-profiles ")
    assert "mlp_llama-3-8b.csv" in info["files"] and "codellama-34b" in info["models"]
    assert set(shipped_fits()) == {"A100-80GB", "H100-SXM"}


def shipped_kernels(name: str) -> dict[str, Any]:
    """A kernel fit file as shipped."""
    text = resources.files("sincere").joinpath("data", "perf", "kernels", f"{name}.yaml")
    doc: dict[str, Any] = yaml.safe_load(text.read_text())
    return doc


def test_h100_takes_its_measured_kernels_over_its_profile_fit() -> None:
    """H100-SXM: GEMM, attention, all-reduce and MoE constants from its measured vLLM kernels
    (no attention borrowed from A100, no fixed 32 us all-reduce); elementwise and CPU terms
    stay those of its Vidur-profile fit, and each part says where it comes from."""
    h100 = roofline_defaults(get_accelerator("H100-SXM"))
    kernels = shipped_kernels("H100-SXM")
    for name, value in kernels["params"].items():
        assert h100.params[name] == value, name
    vidur = shipped_fits()["H100-SXM"]["params"]
    assert h100.params["elementwise_bw_efficiency"] == vidur["elementwise_bw_efficiency"]
    assert h100.params["attn_mfu_efficiency"] != shipped_a100()["params"]["attn_mfu_efficiency"]  # type: ignore[index]
    assert h100.params["allreduce_latency_s"] < 10e-6 < vidur["allreduce_latency_s"]
    assert "kernels/H100-SXM.yaml" in h100.parts["prefill_attention"]
    assert "kernels/H100-SXM.yaml" in h100.parts["communication"]
    assert h100.parts["cpu"].startswith("borrowed: A100-80GB")
    assert kernels["fit"]["families"]["allreduce"]["rows"] > 0


def test_h200_fits_its_kernels_over_the_transferred_h100_base() -> None:
    """H200 has its own measured kernels; only its elementwise and CPU terms are transferred."""
    h200 = roofline_defaults(get_accelerator("H200"))
    assert h200.params["mfu_efficiency"] == shipped_kernels("H200")["params"]["mfu_efficiency"]
    assert h200.parts["linear"].startswith("fitted: measured vLLM")
    assert h200.parts["elementwise"].startswith("transferred:")


def test_a100_kernel_fit_is_shipped_but_not_the_default() -> None:
    """A100-80GB keeps its Vidur-fitted constants but for the collectives; its kernel fit
    is there for --params. Its all-reduce is vLLM's, in a CUDA graph for a decode: a
    16-token layer's two calls over 4 A100s cost a fifth of Vidur's eager NCCL ones."""
    doc = shipped_kernels("A100-80GB")
    assert doc["fit"]["default"] is False
    params = roofline_defaults(get_accelerator("A100")).params
    others = CLASS_PRIOR_FIELDS | COLLECTIVE_FIELDS
    vidur = {k: v for k, v in shipped_a100()["params"].items() if k not in others}
    assert {k: v for k, v in params.items() if k not in others} == vidur
    deployment = Deployment(get_model("llama-3.1-70b"), get_accelerator("A100"), tp=4)
    served = Roofline(deployment).kernels.gridded_comm_layer_s(16)
    vidur_comm = {k: shipped_a100()["params"][k] for k in KERNEL_PARTS["communication"]
                  if k in shipped_a100()["params"]}  # fmt: skip
    assert set(vidur_comm) == {"allreduce_latency_s", "interconnect_efficiency"}
    nccl = dataclasses.replace(
        default_roofline_params(get_accelerator("A100"), vidur_comm),
        allreduce_gpus=(), allreduce_latencies_s=(), allreduce_efficiencies=(),
        allreduce_eager_s=0.0, allreduce_eager_floor_s=0.0, allreduce_grid=None,
    )  # fmt: skip
    eager_nccl = Roofline(deployment, nccl).kernels.gridded_comm_layer_s(16)
    assert served < 0.25 * eager_nccl


@pytest.mark.parametrize(
    ("variant", "fitted"), [("H100-PCIe", "H100-SXM"), ("A100-40GB", "A100-80GB")]
)
def test_variants_take_their_chips_fit_whole(variant: str, fitted: str) -> None:
    """A variant of a fitted chip takes its parameters whole, with its own datasheet peaks;
    not the chip's clock under sustained load, which is measured per GPU (another power
    limit: the H100-PCIe's 350 W against the SXM's 700 W)."""
    defaults = roofline_defaults(get_accelerator(variant))
    chip = dict(roofline_defaults(get_accelerator(fitted)).params)
    chip.pop("sustained_compute_ratio", None)
    assert "sustained_compute_ratio" not in defaults.params
    assert defaults.params == chip
    assert defaults.origin.startswith("transferred:") and fitted in defaults.origin
    acc = get_accelerator(variant)
    dep = Deployment(get_model("llama-3-8b"), acc)
    same = Deployment(get_model("llama-3-8b"), get_accelerator(fitted))
    gemm = Gemm(4096, 2 * 14336)  # one decode token: the GEMM streams its weights
    ratio = Roofline(same).kernels.gemm_s(gemm, 1) / Roofline(dep).kernels.gemm_s(gemm, 1)
    bw = acc.hbm_bandwidth_gbps / get_accelerator(fitted).hbm_bandwidth_gbps
    assert ratio == pytest.approx(bw, rel=0.01)  # memory-bound kernels scale by the bandwidth


def test_transfer_rule_names_catalog_accelerators() -> None:
    """Every entry of the transfer rule is a catalog accelerator whose source has a shipped
    fit: a roofline fit, or (B200) a kernel fit."""
    for variant, fitted in FIT_TRANSFER.items():
        assert get_accelerator(variant).name == variant
        assert fitted in shipped_fits() or fitted in kernel_fits()


@pytest.mark.parametrize("variant", ["B300", "GB200", "GB300"])
def test_blackwell_variants_take_b200s_kernel_fits(variant: str) -> None:
    """B300, GB200 and GB300 price every measured part with B200's kernel constants (the
    stack's shares of the peaks) against their own datasheet peaks; the parts B200's fit
    does not hold (elementwise, CPU) stay the prior."""
    acc = get_accelerator(variant)
    defaults = roofline_defaults(acc)
    b200 = kernel_fits()["B200"]["params"]
    for name in ("moe_nvfp4_bw_efficiency", "attn_bw_efficiency", "moe_nvfp4_kernel_s"):
        assert defaults.params[name] == b200[name]
    # more board power per peak FLOP than B200 (1,100-1,400 W against 1,000 W): compute
    # shares raised by that ratio, at most the best fit's (next test)
    ratio = power_headroom(acc, get_accelerator("B200"))
    assert ratio > 1.05
    best = max(d["params"]["nvfp4_mfu_efficiency"] for d in kernel_fits().values()
               if d["params"].get("nvfp4_mfu_efficiency") is not None)  # fmt: skip
    expected = min(best, b200["nvfp4_mfu_efficiency"] * ratio)
    assert defaults.params["nvfp4_mfu_efficiency"] == pytest.approx(expected)
    assert defaults.parts["experts"].startswith("transferred: measured vLLM")
    assert "board power per peak FLOP" in defaults.parts["experts"]
    assert defaults.parts["elementwise"].startswith("prior")


def test_a_variant_with_more_power_per_flop_is_not_held_to_its_chips_power_limit() -> None:
    """The L40S (AD102 at 350 W) reaches 0.61 of its GEMM peak; the RTX 4090 (the same die
    at 450 W, half the rate with FP32 accumulation) has 2.8x its power per peak FLOP, so its
    compute shares rise to the best any fit reaches; bandwidth shares stay the L40S's. A
    variant with less power per FLOP than its chip (H100-PCIe) keeps the chip's shares."""
    rtx, l40s = get_accelerator("RTX-4090"), get_accelerator("L40S")
    ratio = power_headroom(rtx, l40s)
    assert ratio == pytest.approx((450 / 165.2) / (350 / 362.05), rel=1e-3)
    defaults = roofline_defaults(rtx).params
    chip = roofline_defaults(l40s).params
    fits = [*shipped_fits().values(), *kernel_fits().values()]
    for name in ("mfu_efficiency", "fp8_mfu_efficiency", "moe_mfu_efficiency"):
        best = max(float(d["params"][name]) for d in fits if d["params"].get(name) is not None)
        assert defaults[name] == pytest.approx(max(chip[name], min(best, chip[name] * ratio)))
        assert defaults[name] > chip[name]
    for name in ("bw_efficiency", "attn_bw_efficiency", "moe_bw_efficiency"):
        assert defaults[name] == chip[name]
    assert power_headroom(get_accelerator("H100-PCIe"), get_accelerator("H100-SXM")) == 1.0
    # a compute-bound prefill chunk: faster than at the L40S's shares, never above the peak
    dep = Deployment(get_model("llama-3.1-8b"), rtx)
    batch = Batch.of(prefill=[(2048, 0)])
    chunk = make_step_model("roofline", dep).iteration_s(batch)
    at_chip = make_step_model(
        "roofline", dep, {k: chip[k] for k in ("mfu_efficiency", "attn_mfu_efficiency")}
    ).iteration_s(batch)
    assert chunk < 0.8 * at_chip
    assert chunk > 2 * 2048 * 7.0e9 / (rtx.peak_tflops("bf16") * 1e12)


def test_other_accelerators_take_the_prior() -> None:
    """L4 keeps its datasheet peaks and takes the stack's constants averaged over the fits
    (but for the parts whose kernel its vLLM shares with measured GPUs: next test)."""
    l4 = roofline_defaults(get_accelerator("L4"))
    fits = [doc["params"] for doc in shipped_fits().values()]
    attention = set(KERNEL_PARTS["prefill_attention"]) | set(KERNEL_PARTS["decode_attention"])
    fp8 = set(QUANT_EXPERT_PRIORS["moe_fp8"])  # fp8 tensor cores: its fp8 experts' class too
    assert set(l4.params) == (
        set(PRIOR_FIELDS) | CLASS_PRIOR_FIELDS | attention | COLLECTIVE_FIELDS | fp8
    )
    mean = sum(f["mfu_efficiency"] for f in fits) / len(fits)
    assert l4.params["mfu_efficiency"] == pytest.approx(mean)
    assert l4.params["token_tile"] == min(f["token_tile"] for f in fits)
    assert l4.origin.startswith("prior:")


def test_a_gpu_without_kernels_takes_the_kernels_its_vllm_runs() -> None:
    """L4 (compute capability 8.9) runs FlashAttention 2 like A100, L40S and RTX PRO 6000:
    its prefill attention is their kernel fits' mean, factor by shape node by node, and
    says so; H100-PCIe takes H100-SXM's fit whole; a GPU without CUDA keeps the prior."""
    l4 = roofline_defaults(get_accelerator("L4"))
    fa2 = [kernel_fits()[n]["params"] for n in ("A100-80GB", "L40S", "RTX-PRO-6000")]
    assert prefill_attention_kernel(get_accelerator("L4")) == "fa2"
    mean = sum(p["attn_mfu_efficiency"] for p in fa2) / 3
    assert l4.params["attn_mfu_efficiency"] == pytest.approx(mean)
    node = sum(p["prefill_attention_grid"]["log_factors"][7] for p in fa2) / 3
    assert l4.params["prefill_attention_grid"]["log_factors"][7] == pytest.approx(node)
    assert l4.parts["prefill_attention"] == (
        "prior: prefill attention of the A100-80GB, L40S, RTX-PRO-6000 kernel fits averaged "
        "(FlashAttention 2, which this GPU's vLLM runs too)"
    )
    # decode attention too, FlashAttention 2's second fixed cost on grouped calls included
    grouped = sum(p["attn_decode_grouped_s"] for p in fa2) / 3
    assert l4.params["attn_decode_grouped_s"] == pytest.approx(grouped) and grouped > 2e-6
    assert l4.parts["decode_attention"].startswith("prior: decode attention of the A100-80GB")
    pcie = roofline_defaults(get_accelerator("H100-PCIe"))
    assert pcie.parts["prefill_attention"].startswith("transferred: measured vLLM")
    assert prefill_attention_kernel(get_accelerator("H100-PCIe")) == "fa3"
    mi300x = roofline_defaults(get_accelerator("MI300X"))
    assert prefill_attention_kernel(get_accelerator("MI300X")) is None
    assert mi300x.parts["prefill_attention"].startswith("prior: mean of the shipped fits")
    kinds = {n: prefill_attention_kernel(get_accelerator(n)) for n in ("B200", "RTX-PRO-6000")}
    assert kinds == {"B200": "trtllm", "RTX-PRO-6000": "fa2"}


def test_a_gpu_without_collectives_takes_those_measured_over_its_own_link() -> None:
    """The L4 and the A10G sit on PCIe Gen4 x16 like the L40S: their all-reduce (per GPU
    count, the factor by message size) and all-to-all are the L40S's measured ones, and say
    so; H100 and H200 share a class (their own fits win); on a link no measured GPU has
    (the A6000's bridge, MI300X's Infinity Fabric) a GPU takes every kernel fit's mean, not
    the stack-wide prior's eager NCCL latency."""
    from sincere.perf.kernel_choice import link_class

    l40s = kernel_fits()["L40S"]["params"]
    for name in ("L4", "A10G"):
        acc = get_accelerator(name)
        assert link_class(acc) == link_class(get_accelerator("L40S")) == "link:64"
        got = roofline_defaults(acc)
        for key in (*KERNEL_PARTS["communication"], *KERNEL_PARTS["all_to_all"]):
            assert got.params[key] == l40s[key], (name, key)
        assert got.parts["communication"] == (
            "prior: the all-reduce (vLLM's custom all-reduce, in and out of CUDA graphs) of "
            "the L40S kernel fits averaged (PCIe Gen4 x16, the GPU-to-GPU link this GPU's "
            "collectives run over too)"
        )
        all_to_all = got.parts["all_to_all"]
        assert all_to_all.startswith("prior: the expert-parallel all-to-all of the L40S")
    assert link_class(get_accelerator("H100-SXM")) == link_class(get_accelerator("H200"))
    assert roofline_defaults(get_accelerator("H200")).parts["communication"].startswith("fitted:")
    assert link_class(get_accelerator("MI300X")) is None
    everyone = [doc["params"] for doc in kernel_fits().values()]
    for name in ("A6000", "MI300X"):
        got = roofline_defaults(get_accelerator(name))
        assert got.parts["communication"].endswith(
            "kernel fits averaged (no measured GPU on its link: every measured GPU's, over "
            "other links)"
        ), name
        latency = sum(p["allreduce_latencies_s"][1] for p in everyone) / len(everyone)
        assert got.params["allreduce_latencies_s"][1] == pytest.approx(latency)
        assert got.params["allreduce_latency_s"] < 0.5 * 38e-6  # not Vidur's eager NCCL call
    # priced: a layer's all-reduces at TP 4 on the L4 are the L40S's (the same link's
    # bandwidth), not the stack-wide prior's, which is NVLink GPUs' as much as PCIe ones'
    model = get_model("llama-3.1-8b")

    def layer_comm_s(name: str) -> float:
        deployment = Deployment(model=model, accelerator=get_accelerator(name), tp=4)
        return Roofline(deployment).kernels.gridded_comm_layer_s(16)

    assert layer_comm_s("L4") == pytest.approx(layer_comm_s("L40S"), rel=1e-9)
    assert layer_comm_s("A6000") < 0.9 * layer_comm_s("L4")


def test_lists_of_constants_are_averaged_entry_by_entry() -> None:
    """Per-GPU-count constants average entry by entry; fits measured at other GPU counts
    are not averaged (a DataError names the field)."""
    from sincere.perf.calibration import _mean_of

    assert _mean_of("allreduce_latencies_s", [[1.0, 2.0], [3.0, 4.0]]) == [2.0, 3.0]
    assert _mean_of("allreduce_gpus", [[2, 4], [2, 4]]) == [2, 4]
    with pytest.raises(DataError, match="allreduce_gpus differ"):
        _mean_of("allreduce_gpus", [[2, 4], [2, 8]])
    with pytest.raises(DataError, match="allreduce_efficiencies differ"):
        _mean_of("allreduce_efficiencies", [[0.5, 0.4], [0.5]])


def test_factors_by_shape_on_other_axes_are_not_averaged() -> None:
    """Averaging two fits' factors by shape needs the same nodes: else a DataError names
    the field and both axes."""
    from sincere.perf.calibration import _mean_of

    one = {"axes": [[0, 8, 5]], "log_factors": [0.0] * 5}
    other = {"axes": [[0, 8, 3]], "log_factors": [0.0] * 3}
    assert _mean_of("g", [one, {**one, "log_factors": [0.2] * 5}])["log_factors"][0] == 0.1
    with pytest.raises(DataError, match="g lie on different axes"):
        _mean_of("g", [one, other])


def test_explicit_parameters_override_the_defaults() -> None:
    """A config's params win over the fitted ones; the rest stay fitted."""
    dep = Deployment(get_model("llama-3-8b"), get_accelerator("A100"))
    model = make_step_model("roofline", dep, {"mfu_efficiency": 0.5})
    assert isinstance(model, Roofline)
    assert model.params.mfu_efficiency == 0.5
    assert model.params.bw_efficiency == default_roofline_params(dep.accelerator).bw_efficiency
    prefill = Batch.of(prefill=[(2048, 0)])
    assert model.iteration_s(prefill) > Roofline(dep).iteration_s(prefill)


def test_unknown_override_is_named() -> None:
    """A misspelt field raises, listing the fields."""
    with pytest.raises(Exception, match=r"unknown roofline parameter.*mfu_eficiency"):
        default_roofline_params(get_accelerator("A100"), {"mfu_eficiency": 0.4})


def test_configured_step_models_take_the_transferred_defaults() -> None:
    """A config's roofline block (simulate, emulate, plan, deploy) needs no option for H200."""
    from sincere.perf.factory import StepModelConfig

    dep = Deployment(get_model("llama-3-8b"), get_accelerator("H200"))
    built = StepModelConfig(kind="roofline").build(dep)
    assert isinstance(built, Roofline)
    expected = default_roofline_params(get_accelerator("H200"))
    assert built.params == expected == Roofline(dep).params
    assert expected.allreduce_gpus == (2, 4, 8)  # the YAML lists arrive as tuples


def _kernel_fits_in(folder: Path) -> dict[str, dict[str, Any]]:
    return fit_documents(folder, "fits", lambda doc: "params" in doc, "not a kernel fit")


def test_fit_documents_key_by_catalog_name_and_name_the_bad_file(tmp_path: Path) -> None:
    """A fit folder is read by catalog accelerator; a file without what a fit needs, or naming
    an accelerator outside the catalog, is refused with its path (and the unknown name)."""
    (tmp_path / "a.yaml").write_text("fit: {accelerator: h100-sxm}\nparams: {}\n")
    (tmp_path / "notes.txt").write_text("not read")
    fits = _kernel_fits_in(tmp_path)
    assert list(fits) == ["H100-SXM"] and fits["H100-SXM"]["file"] == "fits/a.yaml"
    (tmp_path / "b.yaml").write_text("fit: {accelerator: no-such-gpu}\nparams: {}\n")
    with pytest.raises(DataError, match="not a catalog accelerator") as err:
        _kernel_fits_in(tmp_path)
    assert "fits/b.yaml" in str(err.value) and "no-such-gpu" in str(err.value)
    (tmp_path / "b.yaml").write_text("- a list, not a fit\n")
    with pytest.raises(DataError, match="not a kernel fit"):
        _kernel_fits_in(tmp_path)


def test_a_vllm_release_takes_the_fit_of_its_own_kernels() -> None:
    """The RTX PRO 6000 under vLLM 0.19 takes the 0.19 kernels' fit (its all-reduce over
    PCIe 2-3x slower than 0.24's), a later release the newest fit, an earlier one the oldest;
    families 0.19 did not measure are fitted on the newest rows."""
    rtx = get_accelerator("RTX-PRO-6000")
    newest, old = roofline_defaults(rtx), roofline_defaults(rtx, "0.19.0")
    assert roofline_defaults(rtx, "0.24.0").params == newest.params
    assert roofline_defaults(rtx, "0.30").params == newest.params
    assert roofline_defaults(rtx, "0.10.2").params == old.params
    assert "by-version/RTX-PRO-6000-vllm-0.19.0.yaml" in old.parts["communication"]
    assert "vLLM 0.19.0" in old.origin and old.params["allreduce_gpus"] == [2]
    assert (
        old.params["allreduce_efficiencies"][0] < 0.5 * newest.params["allreduce_efficiencies"][0]
    )
    # MXFP4 experts, not measured under 0.19: fitted on 0.24's rows beside 0.19's bf16 experts
    doc = kernel_fit_for("RTX-PRO-6000", "0.19.0")
    assert doc is not None
    families = doc["fit"]["families"]
    assert families["moe_mxfp4"]["version"] == "0.24.0" and families["moe"]["version"] == "0.19.0"
    # a GPU without release fits keeps its one fit whatever the release
    l4 = get_accelerator("L4")
    assert roofline_defaults(l4, "0.19.0").params == roofline_defaults(l4).params
    # a variant takes its chip's release fit: the RTX 4090 under 0.19, the L40S's 0.14 one
    rtx4090 = get_accelerator("RTX-4090")
    assert "vLLM 0.14.0" in roofline_defaults(rtx4090, "0.19.0").parts["linear"]
    # through the step-model config: Qwen3-32B at TP 2 decodes slower under 0.19's kernels
    dep = Deployment(get_model("qwen3-32b"), rtx, tp=2)
    new_t = make_step_model("roofline", dep).decode_step_s(128, 128 * 700)
    old_t = make_step_model("roofline", dep, {"vllm_version": "0.19.0"}).decode_step_s(
        128, 128 * 700
    )
    assert old_t > 1.2 * new_t


def test_no_release_named_reads_no_release_fit() -> None:
    """Without a vLLM release the default kernel fit prices a GPU, and the older releases'
    files (``by-version/``, most of the fit data shipped) are not even read, nor the other
    GPUs' default fits where the GPU has its own: a command that names no release does not
    pay their parsing at start-up."""
    from sincere.perf.calibration import kernel_fit, version_fits

    for cached in (version_fits, kernel_fits, kernel_fit):
        cached.cache_clear()
    doc = kernel_fit_for("H100-SXM", None)
    assert kernel_fits.cache_info().misses == version_fits.cache_info().misses == 0
    assert doc == kernel_fits()["H100-SXM"]  # the same document as reading them all
    h100 = get_accelerator("H100-SXM")
    assert roofline_defaults(h100).params == roofline_defaults(h100, None).params
    assert version_fits.cache_info().misses == 0
    assert kernel_fit_for("H100-SXM", "0.19.0") != kernel_fits()["H100-SXM"]
    assert version_fits.cache_info().misses == 1


def test_each_kernel_fit_is_found_by_its_accelerator_alone() -> None:
    """Every shipped kernel fit is named after the catalog accelerator it fits, so reading
    one accelerator's file alone finds what reading them all does, for every accelerator
    of the catalog (one without a file: none, or what reading them all finds)."""
    from sincere.perf.calibration import kernel_fit

    folder = resources.files("sincere").joinpath("data", "perf", "kernels")
    names = {e.name.removesuffix(".yaml") for e in folder.iterdir() if e.name.endswith(".yaml")}
    assert names == set(kernel_fits())
    for acc in default_catalog().accelerators():
        kernel_fit.cache_clear()
        kernel_fits.cache_clear()
        assert kernel_fit(acc.name) == kernel_fits().get(acc.name), acc.name


def test_a_release_family_off_its_own_rows_keeps_the_newest_constants() -> None:
    """vLLM 0.19's prefill-attention rows on H200 do not follow the form (~5x off): its
    release fit leaves the family out, and H200 under 0.19 keeps the newest fit's prefill
    attention while taking 0.19's decode attention."""
    h200 = get_accelerator("H200")
    newest, old = roofline_defaults(h200), roofline_defaults(h200, "0.19.0")
    assert "H200-vllm-0.19.0.yaml" in old.origin
    doc = kernel_fit_for("H200", "0.19.0")
    assert doc is not None and any("prefill_attention" in m for m in doc["fit"]["missing"])
    for name in ("attn_mfu_efficiency", "attn_kernel_s", "attn_query_pairs"):
        assert old.params[name] == newest.params[name]
    assert old.params["attn_bw_efficiency"] != newest.params["attn_bw_efficiency"]


def test_a_kernels_share_of_the_peak_falls_with_the_peak_across_the_fitted_gpus() -> None:
    """The INT4 experts' and the delta rule's shares of the peak fall as the peak grows
    (B200's about half of H100's on a 2.3x peak): the fitted exponent is negative; it is
    kept within [-1, 0], and two GPUs give none."""
    from sincere.perf.calibration import kernel_fits, peak_exponent

    fits = kernel_fits()
    for field in ("moe_int4_mfu_efficiency", "gdn_mfu_efficiency"):
        shares = {n: float(f["params"][field]) for n, f in fits.items() if field in f["params"]}
        assert len(shares) >= 3, field
        assert -1.0 <= peak_exponent(shares) < -0.3, field
    assert peak_exponent({"H100-SXM": 0.3, "B200": 0.15}) == 0.0  # two GPUs: no slope
    rising = {"L40S": 0.5, "RTX-PRO-6000": 0.6, "H100-SXM": 0.9}  # grows with the peak: 0
    assert peak_exponent(rising) == 0.0
    steep = {"L40S": 1.0, "H100-SXM": 0.01, "B200": 0.0001}  # faster than 1/peak: -1
    assert peak_exponent(steep) == -1.0


def test_only_a_larger_peak_than_the_stand_ins_discounts_their_share() -> None:
    """A GPU with a larger peak than the GPU standing in for it takes that GPU's share times
    the peak ratio to the exponent; a smaller one takes the share as is (the workstation GPUs'
    shares do not grow as the peak falls); several stand-ins are averaged after scaling."""
    from sincere.perf.calibration import peak_scaled_mean

    b200, h100 = get_accelerator("B200"), get_accelerator("H100-SXM")
    ratio = b200.bf16_tflops / h100.bf16_tflops
    assert peak_scaled_mean({"H100-SXM": 0.3}, b200, -0.5) == pytest.approx(0.3 * ratio**-0.5)
    assert peak_scaled_mean({"B200": 0.3}, h100, -0.5) == pytest.approx(0.3)
    assert peak_scaled_mean({"H100-SXM": 0.3}, b200, 0.0) == pytest.approx(0.3)
    assert peak_scaled_mean({"B200": 0.9, "H100-SXM": 0.5}, b200, -1.0) == pytest.approx(
        (0.9 + 0.5 / ratio) / 2
    )


def test_a_gpu_beyond_its_class_takes_a_discounted_class_prior_and_says_so() -> None:
    """A data-centre Blackwell with twice B200's peak and no kernel fit takes B200's INT4
    experts' share discounted by the peak ratio to the fitted exponent, and the provenance
    line says so; B300 (B200's peak) takes B200's share as is."""
    from sincere.perf.calibration import (
        QUANT_EXPERT_PRIORS,
        _class_mean,
        kernel_fits,
        peak_exponent,
    )

    field = "moe_int4_mfu_efficiency"
    b200 = get_accelerator("B200")
    bigger = dataclasses.replace(b200, name="next-gen", bf16_tflops=2 * b200.bf16_tflops)
    fields = QUANT_EXPERT_PRIORS["moe_int4"]
    found = _class_mean(bigger, fields, "moe_int4")
    assert found is not None
    prior, names, note = found
    assert names == "B200"
    fits = kernel_fits()
    exponent = peak_exponent(
        {n: float(f["params"][field]) for n, f in fits.items() if field in f["params"]}
    )
    own = float(fits["B200"]["params"][field])
    assert prior[field] == pytest.approx(own * 2.0**exponent)
    assert prior[field] < own
    assert "a larger peak than theirs" in note
    same = _class_mean(get_accelerator("B300"), fields, "moe_int4")
    assert same is not None and same[0][field] == pytest.approx(own)
    assert "larger peak" not in same[2]
