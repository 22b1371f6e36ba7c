"""Fit the roofline's constants to one accelerator's operator profiles.

``fit_gpu_profiles(profiles, accelerator)`` fits, across every profiled model and TP
degree at once (one functional form, no per-model constants), the
:class:`~sincere.perf.roofline.RooflineParams` that carry physical meaning:

* **linear work** -- each GEMM row (QKV, O, gate/up, down of every model at every TP,
  every token count) as ``kernel + (compute^p + memory^p)^(1/p)`` with compute over
  the dense peak × ``mfu_efficiency`` on the token count rounded up to the
  ``token_tile`` above one tile, and memory (weights, activations) over HBM ×
  ``bw_efficiency``; the tile is chosen among :data:`TOKEN_TILES` by the fit's loss.
  The elementwise kernels' sum per layer as ``fixed + bytes / (HBM ×
  elementwise_bw_efficiency)``. ``layer_overhead_s`` = four GEMM kernel costs + the
  elementwise fixed cost;
* **attention** -- every prefill and decode row of every attention table, as
  ``attn_kernel_s + max(compute, memory)`` with ``attn_mfu_efficiency``,
  ``attn_bw_efficiency`` and ``attn_diag_factor`` (see the roofline);
* **all-reduce** -- single-node groups of one topology whose bandwidth is above the
  host link (NVLink-bound; a "pairwise" topology's 4-GPU group goes over PCIe and is
  left out), messages up to 128 MiB: ``allreduce_latency_s + 2 (n-1)/n · size /
  (one-way link × interconnect_efficiency)``;
* **CPU per step** -- the engine-steps tables' scheduling, sampling, input preparation
  and output processing by batch size: ``overhead_s + overhead_per_seq_s · batch``
  (least squares; the Ray transport time of those runs is left out).

A part the profiles cannot give (Vidur published no H100 attention profile, and only
an A100 engine-steps table) is **borrowed** from a reference fit of the same software
stack (``borrow_from``: a fit document, by default the shipped A100-80GB one): its
attention efficiencies, kernel cost and diagonal factor, or its CPU terms, taken as
they are. Each term being a datasheet peak times an efficiency, the borrowed
attention is the reference's measured attention scaled by the ratio of the two
datasheets' bf16 FLOPs (compute-bound prefill) and HBM bandwidth (memory-bound
decode). The document names what was borrowed and from where.

Every fit minimises a robust (soft-L1) loss of the log ratio of model to measurement
(symmetric in over- and under-prediction), so a few noisy rows do not pull it; rows
are weighted so each octave of token counts (or message sizes) weighs the same.
Errors are reported per part as relative errors.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.optimize import least_squares

from sincere.catalog.specs import Accelerator
from sincere.core.errors import ConfigError
from sincere.perf.operators import (
    ELEMENTWISE_OPS,
    GEMM_OPS,
    AllReduceTable,
    AttentionTable,
    OperatorProfiles,
)
from sincere.perf.roofline import elementwise_elements, layer_gemms

FArray = npt.NDArray[np.float64]
TOKEN_TILES = (1, 64, 128, 256)  # GEMM token tiles the linear fit chooses among
MAX_ALLREDUCE_BYTES = 128 * 2**20  # all-reduce sizes fitted (an iteration's messages)
ACTIVATION_BYTES = 2.0  # fp16 / bf16 activations, as profiled


@dataclass(frozen=True, slots=True)
class PartFit:
    """One part's fitted constants and its error on the rows it was fitted on."""

    name: str  # "linear", "elementwise", "attention", "all_reduce", "cpu"
    params: dict[str, float]  # RooflineParams fields (and helper figures)
    mean_relative_error: float  # mean of |model − measured| / measured
    max_relative_error: float  # the largest of the same
    num_rows: int  # rows fitted
    at_bounds: tuple[str, ...] = ()  # constants the search stopped at a bound of (unpinned)

    def as_dict(self) -> dict[str, Any]:
        """For the provenance block of the parameter file."""
        out: dict[str, Any] = {
            "mean_relative_error": round(self.mean_relative_error, 4),
            "max_relative_error": round(self.max_relative_error, 4),
            "rows": self.num_rows,
        }
        if self.at_bounds:
            out["at_bounds"] = list(self.at_bounds)
        return out


