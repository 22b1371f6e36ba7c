"""Fit the roofline's per-kernel terms to one GPU's measured vLLM kernels.

``fit_kernels(folder, accelerator)`` reads the tables of :mod:`sincere.perf.kernel_tables`
(AIConfigurator's database: real vLLM kernels timed on the GPU) and fits, family by
family, the general forms the roofline prices a step with -- one set of constants per
family over every measured shape, never a table per shape:

* **GEMM** by weight dtype (bf16 from ``torch.nn.functional.linear``, fp8 per-tensor
  from vLLM's CUTLASS kernel, NVFP4 from vLLM's FlashInfer kernels on GPUs with fp4
  tensor cores): ``kernel + (compute^p + memory^p)^(1/p)`` with compute
  = ``2·m·n·k`` FLOPs (``m`` rounded up to the token tile above one tile) over the
  dtype's dense peak × efficiency and memory = weights + bf16 activations over HBM ×
  efficiency; the tile is chosen among :data:`TOKEN_TILES` by the loss. fp8 and NVFP4
  (:data:`QUANT_GEMMS`) take their own peak (fp8, fp4), weight bytes (1, 0.5625), share
  of that peak, fixed quantisation cost and quantisation bytes per input activation
  (``fp8_*``, ``nvfp4_*``) and their own token tile (``fp8_token_tile``: Hopper's fp8
  kernels step at multiples of 128-256 tokens where its bf16 ones do not), and the bf16
  fit's bandwidth share and exponent. Each
  GEMM family then takes a factor by shape (``gemm_bf16_grid``, ``gemm_fp8_grid``,
  ``gemm_nvfp4_grid``: :mod:`sincere.perf.shape_grid`), piecewise linear in ``log2`` of
  tokens, output and input features, fitted to what the form leaves on its rows (the
  kernels' own tile and split choices); the family's errors are the form's times the
  factor, the form's own mean error kept beside (``form_mean_error``). The calls of a
  few tokens whose weights fit in L2 are left out (:func:`gemm_rows`);
* **prefill attention** (``context_attention``, bf16 KV, no window): ``attn_kernel_s +
  4·(heads·(head_dim + attn_head_dim_offset) + attn_kv_head_work·kv_heads·head_dim) ·
  (pairs + attn_query_pairs·queries) / (bf16 peak × attn_mfu_efficiency)``, causal pairs
  counted once (``attn_diag_factor = 1``: the kernels skip the masked half). The offset
  (work per score that does not grow with the head size) and the KV-head term (MHA runs
  slower than GQA of the same query heads) are what a per-pair-FLOPs form missed most;
  then a factor by shape (``prefill_attention_grid``) over query tokens per sequence,
  sequences, query heads and query heads per KV head: how well the (sequence, head, query
  tile) blocks fill the SMs, and how many query heads share a KV head's tiles;
* **decode attention** (``generation_attention``): ``attn_decode_kernel_s + KV bytes /
  (HBM × attn_bw_efficiency)`` (or its compute, whichever is slower), plus
  ``attn_decode_grouped_s`` on calls of two or more sequences at two or more KV heads
  (FlashAttention-2's second fixed cost, :func:`grouped_decode`), fitted and judged
  on the calls whose KV cache cannot sit in L2 across the collector's repeats or that are
  their kernel's fixed cost (:func:`decode_attention_rows`);
* **MLA decode** (``mla_generation_module``: vLLM's MLA attention module in decode): how a
  call grows with the context, the absorbed form's pairs at ``mla_decode_mfu_efficiency``
  of the bf16 peak or the latent read at ``mla_decode_bw_efficiency`` (fp8 latents their
  own) of HBM, each sequence's context read as if ``mla_decode_lone_seqs`` more came with
  it; each (heads, batch, dtypes) series keeps its own level (:func:`fit_mla_decode`);
* **all-reduce** (vLLM's custom all-reduce, inside and outside CUDA graphs):
  ``latency(n) + 2(n−1)/n · bytes / (one-way link × efficiency(n))`` in a graph, each GPU
  count its own latency and efficiency; outside a graph at least
  ``allreduce_eager_floor_s`` (the CPU's launch hides a small transfer: an eager
  all-reduce takes the floor until the ring's time exceeds it) plus
  ``allreduce_eager_s``; messages up to 128 MiB; then the factor by message size
  (``allreduce_grid``: message bytes, a node an octave, GPUs and graph or eager), which
  follows the measured calls (vLLM changes algorithm and launch shape by size, in steps
  the affine form cannot follow: on 8 B200s 256 KB takes 26 us in a graph, 1 MB 17 us);
* **all-to-all** (NCCL's ``alltoall`` of 16-bit elements, the expert-parallel dispatch
  and combine): per GPU count ``latency(n) + protocol_s · sent / (sent + knee_bytes) +
  sent / (one-way link × efficiency(n))`` with ``sent = (n−1)/n · bytes`` (a GPU's buffer
  keeps its own ``1/n``; the latency steps up once NCCL leaves its small-message protocol);
* **fused MoE** (bf16 experts, no EP): the roofline of the grouped GEMMs over the
  experts a batch activates (:mod:`sincere.perf.moe`, balanced and Zipf-skewed routing
  with the measured skew), each expert's tokens padded to its tile, with its own
  efficiencies, a fixed kernel cost, a cost per active expert on the memory side
  (``moe_expert_s``) and the share of the busiest expert's rows that does not overlap
  with the others (``moe_tail_share``);
* **fp8, MXFP4, NVFP4 and INT4 experts** (:data:`QUANT_EXPERTS`, no EP): the same form
  with their weight bytes and compute rate (fp8: the fp8 peak, block-scaled rows where
  measured; MXFP4: 4.25-bit weights at the bf16 peak; NVFP4: 4.5-bit weights at the fp4
  peak; MXFP4 x MXFP8: 4.25-bit weights at the fp8 peak; INT4: 4-bit weights at the bf16
  peak), their own efficiencies, kernel cost and cost per active expert, the bf16 fit's
  overlap exponent and tail share (``moe_fp8_*``, ``moe_mxfp4_*``, ``moe_nvfp4_*``,
  ``moe_mxfp4_mxfp8_*``, ``moe_int4_*``). A family in a
  precision the GPU has no rate for (fp8 on A100, NVFP4 before Blackwell) is not
  attempted, nor MXFP4 x MXFP8 experts before Blackwell;
* **fused MoE under EP** (bf16 experts, ``moe_ep_size`` > 1: one GPU's call over every
  token, holding ``1/ep`` of the experts): the bf16 experts' constants over the GPU's own
  pairs, plus the pass over the other GPUs' routed pairs at HBM speed times
  ``moe_ep_foreign_factor`` (the bytes beyond ``moe_ep_onchip_share`` of the L2 cache)
  and a fixed cost per call, ``moe_ep_kernel_s`` (:func:`fit_moe_ep`).

Every fit minimises a robust (soft-L1) loss of ``log(model / measured)``, rows weighted
so each octave of the size axis weighs the same (:func:`octave_weights`). Each family
reports its rows, mean / max relative error and bias, and says when a constant sits on
its bound or the family misses its own data by more than :data:`FAIR_ERROR`; one that
misses it by more than :data:`UNUSABLE_ERROR` is listed as not fitted, so the GPU keeps
the newest release's constants for it (vLLM 0.19's prefill-attention rows on H200 do not
follow the form: ~5x off).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sincere.catalog.specs import PRECISION_BYTES, Accelerator
from sincere.core.errors import ConfigError
from sincere.fit.gpu_profiles import FArray, gemm_constants, octave_weights
from sincere.fit.kernel_grids import (
    ALLREDUCE_GRID_AXES,
    ALLREDUCE_GRID_RIDGE,
    GEMM_GRID_AXES,
    GRID_RIDGE,
    PREFILL_ATTENTION_GRID_AXES,
    fit_shape_grid,
    grid_log_factors,
)
from sincere.perf.kernel_tables import KernelTable, dominant, read_table, usable_sources
from sincere.perf.linear_attention import (
    CHUNK,
    GdnRates,
    GdnShape,
    decode_bytes_per_seq,
    decode_s,
    onchip_bytes,
    prefill_s,
)
from sincere.perf.moe import (
    ALIGNED_WIDTH,
    SKEWED_ROUTING_NOTE,
    expert_work,
    foreign_pair_bytes,
    fused_moe_s,
    mla_decode_flops_per_pair,
    narrow_expert_scale,
    pnorm,
)
from sincere.perf.shape_grid import GridAxis, ShapeGrid

TOKEN_TILES = (1, 64, 128, 256)
TILE_PARAMS = ("token_tile", "fp8_token_tile", "nvfp4_token_tile")
"""The GEMM families' token tiles (whole numbers in a fit file)."""
MAX_ROWS = 12_000  # rows a family's fit uses at most (an even subsample beyond)
MAX_ALLREDUCE_BYTES = 128 * 2**20
FAIR_ERROR = 0.08  # mean relative error above which a family says it misses its data
MIN_EXPERT_ROWS = 20  # a quantised-expert family fitted on fewer rows is not fitted there
UNUSABLE_ERROR = 0.5  # mean relative error above which a family's fit is not written
ACT_BYTES = 2.0
GEMM_DTYPES = {
    "bfloat16": ("torch.nn.functional.linear",),
    "fp8": ("CutlassFP8ScaledMMLinearKernel",),
    "nvfp4": ("FlashInferCuteDslNvFp4LinearKernel",),
}
GEMM_WEIGHT_BYTES = {"bfloat16": 2.0, "fp8": 1.0, "nvfp4": 0.5625}
"""Bytes a weight of each GEMM dtype takes (NVFP4: 4 bits and an fp8 scale per 16)."""
L2_HOT_TOKENS = 64
"""Tokens up to which a GEMM reads its weights at a few FLOPs a byte, far below every
measured GPU's ridge: its time is the weights' read, from L2 when the collector's repeats
leave them there (:func:`gemm_rows`)."""
FIT_ROUTING = "balanced"
"""The routing of the fused-MoE rows the expert families are fitted on where a table has
them. The database also times each shape under ``power_law_1.01`` and ``power_law_1.2``
routing, but that skew is not the step model's Zipf popularity
(:func:`sincere.perf.moe.routing_load`): at 16-64 tokens those rows run 18 % faster than
balanced ones (median over B200's and H100's tables, 1.01 and 1.2 alike), where a Zipf
exponent of 1.01 reads 37 % fewer experts. Fitted on all three, the constants priced
balanced rows too slow and skewed ones too fast; the step model routes uniformly
(``MoEParams.routing_skew`` 0), so the balanced rows are its data. The collector deals a
balanced row's ``T k`` routed tokens to ``min(E, T k)`` experts in turn (its
``balanced_logits``) where a trained router draws them; the features read those rows as
dealt (:func:`sincere.perf.moe.round_robin_load`), so the constants price an expert read,
and a step counts the experts its tokens draw."""
MOE_TILE = 16  # rows an expert's tokens are padded to (as :class:`MoEParams.expert_tile`)
PLAIN_EXPERT_SHAPES: dict[tuple[int, int, int, int], str] = {
    (2688, 1856, 128, 6): "NVIDIA Nemotron 3 Nano 30B-A3B",
    (1024, 2688, 512, 22): "NVIDIA Nemotron 3 Super 120B-A12B (its 1024-wide latent)",
    (2048, 5120, 512, 22): "the Nemotron 3 LatentMoE form at 512 experts, top 22",
}
"""Expert shapes ``(hidden, inter, experts, top-k)`` of the database whose experts are two
matrices (up and down with a squared ReLU between: ``mlp_hidden_act: relu2`` in the Nemotron
3 models' config.json), not three; the rows do not say so. Their memory-bound rows agree:
22 experts at one token take 0.334 ms on an H100 (vLLM 0.24), under the 0.41 ms three
matrices' weights would take at the full HBM bandwidth."""
GATED_HARNESS = "vllm_fused_moe"
"""The kernel source of the older collections (vLLM 0.14-0.22), which call the fused kernel
with gated weights whatever the model: the same 22-expert call took 0.495 ms there (vLLM
0.19, H100), 1.48x the model's own two-matrix layer."""


