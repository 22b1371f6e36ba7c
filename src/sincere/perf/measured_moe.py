"""Routed experts priced from the measured kernel of the deployment's own MoE layer.

The kernel fit (:mod:`sincere.fit.kernels`) prices a fused-MoE layer with one formula per
expert format over every measured shape (:func:`sincere.perf.moe.fused_moe_s`); its error
on one shape can be large where the kernel switches tile configurations with the token
count. On vLLM 0.19's Triton fp8 kernel for MiniMax-M2.5's layer (3,072 wide, 256 experts
of 1,536, top 8) on B200, the fit is 1.3-1.5x slow at 16-64 tokens, the decode batches,
and ~0.85x at 8k-16k tokens, the prefill chunks. Where the database measured the layer
itself -- same hidden size, experts, top-k, expert width split over the same GPUs -- the
measured curve is a better price than any fit: a step model given the database's folder
(the roofline's ``kernel_tables``) takes the layer's time from it.

* **Rows**: AIConfigurator's ``moe_perf`` table of the accelerator (its layout:
  :mod:`sincere.perf.kernel_tables`), the release the deployment names (the roofline's
  ``vllm_version``; the newest at or below it, as the kernel fits choose) or the newest;
  the expert format's data type (:data:`EXPERT_DTYPES`), its most measured kernel (the one
  vLLM picks most often, as the fits take), one GPU holding every expert (``moe_ep_size``
  1), and the routing distribution :data:`MEASURED_ROUTING`.
* **Routing**: the database measures balanced routing and Zipf-skewed routing with
  exponents 1.01 and 1.2. A trained router is skewed: over vLLM 0.19's MiniMax-M2.5 fp8
  points on B200 (``benchmarks/README.md``, "Kernels of each vLLM point's release, and
  measured MoE layers"), balanced rows price decode 21 % slow, the skewed ones within
  4-6 %, 1.01 and 1.2 alike; 1.01, the milder, is taken.
* **Between and beyond the measured token counts**: linear in log tokens and log time
  between two measured counts; below the smallest, its time (the kernel's floor); above
  the largest, its time scaled by the token ratio (the layer is compute-bound there).

Not used (the fitted formula prices the layer): no folder given, the GPU or the layer's
shape not measured, expert parallelism or attention data parallelism (the database's
expert-parallel rows time one rank of a differently shaped dispatch).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sincere.core.errors import ConfigError
from sincere.perf.moe import INT4_WEIGHTS

if TYPE_CHECKING:
    from sincere.perf.base import Deployment
    from sincere.perf.roofline import RooflineParams

MEASURED_ROUTING = "power_law_1.01"
"""The database's routing distribution the measured path reads (module docstring)."""

EXPERT_DTYPES = {
    "bf16": ("bfloat16",),
    "fp8": ("fp8_block", "fp8"),
    "nvfp4": ("nvfp4",),
    "mxfp4": ("w4a16_mxfp4",),
    "mxfp4_mxfp8": ("w4a8_mxfp4_mxfp8",),
    "int4": ("int4_wo",),
}
"""Expert format (:func:`expert_format`) -> the table's ``moe_dtype`` values, preferred first
(fp8: block-scaled, the format of the published fp8 MoE checkpoints, per-tensor where no
block rows were measured; the kernel fit's order)."""

_COLUMNS = [
    "kernel_source", "moe_dtype", "num_tokens", "hidden_size", "inter_size", "topk",
    "num_experts", "moe_tp_size", "moe_ep_size", "distribution", "latency",
]  # fmt: skip
_KEY_COLUMNS = ("hidden_size", "inter_size", "topk", "num_experts", "moe_tp_size")  # MoELayer's


@dataclass(frozen=True, slots=True)
class MoELayer:
    """The shape of one MoE layer on one GPU, as the database keys its rows."""

    hidden: int
    expert_width: int  # the whole expert's intermediate size (the rows' ``inter_size``)
    top_k: int
    num_experts: int
    split: int  # GPUs each expert's width is split over (the rows' ``moe_tp_size``)


@dataclass(frozen=True, slots=True)
class MeasuredCurve:
    """One layer's measured kernel time against its token count (module docstring)."""

    log_tokens: tuple[float, ...]  # increasing
    log_seconds: tuple[float, ...]
    source: str  # file, kernel and rows it came from

    def seconds(self, tokens: float) -> float:
        """The kernel's time over ``tokens`` tokens (module docstring: between and beyond)."""
        if tokens <= 0:
            return 0.0
        x = math.log(tokens)
        xs, ys = self.log_tokens, self.log_seconds
        if x <= xs[0]:
            return math.exp(ys[0])
        if x >= xs[-1]:
            return math.exp(ys[-1] + x - xs[-1])
        return float(np.exp(np.interp(x, xs, ys)))


