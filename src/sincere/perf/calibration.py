"""The roofline constants each accelerator uses by default, fitted to measured kernels.

``sincere fit gpu-profiles DIR --accelerator A`` fits the roofline's constants to an
accelerator's operator profiles and writes a parameter file (``kind: roofline``,
``params``, and ``fit`` with the files, the command and the errors). The files shipped
in ``sincere/data/perf/roofline/`` are those fits; an accelerator with one uses its
fitted constants by default (its datasheet peaks stay the catalog's).

An accelerator without its own fit keeps its datasheet peaks (the catalog's) and takes
its efficiencies and fixed costs by one of two rules:

* **transfer** (:data:`FIT_TRANSFER`): a variant of a fitted chip (same silicon
  generation and kernels, other memory, clocks or board) takes that fit's
  parameters whole: H200 and H100-PCIe from the H100-SXM fit, A100-40GB from the
  A100-80GB fit, GB200 (the B200 chip on a Grace board) and the Blackwell Ultra B300 and
  GB300 (the same generation's kernels, more fp4 compute and memory) from the B200 fit,
  the RTX 4090 (the L40S's AD102 die, GDDR6X) from the L40S fit.
  Since every term is a datasheet peak times an efficiency, the fitted
  kernel times are scaled by the ratio of the two datasheets' FLOPs (compute-bound
  kernels) and HBM / link bandwidth (memory-bound ones); a variant with more board power
  per peak FLOP than its chip takes the chip's compute shares raised by that ratio, up to
  the best share of any shipped fit (:func:`power_headroom`);
* **prior**: any other accelerator takes the figures that describe the software stack
  rather than the chip (:data:`PRIOR_FIELDS`: the efficiencies against the peaks, the
  GEMM overlap exponent and token tile, the attention diagonal factor, the per-kernel
  and per-step fixed costs and the all-reduce latency), averaged over the shipped fits
  (the token tile: the smallest of theirs).

On top of that base, a GPU whose real vLLM kernels were measured (AIConfigurator's
database) takes the families ``sincere fit kernels`` fitted to them
(``sincere/data/perf/kernels/<accelerator>.yaml``, :data:`KERNEL_PARTS`): GEMMs by dtype
(bf16, fp8 and NVFP4 where measured),
prefill and decode attention, the all-reduce by GPU count inside and outside CUDA graphs,
the fused-MoE kernel. Kernels get faster or slower between vLLM releases (on the RTX PRO
6000, vLLM 0.19's two-GPU all-reduce takes 2-3x 0.24's time at 0.1-100 MB), so a
deployment that names its vLLM release (the roofline's ``vllm_version``) is priced by the
fit for the newest release at or below it: ``kernels/by-version/`` holds fits to an older
release's tables (:func:`kernel_fit_for`); the default file is the newest tables'. A
kernel file whose ``fit.default`` is false gives its GPU the collectives alone
(:data:`COLLECTIVE_PARTS`; A100-80GB keeps its fit to Vidur's A100 kernels for the rest,
the whole file is for ``--params`` use); a variant
(:data:`FIT_TRANSFER`) without a kernel fit of its own takes its chip's. The elementwise
kernels and the CPU per step, which that database does not measure, stay the base's.
Where a kernel is picked by architecture (:mod:`sincere.perf.kernel_choice`, by the
catalog's ``compute_capability``), a GPU with no kernel fit of that part takes the part's
constants from the shipped kernel fits of the GPUs that run the same kernel, averaged
(:data:`CLASS_PRIORS`): prefill and decode attention (A6000, A40, A10G and L4 from the
FlashAttention-2 GPUs A100, L40S and RTX PRO 6000), linear attention's prefill (A100, L4,
... from the Triton delta rule's L40S and RTX PRO 6000; a Hopper from H100 and H200, whose
FlashInfer kernel the data-centre Blackwells do not run; ``RooflineParams``' default is the
three FlashInfer GPUs' mean) and MLA decode (A100, L4, ... from the Triton MLA kernel's
L40S and RTX PRO 6000; a Hopper or data-centre Blackwell without its own fit from H100,
H200 and B200) and the fused MoE's pass over other GPUs' routed pairs under expert
parallelism (L4, A10G, ... and A100, whose kernel fit is not its default, from the fits of
vLLM's Triton kernel on A100, H100, H200 and L40S; a Blackwell from the FlashInfer kernels'
B200 and RTX PRO 6000, which pass over no other GPU's pairs) and the experts, bf16 and,
family by family, quantised, classed by the tensor-core instructions their kernels use
(L4, A100, A10G, A6000 and A40 their bf16 experts from L40S and RTX PRO 6000, as
:data:`QUANT_EXPERT_PRIORS` gives L4 its fp8, MXFP4 and INT4 experts and A100, A10G, A6000
and A40 their MXFP4 and INT4 experts); the collectives, classed by
the GPU-to-GPU link they run over, take the
measured GPUs' on the same link (L4 and A10G the L40S's PCIe Gen4 all-reduce and
all-to-all), and where no measured GPU sits on it, every kernel fit's averaged
(:data:`CLASS_PRIORS`). A class prior's shares of the tensor-core peak
(``*_mfu_efficiency``) are carried to a GPU with a larger bf16 peak than a stand-in's
discounted by the ratio of the peaks to a power fitted across the measured GPUs
(:func:`peak_exponent`): kernels that do not run at the tensor cores' rate (Marlin's INT4
experts, the delta rule's scan) keep much of their speed while the peak grows.
Last, a GPU whose clock under sustained load was measured
(``sincere/data/perf/sustained_clock.yaml``, :func:`sustained_clocks`) takes its
``sustained_compute_ratio``: kernel databases time kernels at the boost clock, an engine
under load runs at the power-limited one. It is not transferred to variants (other power
limits); a GPU without a measurement keeps 1.
:attr:`RooflineDefaults.parts` says where each part's constants come from.

Explicit parameters override either. Only the files a deployment is priced from are read:
its own kernel fit (the others only where a kernel-class prior averages them) and the
older releases' fits only when it names a release (start-up time: PyYAML builds the
documents in Python).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

from sincere.catalog.loader import default_catalog
from sincere.catalog.specs import Accelerator
from sincere.core.errors import ConfigError, DataError
from sincere.core.yaml_data import load_yaml
from sincere.perf.moe import SKEWED_ROUTING_NOTE
from sincere.perf.roofline import GRID_FIELDS, RooflineParams
from sincere.perf.shape_grid import ShapeGrid

FITS_FOLDER = ("data", "perf", "roofline")  # package-relative folder of the shipped fits
KERNEL_FITS_FOLDER = ("data", "perf", "kernels")  # fits to measured vLLM kernels
VERSION_FITS_FOLDER = (*KERNEL_FITS_FOLDER, "by-version")  # the same, for older vLLM releases
SUSTAINED_FILE = ("data", "perf", "sustained_clock.yaml")  # measured clocks under load
KERNEL_PARTS = {
    "linear": (
        "mfu_efficiency",
        "bw_efficiency",
        "overlap_exponent",
        "token_tile",
        "gemm_bf16_grid",
    ),
    "linear_fp8": (
        "fp8_mfu_efficiency",
        "fp8_gemm_kernel_s",
        "fp8_act_s",
        "fp8_token_tile",
        "gemm_fp8_grid",
    ),
    "linear_nvfp4": (
        "nvfp4_mfu_efficiency",
        "nvfp4_gemm_kernel_s",
        "nvfp4_act_s",
        "nvfp4_token_tile",
        "gemm_nvfp4_grid",
    ),
    "elementwise": ("elementwise_bw_efficiency", "layer_overhead_s"),
    "prefill_attention": (
        "attn_mfu_efficiency",
        "attn_kernel_s",
        "attn_diag_factor",
        "attn_query_pairs",
        "attn_head_dim_offset",
        "attn_kv_head_work",
        "prefill_attention_grid",
    ),
    "decode_attention": (
        "attn_bw_efficiency",
        "attn_decode_kernel_s",
        "attn_decode_seq_tokens",
        "attn_decode_grouped_s",
    ),
    "mla_decode": (
        "mla_decode_mfu_efficiency",
        "mla_decode_bw_efficiency",
        "mla_decode_fp8_bw_efficiency",
        "mla_decode_lone_seqs",
    ),
    "communication": (
        "allreduce_latency_s",
        "allreduce_gpus",
        "allreduce_latencies_s",
        "allreduce_efficiencies",
        "allreduce_eager_s",
        "allreduce_eager_floor_s",
        "interconnect_efficiency",
        "allreduce_grid",
    ),
    "all_to_all": (
        "alltoall_gpus",
        "alltoall_latencies_s",
        "alltoall_efficiencies",
        "alltoall_protocol_s",
        "alltoall_knee_bytes",
    ),
    "experts": (
        "moe_mfu_efficiency",
        "moe_bw_efficiency",
        "moe_kernel_s",
        "moe_tail_share",
        "moe_expert_s",
        "moe_width_offset",
        "moe_unaligned_factor",
    ),
    "quantised_experts": (
        "moe_fp8_mfu_efficiency",
        "moe_fp8_bw_efficiency",
        "moe_fp8_kernel_s",
        "moe_fp8_expert_s",
        "moe_fp8_width_offset",
        "moe_mxfp4_mfu_efficiency",
        "moe_mxfp4_bw_efficiency",
        "moe_mxfp4_kernel_s",
        "moe_mxfp4_expert_s",
        "moe_mxfp4_width_offset",
        "moe_nvfp4_mfu_efficiency",
        "moe_nvfp4_bw_efficiency",
        "moe_nvfp4_kernel_s",
        "moe_nvfp4_expert_s",
        "moe_nvfp4_width_offset",
        "moe_mxfp4_mxfp8_mfu_efficiency",
        "moe_mxfp4_mxfp8_bw_efficiency",
        "moe_mxfp4_mxfp8_kernel_s",
        "moe_mxfp4_mxfp8_expert_s",
        "moe_mxfp4_mxfp8_width_offset",
        "moe_int4_mfu_efficiency",
        "moe_int4_bw_efficiency",
        "moe_int4_kernel_s",
        "moe_int4_expert_s",
        "moe_int4_width_offset",
    ),
    "expert_parallel": ("moe_ep_foreign_factor", "moe_ep_kernel_s", "moe_ep_onchip_share"),
    "linear_attention": (
        "gdn_mfu_efficiency",
        "gdn_parallel_units",
        "gdn_bw_efficiency",
        "gdn_kernel_s",
        "gdn_decode_bw_efficiency",
        "gdn_decode_kernel_s",
        "gdn_spill_bytes",
        "gdn_onchip_share",
        "gdn_spill_bw_efficiency",
    ),
    "cpu": ("overhead_s", "overhead_per_seq_s"),
    "sustained_clock": ("sustained_compute_ratio",),
}
"""Parts of a step and the constants that price each (provenance is kept per part)."""
GDN_PREFILL = tuple(n for n in KERNEL_PARTS["linear_attention"] if "decode" not in n)
"""Linear attention's prefill constants: the ones that depend on the delta-rule kernel."""
UNFITTED_PARTS = {
    "linear_attention": "prior: the mean of the H100, H200 and B200 kernel fits "
    "(RooflineParams' defaults)",
    "sustained_clock": "not measured on this GPU: the kernel benchmark's compute rate (1)",
    "mla_decode": "prior: decode attention's constants (no MLA kernel of its class measured)",
    "expert_parallel": "prior: no pass over other GPUs' routed pairs (no EP rows of its "
    "class of fused-MoE kernel measured)",
    "quantised_experts": "prior: the bf16 experts' constants (no quantised-expert kernel of "
    "its class measured)",
}
"""What a part takes where no fit sets its constants, other than datasheet assumptions."""
PRIOR_FIELDS = (
    "mfu_efficiency",
    "bw_efficiency",
    "elementwise_bw_efficiency",
    "overlap_exponent",
    "token_tile",
    "layer_overhead_s",
    "attn_mfu_efficiency",
    "attn_bw_efficiency",
    "attn_kernel_s",
    "attn_diag_factor",
    "interconnect_efficiency",
    "allreduce_latency_s",
    "overhead_s",
    "overhead_per_seq_s",
)
"""Fitted figures another accelerator takes as its prior (stack, not chip)."""
FIT_TRANSFER = {
    "H200": "H100-SXM",
    "H100-PCIe": "H100-SXM",
    "A100-40GB": "A100-80GB",
    "GB200": "B200",
    "B300": "B200",
    "GB300": "B200",
    "RTX-4090": "L40S",
}
"""Catalog accelerator -> the fitted chip whose parameters it takes whole (module docstring)."""


