"""Linear step-time forms: Inferno's (α, β, γ, δ) and Niyama's binned regression.

:class:`InfernoLinear` is Inferno's queueing-model performance profile (docs/references.md,
Inferno), in milliseconds: ``decode(n) = α + β·n`` per token step of ``n`` sequences and
``prefill(n) = γ + δ·in_tokens·n``. Mapped onto a :class:`Batch`: the prefill part
is ``γ + δ·prefill_tokens`` (``in_tokens·n`` is the batch's prompt tokens), the decode
part ``α + β·num_decode_seqs``. A mixed batch costs the **sum** of both parts: Inferno
itself charges a request ``prefill(n) + (out−1)·decode(n)``, i.e. it treats the
phases as sequential forward passes, and the sum keeps ``request_batch_s`` equal to
that formula. Decode time does not depend on context.

:class:`InfernoChunked` is the newer single-parameter-set variant for chunked
prefill: an iteration costs ``α`` plus, per token, ``β``, plus, per sequence,
``γ`` times its context at the end of the step. Summed over ``c`` chunks of a
prompt of ``n_in`` tokens this is Inferno's ``w_pre = (β + γ(c+1)/2)·n_in`` and over
``m`` decode steps its ``w_dec = β·m + γ·m·(n_in + (m+1)/2)``.

:class:`BinnedLinear` is Niyama's batch-time predictor (docs/references.md, Niyama), in
seconds: per bin of total tokens, ``t = b0 + c1·tokens + c2·prefill_tokens +
c3·decode_tokens + c4·decode_ctx + c5·prefill_ctx``, fitted by least squares with
:func:`fit_binned_linear`. Predictions are clamped at zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from sincere.core.errors import ConfigError
from sincere.core.types import Seconds
from sincere.perf.base import Batch, StepTimeBase, SwapTime
from sincere.perf.series import sum_max_affine

MS = 1e-3  # seconds per millisecond
NUM_BINNED_COEFFS = 6  # b0, c1 .. c5


class InfernoLinear(StepTimeBase):
    """Inferno's prefill / decode linear profile, parameters in milliseconds."""

    def __init__(
        self,
        alpha_ms: float,
        beta_ms: float,
        gamma_ms: float,
        delta_ms: float,
        *,
        load: SwapTime | None = None,
        unload: SwapTime | None = None,
    ) -> None:
        _check_non_negative(alpha=alpha_ms, beta=beta_ms, gamma=gamma_ms, delta=delta_ms)
        super().__init__(load, unload)
        self.alpha_ms = alpha_ms  # decode step, fixed part
        self.beta_ms = beta_ms  # decode step, per sequence
        self.gamma_ms = gamma_ms  # prefill, fixed part
        self.delta_ms = delta_ms  # prefill, per prompt token

    def prefill_ms(self, prefill_tokens: int) -> float:
        """Inferno's ``prefill(n) = γ + δ·in_tokens·n`` for the batch's prompt tokens."""
        return self.gamma_ms + self.delta_ms * prefill_tokens if prefill_tokens > 0 else 0.0

    def decode_ms(self, num_seqs: int) -> float:
        """Inferno's ``decode(n) = α + β·n`` for one token step of ``num_seqs``."""
        return self.alpha_ms + self.beta_ms * num_seqs if num_seqs > 0 else 0.0

    def iteration_s(self, batch: Batch) -> Seconds:
        """Prefill part plus decode part (see the module docstring for why the sum)."""
        return (self.prefill_ms(batch.prefill_tokens) + self.decode_ms(batch.num_decode_seqs)) * MS


class InfernoChunked(StepTimeBase):
    """Inferno's chunked-prefill profile ``(α, β, γ)``, in milliseconds."""

    def __init__(
        self,
        alpha_ms: float,
        beta_ms: float,
        gamma_ms: float,
        *,
        load: SwapTime | None = None,
        unload: SwapTime | None = None,
    ) -> None:
        _check_non_negative(alpha=alpha_ms, beta=beta_ms, gamma=gamma_ms)
        super().__init__(load, unload)
        self.alpha_ms = alpha_ms  # per iteration
        self.beta_ms = beta_ms  # per token computed
        self.gamma_ms = gamma_ms  # per sequence, per token of context after the step

    def iteration_s(self, batch: Batch) -> Seconds:
        """``α + β·tokens + γ·Σ context after the step`` over the batch's sequences."""
        if batch.num_tokens == 0:
            return 0.0
        ctx_after = (
            batch.prefill_ctx_tokens
            + batch.prefill_tokens
            + batch.decode_ctx_tokens
            + batch.num_decode_seqs
        )
        return (self.alpha_ms + self.beta_ms * batch.num_tokens + self.gamma_ms * ctx_after) * MS