@dataclass(frozen=True, slots=True)
class GpuProfileFit:
    """The fitted constants of one accelerator, part by part."""

    accelerator: Accelerator  # the catalog accelerator (its datasheet peaks)
    parts: tuple[PartFit, ...]  # what was fitted
    notes: tuple[str, ...] = field(default=())  # parts that could not be fitted, and why
    borrowed: dict[str, dict[str, Any]] = field(default_factory=dict)  # part -> params taken
    borrowed_from: str | None = None  # the reference fit those came from

    @property
    def params(self) -> dict[str, Any]:
        """The RooflineParams fields fitted or borrowed (helper figures left out)."""
        out: dict[str, Any] = {}
        for borrowed in self.borrowed.values():
            out.update(borrowed)
        for part in self.parts:
            out.update({k: v for k, v in part.params.items() if not k.startswith("_")})
        return out

    def part(self, name: str) -> PartFit | None:
        """The part called ``name`` if it was fitted."""
        return next((p for p in self.parts if p.name == name), None)


def _relative(pred: FArray, measured: FArray) -> FArray:
    return (pred - measured) / measured


def _log_ratio(pred: FArray, measured: FArray) -> FArray:
    """``log(pred / measured)``: symmetric in over- and under-prediction (the fits' residual)."""
    result: FArray = np.log(np.maximum(pred, 1e-12) / measured)
    return result


def _robust(
    residuals: Callable[[FArray], FArray],
    x0: Sequence[float],
    bounds: tuple[Sequence[float], Sequence[float]],
    scale: float = 0.05,
) -> tuple[FArray, float]:
    """Soft-L1 least squares of relative residuals: the solution and its loss."""
    result = least_squares(
        residuals, np.asarray(x0, dtype=float), bounds=bounds, loss="soft_l1", f_scale=scale
    )
    return np.asarray(result.x, dtype=float), float(result.cost)


def _summary(
    name: str, params: dict[str, float], rel: FArray, at_bounds: tuple[str, ...] = ()
) -> PartFit:
    err = np.abs(rel)
    return PartFit(name, params, float(err.mean()), float(err.max()), len(rel), at_bounds)


def _physical(name: str, bound: float) -> bool:
    """A bound that is a limit of the model, not of the search: a time of 0, an efficiency
    of 1, no overlap (exponent 1), a causal diagonal factor anywhere in [1, 2]."""
    return (
        bound == 0.0
        or ("efficiency" in name and bound == 1.0)
        or name == "attn_diag_factor"
        or (name == "overlap_exponent" and bound == 1.0)
    )


def _at_bounds(
    names: Sequence[str], x: FArray, bounds: tuple[Sequence[float], Sequence[float]]
) -> tuple[str, ...]:
    """The ``names`` whose solution sits on a bound of the search range (relative 1e-6)
    that is not a limit of the model itself: the rows did not pin that constant, the
    search ran into the edge of its range (e.g. an efficiency of 0.05)."""
    out = []
    for name, value, lo, hi in zip(names, x, *bounds, strict=True):
        span = max(hi - lo, 1e-30)
        for bound in (lo, hi):
            if abs(value - bound) <= 1e-6 * span and not _physical(name, bound):
                out.append(name.lstrip("_"))
    return tuple(out)


# --- linear work -------------------------------------------------------------------------
def octave_weights(tokens: FArray) -> FArray:
    """Weights giving every octave of ``tokens`` (or bytes) the same total weight.

    Profiles sample tokens densely above a few hundred (every 8 to 1,024, then every
    16, 32 …) and sparsely below, where decode iterations live, and all-reduce sizes
    evenly in bytes; unweighted, a fit would serve prefills and large messages and
    neglect decodes.
    """
    octave = np.floor(np.log2(np.maximum(tokens, 1.0)))
    _, inverse, counts = np.unique(octave, return_inverse=True, return_counts=True)
    weights: FArray = 1.0 / counts[inverse]
    normalised: FArray = weights / weights.mean()
    return normalised


