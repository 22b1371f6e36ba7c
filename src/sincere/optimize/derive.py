"""Inferno's model data derived from a step-time model (no profiling run needed).

The planner (:mod:`sincere.optimize.plan`) prices a server with Inferno's linear forms:
a decode iteration of ``b`` sequences takes ``alpha + beta · b`` ms and a prefill of
``n`` prompt tokens ``gamma + delta · n`` ms. For a model nobody has profiled -- a
mixture of experts in particular -- :func:`derive_model_data` times iterations with a
step-time model (the roofline by default) and fits those lines:

* **decode**: every batch size ``b = 1 .. max_batch`` at the mean context of a request
  (``in_tokens + out_tokens / 2`` tokens a sequence). An MoE model's decode time is
  not linear in ``b`` for small batches (the distinct experts read grow as
  ``E (1 - (1 - k/E)^b)``, then saturate), so the line is fitted by least squares,
  non-negative, over the batch range the planner uses (``1 .. max_batch``, each size
  weighted alike) and the fit's error is reported: the largest and the mean relative
  error, and the largest below a quarter of the range, where the curve bends;
* **prefill**: ``1 .. 8`` prompts of ``in_tokens`` tokens in one iteration.

``max_batch`` defaults to what the KV cache holds at ``in_tokens + out_tokens`` tokens a
sequence (:func:`~sincere.perf.memory.plan_memory`), at most 256. ``atTokens`` is
``in_tokens + out_tokens`` (the KV meaning, as :func:`~sincere.optimize.hooks.
model_perf_from_step_model` writes it): plan such entries with ``--batch-rule kv``. The
sampling is :func:`~sincere.optimize.sizing.params_from_step_model`'s; this adds the
non-negative fit, its error and the memory-derived batch limit.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.optimize import nnls

from sincere.core.errors import ConfigError
from sincere.optimize.queueing import DecodePrefillParams
from sincere.perf.base import Batch, Deployment, StepTimeModel
from sincere.perf.memory import plan_memory

FArray = npt.NDArray[np.float64]
MAX_DERIVED_BATCH = 256
PREFILL_PROMPTS = 8


@dataclass(frozen=True, slots=True)
class LineFit:
    """``intercept + slope · x`` (ms) fitted to step-model times, with its error."""

    intercept_ms: float
    slope_ms: float
    max_rel_error: float  # largest |fit - model| / model over the points
    mean_rel_error: float  # mean of the same
    low_max_rel_error: float  # largest over the first quarter of the points
    x_range: tuple[int, int]  # smallest and largest x fitted


@dataclass(frozen=True, slots=True)
class DerivedModelData:
    """One ``models`` entry of Inferno's ``model-data.json`` and how well the lines fit."""

    entry: dict[str, Any]  # name, acc, accCount, maxBatchSize, atTokens, decodeParms, prefillParms
    decode: LineFit  # alpha (intercept), beta (slope per sequence)
    prefill: LineFit  # gamma (intercept), delta (slope per token)

    @property
    def params(self) -> DecodePrefillParams:
        """The entry's ``decodeParms`` and ``prefillParms`` as the planner's parameters."""
        return DecodePrefillParams(
            self.decode.intercept_ms, self.decode.slope_ms,
            self.prefill.intercept_ms, self.prefill.slope_ms,
        )  # fmt: skip