@dataclass(frozen=True, slots=True)
class RooflineDefaults:
    """An accelerator's default roofline constants and where they come from."""

    params: dict[str, Any]  # RooflineParams fields (others keep the dataclass defaults)
    origin: str  # "fitted: <file>" or "prior: <files>" or "datasheet assumptions"
    parts: dict[str, str] = dataclasses.field(default_factory=dict)  # part -> its origin


def fit_documents(
    folder: Traversable, where: str, is_fit: Callable[[Any], bool], not_a_fit: str
) -> dict[str, dict[str, Any]]:
    """The ``*.yaml`` fit documents in ``folder`` by the catalog accelerator each names in
    ``fit.accelerator``; each gets its ``file`` (``where/<name>``). Raises ``DataError``
    where ``is_fit`` refuses a document (``not_a_fit`` says what one needs) or where the
    accelerator is not in the catalog."""
    fits: dict[str, dict[str, Any]] = {}
    if not folder.is_dir():
        return fits
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            doc = fit_document(entry, f"{where}/{entry.name}", is_fit, not_a_fit)
            fits[default_catalog().accelerator(doc["fit"]["accelerator"]).name] = doc
    return fits


def fit_document(
    entry: Traversable, path: str, is_fit: Callable[[Any], bool], not_a_fit: str
) -> dict[str, Any]:
    """One fit document, its ``file`` set to ``path`` (:func:`fit_documents` says what is
    refused)."""
    doc = load_yaml(entry.read_text())
    if not isinstance(doc, dict) or not is_fit(doc):
        raise DataError(not_a_fit, path=path)
    name = str(doc.get("fit", {}).get("accelerator", ""))
    if not default_catalog().has_accelerator(name):
        raise DataError("fit.accelerator is not a catalog accelerator", path=path, value=name)
    doc["file"] = path
    return doc