class BinnedLinear(StepTimeBase):
    """Niyama's per-bin linear batch-time model (seconds)."""

    def __init__(
        self,
        bin_edges: Sequence[float],
        coeffs: npt.ArrayLike,
        *,
        load: SwapTime | None = None,
        unload: SwapTime | None = None,
    ) -> None:
        super().__init__(load, unload)
        edges = np.asarray(bin_edges, dtype=float)
        table = np.asarray(coeffs, dtype=float)
        if edges.ndim != 1 or np.any(np.diff(edges) <= 0):
            raise ConfigError("bin_edges must be strictly increasing", value=list(edges))
        if table.shape != (len(edges) + 1, NUM_BINNED_COEFFS):
            raise ConfigError(
                "coeffs must have one row of 6 (b0, c1..c5) per bin (len(bin_edges) + 1 rows)",
                value=table.shape,
            )
        self.bin_edges = edges  # upper edges (inclusive) of all bins but the last
        self.coeffs = table  # rows: bins; columns: b0, c1 .. c5

    def bin_of(self, num_tokens: float) -> int:
        """Index of the bin holding a batch of ``num_tokens`` tokens."""
        return int(np.searchsorted(self.bin_edges, num_tokens, side="left"))

    def _raw_s(self, batch: Batch) -> float:
        row = self.coeffs[self.bin_of(batch.num_tokens)]
        return float(row @ _features(batch))

    def iteration_s(self, batch: Batch) -> Seconds:
        """The bin's linear prediction, clamped at zero."""
        if batch.num_tokens == 0:
            return 0.0
        return max(0.0, self._raw_s(batch))

    def decode_steps_s(self, num_seqs: int, ctx_tokens: int, num_steps: int) -> Seconds:
        """Exact sum: the bin is fixed (tokens do not change), the line clamped at 0."""
        if num_steps <= 0 or num_seqs <= 0:
            return 0.0
        first = self._raw_s(Batch(num_decode_seqs=num_seqs, decode_ctx_tokens=ctx_tokens))
        second = self._raw_s(
            Batch(num_decode_seqs=num_seqs, decode_ctx_tokens=ctx_tokens + num_seqs)
        )
        return sum_max_affine(first, second - first, 0.0, 0.0, num_steps)


def _features(batch: Batch) -> npt.NDArray[np.float64]:
    """Niyama's regressors: 1, tokens, prefill, decode tokens, decode ctx, prefill ctx."""
    return np.array(
        [
            1.0,
            batch.num_tokens,
            batch.prefill_tokens,
            batch.num_decode_seqs,
            batch.decode_ctx_tokens,
            batch.prefill_ctx_tokens,
        ]
    )


def fit_binned_linear(
    samples: Sequence[tuple[Batch, float]], bin_edges: Sequence[float]
) -> BinnedLinear:
    """Least-squares fit of :class:`BinnedLinear` to ``(batch, seconds)`` samples.

    Each bin is fitted on its own samples (minimum-norm solution, so collinear
    regressors are fine); a bin with fewer than 6 samples takes the fit over all
    samples instead.
    """
    if len(samples) < NUM_BINNED_COEFFS:
        raise ConfigError(
            f"fit_binned_linear needs at least {NUM_BINNED_COEFFS} samples", value=len(samples)
        )
    x = np.stack([_features(b) for b, _ in samples])
    y = np.array([t for _, t in samples], dtype=float)
    edges = np.asarray(bin_edges, dtype=float)
    bins = np.searchsorted(edges, x[:, 1], side="left")
    overall = np.linalg.lstsq(x, y, rcond=None)[0]
    coeffs = np.tile(overall, (len(edges) + 1, 1))
    for ix in range(len(edges) + 1):
        rows = bins == ix
        if np.count_nonzero(rows) >= NUM_BINNED_COEFFS:
            coeffs[ix] = np.linalg.lstsq(x[rows], y[rows], rcond=None)[0]
    return BinnedLinear(list(edges), coeffs)


def _check_non_negative(**values: float) -> None:
    for name, value in values.items():
        if value < 0.0:
            raise ConfigError(f"{name} must be >= 0 (milliseconds)", value=value)
