"""Which kernel a serving engine runs on a GPU, by the GPU's CUDA compute capability.

vLLM picks some kernels by architecture, and a fitted family describes one kernel, not one
GPU: a GPU without measured kernels of its own is best priced from the GPUs that run the
same kernel (:mod:`sincere.perf.calibration`'s priors, ``benchmarks/step_fit.py``'s
leave-one-GPU-out). The classes below follow what the measured kernel tables name on the
six GPUs measured (``../shared/data/kernels/aiconfigurator``) and the catalog's
``compute_capability``:

* **prefill attention** and **decode attention** (the same library's kernels):
  FlashAttention 2 on Ampere, Ada and the workstation Blackwell
  (A100, L40S, RTX PRO 6000: compute capability 8.x and 12.x), FlashAttention 3 on Hopper
  (H100, H200: 9.0), FlashInfer's TensorRT-LLM kernels on the data-centre Blackwells
  (B200: 10.x);
* **linear attention's chunked delta rule** (Gated DeltaNet prefill): FlashInfer's fused
  kernels on Hopper (H100, H200: its CUTLASS kernel built for Hopper's warp-group MMA) and
  on the data-centre Blackwells (B200: a separate CuTe-DSL kernel written for Blackwell's
  tensor cores), the Triton kernel on every other CUDA GPU (L40S, RTX PRO 6000). The two
  FlashInfer kernels are different code and do not carry between each other: B200's reaches
  0.20 of its bf16 peak (1.4 times H100's rate, not the peaks' 2.3), runs its smallest calls
  1.4-1.7 times slower than H100 and moves the convolution's bytes at 0.32 of its HBM
  (0.49-0.63 on Hopper), so H100 and H200 price each other within 10 % held out where the
  three averaged missed by 24-38 % (``benchmarks/step_fit.py --only kernels``);
* **MLA decode**: FlashAttention's MLA kernel (bf16 latents) and FlashMLA (fp8 latents) on
  Hopper, FlashInfer's MLA kernel on the data-centre Blackwells (H100, H200, B200: compute
  capability 9.0 to below 12), vLLM's Triton MLA kernel on every other CUDA GPU (L40S,
  RTX PRO 6000; A100 too, whose tables hold no MLA decode module).

* **the fused MoE under expert parallelism**: vLLM's Triton kernel below compute capability
  10 (H100, H200, L40S, A100), FlashInfer's from 10 on (its TensorRT-LLM kernel on the
  data-centre Blackwells, B200: 10.x; its CUTLASS kernel on the workstation Blackwell,
  RTX PRO 6000: 12.x). What the class decides is how a GPU's call treats the pairs routed
  to other GPUs' experts: the Triton kernel runs over every routed pair and masks the
  foreign ones, a pass of 1.5-1.9 times their bytes at HBM speed on H100, H200 and L40S;
  FlashInfer's kernels take only the pairs of the GPU's own experts (0.06-0.2 times on
  RTX PRO 6000 and B200). So the two FlashInfer kernels price each other's calls within
  13-23 % held out, where the Triton GPUs' pass prices them 50-120 % slow
  (``benchmarks/step_fit.py --only kernels``).

* **quantised experts** (fp8, MXFP4, NVFP4, MXFP4 x MXFP8, INT4; no EP): classed by the
  tensor-core instructions their kernels can use, which decide what share of the datasheet
  peak they reach: warp-level MMA (``mma.sync``) is the whole tensor core on Ampere, Ada
  and the workstation Blackwell (A100, L40S, RTX PRO 6000: 8.x and 12.x), Hopper's peak
  needs its warp-group MMA (H100, H200: 9.0) and the data-centre Blackwells' their
  ``tcgen05`` MMA (B200: 10.x). vLLM's Marlin kernel (INT4 experts on every GPU, MXFP4 ones
  on 8.x and 12.x) is written for warp-level MMA alone: it runs at 292, 286, 311 and 312
  TFLOP/s on H100, H200, B200 and RTX PRO 6000, 211 on L40S, so 0.29 of Hopper's and 0.14
  of B200's peak against 0.58-0.67 on L40S and RTX PRO 6000, and a GPU priced from
  another class's share misses by 16-46 %, from its own class's by 7-10 % (H100 and H200
  each other, L40S and RTX PRO 6000 each other). The fp8 experts' kernels (Triton's on
  8.9 and 9.0, FlashInfer's TensorRT-LLM on 10.x, its CUTLASS on 12.x) and MXFP4's
  (Marlin, OpenAI's Triton on Hopper, TensorRT-LLM on 10.x) follow the same split:
  held out, 14.7 -> 12.1 % and 20.6 -> 18.0 % over their GPUs against every other GPU
  averaged (``benchmarks/step_fit.py --only kernels``). A family whose precision needs
  tensor cores the GPU lacks has no class: fp8 experts below compute capability 8.9 (A100,
  A10G, A6000, A40) run vLLM's Marlin W8A16 kernel dequantised to bf16, priced by the bf16
  experts' constants; NVFP4 and MXFP4 x MXFP8 experts need Blackwell's fp4 tensor cores.

* **bf16 experts** (the fused MoE without EP, family ``moe``): the same tensor-core classes
  (:func:`experts_kernel`), though the library differs inside them: vLLM's Triton fused
  MoE on A100 (vLLM 0.14), L40S, H100 and H200, FlashInfer's TensorRT-LLM kernel on B200,
  its CUTLASS kernel on the RTX PRO 6000. The share of the bf16 peak reached follows the
  instructions the kernel compiles to, not the library: 0.52-0.61 on Hopper (Triton's
  ``tl.dot`` becomes warp-group MMA there), 0.59 and 0.44 on L40S (Triton) and RTX PRO 6000
  (CUTLASS), both warp-level MMA. Held out, each GPU priced from its tensor-core class's
  fits misses its bf16 experts by 12.3 % on average over the six GPUs, against 13.1 % from
  every other GPU, 14.0 % by library (Triton below 10, FlashInfer from 10) and 13.3 % by
  kernel; rates in TFLOP/s and GB/s carried instead of shares miss by 68-109 %
  (``benchmarks/step_fit.py --only kernels``).

* **the collectives** (vLLM's custom all-reduce, the expert-parallel all-to-all): not a
  kernel chosen by architecture but the GPU-to-GPU link they run over, the catalog's
  ``interconnect_gbps`` (:func:`link_class`): H100 and H200 on fourth-generation NVLink
  and NVSwitch price each other's within 5-10 % held out, where GPUs of other links miss
  by 30-65 % (``benchmarks/step_fit.py --only kernels``).

A GPU without a compute capability (not CUDA) has no class: ``None``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sincere.catalog.specs import Accelerator

FLASHINFER_DELTA_RULE = {"flashinfer_sm90": (9.0, 10.0), "flashinfer_sm100": (10.0, 12.0)}
"""FlashInfer's fused delta-rule kernels by the compute capabilities (from, below) whose vLLM
runs each: the Hopper kernel and the data-centre Blackwell one."""


def _by_ranges(
    acc: Accelerator, ranges: dict[str, tuple[float, float]], outside: str
) -> str | None:
    """The name of the first of ``ranges`` (name -> compute capabilities from, below) that
    holds ``acc``'s compute capability, else ``outside``; None without one."""
    cc = acc.compute_capability
    if cc is None:
        return None
    for name, (low, high) in ranges.items():
        if low <= cc < high:
            return name
    return outside