@dataclass(frozen=True, slots=True)
class FamilyFit:
    """One kernel family's fitted constants and how well they reproduce its rows."""

    name: str  # "gemm_bf16", "gemm_fp8", "prefill_attention", ...
    params: dict[str, Any]  # RooflineParams fields it sets (numbers, or lists per GPU count)
    rows: int  # rows fitted
    mean_error: float  # mean |model − measured| / measured
    max_error: float  # largest of the same
    bias: float  # mean (model − measured) / measured
    source: str  # the table file, relative to the database
    version: str  # the framework version measured
    notes: tuple[str, ...] = ()  # bound hits, poor fits
    form_error: float | None = None  # mean error of the form alone, where a shape grid follows

    def as_dict(self) -> dict[str, Any]:
        """For the provenance block of the parameter file."""
        out: dict[str, Any] = {
            "table": self.source,
            "version": self.version,
            "rows": self.rows,
            "mean_error": round(self.mean_error, 4),
            "max_error": round(self.max_error, 4),
            "bias": round(self.bias, 4),
        }
        if self.form_error is not None:
            out["form_mean_error"] = round(self.form_error, 4)
        if self.notes:
            out["notes"] = list(self.notes)
        return out


@dataclass(frozen=True, slots=True)
class KernelFit:
    """Every family fitted for one GPU, and the families that could not be."""

    accelerator: Accelerator
    folder: Path
    families: tuple[FamilyFit, ...]
    missing: tuple[str, ...] = field(default=())  # "family: why"
    engine_version: str | None = None  # the vLLM release fitted for (None: the newest tables)

    @property
    def params(self) -> dict[str, Any]:
        """The RooflineParams fields the families set."""
        out: dict[str, Any] = {}
        for fam in self.families:
            out.update({k: v for k, v in fam.params.items() if not k.startswith("_")})
        return out

    def family(self, name: str) -> FamilyFit | None:
        """The family called ``name`` if it was fitted."""
        return next((f for f in self.families if f.name == name), None)


@dataclass(frozen=True, slots=True)
class Bounded:
    """A constant's start value and bounds (named so a fit can say which sit on a bound)."""

    name: str
    start: float
    low: float
    high: float


def robust_fit(
    residuals: Callable[[FArray], FArray], spec: Sequence[Bounded]
) -> tuple[FArray, float, tuple[str, ...]]:
    """Soft-L1 least squares: the solution, its loss and the names that sit on a bound."""
    from scipy.optimize import least_squares

    lows = [b.low for b in spec]
    highs = [b.high for b in spec]
    start = np.array([b.start for b in spec], dtype=float)
    result = least_squares(
        residuals, start, bounds=(lows, highs), loss="soft_l1", f_scale=0.05, x_scale="jac"
    )
    x = np.asarray(result.x, dtype=float)
    on_bound = tuple(
        b.name
        for b, v in zip(spec, x, strict=True)
        if b.high > b.low and min(v - b.low, b.high - v) <= 1e-5 * (b.high - b.low)
    )
    return x, float(result.cost), on_bound


def log_ratio(pred: FArray, measured: FArray) -> FArray:
    """``log(pred / measured)``: the residual every family fit minimises."""
    out: FArray = np.log(np.maximum(pred, 1e-12) / measured)
    return out


def weighted_fit(
    predict: Callable[[FArray], FArray],
    measured: FArray,
    weights: FArray,
    spec: Sequence[Bounded],
) -> tuple[FArray, tuple[str, ...]]:
    """The constants under which ``predict`` (a time per row) best meets ``measured``, each
    row's :func:`log_ratio` scaled by its weight; and the names that sit on a bound."""
    x, _, bound = robust_fit(lambda x: weights * log_ratio(predict(x), measured), spec)
    return x, bound


def summarise(
    name: str,
    params: dict[str, Any],
    pred: FArray,
    measured: FArray,
    table: KernelTable,
    root: Path,
    on_bound: tuple[str, ...] = (),
) -> FamilyFit:
    """A :class:`FamilyFit` with its errors and notes."""
    rel = (pred - measured) / measured
    mean = float(np.abs(rel).mean())
    notes = [f"{n} sits on its bound" for n in on_bound]
    if mean > FAIR_ERROR:
        notes.append(f"misses its own rows by {100 * mean:.1f} % on average")
    try:
        source = str(table.path.relative_to(root))
    except ValueError:
        source = str(table.path)
    return FamilyFit(
        name,
        params,
        len(measured),
        mean,
        float(np.abs(rel).max()),
        float(rel.mean()),
        source,
        table.version,
        tuple(notes),
    )


def fit_named(
    name: str,
    predict: Callable[[FArray], FArray],
    spec: Sequence[Bounded],
    measured: FArray,
    weights: FArray,
    rows: KernelTable,
    root: Path,
) -> FamilyFit:
    """The family ``name`` whose constants are ``spec``'s, by :func:`weighted_fit`."""
    x, bound = weighted_fit(predict, measured, weights, spec)
    params: dict[str, Any] = {b.name: float(v) for b, v in zip(spec, x, strict=True)}
    return summarise(name, params, predict(x), measured, rows, root, bound)


def subsample(table: KernelTable, limit: int = MAX_ROWS) -> KernelTable:
    """At most ``limit`` rows, evenly spaced (deterministic)."""
    if table.num_rows <= limit:
        return table
    keep = np.zeros(table.num_rows, dtype=bool)
    keep[np.linspace(0, table.num_rows - 1, limit).astype(int)] = True
    return table.where(keep)


# --- GEMM ----------------------------------------------------------------------------------
def gemm_predict(
    m: FArray, n: FArray, k: FArray, x: FArray, tile: int, peak: float, hbm: float, wbytes: float
) -> FArray:
    """A GEMM's time under ``x = (mfu, bw, kernel_s, p[, quantisation s per input])``."""
    tiled = np.where(m <= tile, m, tile * np.ceil(m / tile))
    compute = 2.0 * n * k * tiled / (peak * x[0])
    quant = x[4] if len(x) > 4 else 0.0
    memory = (n * k * wbytes + ACT_BYTES * (n + k) * m) / (hbm * x[1]) + quant * k * m
    out: FArray = x[2] + pnorm(compute, memory, float(x[3]))
    return out


def gemm_rows(table: KernelTable, dtype: str) -> KernelTable:
    """The dtype's rows of the kernel vLLM uses for it, at transformer-layer sizes.

    GEMMs under half a million weights or with a side under 256 (no projection of a
    served model is that small) are left out: launch effects there say nothing of a
    layer's work. So are GEMMs of at most :data:`L2_HOT_TOKENS` tokens whose weights
    take 2-256 MB (:func:`hbm_bound_or_launch_bound`): the collector repeats the call,
    so such weights sit in L2 and are read faster than a served layer reads them, after
    the other layers' weights (on an H100 a 16-token GEMM over 32 MB of weights ran 1.6x
    slower after a flush of its L2; ``benchmarks/gpu_l2.py``).
    """
    kernel = GEMM_DTYPES[dtype][0]
    rows = table.where(table.equals("gemm_dtype", dtype))
    if rows.num_rows == 0:
        raise ConfigError("no GEMM rows of this dtype", where=str(table.path), value=dtype)
    if not rows.equals("kernel_source", kernel).any():  # older collections name it otherwise
        kernel = dominant(rows, "kernel_source")
    rows = rows.where(rows.equals("kernel_source", kernel))
    n, k = rows.num("n"), rows.num("k")
    rows = rows.where((n * k >= 2**19) & (n >= 256) & (k >= 256))
    m, weights = rows.num("m"), rows.num("n") * rows.num("k") * GEMM_WEIGHT_BYTES[dtype]
    in_l2 = (m <= L2_HOT_TOKENS) & ~hbm_bound_or_launch_bound(weights)
    return subsample(rows.where(~in_l2))


def fit_over_tiles(
    residuals: Callable[[FArray, int], FArray], spec: Sequence[Bounded]
) -> tuple[int, FArray, tuple[str, ...]]:
    """The token tile of :data:`TOKEN_TILES` whose :func:`robust_fit` of ``residuals`` (of
    the constants and the tile) has the least loss: (tile, constants, names on a bound)."""
    best: tuple[float, int, FArray, tuple[str, ...]] | None = None
    for tile in TOKEN_TILES:
        x, cost, bound = robust_fit(lambda x, t=tile: residuals(x, t), spec)  # type: ignore[misc]
        if best is None or cost < best[0]:
            best = (cost, tile, x, bound)
    assert best is not None
    return best[1], best[2], best[3]


def fit_gemm(table: KernelTable, acc: Accelerator, root: Path) -> FamilyFit:
    """bf16 GEMM constants, the token tile chosen by the loss (module docstring)."""
    rows = gemm_rows(table, "bfloat16")
    m, n, k = rows.num("m"), rows.num("n"), rows.num("k")
    measured = rows.num("latency") * 1e-3
    root_w = np.sqrt(octave_weights(m))
    peak, hbm = acc.peak_tflops("bf16") * 1e12, acc.hbm_bandwidth_gbps * 1e9
    spec = (
        Bounded("mfu_efficiency", 0.7, 0.05, 1.0),
        Bounded("bw_efficiency", 0.8, 0.05, 1.0),
        Bounded("gemm_kernel_s", 5e-6, 0.0, 1e-4),
        Bounded("overlap_exponent", 2.0, 1.0, 50.0),
    )
    tile, x, bound = fit_over_tiles(
        lambda x, t: root_w * log_ratio(gemm_predict(m, n, k, x, t, peak, hbm, 2.0), measured),
        spec,
    )
    pred = gemm_predict(m, n, k, x, tile, peak, hbm, 2.0)
    params = gemm_constants(x, float(tile))
    fam = summarise("gemm_bf16", params, pred, measured, rows, root, bound)
    return with_gemm_grid(fam, rows, pred, measured, root)


def with_gemm_grid(
    fam: FamilyFit, rows: KernelTable, pred: FArray, measured: FArray, root: Path
) -> FamilyFit:
    """``fam`` (a GEMM family) with its factor by shape (:func:`with_grid`) over tokens,
    output and input features."""
    return with_grid(fam, rows, pred, measured, root, grid_sizes(fam.name, rows), GEMM_GRID_AXES)


def grid_sizes(name: str, rows: KernelTable) -> list[FArray]:
    """The size columns family ``name``'s factor by shape reads (its grid's axes)."""
    if name == "prefill_attention":
        heads, kv_heads = rows.num("num_heads"), rows.num("num_key_value_heads")
        return [rows.num("isl"), rows.num("batch_size"), heads, heads / kv_heads]
    return [rows.num("m"), rows.num("n"), rows.num("k")]


def with_grid(
    fam: FamilyFit,
    rows: KernelTable,
    pred: FArray,
    measured: FArray,
    root: Path,
    sizes: list[FArray],
    axes: Sequence[GridAxis],
    ridge: float = GRID_RIDGE,
) -> FamilyFit:
    """``fam`` with its factor by shape (``<family>_grid``, :mod:`sincere.perf.shape_grid`)
    fitted to what its form leaves on its rows, and its errors those of the form times the
    factor (the form's own mean error kept beside)."""
    grid = fit_shape_grid(sizes, np.log(measured / pred), axes, ridge)
    corrected = pred * np.exp(grid_log_factors(grid, sizes))
    params = {**fam.params, f"{fam.name}_grid": grid.as_dict()}
    out = summarise(fam.name, params, corrected, measured, rows, root)
    bounds = tuple(n for n in fam.notes if "misses its own rows" not in n)
    return replace(out, notes=bounds + out.notes, form_error=fam.mean_error)


