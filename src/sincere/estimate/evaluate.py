"""Leave-one-model-out evaluation of the fingerprint estimator.

For each model with full-model measurements, the law's constants (exponents and decode
overhead per TP degree) are fitted without it -- on the other models' full-model
measurements, or on the other models' fingerprints -- and its measured latencies and
memory are predicted from its own fingerprints. Errors are relative: ``|predicted -
measured| / measured``, reported per held-out model and per (TP, PP) group. MaverIQ
reports about 8.6 % mean and 3.7 % median latency error for its estimator on its own data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sincere.core.errors import ConfigError
from sincere.estimate.estimator import FingerprintBank, relative_errors
from sincere.estimate.fingerprint import Measurement
from sincere.estimate.fit import Target, fit_law
from sincere.estimate.law import ExponentTable

MAVERIQ_MEAN_ERROR = 0.086  # MaverIQ's own estimator on its data (docs/references.md, MaverIQ)
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
    group_errors: dict[tuple[int, int], float]  # (TP, PP) -> mean relative latency error

    @property
    def worst_group(self) -> tuple[tuple[int, int], float]:
        """The (TP, PP) group with the largest mean error, and that error."""
        return max(self.group_errors.items(), key=lambda item: item[1])


def _fit_without(
    bank: FingerprintBank, rows: Sequence[Measurement], held: str, target: Target
) -> ExponentTable:
    train = bank.only_models(m for m in bank.models() if m != held)
    others = [r for r in rows if r.key.model != held]
    table, _ = fit_law(train, others, target=target, source=f"leave-one-out without {held}")
    return table


def evaluate_model(bank: FingerprintBank, rows: Sequence[Measurement], model: str) -> LooResult:
    """Errors of ``bank`` (its exponents as they are) on ``model``'s measured rows."""
    mine = [r for r in rows if r.key.model == model]
    if not mine:
        raise ConfigError("no full-model measurements of this model", value=model)
    est = [bank.estimate(r.key, r.output_tokens) for r in mine]
    lat = relative_errors([e.latency_s for e in est], [r.latency_s for r in mine])
    mem = relative_errors([e.memory_gb for e in est], [r.memory_gb for r in mine])
    groups: dict[tuple[int, int], list[float]] = {}
    for r, err in zip(mine, lat.tolist(), strict=True):
        groups.setdefault((r.key.tp, r.key.pp), []).append(err)
    return LooResult(
        model,
        len(mine),
        float(lat.mean()),
        float(np.median(lat)),
        float(np.quantile(lat, 0.9)),
        float(mem.mean()),
        {g: float(np.mean(v)) for g, v in sorted(groups.items())},
    )


def leave_one_model_out(
    bank: FingerprintBank,
    rows: Sequence[Measurement],
    *,
    target: Target = "measured",
    models: Sequence[str] | None = None,
) -> list[LooResult]:
    """One :class:`LooResult` per model of ``rows`` (or ``models``), exponents fitted
    without that model."""
    out = []
    for model in models or sorted({r.key.model for r in rows}):
        table = _fit_without(bank, rows, model, target)
        out.append(evaluate_model(bank.with_options(exponents=table), rows, model))
    return out