def _by_range(
    acc: Accelerator, bounds: tuple[float, float], inside: str, outside: str
) -> str | None:
    """``inside`` where ``acc``'s compute capability lies in ``bounds`` (from, below), else
    ``outside``; None without one."""
    return _by_ranges(acc, {inside: bounds}, outside)


def delta_rule_kernel(acc: Accelerator) -> str | None:
    """``"flashinfer_sm90"``, ``"flashinfer_sm100"`` or ``"triton"``: the chunked delta-rule
    kernel vLLM runs on ``acc`` (module docstring)."""
    return _by_ranges(acc, FLASHINFER_DELTA_RULE, "triton")


FLASH_MLA = (9.0, 12.0)
"""Compute capabilities (from, below) whose vLLM decodes MLA with the FlashAttention /
FlashMLA / FlashInfer class of kernels rather than its Triton one."""


def mla_decode_kernel(acc: Accelerator) -> str | None:
    """``"mla_flash"`` or ``"mla_triton"``: the MLA decode kernel class vLLM runs on ``acc``."""
    return _by_range(acc, FLASH_MLA, "mla_flash", "mla_triton")


def prefill_attention_kernel(acc: Accelerator) -> str | None:
    """``"fa2"``, ``"fa3"`` or ``"trtllm"``: the prefill-attention kernel vLLM runs on
    ``acc`` (module docstring)."""
    return _by_ranges(acc, {"fa3": (9.0, 10.0), "trtllm": (10.0, 12.0)}, "fa2")


FLASHINFER_MOE = 10.0
"""Compute capability from which vLLM's unquantised fused MoE under EP is FlashInfer's."""


def moe_ep_kernel(acc: Accelerator) -> str | None:
    """``"moe_triton"`` or ``"moe_flashinfer"``: the library whose fused-MoE kernel vLLM runs
    under expert parallelism on ``acc`` (module docstring)."""
    return _by_range(acc, (0.0, FLASHINFER_MOE), "moe_triton", "moe_flashinfer")


TENSOR_CORES = {"experts_mma": (0.0, 9.0), "experts_wgmma": (9.0, 10.0),
                "experts_tcgen05": (10.0, 12.0)}  # fmt: skip
"""The experts' kernel classes (bf16 and quantised) by the compute capabilities (from,
below) of the tensor-core instructions their kernels use: warp-level MMA (from 12.0 too),
Hopper's warp-group MMA, the data-centre Blackwells' ``tcgen05``."""


def experts_kernel(acc: Accelerator) -> str | None:
    """``"experts_mma"``, ``"experts_wgmma"`` or ``"experts_tcgen05"``: the tensor-core
    instructions of ``acc`` that set the share of its peak vLLM's fused-MoE kernels reach,
    bf16 experts' and quantised ones' (module docstring); None without a compute
    capability."""
    return _by_ranges(acc, TENSOR_CORES, "experts_mma")  # 12.x: warp-level MMA too