QUANT_GEMMS: dict[str, tuple[str, str]] = {
    "gemm_fp8": ("fp8", "fp8"),
    "gemm_nvfp4": ("nvfp4", "nvfp4"),
}
"""Quantised-GEMM family -> (the rows' ``gemm_dtype``, the precision its weights are stored
and computed in). fp8: per-tensor scales (vLLM's CUTLASS kernel); NVFP4: 4-bit weights and
activations with fp8 scales per 16 (vLLM's FlashInfer kernels, on Blackwell only)."""


def fit_quant_gemm(
    name: str, table: KernelTable, acc: Accelerator, bf16: FamilyFit, root: Path
) -> FamilyFit:
    """Quantised GEMMs (:data:`QUANT_GEMMS`): their own peak share, quantisation cost and
    time per input element (``<dtype>_mfu_efficiency``, ``<dtype>_gemm_kernel_s``,
    ``<dtype>_act_s``) at their precision's peak and weight bytes; bf16's bw, p and tile.
    The time per element is searched as bytes at bf16's share of HBM (a well-scaled
    variable for the solver) and kept as the time those bytes take."""
    dtype, precision = QUANT_GEMMS[name]
    rows = gemm_rows(table, dtype)
    m, n, k = rows.num("m"), rows.num("n"), rows.num("k")
    measured = rows.num("latency") * 1e-3
    root_w = np.sqrt(octave_weights(m))
    peak, hbm = acc.peak_tflops(precision) * 1e12, acc.hbm_bandwidth_gbps * 1e9
    wbytes = PRECISION_BYTES[precision]
    shared = bf16.params
    rate = hbm * shared["bw_efficiency"]  # bytes/s at bf16's share of HBM

    def predict(x: FArray, tile: int) -> FArray:
        full = np.array(
            [
                x[0],
                shared["bw_efficiency"],
                shared["_gemm_kernel_s"] + x[1],
                shared["overlap_exponent"],
                x[2] / rate,
            ]
        )
        return gemm_predict(m, n, k, full, tile, peak, hbm, wbytes)

    spec = (
        Bounded(f"{dtype}_mfu_efficiency", 0.6, 0.05, 1.0),
        Bounded(f"{dtype}_gemm_kernel_s", 3e-6, 0.0, 1e-4),
        Bounded(f"{dtype}_act_s", 4.0, 0.0, 100.0),  # searched as bytes, kept as seconds
    )
    # its own token tile, chosen by the loss as bf16's is
    tile, x, bound = fit_over_tiles(lambda x, t: root_w * log_ratio(predict(x, t), measured), spec)
    params: dict[str, Any] = {b.name: float(v) for b, v in zip(spec, x, strict=True)}
    params[f"{dtype}_act_s"] = float(x[2]) / rate
    params[f"{dtype}_token_tile"] = float(tile)
    pred = predict(x, tile)
    fam = summarise(name, params, pred, measured, rows, root, bound)
    return with_gemm_grid(fam, rows, pred, measured, root)


# --- attention -----------------------------------------------------------------------------
def _attention_rows(table: KernelTable) -> KernelTable:
    """bf16-KV, full-attention rows of the kernel vLLM picks most for them."""
    rows = table.where(table.equals("kv_cache_dtype", "bfloat16"))
    rows = rows.where(rows.num("window_size") == 0)
    if rows.num_rows == 0:
        raise ConfigError("no bf16-KV full-attention rows", where=str(table.path))
    return subsample(rows.where(rows.equals("kernel_source", dominant(rows, "kernel_source"))))


def pair_flops(
    heads: FArray, kv_heads: FArray, head_dim: FArray, x_off: float, x_kv: float
) -> FArray:
    """FLOPs' worth of one query-key pair of a layer: ``4·(heads·(head_dim + offset) +
    kv_work·kv_heads·head_dim)`` (:func:`sincere.perf.roofline.attention_pair_flops`)."""
    out: FArray = 4.0 * (heads * (head_dim + x_off) + x_kv * kv_heads * head_dim)
    return out


def fit_prefill_attention(table: KernelTable, acc: Accelerator, root: Path) -> FamilyFit:
    """Prefill attention: causal pairs over the bf16 peak × efficiency, plus a kernel cost.

    A pair's work is that of :func:`pair_flops`: each query head pays as if its head were
    ``attn_head_dim_offset`` wider (softmax and rescaling per score, fixed per head) and
    each KV head adds ``attn_kv_head_work`` of a head's product (loading its keys and
    values into the tile, which GQA shares over the group).
    """
    rows = _attention_rows(table)
    b, s = rows.num("batch_size"), rows.num("isl")
    heads, hd = rows.num("num_heads"), rows.num("head_dim")
    kvh = rows.num("num_key_value_heads")
    measured = rows.num("latency") * 1e-3
    pairs, queries = b * s * (s + 1) / 2.0, b * s
    peak = acc.peak_tflops("bf16") * 1e12
    root_w = np.sqrt(octave_weights(queries))

    def predict(x: FArray) -> FArray:
        flops = pair_flops(heads, kvh, hd, float(x[3]), float(x[4]))
        out: FArray = x[1] + flops * (pairs + x[2] * queries) / (peak * x[0])
        return out

    spec = (
        Bounded("attn_mfu_efficiency", 0.4, 0.01, 1.0),
        Bounded("attn_kernel_s", 10e-6, 0.0, 1e-3),
        Bounded("attn_query_pairs", 100.0, 0.0, 1e5),
        Bounded("attn_head_dim_offset", 16.0, 0.0, 512.0),
        Bounded("attn_kv_head_work", 0.5, 0.0, 50.0),
    )
    x, bound = weighted_fit(predict, measured, root_w, spec)
    params: dict[str, Any] = {c.name: float(v) for c, v in zip(spec, x, strict=True)}
    pred = predict(x)
    fam = summarise("prefill_attention", params, pred, measured, rows, root, bound)
    sizes = grid_sizes("prefill_attention", rows)
    fam = with_grid(fam, rows, pred, measured, root, sizes, PREFILL_ATTENTION_GRID_AXES)
    return replace(fam, params={**fam.params, "attn_diag_factor": 1.0})


def fit_decode_attention(
    table: KernelTable,
    acc: Accelerator,
    attn_mfu: float,
    root: Path,
    pair_terms: tuple[float, float] = (0.0, 0.0),
) -> FamilyFit:
    """Decode attention: KV bytes over HBM × efficiency (or its compute), plus a kernel cost,
    and ``attn_decode_grouped_s`` more where a call holds two or more sequences and two or
    more KV heads (:func:`grouped_decode`).

    The compute side prices a pair as prefill does (``pair_terms``: its head-dim offset and
    KV-head work, :func:`pair_flops`)."""
    rows = decode_attention_rows(table)
    b, ctx = rows.num("batch_size"), rows.num("step") + rows.num("isl")
    heads, kvh, hd = rows.num("num_heads"), rows.num("num_key_value_heads"), rows.num("head_dim")
    measured = rows.num("latency") * 1e-3
    token_bytes = 2.0 * kvh * hd * ACT_BYTES
    flops = pair_flops(heads, kvh, hd, *pair_terms)
    compute = flops * b * ctx / (acc.peak_tflops("bf16") * 1e12 * attn_mfu)
    hbm = acc.hbm_bandwidth_gbps * 1e9
    root_w = np.sqrt(octave_weights(decode_kv_bytes(rows) / 1024.0))
    grouped = grouped_decode(rows)

    def predict(x: FArray) -> FArray:
        moved = b * (ctx + x[2]) * token_bytes
        out: FArray = x[1] + x[3] * grouped + np.maximum(compute, moved / (hbm * x[0]))
        return out

    spec = (
        Bounded("attn_bw_efficiency", 0.7, 0.01, 1.0),
        Bounded("attn_decode_kernel_s", 10e-6, 0.0, 1e-3),
        Bounded("attn_decode_seq_tokens", 16.0, 0.0, 1e4),
        Bounded("attn_decode_grouped_s", 1e-6, 0.0, 1e-3),
    )
    fam = fit_named("decode_attention", predict, spec, measured, root_w, rows, root)
    if fam.params["attn_decode_grouped_s"] <= 1e-8:  # on its lower bound: none, exactly 0
        fam = replace(fam, params={**fam.params, "attn_decode_grouped_s": 0.0})
    left = _attention_rows(table).num_rows - rows.num_rows
    window = f"{LAUNCH_BOUND_BYTES / 1e6:g}-{L2_SAFE_BYTES / 1e6:g} MB"
    note = f"{left} calls reading {window} of KV left out (in L2 across the collector's repeats)"
    return replace(fam, notes=(*fam.notes, note))


def grouped_decode(rows: KernelTable) -> FArray:
    """1 where a decode-attention call holds two or more sequences and two or more KV heads
    (what ``attn_decode_grouped_s`` is paid on), else 0. FlashAttention-2's decode on A100,
    L40S and RTX PRO 6000 takes 4-6 us more on those calls at any size (its fixed cost at
    under 2 MB of KV: 12.9 against 19.2 us on A100, 9.2 against 13.0 on L40S; ``python
    benchmarks/step_fit.py --only decode-levels``); Hopper's and B200's kernels do not."""
    out: FArray = ((rows.num("batch_size") >= 2) & (rows.num("num_key_value_heads") >= 2)).astype(
        np.float64
    )
    return out


def decode_kv_bytes(rows: KernelTable) -> FArray:
    """The KV cache one decode-attention call reads (bf16 keys and values)."""
    b, ctx = rows.num("batch_size"), rows.num("step") + rows.num("isl")
    out: FArray = b * ctx * 2.0 * rows.num("num_key_value_heads") * rows.num("head_dim") * ACT_BYTES
    return out


def decode_attention_rows(table: KernelTable) -> KernelTable:
    """The decode-attention rows (:func:`_attention_rows`) that measure HBM or the kernel's
    fixed cost (:func:`hbm_bound_or_launch_bound` of the KV read): the collector reads the
    same cache over and over, so one of 2-256 MB sits in L2 and runs faster than HBM allows
    where L2 is large beside HBM (L40S reads 64-128 MB caches at a median 1.9x its HBM's
    peak, up to 2.9x; RTX PRO 6000 up to 1.8x); served, a layer's cache comes from HBM,
    the other layers' weights and caches read in between."""
    rows = _attention_rows(table)
    return rows.where(hbm_bound_or_launch_bound(decode_kv_bytes(rows)))


# --- MLA decode ----------------------------------------------------------------------------
MLA_CACHE_DIMS = 512 + 64
"""Cached elements per token and layer of the measured MLA modules (DeepSeek-V3's latent and
rotary key; every MLA model in the catalog has them)."""
MLA_MFU_STARTS = (0.05, 0.2, 0.6)
"""Starting shares of the peak for the MLA fit: where the compute line never binds at the
start, the solver sees no slope along it, so the fit starts from each and keeps the best."""


def mla_kv_bytes(rows: KernelTable) -> FArray:
    """The latent cache one MLA decode call reads (fp8 or bf16 elements)."""
    per = np.where(rows.equals("kv_cache_dtype", "fp8"), 1.0, ACT_BYTES)
    out: FArray = rows.num("batch_size") * rows.num("step") * MLA_CACHE_DIMS * per
    return out


def mla_decode_rows(table: KernelTable) -> KernelTable:
    """The MLA decode module's rows that measure HBM or fixed costs, not L2
    (:func:`hbm_bound_or_launch_bound` of the latent read, as decode attention's)."""
    return table.where(hbm_bound_or_launch_bound(mla_kv_bytes(table)))