def version_key(name: str) -> tuple[int, ...]:
    """A release name as numbers to compare (``0.19.0`` < ``0.24.0``; a part without
    digits counts as -1)."""
    parts = []
    for piece in name.replace("-", ".").split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else -1)
    return tuple(parts)


def _shipped(folder: tuple[str, ...]) -> tuple[Traversable, str]:
    """A package-relative folder and the name its files are reported by."""
    return resources.files("sincere").joinpath(*folder), f"sincere/{'/'.join(folder)}"


@functools.cache
def shipped_fits() -> dict[str, dict[str, Any]]:
    """The shipped fit documents by catalog accelerator name."""
    return fit_documents(
        *_shipped(FITS_FOLDER),
        lambda doc: doc.get("kind") == "roofline" and "params" in doc,
        "not a roofline fit (kind: roofline, params: …)",
    )


NOT_A_KERNEL_FIT = "not a kernel fit (params, fit.accelerator)"


def _is_kernel_fit(doc: Any) -> bool:
    return "params" in doc


@functools.cache
def kernel_fits() -> dict[str, dict[str, Any]]:
    """The shipped fits to measured vLLM kernels by catalog accelerator name."""
    return fit_documents(*_shipped(KERNEL_FITS_FOLDER), _is_kernel_fit, NOT_A_KERNEL_FIT)


@functools.cache
def kernel_fit(accelerator: str) -> dict[str, Any] | None:
    """:func:`kernel_fits`' entry for ``accelerator``, reading only its own file where the
    shipped file is named after it (``<name>.yaml``, as every shipped one is) and the rest
    not at all: a deployment on a GPU with its own fit does not pay the others' parsing at
    start-up. Another file naming the same accelerator is not looked for (a test checks
    that none does)."""
    if kernel_fits.cache_info().currsize:  # all read already
        return kernel_fits().get(accelerator)
    folder, where = _shipped(KERNEL_FITS_FOLDER)
    entry = folder.joinpath(f"{accelerator}.yaml")
    if entry.is_file():
        path = f"{where}/{accelerator}.yaml"
        doc = fit_document(entry, path, _is_kernel_fit, NOT_A_KERNEL_FIT)
        if default_catalog().accelerator(doc["fit"]["accelerator"]).name == accelerator:
            return doc
    return kernel_fits().get(accelerator)


NOT_VERSIONED = "not a kernel fit for a vLLM release (params, fit.accelerator, fit.engine_version)"


def _is_version_fit(doc: Any) -> bool:
    return "params" in doc and bool(doc.get("fit", {}).get("engine_version"))


def _fit_version(doc: Mapping[str, Any]) -> tuple[int, ...]:
    """The vLLM release a kernel fit is for: its ``engine_version``, else its newest table's."""
    info = doc.get("fit", {})
    named = info.get("engine_version")
    versions = [str(named)] if named else [str(v) for v in info.get("versions", [])]
    return max((version_key(v) for v in versions), default=())


