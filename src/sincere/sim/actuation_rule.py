"""The pool's controller as one clock-free object: the decisions of
:mod:`sincere.sim.actuation`, driven by the simulator and by the gateway's control plane.

:class:`PoolRule` keeps the slots' states (the :class:`FleetBook`), their models
(:class:`Slots`) and the per-model windows, and decides when a reading is taken
(:meth:`~PoolRule.tick`), when a request is held (:meth:`~PoolRule.hold`), when a slot is
ready (:meth:`~PoolRule.ready`) and when a draining slot has served its last request
(:meth:`~PoolRule.drained`). It reads loads and acts through :class:`PoolHands`: the
simulator's hands are its cluster and event queue (:class:`~sincere.sim.actuation.Actuator`),
the live ones the gateway's routing and the emulated engines' sleep routes
(:mod:`sincere.serve.control.pool`). Times are seconds from the run's (or the
controller's) start; ``at`` is always an argument. Every actuation is an :class:`Event`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Protocol

from sincere.core.types import Seconds
from sincere.sim.actuation_slots import Bills, PoolPlan, Slots
from sincere.sim.autoscale import Cooldown, desired_count, make_forecast
from sincere.sim.autoscale_book import DOWN, DRAINING, STARTING, UP, WARM, FleetBook

MAX_EVENTS = 10_000  # events a rule keeps (the oldest first; ``num_events`` counts all)


class PoolHands(Protocol):
    """What the rule reads of the engines and does to them; ``g`` a model (its group's
    index), ``s`` a slot."""

    def outstanding(self, g: int, s: int) -> int:
        """Requests model ``g``'s engine on slot ``s`` holds (routed, not finished)."""
        ...

    def load(self, g: int, slots: list[int]) -> float:
        """The scaling signal summed over model ``g``'s engines on ``slots``."""
        ...

    def num_held(self, g: int) -> int:
        """Requests of model ``g`` held until one of its slots serves."""
        ...

    def set_routable(self, g: int, s: int, routable: bool) -> None:
        """Model ``g``'s engine on slot ``s`` joins (or leaves) routing."""
        ...

    def bring_in(self, s: int, g: int, start_at: Seconds, woke: bool) -> None:
        """From ``start_at``, slot ``s`` wakes model ``g`` (``woke``: from host RAM, else it
        loads from storage); :meth:`PoolRule.ready` once it is awake."""
        ...


@dataclass(frozen=True, slots=True)
class Event:
    """One actuation of one slot."""

    at_s: Seconds  # when it was decided (a sleep: when the slot drained)
    # provision, wake, load (bring-in decided), ready (awake, in routing),
    # stop (leaves routing), sleep (to host RAM), discard (weights dropped), release
    kind: str
    model: str | None  # the model concerned (None: a release)
    slot: int