def mla_series(rows: KernelTable) -> npt.NDArray[np.intp]:
    """Each row's series: its query heads, batch, KV dtype and projections' dtype (the
    context the only size that varies within one)."""
    keys = np.column_stack(
        [
            rows.num("num_heads"),
            rows.num("batch_size"),
            rows.equals("kv_cache_dtype", "fp8"),
            rows.equals("gemm_type", "bfloat16"),
            rows.equals("gemm_type", "fp8_block"),
        ]
    )
    _, index = np.unique(keys, axis=0, return_inverse=True)
    out: npt.NDArray[np.intp] = index.reshape(-1)
    return out


def mla_context_s(rows: KernelTable, acc: Accelerator, p: dict[str, Any]) -> FArray:
    """The part of an MLA decode call that grows with the context: the absorbed form's pairs
    over the bf16 peak x ``mla_decode_mfu_efficiency`` or the latent read over HBM x
    ``mla_decode_bw_efficiency`` (fp8 caches ``mla_decode_fp8_bw_efficiency``), whichever
    is slower, each sequence's context read as if ``mla_decode_lone_seqs`` more sequences
    of the batch's mean length came with it (one sequence streams its context below the
    rate a full batch reaches)."""
    b, ctx, heads = rows.num("batch_size"), rows.num("step"), rows.num("num_heads")
    fp8 = rows.equals("kv_cache_dtype", "fp8")
    peak, hbm = acc.peak_tflops("bf16") * 1e12, acc.hbm_bandwidth_gbps * 1e9
    flops = heads * mla_decode_flops_per_pair(1, 512, 64)  # per (query, cached token) pair
    compute = flops * b * ctx / (peak * p["mla_decode_mfu_efficiency"])
    bw = np.where(fp8, p["mla_decode_fp8_bw_efficiency"], p["mla_decode_bw_efficiency"])
    per = np.where(fp8, 1.0, ACT_BYTES) * MLA_CACHE_DIMS
    memory = (b + p["mla_decode_lone_seqs"]) * ctx * per / (hbm * bw)
    out: FArray = np.maximum(compute, memory)
    return out


def series_levels(series: npt.NDArray[np.intp], context: FArray, measured: FArray) -> FArray:
    """Each row's series level: what its rows measure beyond ``context``, a relative
    least-squares mean over the series (weights ``1 / measured**2``)."""
    w = 1.0 / measured**2
    count = int(series.max()) + 1 if series.size else 0
    total = np.bincount(series, weights=w * (measured - context), minlength=count)
    level = total / np.bincount(series, weights=w, minlength=count)
    out: FArray = np.maximum(level[series], 0.0)
    return out


def predict_mla_decode(rows: KernelTable, acc: Accelerator, p: dict[str, Any]) -> FArray:
    """The MLA decode module's time of ``rows``: its context's part
    (:func:`mla_context_s`) on each series' own level (:func:`series_levels`: the module's
    projections and fixed costs, which the step prices apart)."""
    context = mla_context_s(rows, acc, p)
    measured = rows.num("latency") * 1e-3
    out: FArray = context + series_levels(mla_series(rows), context, measured)
    return out


def fit_mla_decode(table: KernelTable, acc: Accelerator, root: Path) -> FamilyFit:
    """MLA decode (DeepSeek's latent attention in its absorbed form) from vLLM's measured
    MLA decode modules (``mla_generation_module``): how a call's time grows with the context,
    :func:`mla_context_s`. A module also runs the layer's projections; each series (query
    heads, batch, KV and projection dtypes) keeps its own level, and the fit is judged on
    the rows whole and on the context's part alone (a note)."""
    rows = mla_decode_rows(table)
    measured = rows.num("latency") * 1e-3
    has_fp8 = bool(rows.equals("kv_cache_dtype", "fp8").any())
    root_w = np.sqrt(octave_weights(mla_kv_bytes(rows) / 1024.0))
    names = ["mla_decode_mfu_efficiency", "mla_decode_bw_efficiency"]
    names += ["mla_decode_fp8_bw_efficiency"] if has_fp8 else []
    names += ["mla_decode_lone_seqs"]
    series = mla_series(rows)

    def constants(x: FArray) -> dict[str, Any]:
        p = dict(zip(names, (float(v) for v in x), strict=True))
        p.setdefault("mla_decode_fp8_bw_efficiency", p["mla_decode_bw_efficiency"])
        return p

    def predict(x: FArray) -> FArray:
        context = mla_context_s(rows, acc, constants(x))
        out: FArray = context + series_levels(series, context, measured)
        return out

    best: tuple[float, FArray, tuple[str, ...]] | None = None
    for start in MLA_MFU_STARTS:
        spec = [Bounded(names[0], start, 0.01, 1.0), Bounded(names[1], 0.7, 0.05, 1.0)]
        spec += [Bounded(names[2], 0.7, 0.05, 1.0)] if has_fp8 else []
        spec += [Bounded("mla_decode_lone_seqs", 1.0, 0.0, 100.0)]
        x, cost, bound = robust_fit(lambda x: root_w * log_ratio(predict(x), measured), spec)
        if best is None or cost < best[0]:
            best = (cost, x, bound)
    assert best is not None
    _, x, bound = best
    params = constants(x)
    pred = predict(x)
    fam = summarise("mla_decode", params, pred, measured, rows, root, bound)
    notes = [*fam.notes, context_note(rows, acc, params, measured)]
    if not has_fp8:
        notes.append("no fp8 latent-cache rows: mla_decode_fp8_bw_efficiency is bf16's")
    return replace(fam, notes=tuple(notes))


def context_note(rows: KernelTable, acc: Accelerator, p: dict[str, Any], measured: FArray) -> str:
    """How well the fit follows the context's part: the time each row adds over its
    series' shortest context, predicted against measured, over the rows adding 20 us or
    more (smaller additions are the timer's noise)."""
    series = mla_series(rows)
    context = mla_context_s(rows, acc, p)
    ctx = rows.num("step")
    count = int(series.max()) + 1
    first = np.full(count, -1)
    for i in np.lexsort((ctx, series)):
        if first[series[i]] < 0:
            first[series[i]] = i
    base = first[series]
    grown, priced = measured - measured[base], context - context[base]
    keep = grown >= 20e-6
    rel = priced[keep] / grown[keep] - 1.0
    return (
        f"the context's part misses by {100 * float(np.abs(rel).mean()):.1f} % on average "
        f"(bias {100 * float(np.median(rel)):+.1f} %, {int(keep.sum())} rows adding 20 us or more)"
    )


# --- all-reduce ----------------------------------------------------------------------------
def allreduce_predict(
    gpus: FArray, nbytes: FArray, eager: FArray, x: FArray, counts: Sequence[int], link: float
) -> FArray:
    """All-reduce time under ``x = (latency per count…, efficiency per count…, eager_s[,
    eager_floor_s])``: in a graph the latency plus the ring's bytes; outside one (``eager``
    1) at least the floor, plus ``eager_s``."""
    num = len(counts)
    index = np.searchsorted(np.asarray(counts), gpus)
    latency, efficiency = x[:num][index], x[num : 2 * num][index]
    ring = 2.0 * (gpus - 1.0) / gpus
    graph = latency + ring * nbytes / (link * efficiency)
    floor = x[2 * num + 1] if len(x) > 2 * num + 1 else 0.0
    out: FArray = np.where(eager > 0, np.maximum(graph, floor) + x[2 * num], graph)
    return out


@dataclass(frozen=True)
class Collective:
    """A collective's rows as its fit reads them: per row the GPU count, the message bytes
    and the measured time; the GPU counts present, the one-way link and the rows' weights."""

    gpus: FArray  # GPUs taking part, per row
    nbytes: FArray  # message bytes per row
    measured: FArray  # measured time per row, s
    counts: list[int]  # the distinct GPU counts, ascending
    link: float  # one-way interconnect bandwidth, bytes/s
    root_w: FArray  # per-row weights of the log-ratio residuals

    @classmethod
    def of(cls, rows: KernelTable, acc: Accelerator) -> Collective:
        """Read ``rows`` of a collective measured on ``acc``."""
        gpus = rows.num("num_gpus")
        nbytes = rows.num("message_size") * ACT_BYTES  # the collector's size is in elements
        return cls(
            gpus=gpus,
            nbytes=nbytes,
            measured=rows.num("latency") * 1e-3,
            counts=sorted({int(g) for g in gpus}),
            link=acc.interconnect_gbps_per_direction * 1e9,
            root_w=np.sqrt(octave_weights(nbytes)),
        )


def fit_allreduce(table: KernelTable, acc: Accelerator, root: Path) -> FamilyFit:
    """vLLM's custom all-reduce, graph and eager, per GPU count, and its factor by message
    size (module docstring)."""
    rows = allreduce_rows(table)
    c = Collective.of(rows, acc)
    eager = rows.equals("backend", "vllm_eager").astype(np.float64)

    def predict(x: FArray) -> FArray:
        return allreduce_predict(c.gpus, c.nbytes, eager, x, c.counts, c.link)

    spec = (
        *(Bounded(f"latency_{n}_s", 5e-6, 0.0, 1e-3) for n in c.counts),
        *(Bounded(f"efficiency_{n}", 0.5, 0.01, 1.0) for n in c.counts),
        Bounded("allreduce_eager_s", 1e-6, 0.0, 1e-3),
        Bounded("allreduce_eager_floor_s", 10e-6, 0.0, 1e-3),
    )
    x, bound = weighted_fit(predict, c.measured, c.root_w, spec)
    num = len(c.counts)
    efficiencies = [float(v) for v in x[num : 2 * num]]
    params: dict[str, Any] = {
        "allreduce_gpus": c.counts,
        "allreduce_latencies_s": [float(v) for v in x[:num]],
        "allreduce_efficiencies": efficiencies,
        "allreduce_eager_s": float(x[-2]),
        "allreduce_eager_floor_s": float(x[-1]),
        "allreduce_latency_s": float(x[0]),
        "interconnect_efficiency": float(np.median(efficiencies)),
    }
    fam = summarise("allreduce", params, predict(x), c.measured, rows, root, bound)
    sizes = [c.nbytes, c.gpus, 1.0 + eager]
    axes, ridge = ALLREDUCE_GRID_AXES, ALLREDUCE_GRID_RIDGE
    return with_grid(fam, rows, predict(x), c.measured, root, sizes, axes, ridge)


# --- all-to-all (expert-parallel dispatch and combine) ----------------------------------
def alltoall_rows(table: KernelTable) -> KernelTable:
    """NCCL's all-to-all of 16-bit elements (what an EP exchange of bf16 activations moves)."""
    rows = table.where(table.equals("op_name", "alltoall") & table.equals("nccl_dtype", "half"))
    if rows.num_rows == 0:
        raise ConfigError("no NCCL all-to-all rows of 16-bit elements", where=str(table.path))
    return rows


def alltoall_predict(
    gpus: FArray, nbytes: FArray, x: FArray, counts: Sequence[int], link: float
) -> FArray:
    """All-to-all time under ``x = (latency per count…, efficiency per count…, protocol_s,
    knee_bytes)``: a GPU's buffer of ``nbytes`` keeps its own ``1/n`` and sends the rest over
    the one-way link; the latency grows by ``protocol_s`` as the bytes sent pass the knee
    (NCCL's small-message protocol gives way to its bulk one)."""
    num = len(counts)
    index = np.searchsorted(np.asarray(counts), gpus)
    sent = (gpus - 1.0) / gpus * nbytes
    latency = x[:num][index] + x[2 * num] * sent / (sent + x[2 * num + 1])
    out: FArray = latency + sent / (link * x[num : 2 * num][index])
    return out