@functools.cache
def version_fits() -> dict[str, tuple[dict[str, Any], ...]]:
    """Per accelerator, the shipped kernel fits for older vLLM releases (``by-version/``,
    each with ``fit.engine_version``), oldest first."""
    folder, where = _shipped(VERSION_FITS_FOLDER)
    out: dict[str, list[dict[str, Any]]] = {}
    if folder.is_dir():
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            if entry.name.endswith(".yaml"):
                doc = fit_document(entry, f"{where}/{entry.name}", _is_version_fit, NOT_VERSIONED)
                name = default_catalog().accelerator(doc["fit"]["accelerator"]).name
                out.setdefault(name, []).append(doc)
    return {name: tuple(sorted(docs, key=_fit_version)) for name, docs in out.items()}


def kernel_fit_for(accelerator: str, vllm_version: str | None) -> dict[str, Any] | None:
    """The kernel fit that prices ``accelerator`` under vLLM ``vllm_version``: of the
    default fit and the ``by-version`` ones, the newest release at or below it (the oldest
    where none is), its families over the default's; None (or no version fits): the default."""
    default = kernel_fit(accelerator)
    if vllm_version is None:  # the older releases' files are not read (start-up time)
        return default
    older = version_fits().get(accelerator, ())
    if not older:
        return default
    docs = sorted([*older, *([default] if default else [])], key=_fit_version)
    wanted = version_key(vllm_version)
    below = [doc for doc in docs if _fit_version(doc) <= wanted]
    chosen = below[-1] if below else docs[0]
    if default is None or chosen is default:
        return chosen
    # families the release's tables lack (e.g. experts in a newer format) keep the default's
    return {**chosen, "params": {**default["params"], **chosen["params"]}}


def _part_origins(
    params: Mapping[str, Any], origin: str, base: Mapping[str, Any]
) -> dict[str, str]:
    """Each part's origin: ``origin`` where the base sets its constants, else the datasheet's."""
    borrowed = base.get("fit", {}).get("borrowed", {}) if base else {}
    out = {}
    for part, names in KERNEL_PARTS.items():
        if not any(name in params for name in names):
            out[part] = UNFITTED_PARTS.get(part, "datasheet assumptions")
            continue
        out[part] = origin
        key = "attention" if part.endswith("attention") else part
        for taken in borrowed.get("parts", {}).get(key, []):
            if taken in names:
                out[part] = f"borrowed: {borrowed['from']} (as fitted there), via {origin}"
    return out


@functools.cache
def sustained_clocks() -> dict[str, dict[str, Any]]:
    """The measured sustained-load compute ratios by catalog accelerator name
    (``sincere/data/perf/sustained_clock.yaml``; module docstring)."""
    text = resources.files("sincere").joinpath(*SUSTAINED_FILE).read_text()
    return read_sustained_clocks(text, f"sincere/{'/'.join(SUSTAINED_FILE)}")


def read_sustained_clocks(text: str, path: str) -> dict[str, dict[str, Any]]:
    """``{accelerator: {ratio, measured, …, file}}`` of a sustained-clock file's ``text``;
    a ``DataError`` naming the file and the GPU for a ratio outside (0, 1], an entry without
    its ``measured`` source, or a GPU the catalog does not know."""
    doc = load_yaml(text)
    if not isinstance(doc, dict):
        raise DataError("a sustained-clock file maps GPUs to {ratio, measured}", path=path)
    out: dict[str, dict[str, Any]] = {}
    for name, entry in doc.items():
        ratio = entry.get("ratio") if isinstance(entry, dict) else None
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 < ratio <= 1:
            raise DataError(
                "a GPU's sustained compute ratio must be a number in (0, 1]",
                path=path,
                value={name: ratio},
            )
        if not entry.get("measured"):
            raise DataError("a GPU's sustained ratio must say where it was measured",
                            path=path, value=name)  # fmt: skip
        if not default_catalog().has_accelerator(str(name)):
            raise DataError("not a catalog accelerator", path=path, value=name)
        out[default_catalog().accelerator(str(name)).name] = {**entry, "file": path}
    return out


def roofline_defaults(
    accelerator: Accelerator, vllm_version: str | None = None
) -> RooflineDefaults:
    """The base (own fit, transfer or prior) with the GPU's kernel fit over it, and its
    measured sustained-load compute ratio (module doc); ``vllm_version``: the release whose
    kernels price the step (:func:`kernel_fit_for`)."""
    fitted = _with_kernel_class_priors(accelerator, _fitted_defaults(accelerator, vllm_version))
    fitted = _with_power_headroom(accelerator, fitted)
    parts = dict(fitted.parts)
    entry = sustained_clocks().get(accelerator.name)
    if entry is None:
        parts["sustained_clock"] = UNFITTED_PARTS["sustained_clock"]
        return RooflineDefaults(fitted.params, fitted.origin, parts)
    ratio = float(entry["ratio"])
    parts["sustained_clock"] = (
        f"measured: compute under sustained load at {ratio} of the kernel benchmark's rate "
        f"({entry['measured']}; {entry['file']})"
    )
    params = {**fitted.params, "sustained_compute_ratio": ratio}
    return RooflineDefaults(params, fitted.origin, parts)


COMPUTE_SHARES = tuple(
    name for names in KERNEL_PARTS.values() for name in names if name.endswith("mfu_efficiency")
)
"""The constants that are a share of a compute peak (GEMMs, attention, experts, ...)."""


def power_headroom(accelerator: Accelerator, chip: Accelerator) -> float:
    """How much more board power ``accelerator`` has per peak FLOP than ``chip``, the fitted
    chip it is a variant of (1 when it has as much or less)."""
    own = accelerator.power_w / accelerator.peak_tflops("bf16")
    theirs = chip.power_w / chip.peak_tflops("bf16")
    return max(1.0, own / theirs)


