"""Build step-time models by name: the registry, each kind's parameters, and the config block.

``make_step_model(kind, deployment, params, cc=...)`` (or ``STEP_MODELS.build(kind,
params, deployment=..., cc=..., cc_params=...)``) checks ``params`` against the kind's
parameter model (every problem at once) and builds the model; ``cc=True`` wraps it in
:class:`~sincere.perf.cc.Confidential` (except kinds built from CC measurements, which
use them directly). :class:`StepModelConfig` is the pydantic block a simulator /
experiment YAML carries per instance; its ``params_file`` points at a YAML or JSON file
(as ``sincere fit`` writes) holding the parameters, either as a plain mapping or under a
``params`` key (with an optional ``kind`` that must match). Explicit ``params`` override
the file's.

Kinds and their parameter models: ``roofline`` (:class:`RooflineStepParams`, over the
accelerator's fitted constants, :mod:`sincere.perf.calibration`), ``profiled``
(:class:`ProfiledStepParams`: a folder of operator profiles; :mod:`sincere.perf.profiled`),
``inferno`` / ``inferno-chunked`` (Inferno's coefficients), ``niyama-binned`` (bin edges
and coefficients), ``iteration-table`` (a measured grid), ``sincere-table`` (SINCERE's
H100 profile of a model) and ``sincere-runs`` (:mod:`sincere.perf.sincere_runs`). Add one
with ``STEP_MODELS.register("name", params=NameParams)(StepModelKind(builder))``, where
``builder(params, deployment, cc)`` gets the checked parameters.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Generic, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from sincere.core.errors import ConfigError
from sincere.core.params import Params, ParamsError, Problem
from sincere.core.registry import Needs, Registry
from sincere.perf.base import Deployment, StepTimeModel, SwapTime
from sincere.perf.calibration import default_roofline_params
from sincere.perf.cc import CCParams, Confidential
from sincere.perf.execution_settings import ExecutionParams
from sincere.perf.linear import NUM_BINNED_COEFFS, BinnedLinear, InfernoChunked, InfernoLinear
from sincere.perf.profiled import ProfiledStep, profiles_for
from sincere.perf.roofline import Roofline
from sincere.perf.table import IterationTable, sincere_profile

D = TypeVar("D")
P = TypeVar("P", bound=Params)


@dataclass(frozen=True, slots=True)
class StepModelKind(Generic[P]):
    """How to build one kind of step-time model from its checked parameters."""

    build: Callable[[P, Deployment, bool], StepTimeModel]  # (params, deployment, cc)
    measured_cc: bool = False  # True: ``build`` honours cc itself, no wrapper needed

    def __call__(
        self,
        *,
        params: P,
        deployment: Deployment,
        cc: bool = False,
        cc_params: CCParams | None = None,
    ) -> StepTimeModel:
        """The model, wrapped for CC mode unless the kind measured it."""
        model = self.build(params, deployment, cc)
        if cc and not self.measured_cc:
            return Confidential(model, cc_params)
        return model


STEP_MODELS: Registry[Callable[..., StepTimeModel]] = Registry(
    "step-time model",
    needs=(
        Needs("deployment", Deployment, "a deployment (model, accelerator, precision, TP, PP)"),
        Needs("cc", bool, "whether it runs in confidential-computing mode", optional=True),
        Needs("cc_params", CCParams, "the CC wrapper's costs (CCParams)", optional=True),
    ),
)


def make_step_model(
    kind: str,
    deployment: Deployment,
    params: Mapping[str, Any] | None = None,
    *,
    cc: bool = False,
    cc_params: CCParams | None = None,
) -> StepTimeModel:
    """Build the ``kind`` step-time model for ``deployment``; see the module docstring."""
    extra: dict[str, object] = {} if cc_params is None else {"cc_params": cc_params}
    return STEP_MODELS.build(kind, params, deployment=deployment, cc=cc, **extra)


def dataclass_from(cls: type[D], params: Mapping[str, Any], where: str) -> D:
    """Build frozen dataclass ``cls`` from ``params``, coercing to the defaults' types."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(params) - set(fields)
    if unknown:
        raise ConfigError("unknown parameter", where=where, value=sorted(unknown), allowed=fields)
    values: dict[str, Any] = {}
    for name, value in params.items():
        default = fields[name].default
        kind = type(default) if default is not None and default is not dataclasses.MISSING else None
        try:
            values[name] = kind(value) if kind in (int, float, bool, str) else value
        except (TypeError, ValueError):
            raise ConfigError(f"bad value for {name}", where=where, value=value) from None
    return cls(**values)