def fit_alltoall(table: KernelTable, acc: Accelerator, root: Path) -> FamilyFit:
    """NCCL all-to-all per GPU count: a latency and a share of the link each."""
    rows = alltoall_rows(table)
    c = Collective.of(rows, acc)

    def predict(x: FArray) -> FArray:
        return alltoall_predict(c.gpus, c.nbytes, x, c.counts, c.link)

    spec = (
        *(Bounded(f"a2a_latency_{n}_s", 10e-6, 0.0, 1e-3) for n in c.counts),
        *(Bounded(f"a2a_efficiency_{n}", 0.5, 0.01, 1.0) for n in c.counts),
        Bounded("alltoall_protocol_s", 5e-6, 0.0, 1e-3),
        Bounded("alltoall_knee_bytes", 2.0**15, 1.0, 2.0**30),
    )
    x, bound = weighted_fit(predict, c.measured, c.root_w, spec)
    num = len(c.counts)
    params: dict[str, Any] = {
        "alltoall_gpus": c.counts,
        "alltoall_latencies_s": [float(v) for v in x[:num]],
        "alltoall_efficiencies": [float(v) for v in x[num : 2 * num]],
        "alltoall_protocol_s": float(x[-2]),
        "alltoall_knee_bytes": float(x[-1]),
    }
    return summarise("alltoall", params, predict(x), c.measured, rows, root, bound)


# --- fused MoE -----------------------------------------------------------------------------
def skew_of(distribution: str) -> float:
    """The Zipf exponent of a routing distribution name (``balanced``: 0)."""
    if distribution == "balanced":
        return 0.0
    if distribution.startswith("power_law_"):
        return float(distribution.removeprefix("power_law_"))
    raise ConfigError("unknown routing distribution", value=distribution)


def gated_experts(rows: KernelTable) -> npt.NDArray[np.bool_]:
    """Per row, whether its experts are gated (three matrices): every shape but those of
    :data:`PLAIN_EXPERT_SHAPES` timed through the model's own layer (any kernel source but
    :data:`GATED_HARNESS`)."""
    shape = zip(*(rows.num(c).astype(int) for c in MOE_SHAPE), strict=True)
    plain = np.array([s in PLAIN_EXPERT_SHAPES for s in shape], dtype=bool)
    if "kernel_source" in rows.columns:
        plain &= ~rows.equals("kernel_source", GATED_HARNESS)
    out: npt.NDArray[np.bool_] = ~plain
    return out


def moe_features(
    rows: KernelTable, collector: bool = False
) -> tuple[FArray, FArray, FArray, FArray, FArray]:
    """Per row, :func:`sincere.perf.moe.expert_work`: FLOPs of the padded rows and of the
    busiest expert's, weight elements, activation bytes and active experts (on one GPU of
    the row's ``moe_ep_size``: its ``1/ep`` of the experts and their pairs; gated experts
    but for :data:`PLAIN_EXPERT_SHAPES`). ``collector``: the ``power_law_*`` rows read as
    the collector's generator drew them (:func:`sincere.perf.moe.collector_expert_work`),
    not as a Zipf popularity (:func:`skew_of`)."""
    t, h, k, e = (rows.num(c) for c in ("num_tokens", "hidden_size", "topk", "num_experts"))
    ep = rows.num("moe_ep_size")
    dist = rows.columns["distribution"].astype(str)
    local = expert_widths(rows)
    gated = gated_experts(rows)
    work = np.empty((5, len(t)))
    for i in range(len(t)):
        routing = (int(e[i]), int(k[i]), skew_of(str(dist[i])), MOE_TILE)
        dealt = str(dist[i]) == "balanced"  # the collector deals tokens to experts in turn
        work[:, i] = expert_work(
            t[i], int(h[i]), int(local[i]), routing, ACT_BYTES, bool(gated[i]), int(ep[i]),
            dealt=dealt, collector=collector,
        )  # fmt: skip
    return work[0], work[1], work[2], work[3], work[4]


def foreign_bytes(rows: KernelTable) -> FArray:
    """Per row, :func:`sincere.perf.moe.foreign_pair_bytes`: what one GPU's fused MoE moves
    for the pairs routed to other GPUs' experts (0 without EP)."""
    t, h, k = (rows.num(c) for c in ("num_tokens", "hidden_size", "topk"))
    ep, local, gated = rows.num("moe_ep_size"), expert_widths(rows), gated_experts(rows)
    out: FArray = np.array([
        foreign_pair_bytes(t[i], int(k[i]), int(h[i]), int(local[i]), bool(gated[i]),
                           int(ep[i]), ACT_BYTES)
        for i in range(len(t))
    ])  # fmt: skip
    return out


def widened(
    feat: tuple[FArray, FArray, FArray, FArray, FArray], rows: KernelTable, offset: float
) -> tuple[FArray, FArray, FArray, FArray, FArray]:
    """:func:`moe_features` with the compute of each expert as if ``offset`` wider (what a
    narrow expert's GEMMs lose to their fixed steps; :func:`sincere.perf.moe.narrow_expert_scale`,
    as the step model prices it)."""
    scale = narrow_expert_scale(expert_widths(rows), offset)
    return feat[0] * scale, feat[1] * scale, feat[2], feat[3], feat[4]


def unaligned_widths(rows: KernelTable) -> npt.NDArray[np.bool_]:
    """Per row, whether an expert's width on one GPU is not a multiple of
    :data:`sincere.perf.moe.ALIGNED_WIDTH`."""
    out: npt.NDArray[np.bool_] = expert_widths(rows) % ALIGNED_WIDTH != 0
    return out


def expert_widths(rows: KernelTable) -> FArray:
    """Per row, one expert's width on one GPU: split over ``moe_tp_size`` GPUs, at least 1
    (as :func:`sincere.perf.arch_step.expert_width` reads a deployment)."""
    out: FArray = np.maximum(1.0, np.floor(rows.num("inter_size") / rows.num("moe_tp_size")))
    return out


def moe_predict(
    feat: tuple[FArray, FArray, FArray, FArray, FArray],
    x: FArray,
    peak: float,
    hbm: float,
    wbytes: float,
    p: float,
) -> FArray:
    """Fused-MoE time under ``x = (mfu, bw, kernel_s, tail_share[, expert_s])``
    (:func:`sincere.perf.moe.fused_moe_s`, the step model's formula)."""
    rates = (peak * float(x[0]), hbm * float(x[1]))
    expert_s = float(x[4]) if len(x) > 4 else 0.0
    return fused_moe_s(feat, rates, wbytes, float(x[2]), float(x[3]), p, expert_s)


def moe_rows(table: KernelTable, all_routings: bool = False) -> KernelTable:
    """bf16 experts on one GPU holding every expert (no EP), vLLM's kernel, balanced routing
    where measured (:func:`fit_routing`), out of the L2 (:func:`out_of_l2`).
    ``all_routings``: every routing, the ``power_law_*`` rows read as the collector drew
    them (an experiment: :data:`FIT_ROUTING`)."""
    rows = table.where(table.equals("moe_dtype", "bfloat16") & (table.num("moe_ep_size") == 1))
    if rows.num_rows == 0:
        raise ConfigError("no bf16 fused-MoE rows without EP", where=str(table.path))
    rows = rows.where(rows.equals("kernel_source", dominant(rows, "kernel_source")))
    if not all_routings:
        rows = fit_routing(rows)
    rows = out_of_l2(rows, 2.0, all_routings)
    if rows.num_rows < MIN_EXPERT_ROWS:
        raise ConfigError(
            "too few bf16 fused-MoE rows outside the L2 window (2-256 MB of weights at <= "
            f"{L2_HOT_TOKENS} tokens an expert) to fit the experts' constants",
            where=str(table.path),
            value=rows.num_rows,
            allowed=f">= {MIN_EXPERT_ROWS}",
        )
    return subsample(rows, 12000 if all_routings else 4000)


def out_of_l2(rows: KernelTable, weight_bytes: float, collector: bool = False) -> KernelTable:
    """The fused-MoE calls whose weights a served layer would read as measured: left out are
    those of at most :data:`L2_HOT_TOKENS` tokens an active expert whose active experts'
    weights take 2-256 MB (:func:`hbm_bound_or_launch_bound`), which the collector's repeats
    keep in L2 (the rule :func:`gemm_rows` applies to GEMMs: on an L40S such calls ran up
    to twice as fast as their weights' HBM bytes allow; ``collector``: as
    :func:`moe_features`)."""
    _, _, weights, _, active = moe_features(rows, collector)
    per_expert = rows.num("num_tokens") * rows.num("topk") / np.maximum(active, 1e-9)
    in_l2 = (per_expert <= L2_HOT_TOKENS) & ~hbm_bound_or_launch_bound(weights * weight_bytes)
    return rows.where(~in_l2)


def fit_routing(rows: KernelTable) -> KernelTable:
    """The rows of :data:`FIT_ROUTING` when the table measured it, else all of them (A100's
    0.14 table times skewed routings only: fitted as the formula reads them)."""
    balanced = rows.equals("distribution", FIT_ROUTING)
    return rows.where(balanced) if balanced.any() else rows


ALL_ROUTINGS_NOTE = "fitted on every routing, the skewed rows as the collector drew them"


def routing_note(rows: KernelTable) -> tuple[str, ...]:
    """A note when the rows are not all of :data:`FIT_ROUTING` (:func:`fit_routing`)."""
    if bool(rows.equals("distribution", FIT_ROUTING).all()):
        return ()
    return (SKEWED_ROUTING_NOTE,)


def allreduce_rows(table: KernelTable) -> KernelTable:
    """Messages up to :data:`MAX_ALLREDUCE_BYTES` (an iteration's all-reduces)."""
    return table.where(table.num("message_size") * ACT_BYTES <= MAX_ALLREDUCE_BYTES)


def fit_moe(
    table: KernelTable, acc: Accelerator, overlap: float, root: Path, all_routings: bool = False
) -> FamilyFit:
    """Fused MoE, bf16 experts, one GPU holding every expert (no EP), balanced routing where
    measured (:func:`moe_rows`; ``all_routings``: every routing, the skewed rows read as the
    collector drew them): efficiencies, kernel cost, tail share, cost per active expert,
    width offset and, where the rows have widths off :data:`ALIGNED_WIDTH`, their factor."""
    rows = moe_rows(table, all_routings)
    feat = moe_features(rows, all_routings)
    measured = rows.num("latency") * 1e-3
    peak, hbm = acc.peak_tflops("bf16") * 1e12, acc.hbm_bandwidth_gbps * 1e9
    root_w = np.sqrt(octave_weights(rows.num("num_tokens")))
    spec = [
        Bounded("moe_mfu_efficiency", 0.5, 0.02, 1.0),
        Bounded("moe_bw_efficiency", 0.6, 0.02, 1.0),
        Bounded("moe_kernel_s", 20e-6, 0.0, 1e-3),
        Bounded("moe_tail_share", 0.05, 0.0, 1.0),
        Bounded("moe_expert_s", 0.1e-6, 0.0, 5e-6),
        Bounded("moe_width_offset", 16.0, 0.0, 1024.0),
    ]
    unaligned = unaligned_widths(rows)
    if unaligned.any():  # the rate at widths off the kernel's alignment, where measured
        spec.append(Bounded("moe_unaligned_factor", 1.0, 0.5, 4.0))

    def predict(x: FArray) -> FArray:
        out = moe_predict(widened(feat, rows, x[5]), x[:5], peak, hbm, 2.0, overlap)
        return np.where(unaligned, out * x[6], out) if len(x) > 6 else out

    fam = fit_named("moe", predict, spec, measured, root_w, rows, root)
    routing = (ALL_ROUTINGS_NOTE,) if all_routings else routing_note(rows)
    return replace(fam, notes=(*routing, *fam.notes))


def moe_ep_rows(table: KernelTable, all_routings: bool = False) -> KernelTable:
    """bf16 experts spread over 2 to 256 GPUs (``moe_ep_size`` > 1: one GPU's call over
    every token, holding ``1/ep`` of the experts), balanced routing where measured (every
    routing with ``all_routings``), the dominant kernel of those rows."""
    rows = table.where(table.equals("moe_dtype", "bfloat16") & (table.num("moe_ep_size") > 1))
    if rows.num_rows == 0:
        raise ConfigError("no bf16 fused-MoE rows with EP", where=str(table.path))
    rows = rows.where(rows.equals("kernel_source", dominant(rows, "kernel_source")))
    if all_routings:
        return subsample(rows, 12000)
    return subsample(fit_routing(rows), 4000)


