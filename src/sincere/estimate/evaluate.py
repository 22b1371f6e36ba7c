"""Leave-one-model-out evaluation of the fingerprint estimator.

For each model with full-model measurements, the exponents are fitted without it (on the
other models' fingerprint-derived data, or on the other models' full-model measurements),
and its measured latencies and memory are predicted from its own fingerprints. Errors
are relative: ``|predicted - measured| / measured``. MaverIQ reports about 8.6 % mean and
3.7 % median latency error for its estimator on its own data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sincere.core.errors import ConfigError
from sincere.estimate.estimator import FingerprintBank, relative_errors
from sincere.estimate.fingerprint import Measurement
from sincere.estimate.fit import (
    LawSamples,
    Target,
    fingerprint_samples,
    fit_table,
    measured_samples,
)

MAVERIQ_MEAN_ERROR = 0.086  # MaverIQ's own estimator on its data (REFERENCE.md §3)
MAVERIQ_MEDIAN_ERROR = 0.037


@dataclass(frozen=True, slots=True)
class LooResult:
    """Errors of predicting one held-out model."""

    model: str  # the held-out model
    num_points: int  # measured (configuration, output length) rows predicted
    mean_error: float  # mean relative latency error
    median_error: float  # median relative latency error
    p90_error: float  # 90th percentile relative latency error
    memory_mean_error: float  # mean relative memory error


def _train_samples(
    bank: FingerprintBank, rows: Sequence[Measurement], held: str, target: Target
) -> LawSamples:
    others = [m for m in bank.models() if m != held]
    train = bank.only_models(others)
    if target == "fingerprint":
        return fingerprint_samples(train)
    return measured_samples(train, [r for r in rows if r.key.model != held])


def evaluate_model(bank: FingerprintBank, rows: Sequence[Measurement], model: str) -> LooResult:
    """Errors of ``bank`` (its exponents as they are) on ``model``'s measured rows."""
    mine = [r for r in rows if r.key.model == model]
    if not mine:
        raise ConfigError("no full-model measurements of this model", value=model)
    est = [bank.estimate(r.key, r.output_tokens) for r in mine]
    lat = relative_errors([e.latency_s for e in est], [r.latency_s for r in mine])
    mem = relative_errors([e.memory_gb for e in est], [r.memory_gb for r in mine])
    return LooResult(
        model,
        len(mine),
        float(lat.mean()),
        float(np.median(lat)),
        float(np.quantile(lat, 0.9)),
        float(mem.mean()),
    )


def leave_one_model_out(
    bank: FingerprintBank,
    rows: Sequence[Measurement],
    *,
    target: Target = "fingerprint",
    models: Sequence[str] | None = None,
) -> list[LooResult]:
    """One :class:`LooResult` per model of ``rows`` (or ``models``), exponents fitted
    without that model."""
    out = []
    for model in models or sorted({r.key.model for r in rows}):
        samples = _train_samples(bank, rows, model, target)
        table, _ = fit_table(samples, f"leave-one-out without {model}")
        out.append(evaluate_model(bank.with_options(exponents=table), rows, model))
    return out