def _with_power_headroom(accelerator: Accelerator, fitted: RooflineDefaults) -> RooflineDefaults:
    """A variant with more board power per peak FLOP than its chip takes the chip's compute
    shares raised by that ratio, each at most the highest share of any shipped fit.

    Large GEMMs run at the power limit: a chip's fitted share of its datasheet peak is what
    its board power lets it reach (the L40S, AD102 at 350 W, reaches 0.61 of its peak, where
    GPUs of more power per FLOP reach 0.72-0.87). The same silicon spends the same energy
    per operation, so a variant whose power budget per peak operation is ``r`` times its
    chip's reaches ``r`` times the chip's share, until its kernels rather than its power
    bound it: the best share any fit reaches. The RTX 4090 (AD102 at 450 W, half the L40S's
    rate with FP32 accumulation) is 2.8 times the L40S's and runs at that bound; a variant
    with less power per FLOP (H100-PCIe) keeps its chip's shares, since a chip's fit need
    not sit at its power limit. Only parts transferred from the chip change."""
    chip_name = FIT_TRANSFER.get(accelerator.name)
    if chip_name is None:
        return fitted
    ratio = power_headroom(accelerator, default_catalog().accelerator(chip_name))
    if ratio <= 1.0:
        return fitted
    fits = [*shipped_fits().values(), *kernel_fits().values()]
    params = dict(fitted.params)
    raised = []
    for part, names in KERNEL_PARTS.items():
        if not fitted.parts.get(part, "").startswith("transferred"):
            continue
        for name in names:
            value = params.get(name)
            if name not in COMPUTE_SHARES or value is None:
                continue
            best = max((float(d["params"][name]) for d in fits
                        if d["params"].get(name) is not None), default=1.0)  # fmt: skip
            params[name] = max(float(value), min(best, float(value) * ratio))
            raised.append(part)
    parts = dict(fitted.parts)
    for part in dict.fromkeys(raised):
        parts[part] += (
            f"; compute shares x{ratio:.2f} ({accelerator.name}'s board power per peak FLOP "
            f"over {chip_name}'s), at most the best shipped fit's"
        )
    return RooflineDefaults(params, fitted.origin, parts)


COLLECTIVE_PARTS = ("communication", "all_to_all")
"""Parts a kernel fit gives its GPU even where the fit is not the GPU's default
(``fit.default: false``: A100-80GB, whose base is its fit to Vidur's profiles). Vidur timed
NCCL's all-reduce called eagerly, 44 us a call and more; a served vLLM runs its custom
all-reduce, in CUDA graphs for decode (6-11 us a 16-token call at 2-8 A100s in the kernel
fit), and those profiles hold no all-to-all."""
_COLLECTIVE_FIELDS = frozenset(n for part in COLLECTIVE_PARTS for n in KERNEL_PARTS[part])

CLASS_PRIORS: dict[str, tuple[tuple[str, ...], str]] = {
    "linear_attention": (GDN_PREFILL, "gdn_prefill"),
    "prefill_attention": (KERNEL_PARTS["prefill_attention"], "prefill_attention"),
    "decode_attention": (KERNEL_PARTS["decode_attention"], "decode_attention"),
    "mla_decode": (KERNEL_PARTS["mla_decode"], "mla_decode"),
    "expert_parallel": (KERNEL_PARTS["expert_parallel"], "moe_ep"),
    "experts": (KERNEL_PARTS["experts"], "moe"),
    "communication": (KERNEL_PARTS["communication"], "allreduce"),
    "all_to_all": (KERNEL_PARTS["all_to_all"], "alltoall"),
}
"""Part -> (its constants taken from the GPUs running the same kernel, the kernel family
that classes GPUs). Only fits holding every constant stand in, but for terms their kernel
does not have (:data:`ABSENT_TERMS`: the FlashInfer delta rules' spill), and no fused MoE
fitted on skewed routings alone (:func:`stands_in`). The bf16 experts are classed by the
tensor-core instructions their kernels compile to
(:func:`sincere.perf.kernel_choice.experts_kernel`): A100 (both), A6000, A40, A10G and L4
take the L40S's and RTX PRO 6000's bf16 experts, averaged, where they took the GEMMs'
shares with no fixed costs. A100-80GB's own kernel fit holds bf16 experts, but fitted on
skewed routings alone (vLLM 0.14's table times no balanced one) and not its default. Each
of the five GPUs that timed both, fitted on its skewed rows alone, misses its balanced calls
by 12-18 % (bias +10 to +16 %), where its class's mean misses them by 7-11 % (B200, alone
in its class, 15 % from the others), so A100 takes its class's mean. The collectives
are classed by the GPU-to-GPU link they run over
(:func:`sincere.perf.kernel_choice.link_class`): the L4 and the A10G, on PCIe Gen4 x16, take
the L40S's measured all-reduce and all-to-all. A GPU with no measured GPU on its link (the
A6000's and A40's bridge, AMD's Infinity Fabric) takes every kernel fit's, averaged: over
other links, but vLLM's all-reduce as it runs today, where the stack-wide prior's is
Vidur's eager NCCL call (its 38 us latency prices each measured GPU's vLLM all-reduce
100-244 % slow on average, every other GPU's mean 31-65 %: ``benchmarks/step_fit.py --only
links``)."""


EXPERT_TERMS = ("mfu_efficiency", "bw_efficiency", "kernel_s", "expert_s", "width_offset")
"""The constants of each quantised-expert family, after its prefix (``moe_fp8_kernel_s``)."""
QUANT_EXPERT_PRIORS = {
    family: tuple(f"{family}_{term}" for term in EXPERT_TERMS)
    for family in ("moe_fp8", "moe_mxfp4", "moe_nvfp4", "moe_mxfp4_mxfp8", "moe_int4")
}
"""Quantised-expert family -> its constants, which part ``quantised_experts`` takes family by
family from the GPUs whose tensor cores its kernels use alike
(:func:`sincere.perf.kernel_choice.experts_kernel`) where this GPU's fit has no
rows of the family: L4 its fp8, MXFP4 and INT4 experts from L40S and RTX PRO 6000; A100,
A10G, A6000 and A40 their MXFP4 and INT4 experts from the same two (their fp8 experts run
dequantised, priced by the bf16 experts' constants)."""