# --- parameters shared by the kinds -------------------------------------------------


class SwapParams(Params):
    """A model swap's duration: seconds, or ``{mean_s, std_s}``."""

    mean_s: float = Field(ge=0, description="mean, s")
    std_s: float = Field(0.0, ge=0, description="standard deviation, s")

    @model_validator(mode="before")
    @classmethod
    def _from_seconds(cls, value: Any) -> Any:
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        return {"mean_s": value} if is_number else value

    def swap_time(self) -> SwapTime:
        """As the step models take it."""
        return SwapTime(self.mean_s, self.std_s)


_SWAP: dict[str, Any] = {"allowed_text": "seconds >= 0, or {mean_s, std_s}, or null"}


class SwapTimesParams(Params):
    """Optional load and unload times of a fitted model."""

    load: SwapParams | None = Field(
        None, description="time to load the model; null: none", json_schema_extra=_SWAP
    )
    unload: SwapParams | None = Field(
        None, description="time to unload the model; null: none", json_schema_extra=_SWAP
    )

    def swaps(self) -> dict[str, SwapTime | None]:
        """``load`` and ``unload`` keywords of a step model's constructor."""
        load, unload = self.load, self.unload
        return {
            "load": None if load is None else load.swap_time(),
            "unload": None if unload is None else unload.swap_time(),
        }


Coefficient = Annotated[float, Field(ge=0)]
Row = Annotated[tuple[float, ...], Field(strict=False)]  # a list of numbers in YAML
Counts = Annotated[tuple[int, ...], Field(strict=False)]  # a list of whole numbers in YAML

# --- the kinds ------------------------------------------------------------------------

_FIT: dict[str, Any] = {"default_text": "the accelerator's fit"}  # docs: the default


def _fitted(description: str, **bounds: Any) -> Any:
    """A parameter that overrides one of the accelerator's fitted constants (null: the fit)."""
    return Field(None, description=description, json_schema_extra=_FIT, **bounds)


def _efficiency(what: str) -> Any:
    return _fitted(f"share of {what} reached", gt=0, le=1)


def _time(what: str) -> Any:
    return _fitted(f"{what}, s", ge=0)