def grouped(derived: DerivedModelData, ranks: int) -> DerivedModelData:
    """``derived`` (one attention rank's model data) as the instance of ``ranks`` ranks
    that share one expert group (``attention_dp``): with ``n`` requests the group holds
    ``n / ranks`` a rank, so an iteration takes a rank's time at that share -- the slopes
    per sequence and per prompt token divide by ``ranks``, the intercepts stay -- and the
    group holds ``ranks`` times a rank's batch on ``ranks`` times its GPUs. (The prefill
    line at ``n < ranks`` requests is a rank's share of one prompt, shorter than the whole
    prompt it prefills: Inferno's form has no ``max(1, n / ranks)``.)"""
    if ranks == 1:
        return derived
    if ranks < 1:
        raise ConfigError("attention ranks must be >= 1", value=ranks, allowed=">= 1")
    entry = dict(derived.entry)
    entry["accCount"] = int(entry["accCount"]) * ranks
    entry["maxBatchSize"] = int(entry["maxBatchSize"]) * ranks
    decode = replace(derived.decode, slope_ms=derived.decode.slope_ms / ranks)
    prefill = replace(derived.prefill, slope_ms=derived.prefill.slope_ms / ranks)
    entry["decodeParms"] = {"alpha": decode.intercept_ms, "beta": decode.slope_ms}
    entry["prefillParms"] = {"gamma": prefill.intercept_ms, "delta": prefill.slope_ms}
    return DerivedModelData(entry, decode, prefill)


def fit_line(xs: FArray, ys_ms: FArray) -> LineFit:
    """Non-negative least-squares line through ``(xs, ys_ms)`` and its relative errors."""
    coef, _ = nnls(np.column_stack([np.ones_like(xs), xs]), ys_ms)
    fitted = coef[0] + coef[1] * xs
    rel = np.abs(fitted - ys_ms) / ys_ms
    low = rel[: max(1, len(rel) // 4)]
    return LineFit(
        float(coef[0]),
        float(coef[1]),
        float(rel.max()),
        float(rel.mean()),
        float(low.max()),
        (int(xs[0]), int(xs[-1])),
    )


def derive_model_data(
    deployment: Deployment,
    step_model: StepTimeModel,
    *,
    in_tokens: int,
    out_tokens: int,
    max_batch: int | None = None,
    name: str | None = None,
    acc_name: str | None = None,
) -> DerivedModelData:
    """Inferno's model data of ``deployment`` from ``step_model`` (see the module docstring)."""
    if in_tokens < 1 or out_tokens < 1:
        raise ConfigError(
            "in_tokens and out_tokens must be >= 1", value=(in_tokens, out_tokens), allowed=">= 1"
        )
    if max_batch is None:
        plan = plan_memory(deployment, max_num_seqs=MAX_DERIVED_BATCH)
        if not plan.fits:
            raise ConfigError(
                f"{deployment.model.name} does not fit on {deployment.num_gpus} x "
                f"{deployment.accelerator.name} (tp {deployment.tp}, {deployment.precision})",
                value=deployment.precision,
                allowed="more tp, a lower precision or a larger accelerator",
            )
        max_batch = max(1, plan.max_batch_at(in_tokens + out_tokens))
    if max_batch < 1:
        raise ConfigError("max_batch must be >= 1", value=max_batch)
    ctx = in_tokens + out_tokens // 2
    batches = np.arange(1, max_batch + 1, dtype=np.float64)
    decode_ms = np.array(
        [
            1e3 * step_model.iteration_s(Batch(num_decode_seqs=b, decode_ctx_tokens=b * ctx))
            for b in range(1, max_batch + 1)
        ]
    )
    prompts = range(1, PREFILL_PROMPTS + 1)
    prefill_tokens = np.array([n * in_tokens for n in prompts], dtype=np.float64)
    prefill_ms = np.array(
        [1e3 * step_model.iteration_s(Batch.of(prefill=[(in_tokens, 0)] * n)) for n in prompts]
    )
    decode = fit_line(batches, decode_ms)
    prefill = fit_line(prefill_tokens, prefill_ms)
    entry = {
        "name": name or deployment.model.name,
        "acc": acc_name or deployment.accelerator.name,
        "accCount": deployment.num_gpus,
        "maxBatchSize": int(max_batch),
        "atTokens": int(in_tokens + out_tokens),
        "decodeParms": {"alpha": decode.intercept_ms, "beta": decode.slope_ms},
        "prefillParms": {"gamma": prefill.intercept_ms, "delta": prefill.slope_ms},
    }
    return DerivedModelData(entry, decode, prefill)