ABSENT_TERMS = {"gdn_spill_bytes": 0.0, "gdn_onchip_share": 1.0, "gdn_spill_bw_efficiency": 1.0}
"""Constants a kernel fit leaves out where its kernel has no such term, at the value that
means none (``RooflineParams``' defaults): FlashInfer's fused delta rule keeps its chunks'
intermediates on chip, so its fits have no spill."""


def _with_kernel_class_priors(
    accelerator: Accelerator, fitted: RooflineDefaults
) -> RooflineDefaults:
    """``fitted`` with each part of :data:`CLASS_PRIORS` that it only has a prior for taken
    from the shipped kernel fits of the GPUs that run the same kernel, averaged
    (:mod:`sincere.perf.kernel_choice`): a kernel's fitted shares carry between the GPUs
    running it far better than the stack-wide prior (``benchmarks/step_fit.py``)."""
    for part, (fields, family) in CLASS_PRIORS.items():
        fitted = _with_class_prior(accelerator, fitted, part, fields, family)
    return _with_quantised_expert_priors(accelerator, fitted)


def _with_class_prior(
    accelerator: Accelerator,
    fitted: RooflineDefaults,
    part: str,
    fields: tuple[str, ...],
    family: str,
) -> RooflineDefaults:
    """:func:`_with_kernel_class_priors` for one part."""
    from sincere.perf.kernel_choice import FAMILY_NAMES

    origin = fitted.parts.get(part, UNFITTED_PARTS.get(part, "prior"))
    if not origin.startswith(("prior", "datasheet")):
        return fitted  # fitted on this GPU, or on the chip it is a variant of
    found = _class_mean(accelerator, fields, family)
    if found is None:
        return fitted
    prior, names, note = found
    parts = dict(fitted.parts)
    parts[part] = f"prior: {FAMILY_NAMES[family]} of the {names} kernel fits averaged ({note})"
    return RooflineDefaults({**fitted.params, **prior}, fitted.origin, parts)


def _class_mean(
    accelerator: Accelerator, fields: tuple[str, ...], family: str
) -> tuple[dict[str, Any], str, str] | None:
    """(``fields`` averaged over the shipped kernel fits of the GPUs in ``accelerator``'s
    class for ``family``, those GPUs' names, why they stand in), or None where no measured
    GPU does (:func:`_with_kernel_class_priors`)."""
    from sincere.perf.kernel_choice import KERNEL_CLASSES, class_note, link_class

    classify = KERNEL_CLASSES[family]
    kind = classify(accelerator)
    everyone = classify is link_class  # the collectives: every measured GPU's at the least
    if kind is None and not everyone:
        return None
    catalog = default_catalog()
    usable = {
        name: {**{f: v for f, v in ABSENT_TERMS.items() if f in fields}, **doc["params"]}
        for name, doc in kernel_fits().items()
        if all(f in doc["params"] or f in ABSENT_TERMS for f in fields) and stands_in(doc, family)
    }
    docs = {n: p for n, p in usable.items() if classify(catalog.accelerator(n)) == kind}
    note = class_note(kind) if docs and kind is not None else ""
    if not docs and everyone:
        docs = usable
        note = "no measured GPU on its link: every measured GPU's, over other links"
    if not docs:
        return None
    prior = {field: _mean_of(field, [p[field] for p in docs.values()]) for field in fields}
    measured = {n: d["params"] for n, d in kernel_fits().items() if stands_in(d, family)}
    larger = any(accelerator.bf16_tflops > catalog.accelerator(n).bf16_tflops for n in docs)
    carried = peak_scaled_shares(accelerator, fields, docs, measured)
    for field, (share, exponent) in carried.items():
        prior[field] = share
        if exponent and larger:
            scaled = f"{field} x (peak ratio)^{exponent:.2f}, a larger peak than theirs"
            note = f"{note}; {scaled}" if note else scaled
    names = " and ".join(sorted(docs)) if len(docs) < 3 else ", ".join(sorted(docs))
    return prior, names, note


PEAK_SCALED = "mfu_efficiency"
"""The class priors' constants (those named so: a kernel's share of the tensor-core peak)
that are carried to another GPU as a power of the peak (:func:`peak_scaled_mean`)."""


def peak_scaled_shares(
    accelerator: Accelerator,
    fields: Iterable[str],
    stand_ins: Mapping[str, Mapping[str, Any]],
    measured: Mapping[str, Mapping[str, Any]],
) -> dict[str, tuple[float, float]]:
    """Each of ``fields`` that is a share of the peak (:data:`PEAK_SCALED`, a number in the
    ``stand_ins``' constants, {GPU: constants}) carried to ``accelerator``
    (:func:`peak_scaled_mean`) with the exponent fitted over the ``measured`` GPUs'
    constants that hold it (:func:`peak_exponent`): {field: (share, exponent)}. The
    runtime's class priors and ``benchmarks/step_fit.py``'s leave-one-GPU-out both take it."""
    first = next(iter(stand_ins.values()))
    out = {}
    for field in fields:
        if field.endswith(PEAK_SCALED) and not isinstance(first[field], list | Mapping):
            exponent = peak_exponent(
                {n: float(p[field]) for n, p in measured.items() if field in p}
            )
            shares = {n: float(p[field]) for n, p in stand_ins.items()}
            out[field] = (peak_scaled_mean(shares, accelerator, exponent), exponent)
    return out