class RooflineStepParams(Params):
    """Parameters of ``roofline``: overrides of the accelerator's fitted constants.

    A parameter left out or null keeps the accelerator's fitted value
    (:func:`sincere.perf.calibration.roofline_defaults`).
    """

    vllm_version: str | None = Field(
        None,
        description="the vLLM release the engine runs: its measured kernels' fit prices the "
        "step (the newest fitted release at or below it); null: the newest fit",
    )
    kernel_tables: str | None = Field(
        None,
        description="folder of measured kernels (AIConfigurator's layout): an MoE layer it "
        "measured on the GPU is priced from its rows, under vllm_version's release; null: "
        "the fitted formula",
    )
    shape_corrections: bool | None = Field(
        None,
        description="price GEMMs, prefill attention and the all-reduce with the factors by "
        "shape or message size fitted to the GPU's measured kernels (their tile, split and "
        "algorithm choices beyond the roofline's form); false: the form alone; null: on "
        "where the fit has them",
    )
    gemm_bf16_grid: dict[str, Any] | None = _fitted(
        "16-bit GEMMs' factor by shape, {axes: [[lo, hi, nodes], ...], log_factors: [...]} "
        "as a kernel fit file writes it (sincere.perf.shape_grid)"
    )
    gemm_fp8_grid: dict[str, Any] | None = _fitted("fp8 GEMMs' factor by shape (as gemm_bf16_grid)")
    gemm_nvfp4_grid: dict[str, Any] | None = _fitted(
        "NVFP4 GEMMs' factor by shape (as gemm_bf16_grid)"
    )
    prefill_attention_grid: dict[str, Any] | None = _fitted(
        "prefill attention's factor by query tokens per sequence, sequences, query heads and "
        "query heads per KV head (as gemm_bf16_grid)"
    )
    allreduce_grid: dict[str, Any] | None = _fitted(
        "the all-reduce's factor by message bytes, GPUs and 1 in a CUDA graph or 2 outside "
        "one (as gemm_bf16_grid)"
    )
    mfu_efficiency: float | None = _efficiency("the dense peak in GEMMs")
    sustained_compute_ratio: float | None = _fitted(
        "share of a kernel benchmark's compute rate the GPU keeps under sustained load "
        "(power-limited clocks); 1: the benchmark's",
        gt=0,
        le=1,
    )
    bw_efficiency: float | None = _efficiency("HBM bandwidth in GEMMs")
    elementwise_bw_efficiency: float | None = _efficiency("HBM bandwidth in norms, rotary, add")
    overlap_exponent: float | None = _fitted(
        "p of a GEMM's (compute^p + memory^p)^(1/p); .inf: max", ge=1, allow_inf_nan=True
    )
    token_tile: int | None = _fitted("GEMM tokens round up to this multiple, tokens", ge=1)
    fp8_token_tile: int | None = _fitted(
        "fp8-compute GEMMs' tokens round up to this multiple (default: token_tile)", ge=1
    )
    nvfp4_token_tile: int | None = _fitted(
        "NVFP4-compute GEMMs' tokens round up to this multiple (default: token_tile)", ge=1
    )
    layer_overhead_s: float | None = _time("fixed kernel cost of one layer's linear work")
    attn_mfu_efficiency: float | None = _efficiency("the dense bf16 peak in prefill attention")
    attn_bw_efficiency: float | None = _efficiency("HBM bandwidth reading the KV cache")
    attn_kernel_s: float | None = _time("fixed cost of one (prefill) attention kernel per layer")
    attn_diag_factor: float | None = _fitted(
        "work of a pair inside a prefill chunk vs one against the cache", ge=1, le=2
    )
    overhead_s: float | None = _time("fixed CPU cost per iteration")
    overhead_per_seq_s: float | None = _time("CPU cost per sequence in the iteration")
    interconnect_efficiency: float | None = _efficiency("NVLink / PCIe bandwidth in collectives")
    allreduce_latency_s: float | None = _time("fixed cost of one all-reduce (2 GPUs, CUDA graph)")
    allreduce_gpus: Counts | None = _fitted(
        "GPU counts with their own all-reduce latency and bandwidth share"
    )
    allreduce_latencies_s: Row | None = _fitted(
        "all-reduce latency in a CUDA graph at each of allreduce_gpus, s"
    )
    allreduce_efficiencies: Row | None = _fitted(
        "all-reduce bus bandwidth share of the link at each of allreduce_gpus"
    )
    allreduce_eager_s: float | None = _time("all-reduce latency added outside a CUDA graph")
    allreduce_eager_floor_s: float | None = _time("least time of an all-reduce outside a graph")
    allreduce_latency_share: float | None = Field(
        None,
        ge=0,
        le=1,
        description="the engine's all-reduce latency as a share of the fitted one (vLLM's "
        "custom all-reduce)",
        json_schema_extra={"default_text": "the engine preset's (1; trtllm: 0.3)"},
    )
    alltoall_gpus: Counts | None = _fitted(
        "GPU counts with their own expert-parallel all-to-all terms"
    )
    alltoall_latencies_s: Row | None = _fitted("all-to-all latency at each of alltoall_gpus, s")
    alltoall_efficiencies: Row | None = _fitted(
        "all-to-all share of the one-way link at each of alltoall_gpus"
    )
    alltoall_protocol_s: float | None = _time("all-to-all latency added past the knee")
    alltoall_knee_bytes: float | None = _fitted(
        "bytes sent where half the all-to-all's protocol latency is added", gt=0
    )
    cuda_graph_max_tokens: int | None = _fitted(
        "iterations up to this many tokens replay CUDA graphs, tokens", ge=0
    )
    fp8_mfu_efficiency: float | None = _efficiency("the fp8 peak in fp8 GEMMs")
    fp8_gemm_kernel_s: float | None = _time("fp8 GEMM's extra fixed cost (activation quantisation)")
    fp8_act_s: float | None = _fitted("fp8 GEMM's extra time per input activation element, s", ge=0)
    nvfp4_mfu_efficiency: float | None = _efficiency("the fp4 peak in NVFP4 GEMMs")
    nvfp4_gemm_kernel_s: float | None = _time(
        "NVFP4 GEMM's extra fixed cost (activation quantisation)"
    )
    nvfp4_act_s: float | None = _fitted(
        "NVFP4 GEMM's extra time per input activation element, s", ge=0
    )
    attn_decode_kernel_s: float | None = _time("fixed cost of one decode attention kernel")
    attn_decode_grouped_s: float | None = _time(
        "more per decode attention call of two or more sequences at two or more KV heads a GPU"
    )
    attn_query_pairs: float | None = _fitted(
        "prefill: pairs' worth of work per query row beyond its own", ge=0
    )
    attn_head_dim_offset: float | None = _fitted(
        "a pair's work per query head as if head_dim were this wider", ge=0
    )
    attn_kv_head_work: float | None = _fitted(
        "a pair's work per KV head, in shares of a head_dim product", ge=0
    )
    attn_decode_seq_tokens: float | None = _fitted(
        "decode: KV tokens' worth of traffic per sequence (1: its new one)", ge=0
    )
    mla_decode_mfu_efficiency: float | None = _efficiency(
        "the bf16 peak in MLA decode's absorbed form"
    )
    mla_decode_bw_efficiency: float | None = _efficiency("HBM bandwidth reading a bf16 MLA latent")
    mla_decode_fp8_bw_efficiency: float | None = _efficiency(
        "HBM bandwidth reading an fp8 MLA latent"
    )
    mla_decode_lone_seqs: float | None = _fitted(
        "MLA decode: sequences' worth more of the mean context read per call", ge=0
    )
    moe_mfu_efficiency: float | None = _efficiency("the dense peak in the fused-MoE kernel")
    moe_bw_efficiency: float | None = _efficiency("HBM bandwidth in the fused-MoE kernel")
    moe_kernel_s: float | None = _time("fixed cost of one fused-MoE kernel per layer")
    moe_expert_s: float | None = _time("fused MoE's memory-side cost per active expert")
    moe_tail_share: float | None = _fitted(
        "share of the busiest expert's rows not hidden by the others", ge=0, le=1
    )
    moe_width_offset: float | None = _fitted(
        "elements wider than its width an expert's GEMMs compute as", ge=0
    )
    moe_unaligned_factor: float | None = _fitted(
        "bf16 experts' time at widths per GPU off a multiple of 16, as a factor", gt=0
    )
    moe_ep_foreign_factor: float | None = _fitted(
        "under expert parallelism, the fused MoE's pass over other GPUs' routed pairs, as a "
        "multiple of its bytes' time at HBM speed (0: none)",
        ge=0,
    )
    moe_ep_kernel_s: float | None = _time(
        "under expert parallelism, the fused MoE's fixed cost per call beside that pass"
    )
    moe_ep_onchip_share: float | None = _fitted(
        "under expert parallelism, the share of the L2 cache the pass's bytes stay in (those "
        "beyond it go through HBM)",
        ge=0,
    )
    moe_fp8_mfu_efficiency: float | None = _efficiency("the fp8 peak in the fp8-expert kernel")
    moe_fp8_bw_efficiency: float | None = _efficiency("HBM bandwidth in the fp8-expert kernel")
    moe_fp8_kernel_s: float | None = _time("fixed cost of one fp8-expert MoE kernel per layer")
    moe_fp8_expert_s: float | None = _time("cost per active expert in the fp8-expert kernel")
    moe_fp8_width_offset: float | None = _fitted(
        "elements wider than its width an expert computes as in the fp8-expert kernel", ge=0
    )
    moe_mxfp4_mfu_efficiency: float | None = _efficiency("the bf16 peak in the MXFP4-expert kernel")
    moe_mxfp4_bw_efficiency: float | None = _efficiency("HBM bandwidth in the MXFP4-expert kernel")
    moe_mxfp4_kernel_s: float | None = _time("fixed cost of one MXFP4-expert MoE kernel per layer")
    moe_mxfp4_expert_s: float | None = _time("cost per active expert in the MXFP4-expert kernel")
    moe_mxfp4_width_offset: float | None = _fitted(
        "elements wider than its width an expert computes as in the MXFP4-expert kernel", ge=0
    )
    moe_nvfp4_mfu_efficiency: float | None = _efficiency("the fp4 peak in the NVFP4-expert kernel")
    moe_nvfp4_bw_efficiency: float | None = _efficiency("HBM bandwidth in the NVFP4-expert kernel")
    moe_nvfp4_kernel_s: float | None = _time("fixed cost of one NVFP4-expert MoE kernel per layer")
    moe_nvfp4_expert_s: float | None = _time("cost per active expert in the NVFP4-expert kernel")
    moe_nvfp4_width_offset: float | None = _fitted(
        "elements wider than its width an expert computes as in the NVFP4-expert kernel", ge=0
    )
    moe_mxfp4_mxfp8_mfu_efficiency: float | None = _efficiency(
        "the fp8 peak in the MXFP4-expert kernel with MXFP8 activations"
    )
    moe_mxfp4_mxfp8_bw_efficiency: float | None = _efficiency(
        "HBM bandwidth in the MXFP4-expert kernel with MXFP8 activations"
    )
    moe_mxfp4_mxfp8_kernel_s: float | None = _time(
        "fixed cost of one MXFP4-expert kernel with MXFP8 activations per layer"
    )
    moe_mxfp4_mxfp8_expert_s: float | None = _time(
        "cost per active expert in the MXFP4-expert kernel with MXFP8 activations"
    )
    moe_mxfp4_mxfp8_width_offset: float | None = _fitted(
        "elements wider than its width an expert computes as with MXFP8 activations", ge=0
    )
    moe_int4_mfu_efficiency: float | None = _efficiency("the bf16 peak in the INT4-expert kernel")
    moe_int4_bw_efficiency: float | None = _efficiency("HBM bandwidth in the INT4-expert kernel")
    moe_int4_kernel_s: float | None = _time("fixed cost of one INT4-expert MoE kernel per layer")
    moe_int4_expert_s: float | None = _time("cost per active expert in the INT4-expert kernel")
    moe_int4_width_offset: float | None = _fitted(
        "elements wider than its width an expert computes as in the INT4-expert kernel", ge=0
    )
    mxfp4_activations: str | None = Field(
        None,
        description="what MXFP4 experts multiply with: bf16 (vLLM's default) or mxfp8 "
        "(VLLM_USE_FLASHINFER_MOE_MXFP4_MXFP8=1, Blackwell)",
    )
    p2p_latency_s: float | None = _time("fixed cost of one pipeline-stage send")
    activation_bytes: float | None = _fitted("bytes per activation element", gt=0)
    pp_microbatches: int | None = _fitted("micro-batches an iteration is cut into under PP", ge=1)
    load_efficiency: float | None = _efficiency("host-link bandwidth while loading")
    disk_read_gbps: float | None = _fitted("storage read rate, GB/s; null: not limiting", gt=0)
    load_overhead_s: float | None = _time("fixed cost of a load")
    unload_s: float | None = _time("time to free the model")