def _gemm_rows(profiles: OperatorProfiles, models: Iterable[str] | None) -> FArray:
    """Rows (tokens, K, N, ms, weight) of every GEMM of the selected models' tables."""
    keep = None if models is None else set(models)
    rows = []
    for (name, tp), table in sorted(profiles.linear.items()):
        if keep is not None and name not in keep:
            continue
        weights = octave_weights(table.tokens)
        for op, gemm in zip(GEMM_OPS, layer_gemms(table.model, tp), strict=True):
            for tokens, ms, w in zip(table.tokens, table.op_ms[op], weights, strict=True):
                if ms > 0:
                    rows.append((tokens, gemm.k, gemm.n, ms * 1e-3, w))
    if not rows:
        raise ConfigError("no linear-work rows to fit", where=profiles.folder, value=models)
    return np.array(rows, dtype=np.float64)


def _gemm_model(rows: FArray, acc: Accelerator, tile: int) -> Callable[[FArray], FArray]:
    tokens, k, n = rows[:, 0], rows[:, 1], rows[:, 2]
    tiled = np.where(tokens <= tile, tokens, tile * np.ceil(tokens / tile))
    flops = 2.0 * k * n * tiled
    moved = 2.0 * k * n + ACTIVATION_BYTES * (k + n) * tokens
    peak, hbm = acc.peak_tflops("bf16") * 1e12, acc.hbm_bandwidth_gbps * 1e9

    def predict(x: FArray) -> FArray:
        mfu, bw, kernel, p = x
        compute, memory = flops / (peak * mfu), moved / (hbm * bw)
        high, low = np.maximum(compute, memory), np.minimum(compute, memory)
        result: FArray = kernel + high * (1.0 + (low / high) ** p) ** (1.0 / p)
        return result

    return predict


GEMM_CONSTANTS = ("mfu_efficiency", "bw_efficiency", "_gemm_kernel_s", "overlap_exponent")
"""The GEMM fit's constants, in the order of its parameter vector."""


def gemm_constants(x: FArray, tile: float) -> dict[str, float]:
    """The fitted GEMM constants by name (parameter vector ``x`` in :data:`GEMM_CONSTANTS`'
    order), with the token tile the fit chose."""
    return {
        "mfu_efficiency": float(x[0]),
        "bw_efficiency": float(x[1]),
        "overlap_exponent": float(x[3]),
        "token_tile": tile,
        "_gemm_kernel_s": float(x[2]),
    }


def fit_linear(
    profiles: OperatorProfiles, acc: Accelerator, models: Iterable[str] | None = None
) -> tuple[PartFit, PartFit]:
    """GEMMs (with the best token tile) and the elementwise kernels; see the module docstring."""
    rows = _gemm_rows(profiles, models)
    measured, root_w = rows[:, 3], np.sqrt(rows[:, 4])
    best: tuple[float, int, FArray] | None = None
    bounds = ([0.05, 0.05, 0.0, 1.0], [1.0, 1.0, 1e-4, 50.0])
    for tile in TOKEN_TILES:
        predict = _gemm_model(rows, acc, tile)
        x, cost = _robust(
            lambda x, f=predict: root_w * _log_ratio(f(x), measured),  # type: ignore[misc]
            [0.7, 0.8, 5e-6, 2.0],
            bounds,
        )
        if best is None or cost < best[0]:
            best = (cost, tile, x)
    assert best is not None
    _, tile, x = best
    rel = _relative(_gemm_model(rows, acc, tile)(x), measured)
    gemm = gemm_constants(x, int(tile))
    elementwise = _fit_elementwise(profiles, acc, models)
    ew_fixed = elementwise.params.pop("_elementwise_fixed_s")
    gemm["layer_overhead_s"] = len(GEMM_OPS) * gemm["_gemm_kernel_s"] + ew_fixed
    return _summary("linear", gemm, rel, _at_bounds(GEMM_CONSTANTS, x, bounds)), elementwise


