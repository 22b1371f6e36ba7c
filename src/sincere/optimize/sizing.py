"""Sizing one replica: the highest arrival rate at which it still meets its SLOs.

Inferno's sizing step: binary-search the arrival rate ``λ`` of one replica for the
largest value whose predicted TTFT and ITL (from :mod:`sincere.optimize.queueing`)
stay within the targets; with a throughput target, the rate is also held to 0.9 of
the replica's top rate so it runs clear of saturation. The search never goes above
Inferno's top rate ``(1 − 0.001)·μ(N)``: past ``μ(N)`` a replica only turns requests
away. The rate a replica is credited with is the analyzer's throughput there,
``X = λ(1 − p_K)`` (:func:`credited_rates`), as Inferno's optimizer counts replicas.
The search runs on all candidate replicas at once (one numpy evaluation per step).

:func:`params_from_step_model` lets any sincere step-time model be planned with:
it fits Inferno's ``α, β`` to decode iterations of batch ``1..N`` and ``γ, δ`` to
prefill iterations, by least squares.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sincere.core.errors import ConfigError
from sincere.optimize.queueing import (
    AffineReplica,
    BoolArray,
    DecodePrefillParams,
    FloatArray,
    ReplicaBank,
)
from sincere.perf.base import Batch, StepTimeModel

THROUGHPUT_HEADROOM = 0.9
"""With a throughput target, a replica is loaded to at most this share of its top rate."""

RATE_EPSILON = 0.001
"""Inferno's top rate of a replica is ``(1 − ε)·μ(N)``: the search never goes above it."""

_NUM_BISECTIONS = 48  # halvings of [0, μ(N)]: relative precision ~4e-15


@dataclass(frozen=True, slots=True)
class Targets:
    """SLOs of one (service class, model) pair. ``None`` means no target."""

    ttft_ms: float | None = None  # mean time to first token, ms
    itl_ms: float | None = None  # mean inter-token latency, ms
    tps: float | None = None  # throughput target (tokens/s); enables the 0.9·μ(N) cap

    def __post_init__(self) -> None:
        for name in ("ttft_ms", "itl_ms", "tps"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"SLO {name} must be > 0 or absent", value=value)


def meets(metrics: dict[str, FloatArray], ttft_ms: FloatArray, itl_ms: FloatArray) -> BoolArray:
    """Boolean mask: TTFT and ITL within targets (``inf`` target = none)."""
    ok: BoolArray = (metrics["ttft_ms"] <= ttft_ms) & (metrics["itl_ms"] <= itl_ms)
    return ok


def _target_arrays(
    targets: Sequence[Targets], bank: ReplicaBank
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per-replica TTFT and ITL bounds (inf when absent) and the rate ceiling."""
    ttft = np.array([t.ttft_ms if t.ttft_ms is not None else np.inf for t in targets])
    itl = np.array([t.itl_ms if t.itl_ms is not None else np.inf for t in targets])
    cap = np.array([THROUGHPUT_HEADROOM if t.tps is not None else 1.0 for t in targets])
    return ttft, itl, cap * (1.0 - RATE_EPSILON) * bank.max_rate


def max_rates(bank: ReplicaBank, targets: Sequence[Targets]) -> FloatArray:
    """Largest λ (requests/ms) per replica of ``bank`` meeting ``targets[i]``; 0 if none does."""
    if len(targets) != len(bank):
        raise ConfigError("one Targets per replica needed", value=(len(targets), len(bank)))
    ttft, itl, ceiling = _target_arrays(targets, bank)
    lo = np.zeros(len(bank))
    hi = ceiling.copy()
    top_ok = meets(bank.evaluate(hi), ttft, itl)
    for _ in range(_NUM_BISECTIONS):
        mid = 0.5 * (lo + hi)
        ok = meets(bank.evaluate(mid), ttft, itl)
        lo = np.where(ok, mid, lo)
        hi = np.where(ok, hi, mid)
    return np.where(top_ok, ceiling, lo)


def credited_rates(bank: ReplicaBank, targets: Sequence[Targets]) -> FloatArray:
    """Throughput ``X = λ(1 − p_K)`` (requests/ms) of each replica at its :func:`max_rates`
    rate, 0 where no rate meets the targets: what Inferno divides a load by."""
    lam = max_rates(bank, targets)
    x: FloatArray = np.where(lam > 0, bank.evaluate(np.maximum(lam, 1e-300))["throughput"], 0.0)
    return x


def max_rate(replica: AffineReplica, targets: Targets) -> float:
    """Largest λ (requests/ms) one replica sustains within ``targets``; 0.0 if none."""
    return float(max_rates(ReplicaBank([replica]), [targets])[0])


def params_from_step_model(
    step_model: StepTimeModel, in_tokens: int, out_tokens: int, max_batch: int
) -> DecodePrefillParams:
    """Fit Inferno's separate-variant parameters (ms) to any step-time model.

    ``α, β``: least squares of decode iterations of ``n = 1..max_batch`` sequences,
    each with ``in + out/2`` tokens of context, against ``n``. ``γ, δ``: prefill
    iterations of ``n`` whole prompts of ``in_tokens`` against ``in·n``.
    """
    if in_tokens < 1 or out_tokens < 1 or max_batch < 1:
        raise ConfigError(
            "in_tokens, out_tokens and max_batch must be >= 1",
            value=(in_tokens, out_tokens, max_batch),
        )
    sizes = np.arange(1, max_batch + 1)
    ctx = in_tokens + out_tokens // 2
    decode = [
        step_model.iteration_s(Batch(num_decode_seqs=int(n), decode_ctx_tokens=int(n) * ctx))
        for n in sizes
    ]
    prefill = [step_model.iteration_s(_prefill_batch(int(n), in_tokens)) for n in sizes]
    beta, alpha = _line(sizes.astype(np.float64), np.array(decode) * 1e3)
    delta, gamma = _line(sizes.astype(np.float64) * in_tokens, np.array(prefill) * 1e3)
    return DecodePrefillParams(alpha=alpha, beta=max(beta, 0.0), gamma=gamma, delta=max(delta, 0.0))


def _prefill_batch(num_seqs: int, in_tokens: int) -> Batch:
    """``num_seqs`` whole prompts of ``in_tokens`` each, nothing cached."""
    pairs = num_seqs * in_tokens * (in_tokens + 1) / 2.0
    return Batch(
        num_prefill_seqs=num_seqs, prefill_tokens=num_seqs * in_tokens, prefill_attn_pairs=pairs
    )


def _line(x: FloatArray, y: FloatArray) -> tuple[float, float]:
    """Slope and intercept of the least-squares line (slope 0 when x is constant)."""
    if len(x) < 2:
        return 0.0, float(y[0])
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope), float(intercept)