def _build_roofline(params: RooflineStepParams, dep: Deployment, cc: bool) -> StepTimeModel:
    overrides = params.model_dump(exclude_none=True, exclude={"vllm_version"})
    if params.kernel_tables is not None:
        overrides["kernel_release"] = params.vllm_version
    return Roofline(dep, default_roofline_params(dep.accelerator, overrides, params.vllm_version))


class ProfiledStepParams(SwapTimesParams):
    """Parameters of ``profiled``."""

    profiles: Path = Field(strict=False, description="folder of operator profiles (Vidur's layout)")
    all_reduce: str | None = Field(
        None, description="all-reduce topology of the profiles; null: the only one"
    )
    cpu: bool = Field(True, description="add the profiled CPU overhead per iteration")
    scale_attention: bool = Field(
        False, description="scale attention profiled at another per-GPU shape"
    )


def _build_profiled(params: ProfiledStepParams, dep: Deployment, cc: bool) -> StepTimeModel:
    return ProfiledStep(
        profiles_for(params.profiles, dep.accelerator.name),
        dep,
        all_reduce=params.all_reduce,
        cpu=params.cpu,
        scale_attention=params.scale_attention,
        **params.swaps(),
    )


class InfernoChunkedParams(SwapTimesParams):
    """Parameters of ``inferno-chunked``: Inferno's iteration = alpha + beta*tokens + gamma*ctx."""

    alpha_ms: Coefficient = Field(description="per iteration, ms")
    beta_ms: Coefficient = Field(description="per token computed, ms")
    gamma_ms: Coefficient = Field(description="per sequence, per token of context, ms")


