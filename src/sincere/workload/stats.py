"""Summary statistics and a one-page plot of a request trace (``sincere trace stats``).

Rate = (n - 1) / (last - first arrival); CV = std / mean of inter-arrival times (1 for
Poisson, > 1 bursty, 0 constant); length percentiles use linear interpolation. The plot
(matplotlib, Agg backend) has four panels: arrival rate over time, the inter-arrival
histogram against the exponential of the same mean, and the prompt and output length
histograms on log-spaced bins.

Prefix reuse (traces whose requests carry block ids, e.g. Mooncake's ``hash_ids``):
``prefix_reuse_ratio`` is the fraction of prompt tokens lying in *leading* blocks already
seen in an earlier request, in arrival order -- the hit rate of an unbounded prefix cache.
A block counts with its tokens (a prompt's last block may be partial); the walk stops at
a prompt's first unseen block; tokens beyond the blocks the ids cover count as new. The
reuse curve is the same ratio for an LRU cache holding a bounded number of blocks (each
request's blocks are touched after its lookup, its tail last).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sincere.core.prefix import chain_keys
from sincere.core.request import RequestArrays

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class LengthStats:
    """Mean and percentiles of a token-count column."""

    mean: float
    p50: float
    p90: float
    p99: float
    max: int

    @classmethod
    def of(cls, x: IntArray) -> LengthStats:
        """Statistics of ``x`` (NaN for an empty column)."""
        if len(x) == 0:
            return cls(float("nan"), float("nan"), float("nan"), float("nan"), 0)
        p50, p90, p99 = np.percentile(x, [50, 90, 99])
        return cls(float(x.mean()), float(p50), float(p90), float(p99), int(x.max()))


@dataclass(frozen=True, slots=True)
class TraceStats:
    """What a trace looks like: size, rate, burstiness, lengths, model shares."""

    num_requests: int
    duration_s: float  # first to last arrival
    mean_rate: float  # requests per second
    cv_interarrival: float  # std / mean of gaps
    prompt: LengthStats
    output: LengthStats
    num_per_model: dict[str, int]
    prefix_reuse_ratio: float | None = None  # unbounded cache's hit rate; None: no block ids
    reuse_curve: tuple[ReusePoint, ...] = ()  # hit rate against LRU cache capacity

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (the prefix fields only when the trace has block ids)."""
        out = asdict(self)
        if self.prefix_reuse_ratio is None:
            del out["prefix_reuse_ratio"], out["reuse_curve"]
        return out


@dataclass(frozen=True, slots=True)
class ReusePoint:
    """Prefix reuse of an LRU cache of ``capacity_blocks`` blocks of the trace's size."""

    capacity_blocks: int
    capacity_tokens: int
    hit_rate: float


CURVE_FRACTIONS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
"""Cache capacities of the reuse curve, as fractions of the trace's distinct blocks."""


def _prompt_keys(requests: RequestArrays) -> list[tuple[int, ...]]:
    return [chain_keys(ids) for ids in requests.block_ids]


def _block_tokens(prompt: int, num_keys: int, block: int) -> list[int]:
    """Tokens in each of a prompt's first ``num_keys`` blocks (the last may be partial)."""
    return [min(block, prompt - j * block) for j in range(num_keys)]


def prefix_reuse(requests: RequestArrays, capacity_blocks: int | None = None) -> float:
    """Fraction of prompt tokens in leading blocks an earlier request had (module docstring).

    ``capacity_blocks`` bounds the cache (LRU over blocks); ``None``: unbounded.
    """
    return _reuse(_prompt_keys(requests), requests, capacity_blocks)


def _reuse(keys_per: list[tuple[int, ...]], requests: RequestArrays, capacity: int | None) -> float:
    block = requests.block_tokens
    prompts = requests.prompt_tokens.tolist()
    total = sum(prompts)
    if total == 0:
        return 0.0
    cache: OrderedDict[int, None] = OrderedDict()
    reused = 0
    for keys, prompt in zip(keys_per, prompts, strict=True):
        sizes = _block_tokens(prompt, len(keys), block)
        for key, size in zip(keys, sizes, strict=True):
            if key not in cache:
                break
            reused += size
        for key in keys:
            cache[key] = None
            cache.move_to_end(key)
        if capacity is not None:
            while len(cache) > capacity:
                cache.popitem(last=False)
    return float(reused / total)


def reuse_curve(requests: RequestArrays) -> tuple[ReusePoint, ...]:
    """Prefix reuse at :data:`CURVE_FRACTIONS` of the distinct blocks, as LRU capacities."""
    keys_per = _prompt_keys(requests)
    distinct = len({k for keys in keys_per for k in keys})
    points = []
    for frac in CURVE_FRACTIONS:
        cap = max(1, round(frac * distinct))
        rate = _reuse(keys_per, requests, None if frac >= 1.0 else cap)
        points.append(ReusePoint(cap, cap * requests.block_tokens, rate))
    return tuple(points)


