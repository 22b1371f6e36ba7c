"""Timed features that plug into the simulator's one event loop.

The loop (:mod:`sincere.sim.runner`) knows two kinds of events: a request's arrival and an
engine's wake-up. A feature with timing of its own (prefill/decode disaggregation's KV
transfers, :mod:`sincere.sim.disagg`) is an :class:`Extension`: at :meth:`~Extension.attach`
it declares its own event kinds, each with a priority and a handler, and from then on it
schedules events of those kinds on the loop's queue through :class:`Sim`. It may also take
arrivals over (route a request itself) and see what every engine wake-up finished. It
never pops the queue, integrates time or drains engines: the loop keeps those books, once.

Every hook has a no-op default, so an extension overrides only what it uses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from sincere.core.types import Seconds
from sincere.sim.cluster import Cluster
from sincere.sim.plan import ExtensionNeeds

Handler = Callable[[int, Seconds], None]
"""An event kind's handler: ``(index, at)``."""


class Sim(Protocol):
    """What an extension may do to the running loop."""

    cluster: Cluster

    def add_kind(self, priority: int, handler: Handler) -> int:
        """A new event kind (its number), handled by ``handler``; at one time, a smaller
        ``priority`` comes first (arrivals are 0, engine wake-ups 1)."""
        ...

    def schedule(self, at: Seconds, kind: int, index: int) -> None:
        """Put an event of ``kind`` about ``index`` on the queue at ``at``."""
        ...

    def place(self, e: int, i: int, at: Seconds) -> None:
        """Give request ``i`` to engine ``e`` now (counted outstanding there)."""
        ...

    def turn_away(self, i: int, at: Seconds) -> None:
        """Request ``i`` left the system at its arrival (rejected, already recorded)."""
        ...

    def reschedule(self, e: int) -> None:
        """Engine ``e`` was given work: wake it when it next needs to."""
        ...


class Extension:
    """A timed feature of the simulator; every hook is a no-op by default."""

    @property
    def needs(self) -> ExtensionNeeds:
        """What the extension reads of the cluster and does to it, which the run's
        shortcuts follow (:mod:`sincere.sim.plan`). Default: everything (safe)."""
        return ExtensionNeeds()

    def attach(self, sim: Sim) -> None:
        """The loop is about to run: declare event kinds (:meth:`Sim.add_kind`)."""

    def arrive(self, i: int, at: Seconds) -> bool:
        """Request ``i`` arrives (counted in the system): whether the extension dealt with
        it (placed it or turned it away); otherwise the cluster's front door routes it."""
        return False

    def advanced(self, e: int, at: Seconds, done: list[int]) -> list[int]:
        """Engine ``e`` advanced to ``at`` and returned ``done``: those of them that leave
        the system (the others, kept by the extension, are no longer outstanding at
        ``e``: the extension says so to the cluster)."""
        return done

    def report(self, summary: dict[str, Any], end_at: Seconds) -> None:
        """Add the extension's blocks to the run's ``summary`` (and correct what it changes
        of the others), the run having ended at ``end_at``. Default: nothing."""
