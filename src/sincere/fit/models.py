"""Fit step-time models to iteration samples; each fit yields a ``sincere simulate`` kind.

One fitter per target (a :data:`FITTERS` registry entry), each returning the
:mod:`sincere.perf.factory` kind and its parameters:

* ``roofline`` → kind ``roofline``: the :class:`~sincere.perf.roofline.RooflineParams`
  ``mfu_efficiency``, ``bw_efficiency`` and ``overhead_s`` that minimise the squared
  *relative* error of the deployment's roofline (its TP and PP with their
  communication; the other constants at the accelerator's defaults) against the
  samples (scipy's bounded least squares);
* ``inferno`` → kind ``inferno``: Inferno's ``decode(n) = α + β·n`` on the decode-only
  samples and ``prefill = γ + δ·prompt_tokens`` on the prefill-only samples, in ms, by
  non-negative least squares (Inferno's parameters are non-negative); also its
  model-data entry for ``sincere plan``;
* ``niyama`` → kind ``niyama-binned``: :func:`~sincere.perf.linear.fit_binned_linear`
  over token-count bins;
* ``table`` → kind ``iteration-table``: the samples' times on a (tokens, sequences)
  grid of the measured values, scattered points interpolated linearly in log space
  (nearest sample outside their hull).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.interpolate import LinearNDInterpolator, NearestNDInterpolator
from scipy.optimize import least_squares, nnls

from sincere.core.errors import ConfigError
from sincere.core.registry import Registry
from sincere.fit.samples import Sample
from sincere.perf.base import Deployment
from sincere.perf.calibration import default_roofline_params
from sincere.perf.linear import fit_binned_linear
from sincere.perf.roofline import Roofline

FArray = npt.NDArray[np.float64]
DEFAULT_BIN_EDGES = (64.0, 512.0, 2048.0)  # Niyama-style token-count bins


@dataclass(frozen=True, slots=True)
class FitResult:
    """A fitted model: the factory kind, its parameters and extra outputs."""

    kind: str  # a sincere.perf.factory STEP_MODELS name
    params: dict[str, Any]  # that kind's parameters (YAML-serialisable)
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. Inferno's model-data entry


@dataclass(frozen=True, slots=True)
class FitContext:
    """What some fitters need besides the samples."""

    deployment: Deployment  # model and accelerator (roofline terms, Inferno's entry)
    bin_edges: tuple[float, ...] = DEFAULT_BIN_EDGES  # Niyama's token bins
    max_batch_size: int | None = None  # Inferno's maxBatchSize (None: the largest seen)


Fitter = Callable[[Sequence[Sample], FitContext], FitResult]
FITTERS: Registry[Fitter] = Registry("fit model")


def _times(samples: Sequence[Sample]) -> FArray:
    return np.array([s.time_s for s in samples], dtype=float)


ROOFLINE_FITTED = ("mfu_efficiency", "bw_efficiency", "overhead_s")
"""What the roofline fitter sets; the other constants keep the accelerator's defaults."""


def _roofline_model(dep: Deployment, x: FArray) -> Roofline:
    """The deployment's roofline with the fitted three constants set to ``x``."""
    return Roofline(
        dep, default_roofline_params(dep.accelerator, dict(zip(ROOFLINE_FITTED, x, strict=True)))
    )


@FITTERS.register("roofline")
def fit_roofline(samples: Sequence[Sample], ctx: FitContext) -> FitResult:
    """Compute and bandwidth efficiency and CPU overhead, by bounded relative least squares.

    Predictions are the full roofline of ``ctx.deployment`` -- its TP and PP degrees
    with their all-reduces and pipeline bubble -- with every other constant at the
    accelerator's default (:mod:`sincere.perf.calibration`). A value stuck at a bound
    means the form cannot explain the samples; it is reported in ``extra["notes"]``.
    """
    _need(samples, 3, "roofline")
    t = _times(samples)
    batches = [s.batch for s in samples]
    dep = ctx.deployment

    def residuals(x: FArray) -> FArray:
        model = _roofline_model(dep, x)
        pred = np.array([model.iteration_s(b) for b in batches])
        return (pred - t) / t

    lower, upper = np.array([1e-4, 1e-4, 0.0]), np.array([1.0, 1.0, float(t.max())])
    start = default_roofline_params(dep.accelerator)
    x0 = np.clip([start.mfu_efficiency, start.bw_efficiency, 0.5 * float(t.min())], lower, upper)
    result = least_squares(residuals, x0, bounds=(lower, upper), x_scale=[0.1, 0.1, float(t.min())])
    params = {name: float(v) for name, v in zip(ROOFLINE_FITTED, result.x, strict=True)}
    notes = [
        f"{name} = {params[name]:.4g} is at its bound; the roofline cannot explain the samples"
        for name, lo, hi in zip(ROOFLINE_FITTED, lower, upper, strict=True)
        if name != "overhead_s" and (params[name] <= lo * 1.001 or params[name] >= hi * 0.999)
    ]
    return FitResult("roofline", params, {"notes": notes} if notes else {})


