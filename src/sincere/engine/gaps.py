"""Inter-token latency (ITL) gaps, kept as a fine log-spaced histogram.

vLLM's ITL is every gap between two streamed tokens of a request. A simulated
iteration that decodes ``n`` sequences and lasts ``d`` seconds contributes ``n``
gaps of ``d``; a closed-form run of ``k`` decode iterations contributes ``n`` gaps
of each of its ``k`` durations, which grow affinely (``first + j * slope``). A
preempted sequence contributes one gap from its last token before preemption to
the token that ends its recompute. Storing every gap would cost memory linear in
tokens, so runs are buffered and binned in bulk with NumPy.

Resolution: ``bins_per_decade`` log-spaced bins between ``low_s`` and ``high_s``
(defaults 200 per decade, 1 µs to 1e5 s: adjacent edges differ by 1.16 %). A
percentile is read by log-linear interpolation inside its bin, so it is within one
bin width (about ±1.2 %) of the exact value; count and mean are exact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

_FLUSH_AT = 1 << 16  # buffered runs before binning


class GapHistogram:
    """Weighted token gaps: exact count and mean, percentiles from log bins."""

    def __init__(
        self, bins_per_decade: int = 200, low_s: float = 1e-6, high_s: float = 1e5
    ) -> None:
        self.bins_per_decade = bins_per_decade
        self.low_s = low_s
        self.num_bins = math.ceil(math.log10(high_s / low_s) * bins_per_decade)
        self.counts = np.zeros(self.num_bins, dtype=np.float64)
        self.count = 0.0  # gaps (weights) added
        self.total_s = 0.0  # summed gap durations
        self._runs: list[tuple[float, float, int, float]] = []  # (first, slope, steps, weight)
        self._gaps: list[float] = []  # single gaps, binned in bulk
        self._weights: list[float] = []  # their weights

    def add_run(
        self, first_s: float, slope_s: float, num_steps: int, weight: float, total_s: float
    ) -> None:
        """``num_steps`` iterations lasting ``first_s + j*slope_s``, ``weight`` gaps each.

        ``total_s`` is the run's exact duration (keeps the mean exact).
        """
        self.count += weight * num_steps
        self.total_s += weight * total_s
        if num_steps == 1:
            self._gaps.append(first_s)
            self._weights.append(weight)
            if len(self._gaps) >= _FLUSH_AT:
                self.flush()
            return
        runs = self._runs
        runs.append((first_s, slope_s, num_steps, weight))
        if len(runs) >= _FLUSH_AT:
            self.flush()

    def add_each(self, gaps_s: Sequence[float], weight: float, total_s: float) -> None:
        """One gap of each duration in ``gaps_s``, ``weight`` times; ``total_s`` their sum."""
        num = len(gaps_s)
        self.count += weight * num
        self.total_s += weight * total_s
        if num == 1:
            self._gaps.append(gaps_s[0])
            self._weights.append(weight)
        else:
            self._gaps.extend(gaps_s)
            self._weights.extend([weight] * num)
        if len(self._gaps) >= _FLUSH_AT:
            self.flush()

    def add_each_apart(self, gaps_s: Sequence[float], weight: float, start_s: float) -> None:
        """As :meth:`add_each` for iterations that began at ``start_s`` and followed each
        other, the total summed one iteration at a time (``(at + gap) - at``): the very
        float sums one :meth:`add_each` call per iteration would give."""
        at = start_s
        count, total = self.count, self.total_s
        for gap in gaps_s:
            stop = at + gap
            count += weight
            total += weight * (stop - at)
            at = stop
        self.count, self.total_s = count, total
        self._gaps.extend(gaps_s)
        self._weights.extend([weight] * len(gaps_s))
        if len(self._gaps) >= _FLUSH_AT:
            self.flush()

    def add(self, gap_s: float, weight: float = 1.0) -> None:
        """One gap (or ``weight`` equal gaps)."""
        self.add_run(gap_s, 0.0, 1, weight, gap_s)

    def flush(self) -> None:
        """Bin the buffered gaps and runs."""
        if self._gaps:
            gaps = np.asarray(self._gaps, dtype=np.float64)
            weights = np.asarray(self._weights, dtype=np.float64)
            self.counts += np.bincount(self._bin(gaps), weights=weights, minlength=self.num_bins)
            self._gaps, self._weights = [], []
        if not self._runs:
            return
        table = np.array(self._runs, dtype=np.float64)
        first, slope, weight = table[:, 0], table[:, 1], table[:, 3]
        steps = table[:, 2].astype(np.int64)
        starts = np.repeat(np.cumsum(steps) - steps, steps)
        j = np.arange(int(steps.sum()), dtype=np.float64) - starts
        gaps = np.repeat(first, steps) + j * np.repeat(slope, steps)
        weights = np.repeat(weight, steps)
        self.counts += np.bincount(self._bin(gaps), weights=weights, minlength=self.num_bins)
        self._runs = []

    def merge(self, other: GapHistogram) -> None:
        """Add ``other``'s gaps (same binning) into this histogram."""
        other.flush()
        self.flush()
        self.counts += other.counts
        self.count += other.count
        self.total_s += other.total_s

    @property
    def mean_s(self) -> float:
        """Exact mean gap (NaN when empty)."""
        return self.total_s / self.count if self.count else math.nan

    def quantile(self, q: float) -> float:
        """The ``q`` quantile (0..1), interpolated inside its bin (NaN when empty)."""
        self.flush()
        cum = np.cumsum(self.counts)
        if cum[-1] <= 0:
            return math.nan
        target = q * cum[-1]
        b = int(np.searchsorted(cum, target, side="left"))
        b = min(b, self.num_bins - 1)
        below = cum[b - 1] if b else 0.0
        frac = (target - below) / self.counts[b] if self.counts[b] else 0.0
        return float(self.low_s * 10 ** ((b + frac) / self.bins_per_decade))

    def _bin(self, gaps: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        pos = np.log10(np.maximum(gaps, self.low_s) / self.low_s) * self.bins_per_decade
        return np.minimum(pos.astype(np.int64), self.num_bins - 1)
