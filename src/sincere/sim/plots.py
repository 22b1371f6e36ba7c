"""One figure of a simulation run: latency distributions and the system over time.

``plot_run(requests, records, path)`` writes a four-panel PNG:

* TTFT and E2E CDFs per tier (log time axis), with each tier's TTFT / TTLT target;
* requests in the system and requests waiting for their first scheduling, over time;
* TTFT of every request against its arrival time (a sample of 20,000 at most), with
  the p50 and p99 of time bins, coloured by instance when there are at most 10.

The two counts come from the request records alone (:func:`occupancy`): a request is
in the system from its arrival to its finish and waiting from its arrival to its first
scheduling. A rejected request leaves at its arrival (the simulator rejects at routing
or admission, so it spends no time in the system).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sincere.core.records import RecordArrays, latencies
from sincere.core.request import RequestArrays

FloatArray = npt.NDArray[np.float64]
MAX_POINTS = 20_000  # TTFT scatter sample
MAX_INSTANCE_COLOURS = 10


@dataclass(frozen=True)
class Occupancy:
    """Requests in the system and waiting, as step functions of time.

    ``in_system[k]`` and ``waiting[k]`` hold on ``[times[k], times[k + 1])``; the last
    values hold after the last event (0 when every request has left).
    """

    times: FloatArray
    in_system: npt.NDArray[np.int64]
    waiting: npt.NDArray[np.int64]

    def time_average_in_system(self, end_at: float) -> float:
        """Mean number of requests in the system over ``[0, end_at]`` (exact)."""
        return _time_average(self.times, self.in_system, end_at)


def _time_average(times: FloatArray, counts: npt.NDArray[np.int64], end_at: float) -> float:
    if end_at <= 0 or len(times) == 0:
        return 0.0
    edges = np.minimum(np.append(times, end_at), end_at)
    return float(np.sum(counts * np.diff(edges))) / end_at


def _step(starts: FloatArray, ends: FloatArray) -> tuple[FloatArray, npt.NDArray[np.int64]]:
    """Event times and the number of intervals ``[start, end)`` covering each time."""
    times = np.concatenate([starts, ends])
    deltas = np.concatenate([np.ones(len(starts), np.int64), -np.ones(len(ends), np.int64)])
    order = np.argsort(times, kind="stable")
    times, counts = times[order], np.cumsum(deltas[order])
    last = np.flatnonzero(np.append(np.diff(times) > 0, True))  # one value per distinct time
    return times[last], counts[last]


def occupancy(requests: RequestArrays, records: RecordArrays) -> Occupancy:
    """Requests in the system and waiting over time, from the records."""
    arrival = requests.arrival_at
    done = ~np.isnan(records.finished_at) & ~records.rejected
    leave = np.where(done, records.finished_at, arrival)
    scheduled = np.where(np.isnan(records.first_scheduled_at), leave, records.first_scheduled_at)
    sys_times, in_system = _step(arrival, leave)
    wait_times, waiting = _step(arrival, np.maximum(scheduled, arrival))
    times = np.union1d(sys_times, wait_times)
    return Occupancy(times, _at(times, sys_times, in_system), _at(times, wait_times, waiting))


def _at(
    grid: FloatArray, times: FloatArray, counts: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """The step function (``times``, ``counts``) evaluated at ``grid`` (0 before it starts)."""
    k = np.searchsorted(times, grid, side="right") - 1
    return np.where(k >= 0, counts[np.maximum(k, 0)], 0)


def plot_run(
    requests: RequestArrays, records: RecordArrays, path: str | Path, title: str = "simulation"
) -> Path:
    """Write the run's four-panel PNG to ``path``; return the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lat = latencies(requests, records)
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), constrained_layout=True)
    _plot_cdfs(axes[0, 0], requests, lat["ttft_s"], "TTFT", "ttft_s")
    _plot_cdfs(axes[0, 1], requests, lat["e2e_s"], "E2E", "ttlt_s")
    _plot_occupancy(axes[1, 0], occupancy(requests, records))
    _plot_ttft_over_time(axes[1, 1], requests, records, lat["ttft_s"])
    done = int(np.sum(~np.isnan(records.finished_at) & ~records.rejected))
    fig.suptitle(
        f"{title}: {len(requests):,} requests, {done:,} completed, "
        f"{int(records.rejected.sum()):,} rejected",
        fontsize=12,
    )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _plot_cdfs(
    ax: Any, requests: RequestArrays, values: FloatArray, label: str, target: str
) -> None:
    colours = _colours(len(requests.tiers))
    targets = False
    for t, tier in enumerate(requests.tiers):
        x = np.sort(values[(requests.tier == t) & ~np.isnan(values)])
        if len(x) == 0:
            continue
        y = np.arange(1, len(x) + 1) / len(x)
        name = tier.name if len(requests.tiers) > 1 else "all requests"
        ax.step(x, y, where="post", color=colours[t], lw=1.4, label=f"{name} (n={len(x):,})")
        goal = getattr(tier, target)
        if goal is not None:
            ax.axvline(goal, color=colours[t], ls="--", lw=1)
            targets = True
    ax.set_xscale("log")
    note = "; dashed: tier target" if targets else ""
    ax.set(xlabel=f"{label} (s, log scale{note})", ylabel="fraction of requests")
    ax.set_title(f"{label} distribution")
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3, which="both")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", frameon=False, fontsize=8)