class PoolRule:
    """The controller of one pool (see :mod:`sincere.sim.actuation`)."""

    def __init__(self, plan: PoolPlan, hands: PoolHands) -> None:
        self.plan = plan
        self.cfg = plan.config
        self.scaling = plan.config.scaling
        self.hands = hands
        num_slots, num_models = plan.config.max_slots, len(plan.models)
        self.book = FleetBook(tuple(range(num_slots)), plan.num_gpus, 0)
        asleep = plan.config.max_asleep_per_slot if plan.config.policy == "sleep" else 0
        self.slots = Slots(num_slots, asleep)
        self.last_done = [0.0] * num_slots  # when each slot last finished a request
        self.wants = list(plan.initial)  # the last reading's slots wanted, per model
        self.cooldowns = [Cooldown(self.scaling.cooldown_s) for _ in range(num_models)]
        self.counts: Counter[str] = Counter()  # actuations, by kind
        self.bills = Bills(plan.engine_of, self.book.paid_by)
        self.events: list[Event] = []
        self.num_events = 0
        scaling = self.scaling  # predictive (dedicated only): each model's arrival rate
        profiles = plan.profiles or (None,) * num_models  # seasonal: one per model
        self.forecasts = [make_forecast(scaling, profile) for profile in profiles]
        self.num_arrived = [0] * num_models  # arrivals per model, ever
        self.arrived_at_tick = [0] * num_models  # ... counted at the last reading

    def start(self) -> None:
        """Time 0: the initial slots serve, each holding the other models asleep."""
        given = [g for g, num in enumerate(self.plan.initial) for _ in range(num)]
        for s in range(self.cfg.max_slots):
            g = given[s] if s < len(given) else None
            self.slots.active[s] = g
            self.book.set(s, DOWN if g is None else UP, 0.0)
            if g is not None:
                self.bills.owner[s] = self.plan.engine_of[g][s]
                others = [h for h in range(len(self.plan.models)) if h != g]
                for h in others[: self.slots.max_asleep]:
                    self.slots.put_to_sleep(s, h)
        for s in self.book.of(DOWN)[: self.cfg.headroom_slots]:
            self.book.set(s, WARM, 0.0)
            self.slots.empty_since[s] = 0.0
        for g, row in enumerate(self.plan.engine_of):
            for s in range(len(row)):
                self.hands.set_routable(g, s, self.slots.active[s] == g)
        self.book.desired = len(given)
        self.book.note(0.0)

    # ------------------------------------------------------------------ what drives it

    def hold(self, g: int, at: Seconds) -> bool:
        """A request of model ``g`` arrives: whether it is held (no slot serves ``g``);
        a slot is brought in at once when none is coming."""
        self.num_arrived[g] += 1
        if self.num(g, UP) > 0:
            return False
        if self.num_coming(g) == 0 and self._start(g, 1, at):
            self.book.num_scale_ups += 1
        return True

    def tick(self, at: Seconds) -> None:
        """Put idle slots to sleep (sharing), read every model's load, decide, act."""
        if self.cfg.shares:
            for s in self.book.of(UP):
                if self._idle(s, at):
                    self._stop(s, at)
        self.wants = [self._want(g, at) for g in range(len(self.plan.models))]
        for g, want in enumerate(self.wants):
            num = self.num(g, UP) + self.num_coming(g)
            if want > num:
                self.cooldowns[g].close()
                if self._start(g, want - num, at):
                    self.book.num_scale_ups += 1
            elif want < num:
                self._maybe_stop(g, want, at)
            else:
                self.cooldowns[g].close()
        self._release_empty(at)
        self.book.want(sum(self.wants), at)
        self.book.note(at)

    def ready(self, s: int, at: Seconds) -> int:
        """Slot ``s``'s model is awake: it joins routing (the held requests are the
        driver's to route); returns the model."""
        g = self.slots.active[s]
        assert g is not None and self.book.state[s] == STARTING
        self.book.set(s, UP, at, up_at=at)
        self.last_done[s] = at
        self.hands.set_routable(g, s, True)
        self._record(at, "ready", g, s)
        self.book.note(at)
        return g

    def drained(self, s: int, at: Seconds) -> None:
        """Slot ``s`` served its last request: its model is discarded or put to sleep, then
        the next model comes in, or the slot is empty (down, under ``dedicated``)."""
        slots, g = self.slots, self.slots.active[s]
        assert g is not None
        slots.active[s], nxt, slots.next_of[s] = None, slots.next_of[s], None
        if slots.max_asleep:
            slots.put_to_sleep(s, g)
            slots.busy_until[s] = at + self.plan.times[g].sleep_s
            self.counts["sleeps"] += 1
        self._record(at, "sleep" if slots.max_asleep else "discard", g, s)
        released = not self.cfg.shares and nxt is None
        self.book.set(s, DOWN if released else WARM, at)
        slots.empty_since[s] = None if released else at
        if nxt is not None:
            self._bring(s, nxt, at)
        self.book.note(at)

    # ------------------------------------------------------------------ deciding

    def _want(self, g: int, at: Seconds) -> int:
        """Slots model ``g`` wants (none, when sharing and it has no load); under
        ``predictive``, for its arrival rate forecast when a down slot started now serves."""
        ups = self.of(g, UP)
        num_active = len(ups) + self.num_coming(g)
        if self.scaling.policy == "predictive":
            return desired_count(self.scaling, self._forecast(g, at), len(ups), num_active)
        load = self.hands.load(g, ups) + self.hands.num_held(g)
        if self.cfg.shares and load == 0:
            return 0
        return desired_count(self.scaling, load, len(ups), num_active)

    def _forecast(self, g: int, at: Seconds) -> float:
        """Model ``g``'s arrival rate over the interval just ended, folded into its
        forecast, read ``provisioning_s + load_s`` ahead (as the autoscaler's)."""
        rate = (self.num_arrived[g] - self.arrived_at_tick[g]) / self.scaling.interval_s
        self.arrived_at_tick[g] = self.num_arrived[g]
        self.forecasts[g].observe(rate, at)
        return self.forecasts[g].ahead(self.scaling.provisioning_s + self.plan.times[g].load_s)

    def _start(self, g: int, num: int, at: Seconds) -> bool:
        """Bring ``num`` slots in for model ``g`` (fewer when the pool has none to give);
        the headroom taken is replaced."""
        started = False
        for _ in range(num):
            s = self._pick(g, at)
            if s is None:
                break
            self._bring(s, g, at)
            started = True
        if started:
            self._keep_headroom(at)
        return started

    def _keep_headroom(self, at: Seconds) -> None:
        """Down slots are provisioned empty until ``headroom_slots`` are empty (a slot
        being provisioned is empty already, its GPUs busy until ready)."""
        missing = self.cfg.headroom_slots - self.book.count(WARM)
        for s in self.book.of(DOWN)[: max(missing, 0)]:
            self.book.set(s, WARM, at)
            self.slots.empty_since[s] = at
            self.slots.busy_until[s] = at + self.scaling.provisioning_s
            self.counts["provisions"] += 1
            self._record(at, "provision", None, s)

    def _pick(self, g: int, at: Seconds) -> int | None:
        """The slot to bring in for model ``g`` (the module docstring's order)."""
        down = self.book.of(DOWN)
        if not self.cfg.shares:
            return down[0] if down else None
        spare = [s for s in self.book.of(UP) if self._spare(s, g, at)]
        return self.slots.pick(g, self.book.of(WARM), spare, down)

    def _spare(self, s: int, g: int, at: Seconds) -> bool:
        """Whether serving slot ``s`` may be taken for model ``g``: its model is another,
        which holds more slots than it wanted at the last reading or is idle there."""
        h = self.slots.active[s]
        return h != g and (self._surplus(h) or self._idle(s, at))

    def _idle(self, s: int, at: Seconds) -> bool:
        """Slot ``s`` holds nothing and finished its last request ``idle_s`` ago or more."""
        h = self.slots.active[s]
        assert h is not None
        busy = self.hands.outstanding(h, s) > 0
        return not busy and at - self.last_done[s] >= self.cfg.idle_s

    def _surplus(self, h: int | None) -> bool:
        """Whether model ``h`` holds more slots than it wanted at the last reading."""
        return h is not None and self.num(h, UP) + self.num_coming(h) > self.wants[h]

    def _maybe_stop(self, g: int, want: int, at: Seconds) -> None:
        """Fewer wanted: stop model ``g``'s newest slots once the window lasted ``cooldown_s``."""
        most = self.cooldowns[g].fewer(want, at)
        if most is None:
            return
        ups = self.of(g, UP)
        ups.sort(key=lambda s: (self.book.up_at[s], s))
        keep = max(most - self.num_coming(g), 0 if self.cfg.shares else 1)
        stops = ups[keep:][::-1]
        for s in stops:
            self._stop(s, at)
        if stops:
            self.book.num_scale_downs += 1

    # ------------------------------------------------------------------ acting

    def _bring(self, s: int, g: int, at: Seconds) -> None:
        """Slot ``s`` starts bringing model ``g`` in (after draining its own, if serving)."""
        state, slots = self.book.state[s], self.slots
        if state == UP:
            slots.next_of[s] = g
            self.counts["swaps"] += 1
            self._stop(s, at)
            return
        free_at = at if state == WARM else at + self.scaling.provisioning_s
        start_at = max(free_at, slots.busy_until[s])
        if state == DOWN:
            self.counts["provisions"] += 1
            self._record(at, "provision", g, s)
        woke = slots.take_awake(s, g)
        self.counts["wakes" if woke else "loads"] += 1
        self._record(at, "wake" if woke else "load", g, s)
        slots.active[s], slots.empty_since[s] = g, None
        self.book.num_started += 1
        self.book.set(s, STARTING, at)
        self.bills.bill(s, self.plan.engine_of[g][s])
        self.hands.bring_in(s, g, start_at, woke)

    def _stop(self, s: int, at: Seconds) -> None:
        """Slot ``s``'s model leaves routing; the slot is free once it holds nothing."""
        g = self.slots.active[s]
        assert g is not None
        self.hands.set_routable(g, s, False)
        self.book.num_stopped += 1
        self._record(at, "stop", g, s)
        if self.hands.outstanding(g, s) == 0:
            self.drained(s, at)
        else:
            self.book.set(s, DRAINING, at)

    def _release_empty(self, at: Seconds) -> None:
        """Empty slots past ``release_after_s`` are released (down, host RAM emptied),
        down to ``headroom_slots``."""
        for s in self.book.of(WARM):
            if self.book.count(WARM) <= self.cfg.headroom_slots:
                return
            since = self.slots.empty_since[s]
            if since is not None and at - since >= self.cfg.release_after_s:
                self.book.set(s, DOWN, at)
                self.slots.asleep[s].clear()
                self.slots.empty_since[s] = None
                self.counts["releases"] += 1
                self._record(at, "release", None, s)

    def _record(self, at: Seconds, kind: str, g: int | None, s: int) -> None:
        self.num_events += 1
        if len(self.events) < MAX_EVENTS:
            model = None if g is None else self.plan.models[g]
            self.events.append(Event(at, kind, model, s))

    # ------------------------------------------------------------------ books

    def of(self, g: int, state: str) -> list[int]:
        """Slots in ``state`` whose awake (or coming) model is ``g``."""
        return [s for s in self.book.of(state) if self.slots.active[s] == g]

    def num(self, g: int, state: str) -> int:
        """How many slots in ``state`` hold model ``g``."""
        return len(self.of(g, state))

    def num_coming(self, g: int) -> int:
        """Slots bringing model ``g`` in: starting, or draining another model first."""
        draining = self.book.of(DRAINING)
        return self.num(g, STARTING) + sum(self.slots.next_of[s] == g for s in draining)