class InfernoParams(SwapTimesParams):
    """Parameters of ``inferno``: decode alpha + beta*n, prefill gamma + delta*tokens."""

    alpha_ms: Coefficient = Field(description="decode step, fixed part, ms")
    beta_ms: Coefficient = Field(description="decode step, per sequence, ms")
    gamma_ms: Coefficient = Field(description="prefill, fixed part, ms")
    delta_ms: Coefficient = Field(description="prefill, per prompt token, ms")


def _build_inferno(params: InfernoParams, dep: Deployment, cc: bool) -> StepTimeModel:
    p = params
    return InfernoLinear(p.alpha_ms, p.beta_ms, p.gamma_ms, p.delta_ms, **p.swaps())


def _build_inferno_chunked(
    params: InfernoChunkedParams, dep: Deployment, cc: bool
) -> StepTimeModel:
    return InfernoChunked(params.alpha_ms, params.beta_ms, params.gamma_ms, **params.swaps())


class BinnedParams(SwapTimesParams):
    """Parameters of ``niyama-binned``."""

    bin_edges: tuple[float, ...] = Field(
        strict=False,
        description="increasing inclusive upper edges of every bin but the last, tokens",
    )
    coeffs: tuple[
        Annotated[Row, Field(min_length=NUM_BINNED_COEFFS, max_length=NUM_BINNED_COEFFS)], ...
    ] = Field(strict=False, description="one row (b0, c1..c5) per bin, seconds")

    @model_validator(mode="after")
    def _one_row_per_bin(self) -> BinnedParams:
        if len(self.coeffs) != len(self.bin_edges) + 1:
            raise ValueError(
                f"coeffs needs len(bin_edges) + 1 = {len(self.bin_edges) + 1} rows, "
                f"not {len(self.coeffs)}"
            )
        return self