def moe_ep_terms(
    rows: KernelTable, acc: Accelerator, experts: dict[str, Any], collector: bool = False
) -> tuple[FArray, FArray, float]:
    """(each GPU's own pairs priced by the bf16 experts' constants ``experts``, the other
    GPUs' pairs' bytes over HBM's bytes/s, the GPU's L2 bytes over HBM's bytes/s) of EP
    rows: what :func:`moe_ep_predict` prices them from (``collector``: as
    :func:`moe_features`; the other GPUs' pairs are the mean's either way)."""
    own = predict_moe("moe", rows, acc, experts, collector)
    hbm = acc.hbm_bandwidth_gbps * 1e9
    return own, foreign_bytes(rows) / hbm, onchip_bytes(acc, 1.0) / hbm


def moe_ep_constants(p: dict[str, Any]) -> tuple[float, float, float]:
    """(``moe_ep_foreign_factor``, ``moe_ep_kernel_s``, ``moe_ep_onchip_share``) of the
    constants ``p``, each 0 where absent (no such term): what :func:`moe_ep_predict` takes."""
    names = ("moe_ep_foreign_factor", "moe_ep_kernel_s", "moe_ep_onchip_share")
    factor, kernel_s, share = (float(p.get(name, 0.0)) for name in names)
    return factor, kernel_s, share


def moe_ep_predict(
    terms: tuple[FArray, FArray, float], factor: float, kernel_s: float, onchip_share: float
) -> FArray:
    """The EP rows' time from :func:`moe_ep_terms`: the own pairs, the pass over the others'
    at ``factor`` times HBM speed for its bytes beyond ``onchip_share`` of the L2 (what the
    kernel's intermediates keep on chip), and ``kernel_s`` per call (what an EP call pays
    beside the pass at any size: on Hopper's Triton kernel 15 us, growing the smallest
    calls by up to half); the step model's :func:`sincere.perf.arch_step.foreign_pass_s`."""
    own, foreign, l2 = terms
    out: FArray = own + factor * np.maximum(foreign - onchip_share * l2, 0.0) + kernel_s
    return out


def fit_moe_ep(
    table: KernelTable,
    acc: Accelerator,
    experts: dict[str, Any],
    root: Path,
    all_routings: bool = False,
) -> FamilyFit:
    """The fused MoE under expert parallelism (:func:`moe_ep_rows`): the bf16 experts'
    constants (``experts``, fitted without EP) price each GPU's own pairs, one factor the
    pass over the other GPUs' pairs (:func:`sincere.perf.moe.foreign_pair_bytes` at HBM
    speed, for its bytes beyond a share of the L2; 0 where the kernel takes none) and one
    fixed cost per call (0 where none). ``all_routings``: fitted on every routing, the skewed
    rows read as the collector drew them (:func:`moe_rows`)."""
    rows = moe_ep_rows(table, all_routings)
    terms = moe_ep_terms(rows, acc, experts, all_routings)
    measured = rows.num("latency") * 1e-3
    root_w = np.sqrt(octave_weights(rows.num("num_tokens")))

    def predict(x: FArray) -> FArray:
        return moe_ep_predict(terms, float(x[0]), float(x[1]), float(x[2]))

    spec = (
        Bounded("moe_ep_foreign_factor", 1.0, 0.0, 10.0),
        Bounded("moe_ep_kernel_s", 5e-6, 0.0, 1e-3),
        Bounded("moe_ep_onchip_share", 0.5, 0.0, 1.0),
    )
    fam = fit_named("moe_ep", predict, spec, measured, root_w, rows, root)
    kernel = str(rows.columns["kernel_source"][0])
    routing = (ALL_ROUTINGS_NOTE,) if all_routings else routing_note(rows)
    return replace(fam, notes=(f"{kernel} under EP", *routing, *fam.notes))


QUANT_EXPERTS: dict[str, tuple[tuple[str, ...], str, float]] = {
    "moe_fp8": (("fp8_block", "fp8"), "fp8", 1.0),
    "moe_mxfp4": (("w4a16_mxfp4",), "bf16", PRECISION_BYTES["mxfp4"]),
    "moe_nvfp4": (("nvfp4",), "nvfp4", PRECISION_BYTES["nvfp4"]),
    "moe_mxfp4_mxfp8": (("w4a8_mxfp4_mxfp8",), "fp8", PRECISION_BYTES["mxfp4"]),
    "moe_int4": (("int4_wo",), "bf16", PRECISION_BYTES["int4"]),
}
"""Quantised-expert family -> (the rows' ``moe_dtype`` in order of preference, the precision
its GEMMs run at, weight bytes per element). fp8: block-scaled (the format of the published
DeepSeek-V3/R1 and Qwen3 FP8 checkpoints), per-tensor where no block rows were measured;
MXFP4: 4-bit weights with bf16 activations (GPT-OSS); NVFP4: 4-bit weights and activations
with fp8 scales per 16 (NVIDIA's ModelOpt checkpoints), at the fp4 rate; MXFP4 x MXFP8:
MXFP4 weights against activations quantised to MXFP8, at the fp8 rate (FlashInfer's
TensorRT-LLM kernel, Blackwell; measured on other models' shapes than GPT-OSS's); INT4:
4-bit integer weights with bf16 activations (W4A16, vLLM's Marlin kernel: the INT4
checkpoints of Kimi K2.5, AWQ and GPTQ), dequantised to the bf16 rate."""


BLACKWELL_EXPERTS = frozenset({"moe_mxfp4_mxfp8"})
"""Quantised-expert families whose kernel runs on Blackwell alone (fp4 tensor cores): not
attempted on other GPUs."""


def quant_moe_rows(name: str, table: KernelTable) -> KernelTable:
    """Family ``name``'s experts on one GPU holding every expert (no EP), vLLM's kernel,
    balanced routing where measured (:func:`fit_routing`)."""
    no_ep = table.num("moe_ep_size") == 1
    kept = usable_sources(table)
    for dtype in QUANT_EXPERTS[name][0]:
        rows = table.where(table.equals("moe_dtype", dtype) & no_ep & kept)
        if rows.num_rows > 0:
            rows = rows.where(rows.equals("kernel_source", dominant(rows, "kernel_source")))
            rows = out_of_l2(fit_routing(rows), QUANT_EXPERTS[name][2])
            if rows.num_rows < MIN_EXPERT_ROWS:
                raise ConfigError(
                    f"too few fused-MoE rows of {name}'s experts to fit its four constants",
                    where=str(table.path),
                    value=rows.num_rows,
                    allowed=f">= {MIN_EXPERT_ROWS}",
                )
            return subsample(rows, 4000)
    raise ConfigError(
        f"no fused-MoE rows without EP of {' or '.join(QUANT_EXPERTS[name][0])} experts",
        where=str(table.path),
    )


def fit_quant_moe(
    name: str, table: KernelTable, acc: Accelerator, bf16: dict[str, Any], root: Path
) -> FamilyFit:
    """Quantised experts (:data:`QUANT_EXPERTS`): the bf16 form with their weight bytes and
    compute rate, their own efficiencies, kernel cost and width offset; the overlap exponent
    and tail share are the bf16 fits' (``bf16``)."""
    rows = quant_moe_rows(name, table)
    _, precision, wbytes = QUANT_EXPERTS[name]
    feat = moe_features(rows)
    measured = rows.num("latency") * 1e-3
    peak, hbm = acc.peak_tflops(precision) * 1e12, acc.hbm_bandwidth_gbps * 1e9
    tail, overlap = bf16["moe_tail_share"], bf16["overlap_exponent"]
    root_w = np.sqrt(octave_weights(rows.num("num_tokens")))
    spec = (
        Bounded(f"{name}_mfu_efficiency", 0.5, 0.02, 1.0),
        Bounded(f"{name}_bw_efficiency", 0.6, 0.02, 1.0),
        Bounded(f"{name}_kernel_s", 20e-6, 0.0, 1e-3),
        Bounded(f"{name}_expert_s", 0.1e-6, 0.0, 5e-6),
        Bounded(f"{name}_width_offset", 16.0, 0.0, 1024.0),
    )

    def predict(x: FArray) -> FArray:
        consts = np.insert(x[:4], 3, tail)
        return moe_predict(widened(feat, rows, x[4]), consts, peak, hbm, wbytes, overlap)

    fam = fit_named(name, predict, spec, measured, root_w, rows, root)
    dtype = str(rows.columns["moe_dtype"][0])
    return replace(fam, notes=(f"{dtype} experts", *routing_note(rows), *fam.notes))


def quant_fitter(
    name: str, acc: Accelerator, bf16: dict[str, Any], root: Path
) -> Callable[[KernelTable], FamilyFit]:
    """:func:`fit_quant_moe` of family ``name``, waiting for its table."""
    return lambda table: fit_quant_moe(name, table, acc, bf16, root)


# --- any family, for checks ----------------------------------------------------------------
FAMILY_TABLES = {
    "gemm_bf16": "gemm",
    "gemm_fp8": "gemm",
    "gemm_nvfp4": "gemm",
    "prefill_attention": "context_attention",
    "decode_attention": "generation_attention",
    "allreduce": "custom_allreduce",
    "alltoall": "nccl",
    "moe": "moe",
    "moe_ep": "moe",
    **{name: "moe" for name in QUANT_EXPERTS},
    "gdn_prefill": "gdn",
    "gdn_decode": "gdn",
    "mla_decode": "mla_generation",
}
"""Family -> the table it is fitted on."""
NCCL_FAMILIES = ("alltoall",)
"""Families measured on NCCL rather than vLLM (their version is NCCL's)."""
MOE_SHAPE = ("hidden_size", "inter_size", "num_experts", "topk")
GDN_SHAPE = ("d_model", "num_k_heads", "num_v_heads")
SHAPE_COLUMNS = {
    "gemm_bf16": ("n", "k"),
    "gemm_fp8": ("n", "k"),
    "gemm_nvfp4": ("n", "k"),
    "prefill_attention": ("num_heads", "num_key_value_heads", "head_dim"),
    "decode_attention": ("num_heads", "num_key_value_heads", "head_dim"),
    "allreduce": ("num_gpus",),
    "alltoall": ("num_gpus",),
    **{name: MOE_SHAPE for name in ("moe", "moe_ep", *QUANT_EXPERTS)},
    "gdn_prefill": GDN_SHAPE,
    "gdn_decode": GDN_SHAPE,
    "mla_decode": ("num_heads",),
}
"""Family -> the columns that make a row's model shape (the size axis left out)."""


def family_rows(name: str, table: KernelTable) -> KernelTable:
    """The rows family ``name`` is fitted on and judged by."""
    if name == "gemm_bf16":
        return gemm_rows(table, "bfloat16")
    if name in QUANT_GEMMS:
        return gemm_rows(table, QUANT_GEMMS[name][0])
    if name == "prefill_attention":
        return _attention_rows(table)
    if name == "decode_attention":
        return decode_attention_rows(table)
    if name == "allreduce":
        return allreduce_rows(table)
    if name == "alltoall":
        return alltoall_rows(table)
    if name == "moe":
        return moe_rows(table)
    if name == "moe_ep":
        return moe_ep_rows(table)
    if name in QUANT_EXPERTS:
        return quant_moe_rows(name, table)
    if name in GDN_PHASES:
        rows = gdn_rows(table, GDN_PHASES[name])
        if name == "gdn_decode":
            rows = rows.where(hbm_bound_or_launch_bound(gdn_decode_bytes(rows)))
        return rows
    if name == "mla_decode":
        return mla_decode_rows(table)
    raise ConfigError("unknown kernel family", value=name, allowed=sorted(FAMILY_TABLES))