def _fit_elementwise(
    profiles: OperatorProfiles, acc: Accelerator, models: Iterable[str] | None
) -> PartFit:
    """Sum of a layer's elementwise kernels: fixed + activation bytes over HBM × efficiency."""
    keep = None if models is None else set(models)
    xs: list[float] = []
    ys: list[float] = []
    ws: list[float] = []
    for (name, tp), table in sorted(profiles.linear.items()):
        if keep is not None and name not in keep:
            continue
        ops = [table.op_ms[op] for op in ELEMENTWISE_OPS if op in table.op_ms]
        total = np.sum(ops, axis=0) if ops else np.zeros_like(table.tokens)
        per_token = elementwise_elements(table.model, tp) * ACTIVATION_BYTES
        xs.extend(per_token * table.tokens)
        ys.extend(total * 1e-3)
        ws.extend(octave_weights(table.tokens))
    moved, measured, root_w = np.array(xs), np.array(ys), np.sqrt(np.array(ws))
    keep_rows = measured > 0
    moved, measured, root_w = moved[keep_rows], measured[keep_rows], root_w[keep_rows]
    hbm = acc.hbm_bandwidth_gbps * 1e9

    def predict(x: FArray) -> FArray:
        result: FArray = x[0] + moved / (hbm * x[1])
        return result

    bounds = ([0.0, 0.01], [1e-3, 1.0])
    x, _ = _robust(lambda x: root_w * _log_ratio(predict(x), measured), [20e-6, 0.5], bounds)
    params = {"elementwise_bw_efficiency": float(x[1]), "_elementwise_fixed_s": float(x[0])}
    pinned = _at_bounds(("_elementwise_fixed_s", "elementwise_bw_efficiency"), x, bounds)
    return _summary("elementwise", params, _relative(predict(x), measured), pinned)


# --- attention ---------------------------------------------------------------------------
def _attention_rows(tables: Sequence[AttentionTable]) -> tuple[FArray, FArray]:
    """Prefill rows (q·hd, kv bytes/token, chunk, cached, s) and decode rows (…, batch, ctx, s)."""
    pre: list[tuple[float, float, float, float, float]] = []
    dec: list[tuple[float, float, float, float, float]] = []
    for t in tables:
        qd = t.shape.q_heads * t.shape.head_size
        kvb = 2.0 * t.shape.kv_heads * t.shape.head_size * ACTIVATION_BYTES
        for chunk, row in zip(t.prefill.keys, t.prefill.rows, strict=True):
            pre.extend(
                (qd, kvb, chunk, ctx, ms * 1e-3)
                for ctx, ms in zip(row.xs, row.ys, strict=True)
                if ms > 0
            )
        for batch, row in zip(t.decode.keys, t.decode.rows, strict=True):
            dec.extend(
                (qd, kvb, batch, ctx, ms * 1e-3)
                for ctx, ms in zip(row.xs, row.ys, strict=True)
                if ms > 0
            )
    return np.array(pre, dtype=np.float64), np.array(dec, dtype=np.float64)


def fit_attention(profiles: OperatorProfiles, acc: Accelerator) -> PartFit:
    """Attention efficiencies, kernel cost and diagonal factor from every attention table."""
    if not profiles.attention:
        raise ConfigError("no attention_*.csv to fit", where=profiles.folder)
    pre, dec = _attention_rows(profiles.attention)
    peak, hbm = acc.peak_tflops("bf16") * 1e12, acc.hbm_bandwidth_gbps * 1e9
    measured = np.concatenate([pre[:, 4], dec[:, 4]])

    def predict(x: FArray) -> FArray:
        mfu, bw, kernel, diag = x
        c, p = pre[:, 2], pre[:, 3]
        pairs = c * p + diag * c * (c + 1) / 2
        pre_t = np.maximum(4 * pre[:, 0] * pairs / (peak * mfu), (c + p) * pre[:, 1] / (hbm * bw))
        b, ctx = dec[:, 2], dec[:, 3]
        dec_t = np.maximum(
            4 * dec[:, 0] * b * ctx / (peak * mfu), b * (ctx + 1) * dec[:, 1] / (hbm * bw)
        )
        result: FArray = np.concatenate([pre_t, dec_t]) + kernel
        return result

    bounds = ([0.01, 0.01, 0.0, 1.0], [1.0, 1.0, 1e-3, 2.0])
    x, _ = _robust(lambda x: _log_ratio(predict(x), measured), [0.4, 0.8, 15e-6, 1.5], bounds)
    params = {
        "attn_mfu_efficiency": float(x[0]),
        "attn_bw_efficiency": float(x[1]),
        "attn_kernel_s": float(x[2]),
        "attn_diag_factor": float(x[3]),
    }
    pinned = _at_bounds(list(params), x, bounds)
    return _summary("attention", params, _relative(predict(x), measured), pinned)


