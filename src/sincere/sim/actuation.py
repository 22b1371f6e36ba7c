"""Several models on one pool of GPU slots, actuated inside the simulated run: an extension
of the one loop, the multi-model counterpart of :mod:`sincere.sim.autoscale`.

Every ``interval_s`` the controller reads, per model, the load of its serving slots plus
its requests held (below) and asks the autoscaler's rule (:func:`desired_count`) how many
slots it wants; under ``swap`` and ``sleep`` a model with no load at all wants none, and
before that a serving slot *idle* at the reading (nothing held, its last request finished
``idle_s`` ago or more) is stopped at once. More wanted: slots are brought in at once,
taken in this order (:meth:`PoolRule._pick <sincere.sim.actuation_rule.PoolRule._pick>`,
:meth:`Slots.pick <sincere.sim.actuation_slots.Slots.pick>`):

1. (``swap``, ``sleep``) an *empty* slot (provisioned, no model awake), one where the model
   sleeps first (``sleep``: ready after ``wake_s``; otherwise after ``load_s``);
2. (``swap``, ``sleep``) a *spare* serving slot -- its model is idle there, or holds more
   slots than it wanted at the last reading: it leaves the router's view, finishes what it
   holds, its model is discarded (``swap``) or put to sleep in host RAM (``sleep``, the
   GPUs busy ``sleep_s``), then the new model loads or wakes;
3. a *down* slot (``provisioning_s + load_s``).

``dedicated`` takes only down slots, and a slot serves one model until released: each
model scaled on its own, as the autoscaler scales one group (by its load, or under
``predictive`` by its own arrival rate's forecast). Fewer wanted (for ``cooldown_s``, as
the autoscaler's window): the model's newest slots leave the view, drain, then are down
(``dedicated``) or empty (the model discarded or put to sleep); an empty slot is released
(down) ``release_after_s`` later, its host RAM emptied -- but ``headroom_slots`` empty
ones are kept, and one taken is replaced at once by provisioning a down one empty.

A request whose model has no serving slot is held, not dropped, and a slot is brought in
for it at once when none is coming; the held requests are routed when one joins. A slot is
paid from its provisioning until it is down: starting, serving, draining and empty --
with models asleep in its host RAM or not. Event order at one time: a slot becoming ready
first (priority -1), the reading last (priority 2).

The decisions are :class:`~sincere.sim.actuation_rule.PoolRule`'s, a clock-free object the
gateway's control plane drives too (:mod:`sincere.serve.control.pool`); the
:class:`Actuator` is its hands on the simulated cluster and event queue. The summary's
``actuation`` block lists every actuation (``events``: when, what, which model and slot).
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict
from typing import Any

from sincere.core.types import Seconds
from sincere.engine.summary import fleet_cost, instance_cost
from sincere.policy.reads import Reads
from sincere.sim.actuation_rule import PoolRule
from sincere.sim.actuation_slots import PoolPlan, pool_settings
from sincere.sim.autoscale import Controller, signal_sum
from sincere.sim.autoscale_book import DRAINING, STARTING
from sincere.sim.extension import Sim
from sincere.sim.plan import ExtensionNeeds


class Actuator(Controller):
    """The pool's controller in a simulated run: :class:`PoolRule` with the cluster and
    the event queue as its hands (see the module docstring)."""

    def __init__(self, plan: PoolPlan) -> None:
        super().__init__()
        self.plan = plan
        self.scaling = plan.config.scaling
        self.rule = PoolRule(plan, self)
        self.held: list[deque[int]] = [deque() for _ in plan.models]
        self.where = {e: (g, s) for g, row in enumerate(plan.engine_of) for s, e in enumerate(row)}
        self.group_of: dict[int, int] = {}  # the requests' model index -> group

    @property
    def needs(self) -> ExtensionNeeds:
        """Routes the arrivals of models with no serving slot, and places them later."""
        reads = Reads(load=self.scaling.signal != "in_flight", tokens=False, outcomes=False)
        return ExtensionNeeds(reads=reads, routes_arrivals=True, feeds_engines=True)

    def attach(self, sim: Sim) -> None:
        """Declare the event kinds, give the slots their models, schedule the first reading."""
        self._declare_kinds(sim)
        models = self.plan.models
        names = sim.cluster.requests.models
        self.group_of = {m: models.index(n) for m, n in enumerate(names) if n in models}
        self.rule.start()
        sim.schedule(self.scaling.interval_s, self.tick_kind, 0)

    def arrive(self, i: int, at: Seconds) -> bool:
        """Hold a request of a pool model with no serving slot (bring one in if none is
        coming); the cluster routes the others."""
        self.num_arrived += 1
        g = self.group_of.get(int(self.cluster.requests.model[i]))
        if g is None or not self.rule.hold(g, at):
            return False
        self.held[g].append(i)
        return True

    def advanced(self, e: int, at: Seconds, done: list[int]) -> list[int]:
        """Note when a slot last finished a request; a draining slot whose engine holds
        nothing more is free."""
        g, s = self.where.get(e, (-1, -1))
        rule = self.rule
        if s < 0 or rule.slots.active[s] != g:
            return done
        if done:
            rule.last_done[s] = at
        if rule.book.state[s] != DRAINING:
            return done
        if self.cluster.outstanding[e] == len(done):
            rule.drained(s, at)
        return done

    def report(self, summary: dict[str, Any], end_at: Seconds) -> None:
        """The ``actuation`` block; the pool's engines cost the slot time billed to them."""
        rule = self.rule
        block = rule.book.summary(end_at, pool_settings(self.plan))
        for s in range(self.plan.config.max_slots):
            rule.bills.bill(s, rule.bills.owner[s])
        instances = summary["instances"]
        per_model = {}
        for g, row in enumerate(self.plan.engine_of):
            for e in row:
                info = self.cluster.infos[e]
                instances[info.id]["cost_usd"] = instance_cost(info, rule.bills.charged[e])
            paid = sum(rule.bills.charged[e] for e in row)
            per_model[self.plan.models[g]] = paid * self.plan.num_gpus / 3600.0
        block["gpu_hours_by_model"] = per_model
        block.update({f"num_{kind}": rule.counts[kind] for kind in _COUNTED})
        block["num_events"] = rule.num_events
        block["events"] = [asdict(event) for event in rule.events]
        summary["actuation"] = block
        summary.update(fleet_cost(instances, (summary["output_tokens_per_s"] or 0.0) * end_at))

    # ------------------------------------------------------------------ the hands

    def outstanding(self, g: int, s: int) -> int:
        """Requests model ``g``'s engine on slot ``s`` holds."""
        return int(self.cluster.outstanding[self.plan.engine_of[g][s]])

    def load(self, g: int, slots: list[int]) -> float:
        """The signal summed over model ``g``'s engines on ``slots``."""
        engines = [self.plan.engine_of[g][s] for s in slots]
        return signal_sum(self.scaling, self.cluster, engines)

    def num_held(self, g: int) -> int:
        """Requests of model ``g`` held."""
        return len(self.held[g])

    def set_routable(self, g: int, s: int, routable: bool) -> None:
        """Model ``g``'s engine on slot ``s`` joins (or leaves) the router's view."""
        self.cluster.set_routable(self.plan.engine_of[g][s], routable)

    def bring_in(self, s: int, g: int, start_at: Seconds, woke: bool) -> None:
        """Slot ``s`` is ready after the wake or the load, from ``start_at``."""
        times = self.plan.times[g]
        self.sim.schedule(start_at + (times.wake_s if woke else times.load_s), self.ready_kind, s)

    # ------------------------------------------------------------------ events

    def _tick(self, _: int, at: Seconds) -> None:
        """The rule's reading; read again while work remains."""
        self.rule.tick(at)
        if self._work_left():
            self.sim.schedule(at + self.scaling.interval_s, self.tick_kind, 0)

    def _ready(self, s: int, at: Seconds) -> None:
        """Slot ``s``'s model is awake: it joins the view and takes the held requests."""
        held = self.held[self.rule.ready(s, at)]
        while held:
            i = held.popleft()
            e = self.cluster.route(i, at)
            if e is None:
                self.sim.turn_away(i, at)
            else:
                self.sim.place(e, i, at)

    def _work_left(self) -> bool:
        """Arrivals to come, requests held, a slot starting (read again once it serves, to
        release it if unwanted), or an engine with work scheduled."""
        if self.num_arrived < len(self.cluster.requests) or any(self.held):
            return True
        if self.rule.book.count(STARTING):
            return True
        return any(engine.next_event_at() is not None for engine in self.cluster.engines)


_COUNTED = ("provisions", "loads", "wakes", "sleeps", "swaps", "releases")