def predict_family(
    name: str,
    rows: KernelTable,
    acc: Accelerator,
    params: dict[str, Any],
    collector: bool = False,
) -> FArray:
    """Family ``name``'s time of ``rows`` (seconds) under ``params`` (every family's constants,
    helper figures such as ``_gemm_kernel_s`` included). ``collector``: the fused-MoE
    families read ``power_law_*`` rows as the collector drew them (:func:`moe_features`)."""
    peak, hbm = acc.peak_tflops("bf16") * 1e12, acc.hbm_bandwidth_gbps * 1e9
    p = params
    if name == "gemm_bf16" or name in QUANT_GEMMS:
        return predict_gemm(name, rows, acc, p)
    if name == "prefill_attention":
        b, s = rows.num("batch_size"), rows.num("isl")
        flops = pair_flops(
            rows.num("num_heads"), rows.num("num_key_value_heads"), rows.num("head_dim"),
            p.get("attn_head_dim_offset", 0.0), p.get("attn_kv_head_work", 0.0),
        )  # fmt: skip
        work = b * s * (s + 1) / 2.0 + p["attn_query_pairs"] * b * s
        out: FArray = p["attn_kernel_s"] + flops * work / (peak * p["attn_mfu_efficiency"])
        grid = p.get("prefill_attention_grid")
        if grid is not None:  # the family's factor by shape
            sizes = grid_sizes(name, rows)
            out = out * np.exp(grid_log_factors(ShapeGrid.from_mapping(grid, name), sizes))
        return out
    if name == "decode_attention":
        b, ctx = rows.num("batch_size"), rows.num("step") + rows.num("isl")
        hd = rows.num("head_dim")
        flops = pair_flops(
            rows.num("num_heads"), rows.num("num_key_value_heads"), hd,
            p.get("attn_head_dim_offset", 0.0), p.get("attn_kv_head_work", 0.0),
        )  # fmt: skip
        compute = flops * b * ctx / (peak * p["attn_mfu_efficiency"])
        moved = b * (ctx + p["attn_decode_seq_tokens"]) * 2.0 * rows.num("num_key_value_heads")
        memory = moved * hd * ACT_BYTES / (hbm * p["attn_bw_efficiency"])
        grouped = p.get("attn_decode_grouped_s", 0.0) * grouped_decode(rows)
        out = p["attn_decode_kernel_s"] + grouped + np.maximum(compute, memory)
        return out
    if name in ("allreduce", "alltoall"):
        return predict_collective(name, rows, acc, p)
    if name == "moe" or name in QUANT_EXPERTS:
        return predict_moe(name, rows, acc, p, collector)
    if name == "moe_ep":
        return moe_ep_predict(moe_ep_terms(rows, acc, p, collector), *moe_ep_constants(p))
    if name in GDN_PHASES:
        return gdn_predict(name, rows, acc, p)
    if name == "mla_decode":
        return predict_mla_decode(rows, acc, p)
    raise ConfigError("unknown kernel family", value=name, allowed=sorted(FAMILY_TABLES))


def predict_gemm(name: str, rows: KernelTable, acc: Accelerator, params: dict[str, Any]) -> FArray:
    """The GEMMs' time of ``rows`` (seconds): bf16 (``gemm_bf16``) or quantised ones."""
    p, hbm = params, acc.hbm_bandwidth_gbps * 1e9
    m, n, k = rows.num("m"), rows.num("n"), rows.num("k")
    x = [p["mfu_efficiency"], p["bw_efficiency"], p["_gemm_kernel_s"], p["overlap_exponent"]]
    tile = int(p["token_tile"])
    if name == "gemm_bf16":
        peak, wbytes = acc.peak_tflops("bf16") * 1e12, 2.0
    else:
        dtype, precision = QUANT_GEMMS[name]
        x = [p[f"{dtype}_mfu_efficiency"], x[1], x[2] + p[f"{dtype}_gemm_kernel_s"], x[3]]
        x.append(p[f"{dtype}_act_s"])
        peak = acc.peak_tflops(precision) * 1e12
        wbytes = PRECISION_BYTES[precision]
        tile = int(p.get(f"{dtype}_token_tile", tile))
    out = gemm_predict(m, n, k, np.array(x), tile, peak, hbm, wbytes)
    grid = p.get(f"{name}_grid")
    if grid is not None:  # the family's factor by shape
        sizes = grid_sizes(name, rows)
        out = out * np.exp(grid_log_factors(ShapeGrid.from_mapping(grid, name), sizes))
    return out


def predict_moe(
    name: str,
    rows: KernelTable,
    acc: Accelerator,
    params: dict[str, Any],
    collector: bool = False,
) -> FArray:
    """The fused MoE's time of ``rows`` (seconds): bf16 experts (``moe``) or quantised ones
    (``collector``: skewed rows as :func:`moe_features` reads them with it)."""
    p, prefix = params, "moe" if name == "moe" else name
    precision, wbytes = ("bf16", 2.0) if name == "moe" else QUANT_EXPERTS[name][1:]
    x = [p[f"{prefix}_mfu_efficiency"], p[f"{prefix}_bw_efficiency"], p[f"{prefix}_kernel_s"]]
    x += [p["moe_tail_share"], p.get(f"{prefix}_expert_s", 0.0)]
    peak, hbm = acc.peak_tflops(precision) * 1e12, acc.hbm_bandwidth_gbps * 1e9
    offset = p.get(f"{prefix}_width_offset", p.get("moe_width_offset", 0.0))
    feat = widened(moe_features(rows, collector), rows, offset)
    out = moe_predict(feat, np.array(x), peak, hbm, wbytes, p["overlap_exponent"])
    factor = p.get("moe_unaligned_factor", 1.0) if name == "moe" else 1.0
    return np.where(unaligned_widths(rows), out * factor, out)


def predict_collective(
    name: str, rows: KernelTable, acc: Accelerator, params: dict[str, Any]
) -> FArray:
    """The all-reduce's or the all-to-all's time of ``rows`` (seconds) under ``params``."""
    p = params
    link = acc.interconnect_gbps_per_direction * 1e9
    nbytes = rows.num("message_size") * ACT_BYTES
    if name == "allreduce":
        counts = [int(c) for c in p["allreduce_gpus"]]
        x = [*p["allreduce_latencies_s"], *p["allreduce_efficiencies"], p["allreduce_eager_s"]]
        x.append(p.get("allreduce_eager_floor_s", 0.0))
        eager = rows.equals("backend", "vllm_eager").astype(np.float64)
        gpus = rows.num("num_gpus")
        out = allreduce_predict(gpus, nbytes, eager, np.array(x), counts, link)
        grid = p.get("allreduce_grid")
        if grid is not None:  # the factor by message size
            sizes = [nbytes, gpus, 1.0 + eager]
            out = out * np.exp(grid_log_factors(ShapeGrid.from_mapping(grid, name), sizes))
        return out
    counts = [int(c) for c in p["alltoall_gpus"]]
    x = [*p["alltoall_latencies_s"], *p["alltoall_efficiencies"]]
    x += [p["alltoall_protocol_s"], p["alltoall_knee_bytes"]]
    return alltoall_predict(rows.num("num_gpus"), nbytes, np.array(x), counts, link)


# --- linear attention (Gated DeltaNet) ------------------------------------------------------
GDN_PHASES = {"gdn_prefill": "context", "gdn_decode": "generation"}
"""Linear-attention family -> the phase of its rows."""
GDN_KEY = (
    "batch_size", "seq_len", "num_tokens", "d_model", "num_k_heads", "head_k_dim",
    "num_v_heads", "head_v_dim", "d_conv",
)  # fmt: skip
"""Columns that make one measured layer call (its kernels share them)."""


def gdn_rows(table: KernelTable, phase: str) -> KernelTable:
    """One row per measured layer call of ``phase``: the latencies of its two kernels
    (the convolution and the delta rule) summed; calls missing one of them are left out
    (some releases time the convolution alone). A table already made of such calls comes
    back as it is, less other phases' calls."""
    rows = table.where(table.equals("phase", phase))
    if "kernel_source" not in rows.columns:  # already one row per call
        return rows
    if rows.num_rows == 0:
        raise ConfigError(f"no {phase} rows of the Gated DeltaNet kernels", where=str(table.path))
    keys = np.stack([rows.num(col) for col in GDN_KEY], axis=1)
    unique, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    sources = rows.columns["kernel_source"].astype(str)
    codes = np.unique(sources, return_inverse=True)[1].ravel()
    pairs = np.unique(np.stack([inverse, codes], axis=1), axis=0)  # (call, kernel) once each
    kinds = np.bincount(pairs[:, 0], minlength=len(unique))
    latency = np.bincount(inverse, weights=rows.num("latency"), minlength=len(unique))
    whole = (kinds == 2) & (counts == 2)
    if not whole.any():
        raise ConfigError(
            f"no {phase} layer call of the Gated DeltaNet kernels times both its kernels",
            where=str(table.path),
            value=sorted(set(sources)),
        )
    columns: dict[str, Any] = {col: unique[whole, i] for i, col in enumerate(GDN_KEY)}
    columns["latency"] = latency[whole]
    columns["phase"] = np.full(int(whole.sum()), phase)
    return subsample(KernelTable(table.name, table.path, table.version, columns))


def gdn_features(
    rows: KernelTable,
) -> tuple[list[tuple[GdnShape, npt.NDArray[np.intp]]], FArray, FArray, FArray]:
    """The rows grouped by layer shape (each shape with its rows' positions), and every
    row's tokens, sequences and chunk-padded tokens."""
    cols = ("num_k_heads", "num_v_heads", "head_k_dim", "head_v_dim", "d_conv")
    keys = np.stack([rows.num(col) for col in cols], axis=1)
    unique, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    groups = [
        (GdnShape(*(int(v) for v in key)), np.flatnonzero(inverse == i))
        for i, key in enumerate(unique)
    ]
    seqs, length = rows.num("batch_size"), rows.num("seq_len")
    padded = seqs * np.ceil(length / CHUNK) * CHUNK
    return groups, rows.num("num_tokens"), seqs, padded


def gdn_times(phase: str, rows: KernelTable, rates: GdnRates) -> FArray:
    """Rows' time under ``rates`` (:mod:`sincere.perf.linear_attention`'s forms)."""
    groups, tokens, seqs, padded = gdn_features(rows)
    out = np.empty(rows.num_rows)
    for shape, at in groups:
        if phase == "context":
            out[at] = prefill_s(shape, rates, tokens[at], seqs[at], padded[at])
        else:
            out[at] = decode_s(shape, rates, seqs[at])
    return out


L2_SAFE_BYTES = 256e6
"""Bytes a measured call moves above which its state cannot sit in the GPU's L2 cache
(the largest of the measured GPUs' L2: 126 MB on B200): the collector times the same state
over and over, so a call whose state fits in L2 reads it from there; served, a layer's
state comes from HBM (the other layers' states in between)."""
LAUNCH_BOUND_BYTES = 2e6
"""Bytes below which a call is its kernels' fixed cost, wherever its state sits."""


def gdn_decode_bytes(rows: KernelTable) -> FArray:
    """Bytes each decode call reads and writes (:func:`~sincere.perf.linear_attention.
    decode_s`'s)."""
    groups, _, seqs, _ = gdn_features(rows)
    out = np.empty(rows.num_rows)
    for shape, at in groups:
        out[at] = seqs[at] * decode_bytes_per_seq(shape)
    return out


def hbm_bound_or_launch_bound(moved: FArray) -> npt.NDArray[np.bool_]:
    """Calls that measure HBM or the kernels' fixed cost, not the L2 cache: what they move
    is below :data:`LAUNCH_BOUND_BYTES` or above :data:`L2_SAFE_BYTES`."""
    return np.asarray((moved < LAUNCH_BOUND_BYTES) | (moved > L2_SAFE_BYTES))