def _nnls_line(x: FArray, y: FArray) -> tuple[float, float]:
    """Non-negative intercept and slope of ``y ≈ a + b·x``."""
    coef, _ = nnls(np.column_stack([np.ones_like(x), x]), y)
    return float(coef[0]), float(coef[1])


@FITTERS.register("inferno")
def fit_inferno(samples: Sequence[Sample], ctx: FitContext) -> FitResult:
    """Inferno's α, β (decode) and γ, δ (prefill), milliseconds, non-negative."""
    pre = [s for s in samples if s.is_prefill]
    dec = [s for s in samples if s.is_decode]
    _need(pre, 2, "inferno (prefill samples)")
    _need(dec, 2, "inferno (decode samples)")
    pre_tokens = np.array([s.batch.prefill_tokens for s in pre], dtype=float)
    gamma, delta = _nnls_line(pre_tokens, 1e3 * _times(pre))
    dec_seqs = np.array([s.batch.num_decode_seqs for s in dec], dtype=float)
    alpha, beta = _nnls_line(dec_seqs, 1e3 * _times(dec))
    params = {"alpha_ms": alpha, "beta_ms": beta, "gamma_ms": gamma, "delta_ms": delta}
    return FitResult(
        "inferno", params, {"inferno_model_data": _inferno_entry(pre, dec, params, ctx)}
    )


def _inferno_entry(
    pre: Sequence[Sample], dec: Sequence[Sample], params: dict[str, float], ctx: FitContext
) -> dict[str, Any]:
    """Inferno's model-data entry (``sincere plan``'s ``model-data.json`` ``models`` item)."""
    per_prompt = [s.batch.prefill_tokens / s.batch.num_prefill_seqs for s in pre]
    max_batch = ctx.max_batch_size or max(s.batch.num_seqs for s in [*pre, *dec])
    return {
        "name": ctx.deployment.model.name,
        "acc": ctx.deployment.accelerator.name,
        "accCount": ctx.deployment.num_gpus,
        "maxBatchSize": int(max_batch),
        "atTokens": round(float(np.mean(per_prompt))),
        "decodeParms": {"alpha": params["alpha_ms"], "beta": params["beta_ms"]},
        "prefillParms": {"gamma": params["gamma_ms"], "delta": params["delta_ms"]},
    }


@FITTERS.register("niyama")
def fit_niyama(samples: Sequence[Sample], ctx: FitContext) -> FitResult:
    """Niyama's binned linear regression over the context's token bins."""
    _need(samples, 6, "niyama")
    model = fit_binned_linear([(s.batch, s.time_s) for s in samples], ctx.bin_edges)
    params = {"bin_edges": model.bin_edges.tolist(), "coeffs": model.coeffs.tolist()}
    return FitResult("niyama-binned", params)


@FITTERS.register("table")
def fit_table(samples: Sequence[Sample], ctx: FitContext) -> FitResult:
    """An iteration table on the grid of measured (tokens, sequences) values."""
    _need(samples, 3, "table")
    tokens = np.array([s.batch.num_tokens for s in samples], dtype=float)
    seqs = np.array([s.batch.num_seqs for s in samples], dtype=float)
    t = _times(samples)
    token_grid, seq_grid = np.unique(tokens), np.unique(seqs)
    if len(token_grid) < 2 or len(seq_grid) < 2:
        raise ConfigError(
            "table fit needs >= 2 distinct token counts and batch sizes",
            value=(len(token_grid), len(seq_grid)),
        )
    points = np.column_stack([np.log(tokens), np.log(seqs)])
    gx, gy = np.meshgrid(np.log(token_grid), np.log(seq_grid), indexing="ij")
    grid = _scatter_to_grid(points, np.log(t), gx, gy)
    params = {
        "token_grid": token_grid.tolist(),
        "seq_grid": seq_grid.tolist(),
        "times_s": np.exp(grid).tolist(),
    }
    return FitResult("iteration-table", params)


def _scatter_to_grid(points: FArray, values: FArray, gx: FArray, gy: FArray) -> FArray:
    """Linear interpolation of scattered values onto a grid, nearest outside the hull."""
    nearest = NearestNDInterpolator(points, values)(gx, gy)
    try:
        linear = LinearNDInterpolator(points, values)(gx, gy)
    except Exception:  # degenerate (collinear) points: Qhull cannot triangulate
        return np.asarray(nearest, dtype=float)
    return np.asarray(np.where(np.isnan(linear), nearest, linear), dtype=float)


def _need(samples: Sequence[Sample], n: int, what: str) -> None:
    if len(samples) < n:
        raise ConfigError(f"{what} fit needs at least {n} samples", value=len(samples))


def fit(kind: str, samples: Sequence[Sample], ctx: FitContext) -> FitResult:
    """Run the ``kind`` fitter (``roofline``, ``inferno``, ``niyama``, ``table``)."""
    return FITTERS.get(kind)(samples, ctx)
