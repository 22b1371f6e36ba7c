"""The live autoscaler's books: each instance's state, the scale events, the time paid.

States, as the simulator's autoscaler keeps them (:mod:`sincere.sim.autoscale_book`):
``starting`` (provisioning and loading, paid, not in routing), ``up`` (in the gateway's
routing), ``draining`` (out of routing, finishing its requests), ``warming`` (being
provisioned for the warm pool) and ``warm`` (provisioned, idle). An instance that is
down has no entry. Every entry is paid. Times are seconds since the autoscaler started.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import asdict, dataclass
from typing import Any

STARTING, UP, DRAINING, WARMING, WARM = "starting", "up", "draining", "warming", "warm"
STATES = (STARTING, UP, DRAINING, WARMING, WARM)
MAX_EVENTS = 10_000  # events kept (the oldest are dropped; ``num_events`` counts them all)


@dataclass(slots=True)
class Slot:
    """One instance the autoscaler counts (any state but down)."""

    name: str  # the instance's name in the gateway (once it serves)
    state: str  # one of STATES
    since_s: float  # when it entered ``state``
    ready_at_s: float | None = None  # starting / warming: when it is due up / warm
    up_at_s: float | None = None  # when it last joined routing (newest are stopped first)
    stoppable: bool = True  # False for an instance the autoscaler did not start


@dataclass(frozen=True, slots=True)
class ScaleEvent:
    """One thing the autoscaler did or saw, with the counts right after it."""

    at_s: float  # seconds since the autoscaler started
    # initial, scale_up, scale_down, ready, warm, stopped, start_failed, removed,
    # no_reading, error
    kind: str
    instances: tuple[str, ...]  # the instances it concerns
    desired: int  # the latest reading's count wanted
    num_up: int  # in routing after it
    num_starting: int  # starting after it
    detail: str = ""  # why (a failed start's reason, an unreadable load)


class ScaleBook:
    """The states of one model's instances and what ``GET /admin/autoscaling`` reports."""

    def __init__(self) -> None:
        self.slots: dict[str, Slot] = {}
        self.counts: Counter[str] = Counter()
        self.events: deque[ScaleEvent] = deque(maxlen=MAX_EVENTS)
        self.num_events = 0
        self.desired = 0  # the latest reading's count wanted
        self.paid_s = 0.0  # instance-seconds paid up to ``last_at_s``
        self.last_at_s = 0.0
        self.num_scale_ups = self.num_scale_downs = 0  # decisions that started / stopped
        self.num_started = self.num_stopped = 0  # instances

    def count(self, state: str) -> int:
        """Instances in ``state``."""
        return self.counts[state]

    def of(self, state: str) -> list[Slot]:
        """Instances in ``state``, in the order they entered the book."""
        return [s for s in self.slots.values() if s.state == state]

    def set(self, slot: Slot, state: str, at_s: float) -> None:
        """``slot`` enters ``state`` at ``at_s`` (added when new; paid time integrated)."""
        self._pay_until(at_s)
        old = self.slots.get(slot.name)
        if old is not None:
            self.counts[old.state] -= 1
        self.slots[slot.name] = slot
        slot.state, slot.since_s = state, at_s
        self.counts[state] += 1
        if state == UP:
            slot.up_at_s, slot.ready_at_s = at_s, None

    def drop(self, name: str, at_s: float) -> None:
        """Instance ``name`` is down: no longer counted nor paid."""
        self._pay_until(at_s)
        slot = self.slots.pop(name)
        self.counts[slot.state] -= 1

    def record(self, kind: str, at_s: float, names: tuple[str, ...] = (), detail: str = "") -> None:
        """Append one event with the counts now."""
        self.num_events += 1
        self.events.append(
            ScaleEvent(at_s, kind, names, self.desired, self.counts[UP], self.counts[STARTING],
                       detail)
        )  # fmt: skip

    def to_json(self, now_s: float, max_events: int) -> dict[str, Any]:
        """Counts, paid time, instances and the latest ``max_events`` events."""
        self._pay_until(now_s)
        return {
            "now_s": now_s,
            "desired": self.desired,
            "counts": {state: self.counts[state] for state in STATES},
            "num_scale_ups": self.num_scale_ups,
            "num_scale_downs": self.num_scale_downs,
            "num_instances_started": self.num_started,
            "num_instances_stopped": self.num_stopped,
            "instance_seconds": self.paid_s,
            "instances": [asdict(s) for s in self.slots.values()],
            "num_events": self.num_events,
            "events": [asdict(e) for e in list(self.events)[-max_events:]],
        }

    def metrics_text(self, model: str, now_s: float) -> str:
        """The book as Prometheus text (gauges per state, counters of decisions and pay)."""
        self._pay_until(now_s)
        m = _label(model)
        lines = [
            "# HELP sincere_autoscaler_instances Instances of the autoscaled model by state.",
            "# TYPE sincere_autoscaler_instances gauge",
            *(f'sincere_autoscaler_instances{{model="{m}",state="{state}"}} {self.counts[state]}'
              for state in STATES),
            "# HELP sincere_autoscaler_desired Instances the latest reading wanted.",
            "# TYPE sincere_autoscaler_desired gauge",
            f'sincere_autoscaler_desired{{model="{m}"}} {self.desired}',
            "# HELP sincere_autoscaler_decisions_total Scale decisions that started or stopped.",
            "# TYPE sincere_autoscaler_decisions_total counter",
            f'sincere_autoscaler_decisions_total{{model="{m}",direction="up"}} '
            f"{self.num_scale_ups}",
            f'sincere_autoscaler_decisions_total{{model="{m}",direction="down"}} '
            f"{self.num_scale_downs}",
            "# HELP sincere_autoscaler_instance_seconds_total Instance-seconds paid.",
            "# TYPE sincere_autoscaler_instance_seconds_total counter",
            f'sincere_autoscaler_instance_seconds_total{{model="{m}"}} {self.paid_s:.6f}',
        ]  # fmt: skip
        return "\n".join(lines) + "\n"

    def _pay_until(self, at_s: float) -> None:
        if at_s > self.last_at_s:
            self.paid_s += len(self.slots) * (at_s - self.last_at_s)
            self.last_at_s = at_s


def _label(value: str) -> str:
    """A Prometheus label value, escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
