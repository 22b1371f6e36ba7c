"""The autoscaler's books: each instance's state, the time series and the GPU-time paid.

States: ``down`` (not provisioned, not paid), ``starting`` (provisioning and loading the
model, paid, not serving), ``up`` (serving: in the router's view), ``draining`` (out of the
view, finishing what it holds), ``warming`` (being provisioned for the warm pool) and
``warm`` (provisioned, idle). Every state but ``down`` is paid.

Time to recover: from the first reading that wanted more instances than were serving to
the moment as many serve as the latest reading wanted (one episode each; an episode still
open when the run ends is counted in ``num_unrecovered``).
"""

from __future__ import annotations

from collections import Counter

from sincere.core.types import Seconds

DOWN, STARTING, UP, DRAINING, WARMING, WARM = (
    "down", "starting", "up", "draining", "warming", "warm",
)  # fmt: skip
_PAID = (STARTING, UP, DRAINING, WARMING, WARM)


class FleetBook:
    """States of the scaled group's engines, and what the summary reports of them."""

    def __init__(self, engines: tuple[int, ...], num_gpus: int, warm_pool: int) -> None:
        self.engines = engines
        self.num_gpus = num_gpus
        self.warm_pool = warm_pool
        self.state: dict[int, str] = {}
        self.counts: Counter[str] = Counter()
        self.up_at: dict[int, Seconds] = {e: 0.0 for e in engines}  # when each last joined
        self.paid_s = 0.0  # instance-seconds paid up to ``last_at``
        self.paid_by = dict.fromkeys(engines, 0.0)  # each engine's share of ``paid_s``
        self.last_at = 0.0
        self.desired = 0  # the latest reading's count wanted
        self.short_since: Seconds | None = None  # open time-to-recover episode
        self.recoveries: list[Seconds] = []
        self.num_scale_ups = self.num_scale_downs = 0  # decisions that started / stopped
        self.num_started = self.num_stopped = 0  # instances
        self.max_up = 0
        self.timeline: dict[str, list[float]] = {
            "at_s": [], "up": [], "provisioning": [], "warm": [], "desired": [],
        }  # fmt: skip

    def count(self, state: str) -> int:
        """Instances in ``state``."""
        return self.counts[state]

    def of(self, state: str) -> list[int]:
        """Engines in ``state``, by index."""
        return [e for e in self.engines if self.state.get(e) == state]

    def set(self, e: int, state: str, at: Seconds, up_at: Seconds | None = None) -> None:
        """Engine ``e`` enters ``state`` at ``at`` (the paid time integrated up to then)."""
        self._pay_until(at)
        old = self.state.get(e)
        if old is not None:
            self.counts[old] -= 1
        self.state[e] = state
        self.counts[state] += 1
        if up_at is not None:
            self.up_at[e] = up_at
        self.max_up = max(self.max_up, self.counts[UP])
        self._check_recovered(at)

    def want(self, desired: int, at: Seconds) -> None:
        """A reading at ``at`` wanted ``desired`` instances."""
        self.desired = desired
        if self.short_since is None and desired > self.counts[UP]:
            self.short_since = at
        self._check_recovered(at)

    def note(self, at: Seconds) -> None:
        """One row of the time series at ``at`` (a later row at the same time replaces it)."""
        row = (
            at, self.counts[UP], self.counts[STARTING],
            self.counts[WARM] + self.counts[WARMING], self.desired,
        )  # fmt: skip
        columns = list(self.timeline.values())
        if columns[0] and columns[0][-1] == at:
            for column in columns:
                column.pop()
        for column, value in zip(columns, row, strict=True):
            column.append(float(value) if column is columns[0] else value)

    def summary(self, end_at: Seconds, settings: dict[str, object]) -> dict[str, object]:
        """The ``autoscaling`` block: settings, counts, GPU-hours, recoveries, time series."""
        self._pay_until(end_at)
        rec = self.recoveries
        return {
            **settings,
            "num_scale_ups": self.num_scale_ups,
            "num_scale_downs": self.num_scale_downs,
            "num_instances_started": self.num_started,
            "num_instances_stopped": self.num_stopped,
            "max_instances_up": self.max_up,
            "instance_hours": self.paid_s / 3600.0,
            "gpu_hours": self.paid_s * self.num_gpus / 3600.0,
            "time_to_recover_s": {
                "count": len(rec),
                "mean": sum(rec) / len(rec) if rec else None,
                "max": max(rec) if rec else None,
            },
            "num_unrecovered": 0 if self.short_since is None else 1,
            "timeline": self.timeline,
        }

    def _pay_until(self, at: Seconds) -> None:
        if at > self.last_at:
            paid = sum(self.counts[s] for s in _PAID)
            self.paid_s += paid * (at - self.last_at)
            for e, state in self.state.items():
                if state in _PAID:
                    self.paid_by[e] += at - self.last_at
            self.last_at = at

    def _check_recovered(self, at: Seconds) -> None:
        if self.short_since is not None and self.counts[UP] >= self.desired:
            self.recoveries.append(at - self.short_since)
            self.short_since = None