def trace_stats(requests: RequestArrays) -> TraceStats:
    """Statistics of ``requests``."""
    t = requests.arrival_at
    gaps = np.diff(t)
    duration = float(t[-1] - t[0]) if len(t) else 0.0
    rate = (len(t) - 1) / duration if duration > 0 else float("nan")
    mean_gap = float(gaps.mean()) if len(gaps) else float("nan")
    cv = float(gaps.std() / mean_gap) if len(gaps) > 1 and mean_gap > 0 else float("nan")
    counts = np.bincount(requests.model, minlength=len(requests.models))
    with_ids = any(len(ids) for ids in requests.block_ids)
    return TraceStats(
        num_requests=len(t),
        duration_s=duration,
        mean_rate=rate,
        cv_interarrival=cv,
        prompt=LengthStats.of(requests.prompt_tokens),
        output=LengthStats.of(requests.output_tokens),
        num_per_model={m: int(c) for m, c in zip(requests.models, counts, strict=True)},
        prefix_reuse_ratio=prefix_reuse(requests) if with_ids else None,
        reuse_curve=reuse_curve(requests) if with_ids else (),
    )


def _log_bins(x: IntArray, num: int = 50) -> npt.NDArray[np.float64]:
    hi = max(float(x.max()), 2.0)
    return np.geomspace(max(float(x.min()), 1.0), hi * 1.001, num)


def plot_trace(requests: RequestArrays, path: str | Path, title: str = "trace") -> None:
    """Write the four-panel PNG of ``requests`` to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = trace_stats(requests)
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), constrained_layout=True)
    _plot_rate(axes[0, 0], requests.arrival_at, stats)
    _plot_gaps(axes[0, 1], np.diff(requests.arrival_at), stats)
    _plot_lengths(axes[1, 0], requests.prompt_tokens, "prompt tokens", "tab:blue")
    _plot_lengths(axes[1, 1], requests.output_tokens, "output tokens", "tab:orange")
    fig.suptitle(
        f"{title}: {stats.num_requests:,} requests over {stats.duration_s:,.0f} s, "
        f"{stats.mean_rate:.2f} req/s, inter-arrival CV {stats.cv_interarrival:.2f}",
        fontsize=12,
    )
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_reuse(stats: TraceStats, path: str | Path, title: str = "trace") -> None:
    """Write the prefix-reuse curve (hit rate against LRU cache capacity) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2), constrained_layout=True)
    x = [p.capacity_tokens for p in stats.reuse_curve]
    y = [100.0 * p.hit_rate for p in stats.reuse_curve]
    ax.plot(x, y, "o-", color="tab:purple")
    ax.axhline(
        100.0 * (stats.prefix_reuse_ratio or 0.0), color="k", ls="--", lw=1, label="unbounded"
    )
    ax.set_xscale("log")
    ax.set(
        xlabel="prefix cache capacity (tokens, LRU)",
        ylabel="prompt tokens reused (%)",
        title=f"{title}: prefix reuse against cache capacity",
    )
    ax.legend(loc="lower right", frameon=False)
    ax.grid(alpha=0.3, which="both")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_rate(ax: Any, t: npt.NDArray[np.float64], stats: TraceStats) -> None:
    span = max(stats.duration_s, 1e-9)
    num_bins = int(np.clip(len(t) / 20, 10, 200))
    counts, edges = np.histogram(t, bins=num_bins, range=(float(t[0]), float(t[0]) + span))
    width = edges[1] - edges[0]
    ax.step(edges[:-1], counts / width, where="post", color="tab:blue", lw=1.2)
    ax.fill_between(edges[:-1], counts / width, step="post", alpha=0.25, color="tab:blue")
    ax.axhline(stats.mean_rate, color="k", ls="--", lw=1, label=f"mean {stats.mean_rate:.2f}")
    ax.set(
        xlabel="time (s)", ylabel="arrival rate (req/s)", title=f"arrival rate ({width:.3g} s bins)"
    )
    ax.legend(loc="upper right", frameon=False)
    ax.grid(alpha=0.3)


def _plot_gaps(ax: Any, gaps: npt.NDArray[np.float64], stats: TraceStats) -> None:
    ax.set(xlabel="inter-arrival time (s)", ylabel="density", title="inter-arrival times")
    ax.grid(alpha=0.3)
    if len(gaps) < 2 or gaps.max() <= 0:
        return
    hi = float(np.percentile(gaps, 99.5))
    density, _, _ = ax.hist(
        gaps,
        bins=60,
        range=(0, hi),
        density=True,
        color="tab:green",
        alpha=0.6,
        label=f"observed (CV {stats.cv_interarrival:.2f})",
    )
    x = np.linspace(0, hi, 200)
    mean = float(gaps.mean())
    ax.plot(x, np.exp(-x / mean) / mean, "k--", lw=1, label="Poisson, same mean")
    positive = density[density > 0]
    if len(positive):
        ax.set_ylim(bottom=float(positive.min()) / 3, top=float(positive.max()) * 3)
    ax.set_yscale("log")
    ax.legend(loc="upper right", frameon=False)


def _plot_lengths(ax: Any, x: IntArray, label: str, color: str) -> None:
    ls = LengthStats.of(x)
    ax.hist(x, bins=_log_bins(x), color=color, alpha=0.7, label=f"mean {ls.mean:,.0f}")
    ax.set_xscale("log")
    for name, q, style in (("p50", ls.p50, "-"), ("p90", ls.p90, "--"), ("p99", ls.p99, ":")):
        ax.axvline(q, color="k", ls=style, lw=1, label=f"{name} {q:,.0f}")
    ax.set(xlabel=f"{label} (log scale)", ylabel="requests", title=f"{label} (max {ls.max:,})")
    ax.legend(loc="best", frameon=False)
    ax.grid(alpha=0.3, which="both")