def gdn_rates(acc: Accelerator, p: dict[str, Any]) -> GdnRates:
    """:class:`GdnRates` of the family constants in ``p`` (the other phase's at defaults)."""
    peak, hbm = acc.peak_tflops("bf16") * 1e12, acc.hbm_bandwidth_gbps * 1e9
    return GdnRates(
        peak * p.get("gdn_mfu_efficiency", 0.3),
        p.get("gdn_parallel_units", 1.0),
        hbm * p.get("gdn_bw_efficiency", 0.5),
        p.get("gdn_kernel_s", 0.0),
        hbm * p.get("gdn_decode_bw_efficiency", 0.5),
        p.get("gdn_decode_kernel_s", 0.0),
        p.get("gdn_spill_bytes", 0.0),
        onchip_bytes(acc, p.get("gdn_onchip_share", 1.0)),
        hbm * p.get("gdn_spill_bw_efficiency", 1.0),
    )


def gdn_predict(name: str, rows: KernelTable, acc: Accelerator, params: dict[str, Any]) -> FArray:
    """Family ``name``'s time of ``rows`` (seconds) under ``params``."""
    return gdn_times(GDN_PHASES[name], rows, gdn_rates(acc, params))


def fit_gdn(name: str, table: KernelTable, acc: Accelerator, root: Path) -> FamilyFit:
    """A linear-attention phase: prefill (``gdn_prefill``: the convolution's bytes and the
    chunked delta rule's work, with too few (sequence, head) blocks to fill the GPU running
    slower, and the intermediates that do not fit in L2 through HBM where the kernel is
    Triton's) or decode (``gdn_decode``: the state read and written); forms in
    :mod:`sincere.perf.linear_attention`."""
    rows = family_rows(name, table)
    measured = rows.num("latency") * 1e-3
    weights = np.sqrt(octave_weights(rows.num("num_tokens")))
    if name == "gdn_prefill":
        spec: tuple[Bounded, ...] = (
            Bounded("gdn_kernel_s", 15e-6, 0.0, 1e-3),
            Bounded("gdn_mfu_efficiency", 0.3, 0.001, 1.0),
            Bounded("gdn_bw_efficiency", 0.5, 0.001, 1.0),
            Bounded("gdn_parallel_units", 64.0, 1.0, 4096.0),
        )
        if not fused_delta_rule(table):
            spec += (
                Bounded("gdn_spill_bytes", 2000.0, 0.0, 1e5),
                Bounded("gdn_onchip_share", 1.0, 0.05, 4.0),
                Bounded("gdn_spill_bw_efficiency", 0.8, 0.05, 1.0),
            )
    else:
        spec = (
            Bounded("gdn_decode_kernel_s", 5e-6, 0.0, 1e-3),
            Bounded("gdn_decode_bw_efficiency", 0.8, 0.001, 1.0),
        )

    def predict(x: FArray) -> FArray:
        return gdn_predict(
            name, rows, acc, {b.name: float(v) for b, v in zip(spec, x, strict=True)}
        )

    return fit_named(name, predict, spec, measured, weights, rows, root)


FUSED_DELTA_RULE = "flashinfer"
"""What the name of FlashInfer's chunked delta-rule kernel holds: it keeps a chunk's
intermediates on chip, where the Triton kernel vLLM runs elsewhere writes them out."""


def fused_delta_rule(table: KernelTable) -> bool:
    """Whether ``table``'s prefill rows time FlashInfer's fused delta rule (no
    intermediates through memory: the spill is not fitted); a table without kernel names
    is taken as the Triton kernel's."""
    if "kernel_source" not in table.columns:
        return False
    context = table.equals("phase", "context")
    sources = table.columns["kernel_source"][context].astype(str)
    return any(FUSED_DELTA_RULE in source for source in set(sources))


def gdn_fitter(name: str, acc: Accelerator, root: Path) -> Callable[[KernelTable], FamilyFit]:
    """:func:`fit_gdn` of family ``name``, waiting for its table."""
    return lambda table: fit_gdn(name, table, acc, root)


# --- all of it -----------------------------------------------------------------------------
COLUMNS = {
    "gemm": ["gemm_dtype", "kernel_source", "m", "n", "k", "latency"],
    "context_attention": [
        "kernel_source", "batch_size", "isl", "num_heads", "num_key_value_heads", "head_dim",
        "kv_cache_dtype", "window_size", "latency",
    ],
    "generation_attention": [
        "kernel_source", "batch_size", "isl", "step", "num_heads", "num_key_value_heads",
        "head_dim", "kv_cache_dtype", "window_size", "latency",
    ],
    "custom_allreduce": ["num_gpus", "message_size", "backend", "latency"],
    "nccl": ["op_name", "nccl_dtype", "num_gpus", "message_size", "latency"],
    "moe": [
        "kernel_source", "moe_dtype", "num_tokens", "hidden_size", "inter_size", "topk",
        "num_experts", "moe_tp_size", "moe_ep_size", "distribution", "latency",
    ],
    "gdn": [
        "kernel_source", "phase", "batch_size", "seq_len", "num_tokens", "d_model",
        "num_k_heads", "head_k_dim", "num_v_heads", "head_v_dim", "d_conv", "latency",
    ],
    "mla_generation": [
        "kernel_source", "batch_size", "step", "num_heads", "kv_cache_dtype", "gemm_type",
        "latency",
    ],
}  # fmt: skip


def has_rate(acc: Accelerator, precision: str) -> bool:
    """The accelerator computes in ``precision`` at a rate of its own (fp8, fp4) or, for
    bf16, at all: families in other precisions are not attempted on it."""
    if precision == "fp8":
        return acc.fp8_tflops is not None
    if precision == "nvfp4":
        return acc.fp4_tflops is not None
    return True


def quant_gemm_fitter(
    name: str, acc: Accelerator, bf16: FamilyFit, root: Path
) -> Callable[[KernelTable], FamilyFit]:
    """:func:`fit_quant_gemm` of family ``name``, waiting for its table."""
    return lambda table: fit_quant_gemm(name, table, acc, bf16, root)


def fit_kernels(folder: Path, accelerator: Accelerator, version: str | None = None) -> KernelFit:
    """Every family the GPU's folder measures (module docstring); the others are listed missing.
    ``version``: the vLLM release the fit is for (each table from the newest version at or
    below it, :func:`~sincere.perf.kernel_tables.find_table`); None: the newest tables."""
    root = folder.parent
    tables = {name: read_table(folder, name, cols, version) for name, cols in COLUMNS.items()}
    families: list[FamilyFit] = []
    missing: list[str] = []

    def attempt(name: str, table: str, run: Callable[[KernelTable], FamilyFit]) -> None:
        found = tables[table]
        if found is None:
            missing.append(f"{name}: no {table} table under {folder}")
            return
        try:
            families.append(run(found))
            return
        except ConfigError as exc:
            error = exc
        # rows the release did not measure (a newer weight format): the newest table's,
        # fitted beside the release's other families (their exponent and tail share)
        newest = read_table(folder, table, COLUMNS[table]) if version is not None else None
        if newest is not None and newest.version != found.version:
            try:
                families.append(run(newest))
                return
            except ConfigError:
                pass
        missing.append(f"{name}: {error}")

    acc = accelerator
    attempt("gemm_bf16", "gemm", lambda t: fit_gemm(t, acc, root))
    bf16 = next((f for f in families if f.name == "gemm_bf16"), None)
    for name, (_, precision) in QUANT_GEMMS.items():
        if bf16 is not None and has_rate(acc, precision):
            attempt(name, "gemm", quant_gemm_fitter(name, acc, bf16, root))
    attempt("prefill_attention", "context_attention", lambda t: fit_prefill_attention(t, acc, root))
    prefill = next((f for f in families if f.name == "prefill_attention"), None)
    mfu = prefill.params["attn_mfu_efficiency"] if prefill else 0.5
    terms = (
        (prefill.params["attn_head_dim_offset"], prefill.params["attn_kv_head_work"])
        if prefill
        else (0.0, 0.0)
    )
    attempt(
        "decode_attention",
        "generation_attention",
        lambda t: fit_decode_attention(t, acc, mfu, root, terms),
    )
    attempt("allreduce", "custom_allreduce", lambda t: fit_allreduce(t, acc, root))
    attempt("alltoall", "nccl", lambda t: fit_alltoall(t, acc, root))
    gemm = next((f for f in families if f.name == "gemm_bf16"), None)
    overlap = gemm.params["overlap_exponent"] if gemm else 2.0
    attempt("moe", "moe", lambda t: fit_moe(t, acc, overlap, root))
    moe = next((f for f in families if f.name == "moe"), None)
    if moe is not None:
        experts = {**moe.params, "overlap_exponent": overlap}
        attempt("moe_ep", "moe", lambda t: fit_moe_ep(t, acc, experts, root))
        for name in QUANT_EXPERTS:
            blackwell = name not in BLACKWELL_EXPERTS or has_rate(acc, "nvfp4")
            if has_rate(acc, QUANT_EXPERTS[name][1]) and blackwell:
                attempt(name, "moe", quant_fitter(name, acc, experts, root))
    for name in GDN_PHASES:
        attempt(name, "gdn", gdn_fitter(name, acc, root))
    attempt("mla_decode", "mla_generation", lambda t: fit_mla_decode(t, acc, root))
    # judged by the form alone: a factor by shape must not make usable a form that is not
    kept = [f for f in families if form_error(f) <= UNUSABLE_ERROR]
    missing.extend(
        f"{f.name}: misses its own rows by {100 * form_error(f):.0f} % on average ({f.source}); "
        "not used"
        for f in families
        if form_error(f) > UNUSABLE_ERROR
    )
    return KernelFit(acc, folder, tuple(kept), tuple(missing), version)


def form_error(fam: FamilyFit) -> float:
    """The family's mean error by its form alone (before any factor by shape)."""
    return fam.mean_error if fam.form_error is None else fam.form_error


SOURCE = (
    "vLLM kernels measured by NVIDIA's AIConfigurator collector (github.com/ai-dynamo/"
    "aiconfigurator, Apache-2.0)"
)


def kernel_document(fit: KernelFit, argv: Sequence[str], default: bool = True) -> dict[str, Any]:
    """The parameter file: ``kind: roofline``, ``params`` and ``fit`` (provenance, errors)."""
    params = {k: _round_all(v) for k, v in fit.params.items()}
    for name in TILE_PARAMS:
        if name in params:
            params[name] = int(params[name])
    gemm = fit.family("gemm_bf16")
    info: dict[str, Any] = {
        "accelerator": fit.accelerator.name,
        "source": SOURCE,
        "folder": fit.folder.name,
        "versions": sorted({f.version for f in fit.families if f.name not in NCCL_FAMILIES}),
        "command": " ".join(argv),
        "default": default,
        **({"engine_version": fit.engine_version} if fit.engine_version else {}),
        "families": {f.name: f.as_dict() for f in fit.families},
    }
    nccl = sorted({f.version for f in fit.families if f.name in NCCL_FAMILIES})
    if nccl:
        info["nccl_versions"] = nccl
    if gemm is not None:
        info["gemm_kernel_s"] = _round(gemm.params["_gemm_kernel_s"])
    if fit.missing:
        info["missing"] = list(fit.missing)
    return {"kind": "roofline", "params": params, "fit": info}


def _round_all(value: Any) -> Any:
    if isinstance(value, list):
        return [_round_all(v) for v in value]
    if isinstance(value, dict):
        return {k: _round_all(v) for k, v in value.items()}
    if isinstance(value, int):
        return value
    return _round(float(value))


def _round(value: float) -> float:
    if math.isfinite(value) and value != 0.0:
        return float(f"{value:.4g}")
    return value
