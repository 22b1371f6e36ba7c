"""The instance views a simulated cluster hands its front door, cached per engine.

An engine's load only changes when the event loop adds a request to it, advances it or
drains it, and the loop says so (:meth:`~sincere.sim.cluster.Cluster.touched` marks the
engine's view stale), so at an arrival only the stale views are rebuilt and the router
gets the same snapshot objects as before for the others. With ``load_blind`` views show
the load unknown and differ only by the outstanding count: one view per engine and count
is kept. With ``exact_tokens`` a view is moved on by the decode iterations of a
closed-form run ended by the time it is read
(:meth:`~sincere.engine.base.Engine.progress_until`), and the moved view is kept for the
span of time that progress holds for.
"""

from __future__ import annotations

from collections.abc import Sequence

from sincere.core.types import Seconds
from sincere.engine.base import Engine
from sincere.engine.instance import InstanceInfo, advanced_view, instance_view
from sincere.policy.router_base import InstanceView


class EngineViews:
    """Every engine's view as of its last event, rebuilt only for engines touched since.

    ``outstanding`` is the cluster's list of requests routed to each engine and not yet
    finished (read, never written, here).
    """

    def __init__(
        self,
        engines: Sequence[Engine],
        infos: Sequence[InstanceInfo],
        outstanding: list[int],
        *,
        load_blind: bool,
        exact_tokens: bool,
    ) -> None:
        self.engines, self.infos, self.outstanding = engines, infos, outstanding
        self.load_blind, self.exact_tokens = load_blind, exact_tokens
        num = len(engines)
        self.all_engines = list(range(num))
        self.cached: list[InstanceView] = []  # every engine's view (built on first use)
        self.stale: set[int] = set(range(num))  # engines whose view must be rebuilt
        # load-blind views differ only by the outstanding count: each engine's, by count
        self._blind: list[dict[int, InstanceView]] = [{} for _ in range(num)]
        # per engine, with ``exact_tokens``: its view as of its last event, the span of
        # time [from, until) its decode progress holds for, and the view moved on by it
        self.moved: list[tuple[InstanceView, float, float, InstanceView] | None] = [None] * num

    def view(self, e: int) -> InstanceView:
        """Engine ``e``'s view as of its last event."""
        if self.stale:
            self.refresh()
        return self.cached[e]

    def refresh(self) -> None:
        """Rebuild the stale views (the first call builds them all)."""
        views, stale = self.cached, self.stale
        if not views:
            views.extend(self.fresh(e) for e in self.all_engines)
        else:
            for e in stale:
                views[e] = self.fresh(e)
        stale.clear()

    def at(self, choices: list[int], now: Seconds) -> list[InstanceView]:
        """The views of ``choices`` at ``now``: a fresh list the front door may keep, its
        token counts moved on by decode runs in flight when the front door reads them."""
        if self.stale:
            self.refresh()
        cached = self.cached
        views = cached.copy() if choices == self.all_engines else [cached[e] for e in choices]
        if self.exact_tokens:
            self.move_on(views, choices, now)
        return views

    def move_on(self, views: list[InstanceView], choices: list[int], now: Seconds) -> None:
        """Move ``views`` (of ``choices``, as of their engines' last events) on by the decode
        iterations ended by ``now``. Each engine's moved view is kept with the span of time
        it holds for (:meth:`~sincere.engine.base.Engine.progress_until`) and its view as
        of the last event; it is reused while both are unchanged, so an arrival asks only
        the engines that had an event, took a request or ended a decode iteration since."""
        engines, moved = self.engines, self.moved
        for k, e in enumerate(choices):
            base = views[k]
            kept = moved[e]
            if kept is not None and kept[0] is base and kept[1] <= now < kept[2]:
                views[k] = kept[3]
                continue
            progress, until = engines[e].progress_until(now)
            view = base if progress is None else advanced_view(base, progress)
            moved[e] = (base, now, until, view)
            views[k] = view

    def fresh(self, e: int) -> InstanceView:
        """Engine ``e``'s view built now (views are immutable: load-blind ones are kept)."""
        if self.load_blind:
            num = self.outstanding[e]
            known = self._blind[e]
            view = known.get(num)
            if view is None:
                view = known[num] = instance_view(self.infos[e], None, num)
            return view
        return instance_view(self.infos[e], self.engines[e].load(), self.outstanding[e])