def peak_exponent(shares: Mapping[str, float]) -> float:
    """How a kernel's share of the peak falls as the peak grows, across GPUs: the slope of
    log share on log bf16 peak over ``shares`` ({GPU: share}, the GPUs whose kernel fits hold
    it), kept within [-1, 0] (-1: the kernel's speed does not grow with the peak at all; 0:
    it grows in step); 0 where fewer than three GPUs or a single peak.

    A kernel that is not bound by the tensor cores (a delta rule's chunked scan, experts
    dequantised on the fly, the fused MoE's routing and gathers) keeps much of its speed from
    one generation to the next while the peak doubles: its share of the B200's peak is 0.47
    (INT4 experts) to 0.63 (the delta rule's prefill) of its share of the H100's
    (``benchmarks/step_fit.py``, "Class priors scaled by the peak")."""
    catalog = default_catalog()
    points = [
        (math.log(catalog.accelerator(name).bf16_tflops), math.log(share))
        for name, share in shares.items()
        if share > 0.0
    ]
    if len(points) < 3:
        return 0.0
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if spread < 1e-12:
        return 0.0
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / spread
    return min(0.0, max(-1.0, slope))


def peak_scaled_mean(
    shares: Mapping[str, float], accelerator: Accelerator, exponent: float
) -> float:
    """The stand-ins' ``shares`` ({GPU: share of its peak}) carried to ``accelerator``, each
    times the ratio of its bf16 peak to the stand-in's to the power ``exponent``
    (:func:`peak_exponent`) where that ratio is above 1 (as is where not), averaged; at most 1.

    Only a larger peak is discounted: across the two workstation GPUs (L40S, RTX PRO 6000) the
    shares do not fall with the peak, so a smaller GPU is not credited a larger share than its
    class reached (leave-one-GPU-out, ``benchmarks/step_fit.py``: the symmetric rule prices
    L40S's MXFP4 and INT4 experts 1.8 and 0.8 points worse)."""
    catalog = default_catalog()
    target = accelerator.bf16_tflops
    scaled = [
        share * float(max(1.0, target / catalog.accelerator(name).bf16_tflops) ** exponent)
        for name, share in shares.items()
    ]
    return min(1.0, sum(scaled) / len(scaled))


def _with_quantised_expert_priors(
    accelerator: Accelerator, fitted: RooflineDefaults
) -> RooflineDefaults:
    """``fitted`` with each quantised-expert family its fit has no constants of
    (:data:`QUANT_EXPERT_PRIORS`) taken from its class's kernel fits, averaged; part
    ``quantised_experts`` names them, family by family."""
    from sincere.perf.kernel_choice import FAMILY_NAMES

    params = dict(fitted.params)
    taken: dict[tuple[str, str], list[str]] = {}  # (GPUs, why) -> families taken from them
    for family, fields in QUANT_EXPERT_PRIORS.items():
        if any(params.get(f) is not None for f in fields):
            continue  # fitted on this GPU, or on the chip it is a variant of
        found = _class_mean(accelerator, fields, family)
        if found is not None:
            params.update(found[0])
            taken.setdefault(found[1:], []).append(FAMILY_NAMES[family].removesuffix(" experts"))
    dequantised = accelerator.compute_capability is not None and not accelerator.fp8_tflops
    if not taken and not dequantised:
        return fitted
    lines = [
        f"the {_listed(kinds)} experts of the {names} kernel fits averaged ({note})"
        for (names, note), kinds in taken.items()
    ]
    if dequantised:  # vLLM's Marlin W8A16 kernel: what the bf16 experts' constants price
        lines.append("fp8 experts run dequantised to bf16 (no fp8 tensor cores): the bf16 "
                     "experts' constants")  # fmt: skip
    origin = fitted.parts.get("quantised_experts", UNFITTED_PARTS["quantised_experts"])
    prior = "prior: " + "; ".join(lines)
    parts = dict(fitted.parts)
    parts["quantised_experts"] = (
        prior if origin.startswith(("prior", "datasheet")) else f"{origin}; {prior}"
    )
    return RooflineDefaults(params, fitted.origin, parts)