def fp8_experts_kernel(acc: Accelerator) -> str | None:
    """:func:`experts_kernel` for fp8 experts; None on a GPU without fp8 tensor
    cores (its vLLM dequantises them to bf16: the bf16 experts' constants price them)."""
    return experts_kernel(acc) if acc.fp8_tflops else None


def fp4_experts_kernel(acc: Accelerator) -> str | None:
    """:func:`experts_kernel` for NVFP4 and MXFP4 x MXFP8 experts; None on a GPU
    without fp4 tensor cores (which runs neither)."""
    return experts_kernel(acc) if acc.fp4_tflops else None


LINK_NAMES = {
    64.0: "PCIe Gen4 x16",
    128.0: "PCIe Gen5 x16",
    112.5: "a two-GPU NVLink bridge",
    600.0: "third-generation NVLink",
    900.0: "fourth-generation NVLink",
    1800.0: "fifth-generation NVLink",
}
"""A CUDA GPU's GPU-to-GPU bandwidth in the catalog (``interconnect_gbps``, both
directions) -> the link it stands for."""


def link_class(acc: Accelerator) -> str | None:
    """``acc``'s GPU-to-GPU link (``"link:<GB/s>"``: the catalog's ``interconnect_gbps``),
    which vLLM's custom all-reduce and the expert-parallel exchange run over: GPUs on the
    same link run the same collective kernels over the same fabric. None for a GPU that is
    not CUDA (another vendor's fabric and collectives)."""
    if acc.compute_capability is None:
        return None
    return f"link:{acc.interconnect_gbps:g}"


KERNEL_CLASSES = {
    "allreduce": link_class,
    "alltoall": link_class,
    "gdn_prefill": delta_rule_kernel,
    "prefill_attention": prefill_attention_kernel,
    "decode_attention": prefill_attention_kernel,  # the same library's decode kernel
    "mla_decode": mla_decode_kernel,
    "moe_ep": moe_ep_kernel,
    "moe": experts_kernel,
    "moe_fp8": fp8_experts_kernel,
    "moe_mxfp4": experts_kernel,
    "moe_nvfp4": fp4_experts_kernel,
    "moe_mxfp4_mxfp8": fp4_experts_kernel,
    "moe_int4": experts_kernel,
}
"""Kernel family -> the kernel class of a GPU for it (the families whose kernel vLLM picks
by architecture)."""
FAMILY_NAMES = {
    "gdn_prefill": "linear attention's prefill",
    "prefill_attention": "prefill attention",
    "decode_attention": "decode attention",
    "mla_decode": "MLA decode",
    "moe_ep": "the fused MoE's pass over other GPUs' routed pairs and cost per call under "
    "expert parallelism",
    "allreduce": "the all-reduce (vLLM's custom all-reduce, in and out of CUDA graphs)",
    "alltoall": "the expert-parallel all-to-all",
    "moe": "the bf16 experts (the fused MoE without expert parallelism)",
    "moe_fp8": "fp8 experts",
    "moe_mxfp4": "MXFP4 experts",
    "moe_nvfp4": "NVFP4 experts",
    "moe_mxfp4_mxfp8": "MXFP4 x MXFP8 experts",
    "moe_int4": "INT4 experts",
}
"""Kernel family -> how provenance lines name it."""
KERNEL_NAMES = {
    "flashinfer_sm90": "FlashInfer's fused delta rule for Hopper",
    "flashinfer_sm100": "FlashInfer's fused delta rule for the data-centre Blackwells",
    "triton": "the Triton delta rule",
    "fa2": "FlashAttention 2",
    "fa3": "FlashAttention 3",
    "trtllm": "FlashInfer's TensorRT-LLM attention",
    "mla_flash": "FlashAttention's, FlashMLA's or FlashInfer's MLA kernels",
    "mla_triton": "vLLM's Triton MLA kernel",
    "moe_triton": "vLLM's Triton fused MoE",
    "moe_flashinfer": "FlashInfer's fused MoE (over this GPU's own routed pairs alone)",
    "experts_mma": "warp-level MMA (compute capability 8.x and 12.x)",
    "experts_wgmma": "Hopper's warp-group MMA",
    "experts_tcgen05": "the data-centre Blackwells' tcgen05 MMA",
}
"""Kernel class -> how provenance lines name it."""


def class_note(kind: str) -> str:
    """Why a GPU of class ``kind`` takes the class's fits, as provenance lines say it."""
    if kind.startswith("link:"):
        gbps = float(kind.removeprefix("link:"))
        link = LINK_NAMES.get(gbps, f"a {gbps:g} GB/s link")
        return f"{link}, the GPU-to-GPU link this GPU's collectives run over too"
    if kind in TENSOR_CORES:
        return (
            f"{KERNEL_NAMES[kind]}, the tensor-core instructions this GPU's peak needs too, "
            "which set the share of it vLLM's fused-MoE kernels reach"
        )
    return f"{KERNEL_NAMES[kind]}, which this GPU's vLLM runs too"