def _build_binned(params: BinnedParams, dep: Deployment, cc: bool) -> StepTimeModel:
    return BinnedLinear(params.bin_edges, params.coeffs, **params.swaps())


class IterationTableParams(SwapTimesParams):
    """Parameters of ``iteration-table`` (:class:`IterationTable` checks the grids' order)."""

    token_grid: tuple[float, ...] = Field(
        strict=False, description="increasing tokens per iteration"
    )
    seq_grid: tuple[float, ...] = Field(strict=False, description="increasing sequences")
    times_s: tuple[Row, ...] = Field(
        strict=False, description="iteration time per (tokens, sequences), s"
    )

    @model_validator(mode="after")
    def _one_time_per_cell(self) -> IterationTableParams:
        shape = (len(self.token_grid), len(self.seq_grid))
        if len(self.times_s) != shape[0] or any(len(row) != shape[1] for row in self.times_s):
            raise ValueError(f"times_s must have len(token_grid) x len(seq_grid) = {shape} values")
        return self


def _build_iteration_table(
    params: IterationTableParams, dep: Deployment, cc: bool
) -> StepTimeModel:
    p = params
    return IterationTable(p.token_grid, p.seq_grid, p.times_s, **p.swaps())


class SincereTableParams(Params):
    """Parameters of ``sincere-table``."""

    model: str | None = Field(
        None, description="SINCERE model whose H100 profile to use; null: the deployment's"
    )