# --- all-reduce --------------------------------------------------------------------------
def nvlink_groups(table: AllReduceTable, acc: Accelerator) -> list[int]:
    """GPU counts of the single-node groups whose bandwidth beats the host link."""
    out = []
    for (workers, per_node), (sizes, ms) in sorted(table.raw.items()):
        if workers != per_node or workers < 2:
            continue
        large = sizes >= min(16 * 2**20, sizes.max() / 4)
        ring = 2.0 * (workers - 1) / workers
        busbw = float(np.median(ring * sizes[large] / (ms[large] * 1e-3))) / 1e9
        if busbw > acc.host_link_gbps:
            out.append(workers)
    return out


def fit_all_reduce(
    profiles: OperatorProfiles, acc: Accelerator, topology: str | None = None
) -> PartFit:
    """All-reduce latency and link efficiency (see the module docstring)."""
    table = profiles.topology(topology)
    groups = nvlink_groups(table, acc)
    if not groups:
        raise ConfigError("no NVLink-bound single-node all-reduce group", where=table.source)
    rows: list[tuple[float, float, float, float]] = []
    for workers in groups:
        sizes, ms = table.raw[(workers, workers)]
        keep = (sizes <= MAX_ALLREDUCE_BYTES) & (ms > 0)
        weights = octave_weights(sizes[keep])
        rows.extend(
            zip([workers] * len(weights), sizes[keep], ms[keep] * 1e-3, weights, strict=True)
        )
    data = np.array(rows, dtype=np.float64)
    ring = 2.0 * (data[:, 0] - 1) / data[:, 0]
    link = acc.interconnect_gbps_per_direction * 1e9
    root_w = np.sqrt(data[:, 3])

    def predict(x: FArray) -> FArray:
        result: FArray = x[0] + ring * data[:, 1] / (link * x[1])
        return result

    bounds = ([0.0, 0.01], [1e-3, 1.0])
    x, _ = _robust(lambda x: root_w * _log_ratio(predict(x), data[:, 2]), [30e-6, 0.5], bounds, 0.2)
    params = {"allreduce_latency_s": float(x[0]), "interconnect_efficiency": float(x[1])}
    pinned = _at_bounds(list(params), x, bounds)
    return _summary("all_reduce", params, _relative(predict(x), data[:, 2]), pinned)


# --- CPU per step ------------------------------------------------------------------------
def fit_cpu(profiles: OperatorProfiles) -> PartFit:
    """``overhead_s + overhead_per_seq_s · batch`` from the engine-steps tables."""
    if not profiles.engine_steps:
        raise ConfigError("no engine_steps_*.csv to fit", where=profiles.folder)
    batch = np.concatenate([t.cpu.xs for t in profiles.engine_steps])
    seconds = 1e-3 * np.concatenate([t.cpu.ys for t in profiles.engine_steps])
    design = np.column_stack([np.ones_like(batch), batch])
    (fixed, per_seq), *_ = np.linalg.lstsq(
        design / seconds[:, None], np.ones_like(batch), rcond=None
    )
    fixed, per_seq = max(float(fixed), 0.0), max(float(per_seq), 0.0)
    params = {"overhead_s": fixed, "overhead_per_seq_s": per_seq}
    return _summary("cpu", params, _relative(fixed + per_seq * batch, seconds))