def _plot_occupancy(ax: Any, occ: Occupancy) -> None:
    ax.step(occ.times, occ.in_system, where="post", color="tab:blue", lw=1, label="in the system")
    ax.step(occ.times, occ.waiting, where="post", color="tab:red", lw=1, label="waiting")
    ax.set(xlabel="time (s)", ylabel="requests", title="requests in the system over time")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", framealpha=0.85)


def _plot_ttft_over_time(
    ax: Any, requests: RequestArrays, records: RecordArrays, ttft: FloatArray
) -> None:
    ok = np.flatnonzero(~np.isnan(ttft) & (ttft > 0))
    ax.set(xlabel="arrival time (s)", ylabel="TTFT (s, log scale)", title="TTFT by arrival time")
    ax.grid(alpha=0.3, which="both")
    if len(ok) == 0:
        return
    sample = ok if len(ok) <= MAX_POINTS else ok[:: -(-len(ok) // MAX_POINTS)]  # every k-th
    arrival = requests.arrival_at
    instance = records.instance[sample]
    names = records.instances
    if 1 < len(names) <= MAX_INSTANCE_COLOURS:
        colours = _colours(len(names))
        for e, name in enumerate(names):
            sel = sample[instance == e]
            ax.scatter(arrival[sel], ttft[sel], s=3, alpha=0.4, color=colours[e], label=name)
    else:
        ax.scatter(arrival[sample], ttft[sample], s=3, alpha=0.3, color="tab:gray")
    edges = np.linspace(float(arrival[ok].min()), float(arrival[ok].max()) + 1e-9, 41)
    bins = np.digitize(arrival[ok], edges) - 1
    mids, p50, p99 = [], [], []
    for b in range(len(edges) - 1):
        values = ttft[ok][bins == b]
        if len(values):
            mids.append((edges[b] + edges[b + 1]) / 2)
            p50.append(float(np.percentile(values, 50)))
            p99.append(float(np.percentile(values, 99)))
    ax.plot(mids, p50, color="k", lw=1.5, label="p50 per bin")
    ax.plot(mids, p99, color="k", lw=1.5, ls="--", label="p99 per bin")
    ax.set_yscale("log")
    ax.legend(loc="upper left", framealpha=0.85, fontsize=8, markerscale=3)


def _colours(n: int) -> list[Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return [cmap(k % 10) for k in range(max(n, 1))]


def plot_autoscaling(
    timeline: dict[str, list[float]], occ: Occupancy, path: str | Path, title: str = "simulation"
) -> Path:
    """Write the autoscaled group's figure to ``path``: instances serving, starting and
    wanted over time (the summary's ``autoscaling.timeline``), against the requests in the
    system and waiting; return the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 4.5), constrained_layout=True)
    at = timeline["at_s"]
    ax.step(at, timeline["up"], where="post", color="tab:green", lw=2, label="serving")
    ax.step(at, timeline["provisioning"], where="post", color="tab:orange", lw=1.5,
            label="starting")  # fmt: skip
    ax.step(at, timeline["desired"], where="post", color="black", lw=1, ls="--", label="wanted")
    ax.set(xlabel="time (s)", ylabel="instances", title=f"{title}: autoscaling")
    ax.grid(alpha=0.3)
    load = ax.twinx()
    load.step(occ.times, occ.in_system, where="post", color="tab:blue", lw=0.8, alpha=0.6,
              label="requests in the system")  # fmt: skip
    load.step(occ.times, occ.waiting, where="post", color="tab:red", lw=0.8, alpha=0.6,
              label="requests waiting")  # fmt: skip
    load.set_ylabel("requests")
    lines = ax.get_legend_handles_labels()
    more = load.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left", framealpha=0.85)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