def _build_sincere_table(params: SincereTableParams, dep: Deployment, cc: bool) -> StepTimeModel:
    return sincere_profile(params.model or dep.model.name, cc=cc)


STEP_MODELS.register("roofline", params=RooflineStepParams)(StepModelKind(_build_roofline))
STEP_MODELS.register("inferno", params=InfernoParams)(StepModelKind(_build_inferno))
STEP_MODELS.register("inferno-chunked", params=InfernoChunkedParams)(
    StepModelKind(_build_inferno_chunked)
)
STEP_MODELS.register("niyama-binned", params=BinnedParams)(StepModelKind(_build_binned))
STEP_MODELS.register("iteration-table", params=IterationTableParams)(
    StepModelKind(_build_iteration_table)
)
STEP_MODELS.register("sincere-table", params=SincereTableParams)(
    StepModelKind(_build_sincere_table, measured_cc=True)
)
STEP_MODELS.register("profiled", params=ProfiledStepParams)(StepModelKind(_build_profiled))


def load_params_file(path: str | Path, kind: str | None = None) -> dict[str, Any]:
    """Parameters from a YAML / JSON file: a mapping, or one under a ``params`` key."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError("cannot read params_file", where=path, value=str(exc)) from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError("params_file is not valid YAML / JSON", where=path, value=first) from None
    if not isinstance(data, Mapping):
        raise ConfigError("params_file must hold a mapping", where=path, value=type(data).__name__)
    if "params" in data:
        if kind is not None and data.get("kind", kind) != kind:
            raise ConfigError("params_file is for another kind", where=path, value=data["kind"])
        data = data["params"]
    return dict(data)


class StepModelConfig(BaseModel):
    """Per-instance step-time model block of a simulator / experiment config."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str = "roofline"  # a STEP_MODELS name
    params: dict[str, Any] = {}  # the kind's parameters (override params_file)
    params_file: Path | None = None  # YAML / JSON parameter file, e.g. from `sincere fit`
    cc: bool = False  # run in confidential-computing mode
    cc_params: dict[str, float] = {}  # CCParams fields (defaults: SINCERE calibration)

    def merged_params(self) -> dict[str, Any]:
        """``params_file``'s parameters (read now) under the inline ``params``."""
        return merge_params_file(self.kind, self.params, self.params_file)

    def for_engine(self, execution: ExecutionParams) -> StepModelConfig:
        """This block as ``execution``'s engine runs it: a roofline takes the engine's
        all-reduce latency share (TensorRT-LLM's fused kernel) unless its parameters set
        one; other kinds, and an engine with vLLM's all-reduce, are unchanged."""
        share = execution.allreduce_latency_share
        if self.kind != "roofline" or share == 1.0:
            return self
        if "allreduce_latency_share" in self.merged_params():
            return self
        params = {**self.params, "allreduce_latency_share": share}
        return self.model_copy(update={"params": params})

    def build(self, deployment: Deployment) -> StepTimeModel:
        """The configured model for ``deployment``.

        Raises ``ConfigError``; a problem with parameters read from ``params_file``
        names the file.
        """
        cc_params = dataclass_from(CCParams, self.cc_params, "cc_params")
        params = self.merged_params()
        try:
            return make_step_model(self.kind, deployment, params, cc=self.cc, cc_params=cc_params)
        except ParamsError as exc:
            if self.params_file is None:
                raise
            raise ParamsError(
                from_params_file(exc.problems, self.params_file), "invalid step-time model"
            ) from None


def merge_params_file(
    kind: str, params: Mapping[str, Any] | None, params_file: str | Path | None
) -> dict[str, Any]:
    """``params_file``'s parameters for ``kind`` (read now) under the inline ``params``."""
    merged: dict[str, Any] = {}
    if params_file is not None:
        merged.update(load_params_file(params_file, kind))
    merged.update(params or {})
    return merged


def from_params_file(problems: Sequence[Problem], params_file: str | Path) -> list[Problem]:
    """``problems`` of parameters merged with ``params_file``'s, each naming the file."""
    note = f" (parameters from params_file {str(params_file)!r})"
    return [dataclasses.replace(p, message=p.message + note) for p in problems]