# --- borrowed parts ----------------------------------------------------------------------
BORROWABLE = {
    "attention": ("attn_mfu_efficiency", "attn_bw_efficiency", "attn_kernel_s", "attn_diag_factor"),
    "cpu": ("overhead_s", "overhead_per_seq_s"),
}
"""Parts a fit may borrow from a reference fit, and the parameters each carries."""


def borrowed_params(reference: Mapping[str, Any], part: str) -> dict[str, Any]:
    """The ``part``'s parameters of a reference fit document (all of them, or none)."""
    params = reference.get("params", {})
    names = BORROWABLE[part]
    if not all(name in params for name in names):
        return {}
    return {name: params[name] for name in names}


# --- all of it ---------------------------------------------------------------------------
def fit_gpu_profiles(
    profiles: OperatorProfiles,
    accelerator: Accelerator,
    *,
    models: Iterable[str] | None = None,
    topology: str | None = None,
    progress: Callable[[str], None] | None = None,
    borrow_from: Mapping[str, Any] | None = None,
) -> GpuProfileFit:
    """Fit every part the profiles allow; ``models`` restricts the linear fit (leave-one-out).

    ``progress(part)`` is called as each part starts. Attention, all-reduce and CPU
    parts whose files are missing are left out with a note; attention and CPU are then
    borrowed from ``borrow_from`` (a fit document) when given (module docstring).
    """
    report = progress or (lambda part: None)
    models = None if models is None else list(models)
    report("linear work")
    linear, elementwise = fit_linear(profiles, accelerator, models)
    parts = [linear, elementwise]
    notes = []
    fitters: tuple[tuple[str, Callable[[], PartFit]], ...] = (
        ("attention", lambda: fit_attention(profiles, accelerator)),
        ("all_reduce", lambda: fit_all_reduce(profiles, accelerator, topology)),
        ("cpu", lambda: fit_cpu(profiles)),
    )
    for name, fitter in fitters:
        report(name)
        try:
            parts.append(fitter())
        except ConfigError as exc:
            notes.append(f"{name} not fitted: {exc}")
    fitted = {p.name for p in parts}
    borrowed: dict[str, dict[str, Any]] = {}
    source = None
    if borrow_from is not None:
        source = str(borrow_from.get("fit", {}).get("accelerator", "a reference fit"))
        for part in BORROWABLE:
            taken = borrowed_params(borrow_from, part) if part not in fitted else {}
            if taken:
                borrowed[part] = taken
    return GpuProfileFit(
        accelerator, tuple(parts), tuple(notes), borrowed, source if borrowed else None
    )


def fit_document(
    fit: GpuProfileFit, profiles: OperatorProfiles, argv: Sequence[str], topology: str | None = None
) -> dict[str, Any]:
    """The parameter file: ``kind: roofline``, ``params`` and ``fit`` (provenance, errors)."""
    params = {k: _round(v) for k, v in fit.params.items()}
    table = profiles.topology(topology) if profiles.all_reduce else None
    info: dict[str, Any] = {
        "accelerator": fit.accelerator.name,
        "source": "operator profiles in Vidur's layout (microsoft/vidur, MIT licence)",
        "folder": profiles.folder.name,
        "files": profiles.files,
        "models": profiles.models,
        "all_reduce_topology": table.topology if table is not None else None,
        "command": shlex.join(argv),
        "errors": {p.name: p.as_dict() for p in fit.parts},
        "gemm_kernel_s": _round(fit.parts[0].params["_gemm_kernel_s"]),
    }
    if fit.notes:
        info["notes"] = list(fit.notes)
    if fit.borrowed:
        info["borrowed"] = {
            "from": fit.borrowed_from,
            "parts": {part: sorted(params) for part, params in fit.borrowed.items()},
            "rule": "taken as fitted on the reference accelerator; with this accelerator's "
            "datasheet peaks they scale the reference's kernel times by the FLOPs and "
            "bandwidth ratios",
        }
    return {"kind": "roofline", "params": params, "fit": info}


def _round(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value) and value != 0.0:
        return float(f"{value:.4g}")
    return value