def expert_format(precision: str, compute_precision: str, mxfp4_activations: str) -> str:
    """The :data:`EXPERT_DTYPES` key of experts stored in ``precision`` and computed in
    ``compute_precision`` (as :func:`sincere.perf.roofline.expert_constants` prices them)."""
    if precision == "mxfp4":
        return "mxfp4_mxfp8" if mxfp4_activations == "mxfp8" else "mxfp4"
    if precision in INT4_WEIGHTS:
        return "int4"
    if compute_precision in ("fp8", "nvfp4"):
        return compute_precision
    return "bf16"


def measured_curve(
    tables: str, accelerator: str, release: str | None, fmt: str, layer: MoELayer
) -> MeasuredCurve | None:
    """The measured curve of ``layer`` in expert format ``fmt`` on ``accelerator`` under vLLM
    ``release`` (None: the newest) from the database folder ``tables``; None where the GPU,
    the format or the layer was not measured. Raises :class:`ConfigError` when ``tables``
    is not a folder."""
    curves = _curves(str(Path(tables).expanduser()), accelerator, release)
    for dtype in EXPERT_DTYPES[fmt]:
        curve = curves.get((dtype, layer))
        if curve is not None:
            return curve
    return None


def deployment_curve(
    deployment: Deployment, params: RooflineParams, compute_precision: str
) -> MeasuredCurve | None:
    """The measured kernel of ``deployment``'s MoE layer where ``params`` name the database
    (``kernel_tables``) and it holds the layer; None otherwise (module docstring: not with
    expert parallelism or attention data parallelism)."""
    dep, p = deployment, params
    model = dep.model
    if p.kernel_tables is None or not model.is_moe or dep.ep != 1 or dep.attention_dp != 1:
        return None
    fmt = expert_format(dep.precision, compute_precision, p.mxfp4_activations)
    layer = MoELayer(
        model.hidden_size,
        model.expert_intermediate_size,
        model.experts_per_token,
        model.num_experts,
        dep.moe_group_gpus,
    )
    return measured_curve(p.kernel_tables, dep.accelerator.name, p.kernel_release, fmt, layer)


@functools.cache
def _curves(
    tables: str, accelerator: str, release: str | None
) -> dict[tuple[str, MoELayer], MeasuredCurve]:
    """Every measured layer of the GPU's MoE table, by (dtype, layer); read once."""
    from sincere.perf.kernel_tables import GPU_FOLDERS, dominant, read_table, usable_sources

    root = Path(tables)
    if not root.is_dir():
        raise ConfigError(
            "kernel_tables must be a folder of measured kernels (AIConfigurator's layout)",
            value=tables,
            allowed="e.g. ../shared/data/kernels/aiconfigurator",
        )
    folder = root / GPU_FOLDERS.get(accelerator, accelerator.lower())
    table = read_table(folder, "moe", _COLUMNS, version=release)  # None: GPU or table absent
    if table is None:
        return {}
    keep = (table.num("moe_ep_size") == 1) & table.equals("distribution", MEASURED_ROUTING)
    keep &= usable_sources(table)
    table = table.where(keep)
    out: dict[tuple[str, MoELayer], MeasuredCurve] = {}
    dtypes = table.columns["moe_dtype"].astype(str)
    for dtype in sorted(set(dtypes)):
        rows = table.where(dtypes == dtype)
        kernel = dominant(rows, "kernel_source")
        rows = rows.where(rows.equals("kernel_source", kernel))
        keys = np.stack([rows.num(column) for column in _KEY_COLUMNS], axis=1)
        tokens, latency = rows.num("num_tokens"), rows.num("latency") * 1e-3
        for key in np.unique(keys, axis=0):
            mask = np.all(keys == key, axis=1) & (tokens > 0) & (latency > 0)
            t, s = tokens[mask], latency[mask]
            uniq = np.unique(t)
            if len(uniq) < 2:
                continue
            mean = np.array([s[t == u].mean() for u in uniq])  # repeated counts: their mean
            layer = MoELayer(*(int(v) for v in key))
            where = f"{table.path} ({kernel}, {dtype}, {MEASURED_ROUTING}, {len(uniq)} counts)"
            out[(dtype, layer)] = MeasuredCurve(
                tuple(float(v) for v in np.log(uniq)), tuple(float(v) for v in np.log(mean)), where
            )
    return out