def _listed(names: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def stands_in(doc: Mapping[str, Any], family: str) -> bool:
    """Whether kernel fit ``doc``'s family ``family`` may stand in for another GPU's: not
    where it was fitted on skewed routings alone (:data:`sincere.perf.moe.SKEWED_ROUTING_NOTE`)."""
    notes = doc.get("fit", {}).get("families", {}).get(family, {}).get("notes", ())
    return SKEWED_ROUTING_NOTE not in notes


def _mean_of(field: str, values: list[Any]) -> Any:
    """The kernel fits' ``field``: numbers averaged, lists entry by entry (a list of GPU
    counts, ``*_gpus``, must be the same in every fit), factors by shape (``{axes,
    log_factors}`` on the same axes) node by node."""
    first = values[0]
    if isinstance(first, list):
        if any(len(v) != len(first) for v in values) or (
            field.endswith("_gpus") and any(v != first for v in values)
        ):
            raise DataError(
                f"the kernel fits' {field} differ: they cannot be averaged",
                path="/".join(KERNEL_FITS_FOLDER),
                value=values,
            )
        if field.endswith("_gpus"):
            return list(first)
        return [sum(float(x) for x in col) / len(col) for col in zip(*values, strict=True)]
    if isinstance(first, Mapping):
        logs = [list(v["log_factors"]) for v in values]
        if any(v["axes"] != first["axes"] for v in values):
            raise DataError(
                f"the kernel fits' {field} lie on different axes: they cannot be averaged",
                path="/".join(KERNEL_FITS_FOLDER),
                value=[v["axes"] for v in values],
            )
        mean = [sum(col) / len(col) for col in zip(*logs, strict=True)]
        return {"axes": first["axes"], "log_factors": mean}
    return sum(float(v) for v in values) / len(values)


def _fitted_defaults(accelerator: Accelerator, vllm_version: str | None = None) -> RooflineDefaults:
    """:func:`roofline_defaults` before the sustained-load ratio: the fitted kernels."""
    base = _base_defaults(accelerator)
    kernels = kernel_fit_for(accelerator.name, vllm_version)
    how = "fitted"
    if kernels is None:  # a variant takes its chip's kernel fit too (module docstring)
        kernels = kernel_fit_for(FIT_TRANSFER.get(accelerator.name, ""), vllm_version)
        how = "transferred"
    if kernels is None:
        return base
    whole = kernels.get("fit", {}).get("default", True) is not False  # else the collectives
    params = dict(base.params)
    fitted = {k: v for k, v in kernels["params"].items() if whole or k in _COLLECTIVE_FIELDS}
    given = set(fitted)  # what the fit sets (the layer's fixed cost below is the base's too)
    kernel_s = kernels["fit"].get("gemm_kernel_s")
    base_kernel_s = _base_gemm_kernel_s(accelerator)
    if not whole:  # the layer's fixed cost stays the base's
        kernel_s = None
    if kernel_s is not None and base_kernel_s is not None and "layer_overhead_s" in params:
        # the layer's fixed cost holds four GEMM launches: take the measured GEMMs' own
        elementwise = max(0.0, params["layer_overhead_s"] - 4.0 * base_kernel_s)
        fitted["layer_overhead_s"] = elementwise + 4.0 * float(kernel_s)
    params.update(fitted)
    versions = ", ".join(sorted({str(v) for v in kernels["fit"].get("versions", [])}))
    release = kernels["fit"].get("engine_version")
    if release and versions != release:  # the release's tables, and newer ones where it has none
        versions = f"{release} (tables {versions})"
    label = f"{how}: measured vLLM {versions} kernels ({kernels['file']})"
    parts = dict(base.parts)
    for part, names in KERNEL_PARTS.items():
        if any(name in given for name in names):
            parts[part] = label
    nccl = ", ".join(str(v) for v in kernels["fit"].get("nccl_versions", []))
    if "alltoall_gpus" in given and nccl:
        parts["all_to_all"] = f"{how}: measured NCCL {nccl} all-to-all ({kernels['file']})"
    if not whole:  # the collectives alone (COLLECTIVE_PARTS)
        return RooflineDefaults(params, f"{base.origin}; collectives {label}", parts)
    origin = f"{label}; elementwise and CPU terms {base.origin}"
    return RooflineDefaults(params, origin, parts)


def _base_gemm_kernel_s(accelerator: Accelerator) -> float | None:
    """The per-GEMM launch cost inside the base's ``layer_overhead_s`` (None: unknown)."""
    fits = shipped_fits()
    doc = fits.get(accelerator.name) or fits.get(FIT_TRANSFER.get(accelerator.name, ""))
    if doc is not None:
        value = doc.get("fit", {}).get("gemm_kernel_s")
        return None if value is None else float(value)
    values = [
        float(d["fit"]["gemm_kernel_s"])
        for d in fits.values()
        if "gemm_kernel_s" in d.get("fit", {})
    ]
    return sum(values) / len(values) if values else None


def _base_defaults(accelerator: Accelerator) -> RooflineDefaults:
    """The accelerator's own fit, a transferred fit, else the prior (module docstring)."""
    fits = shipped_fits()
    own = fits.get(accelerator.name)
    if own is not None:
        origin = f"fitted: {own['file']}"
        return RooflineDefaults(
            dict(own["params"]), origin, _part_origins(own["params"], origin, own)
        )
    source = fits.get(FIT_TRANSFER.get(accelerator.name, ""))
    if source is not None:
        origin = (
            f"transferred: {source['file']} (a variant of {source['fit']['accelerator']}: "
            f"its efficiencies and fixed costs, {accelerator.name}'s datasheet peaks)"
        )
        short = f"transferred: {source['file']} ({source['fit']['accelerator']}'s fit)"
        parts = _part_origins(source["params"], short, source)
        return RooflineDefaults(dict(source["params"]), origin, parts)
    if not fits:
        return RooflineDefaults({}, "datasheet assumptions (no shipped fit)")
    prior: dict[str, Any] = {}
    for name in PRIOR_FIELDS:
        values = [float(doc["params"][name]) for doc in fits.values() if name in doc["params"]]
        if values:
            prior[name] = sum(values) / len(values)
    if "token_tile" in prior:
        prior["token_tile"] = min(
            int(doc["params"]["token_tile"])
            for doc in fits.values()
            if "token_tile" in doc["params"]
        )
    files = ", ".join(doc["file"] for doc in fits.values())
    origin = f"prior: the stack's efficiencies and fixed costs from {files}; datasheet peaks"
    return RooflineDefaults(
        prior, origin, _part_origins(prior, "prior: mean of the shipped fits", {})
    )


def default_roofline_params(
    accelerator: Accelerator,
    overrides: Mapping[str, Any] | None = None,
    vllm_version: str | None = None,
) -> RooflineParams:
    """:class:`RooflineParams` of the accelerator's defaults (for ``vllm_version``'s kernels,
    :func:`roofline_defaults`) with ``overrides`` applied."""
    params = {**roofline_defaults(accelerator, vllm_version).params, **(overrides or {})}
    for name, value in params.items():
        if isinstance(value, list):  # YAML lists: the dataclass holds tuples
            params[name] = tuple(value)
        elif name in GRID_FIELDS and value is not None:  # a fit file's grid mapping
            params[name] = ShapeGrid.from_mapping(value, name)
    fields = {f.name for f in dataclasses.fields(RooflineParams)}
    unknown = set(params) - fields
    if unknown:
        raise ConfigError("unknown roofline parameter", value=sorted(unknown), allowed=fields)
    return RooflineParams(**params)
