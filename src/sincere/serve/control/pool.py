"""Several models on one pool of slots, actuated live: the simulator's pool controller on
the gateway's wall clock.

Configured by ``controller.actuation``, the simulator's own
:class:`~sincere.sim.actuation_config.ActuationConfig` (live, ``groups`` lists the pool's
models, as served), and deciding with the simulator's own
:class:`~sincere.sim.actuation_rule.PoolRule` (both reached through :mod:`.sim_scaling`):
this module is only the rule's hands on the gateway and the emulated engines.

**One engine per model and slot, as vLLM runs.** A vLLM server serves one model; to
change a GPU's model it puts its engine to sleep (``POST /sleep``: level 1 moves the
weights to host RAM, level 2 drops them) and wakes another engine (``POST /wake_up``).
So at start the pool starts, through the controller, one emulated engine of each model
on each slot (``<model>-slot-<s>``, ``max_slots`` per model; its fields the registered
model's over ``planning.emulator``, a model not registered being registered as the
catalog model of its name) and keeps each in the state the rule gives it:

* **awake**: the slot's model, serving or draining; in the gateway's routing;
* **asleep at level 1**: held in the slot's host RAM (``sleep``'s warm set); a wake takes
  the model's ``wake_s``;
* **asleep at level 2**: no weights anywhere (a slot that is down, a model discarded
  under ``swap`` or ``dedicated``, dropped from a full host RAM, or a released slot's); a
  wake loads the weights from storage, ``load_s``.

An engine asleep stays a member of the gateway's fleet out of routing
(:meth:`~sincere.serve.control.fleet.Fleet.set_routable`), so its model stays served:
a request for it waits in the gateway's queue (never dropped; the queue's timeout
bounds the wait) and the gateway tells the pool (``on_held``), which asks the rule:
when no slot serves the model and none is coming, a slot is brought in at once --
an empty one, a spare one (its model drained, then put to sleep), or a down one. The
wake itself is the emulator's: each pool engine is started with its sleep times set to
the model's ``wake_s`` (level 1) and ``load_s`` (level 2), and the pool waits until
the slot is free (``provisioning_s`` for a down slot, the previous model's offload
``sleep_s``) before it calls ``/wake_up``. Once that answers, the engine joins routing
and the queue drains into it. Readings every ``interval_s`` take the load of each model's
awake engines (``in_flight``: the gateway's count; ``waiting``, ``kv_usage``: the
in-process engines') plus its requests queued in the gateway.

What is emulated: the slot (no GPU memory is moved; the emulator waits the times, and an
engine asleep answers ``503`` to generation as vLLM's should), provisioning (waited by
the pool; a down slot's engines exist, asleep at level 2, and are not paid). What is
real: the decisions, the routes called, the requests held and served, the times paid.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import aiohttp

from sincere.core.errors import ConfigError, SincereError
from sincere.engine.build import deployment_of
from sincere.serve.binding import cancel_and_wait
from sincere.serve.control import sim_scaling as ss

if TYPE_CHECKING:
    from sincere.serve.control.controller import Controller
    from sincere.serve.control.fleet import Instance

log = logging.getLogger("sincere.serve.control.pool")

MAX_EVENTS_SHOWN = 1000  # events in one answer of GET /admin/actuation
POLL_S = 0.005  # how often a draining engine's requests in flight are read
MAX_SLEEP_TRIES = 200  # a /sleep refused while the engine finishes (409), tried again


class LivePool:
    """The pool's engines and the rule driving them (see the module docstring).

    ``clock`` is the gateway's (loop time, seconds); the rule's times are seconds since
    :meth:`start`.
    """

    def __init__(
        self, controller: Controller, config: ss.ActuationConfig, clock: Callable[[], float]
    ) -> None:
        assert config.groups, "checked by live_actuation"
        self.controller = controller
        self.fleet = controller.fleet
        self.cfg = config
        self.models = tuple(config.groups)
        self.clock = clock
        self.rule: ss.PoolRule | None = None
        self.level: dict[tuple[int, int], int | None] = {}  # each engine's sleep level
        self.started_at: float | None = None  # clock time of time 0
        self.started_at_unix: float | None = None
        self._locks: dict[tuple[int, int], asyncio.Lock] = {}
        self._watched: set[int] = set()  # draining slots whose engine is watched
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: aiohttp.ClientSession | None = None

    def name(self, g: int, s: int) -> str:
        """The instance of model ``g`` on slot ``s``."""
        return f"{self.models[g]}-slot-{s}"

    def now(self) -> float:
        """Seconds since :meth:`start`."""
        assert self.started_at is not None, "start() first"
        return self.clock() - self.started_at

    @property
    def the_rule(self) -> ss.PoolRule:
        assert self.rule is not None, "start() first"
        return self.rule

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start every engine, put those not serving to sleep, and begin reading; a pool
        model not registered is registered as the catalog model of its name."""
        for model in self.models:
            if model not in self.controller.models:
                self.controller.register(model, {"model": model})
        plan = ss.live_pool_plan(self.cfg, [self._deployment(m) for m in self.models])
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        for g, t in enumerate(plan.times):
            wake = {"level1_wake_s": t.wake_s, "level2_wake_s": t.load_s}
            for s in range(self.cfg.max_slots):
                name = self.name(g, s)
                await self.controller.deploy(self.models[g], None, join=True, name=name,
                                             sleep=wake)  # fmt: skip
                self.fleet.set_routable(name, False)  # before the loop turns
                self.level[g, s], self._locks[g, s] = None, asyncio.Lock()
        self.rule = ss.PoolRule(plan, self)
        self.rule.start()
        self._reconcile()
        await asyncio.gather(*list(self._tasks))  # the first sleeps, before time 0
        self.started_at, self.started_at_unix = self.clock(), time.time()
        self.fleet.on_held(self._held)
        self._spawn(self._run())

    async def stop(self) -> None:
        """Stop reading and acting (the engines are stopped with the controller)."""
        tasks, self._tasks = list(self._tasks), set()
        await cancel_and_wait(tasks)
        if self._http is not None:
            await self._http.close()

    async def _run(self) -> None:
        """Read every ``interval_s`` on the clock's grid, as the simulator does."""
        interval = self.cfg.scaling.interval_s
        k = 1
        while True:
            await asyncio.sleep(max(0.0, k * interval - self.now()))
            try:
                self._refresh()
                self.the_rule.tick(k * interval)
                self._reconcile()
            except SincereError as exc:
                log.warning("pool: the reading at %.3f s failed: %s", self.now(), exc)
            k = max(k + 1, math.floor(self.now() / interval) + 1)

    def _held(self, model: str) -> None:
        """A request of ``model`` waits in the gateway: bring a slot in when none serves it."""
        if model not in self.models or self.started_at is None:
            return
        try:  # never into the data plane: the request waits either way
            self._refresh()
            self.the_rule.hold(self.models.index(model), self.now())
            self._reconcile()
        except SincereError as exc:  # e.g. a pool engine removed through /admin
            log.warning("pool: a held request of %s brought no slot in: %s", model, exc)

    # ------------------------------------------------------------------ the hands

    def outstanding(self, g: int, s: int) -> int:
        """Requests the gateway sent model ``g``'s engine on slot ``s`` and not finished."""
        return self._instance(g, s).num_in_flight

    def load(self, g: int, slots: list[int]) -> float:
        """The signal summed over model ``g``'s engines on ``slots``."""
        signal = self.cfg.scaling.signal
        if signal == "in_flight":
            return float(sum(self.outstanding(g, s) for s in slots))
        total = 0.0
        for s in slots:
            server = self.controller.emulators[self.name(g, s)]
            assert server.live is not None, "a pool engine is started"
            load = server.live.engine.load()
            value = load.num_waiting if signal == "waiting" else load.kv_usage
            total += float(value or 0)
        return total

    def num_held(self, g: int) -> int:
        """Requests of model ``g`` waiting in the gateway's queue."""
        return self.fleet.num_queued(self.models[g])

    def set_routable(self, g: int, s: int, routable: bool) -> None:
        """Model ``g``'s engine on slot ``s`` joins (or leaves) the gateway's routing."""
        self.fleet.set_routable(self.name(g, s), routable)

    def bring_in(self, s: int, g: int, start_at: float, woke: bool) -> None:
        """From ``start_at``, wake model ``g``'s engine on slot ``s``; then it is ready."""
        self.level[g, s] = None  # no sleep is sent to it from now on
        self._spawn(self._wake(s, g, start_at))

    # ------------------------------------------------------------------ the routes

    async def _wake(self, s: int, g: int, start_at: float) -> None:
        await asyncio.sleep(max(0.0, start_at - self.now()))
        async with self._locks[g, s]:
            await self._post(g, s, "/wake_up")
        self._refresh()
        self.the_rule.ready(s, self.now())
        self._reconcile()

    async def _sleep(self, g: int, s: int, level: int) -> None:
        async with self._locks[g, s]:
            for _ in range(MAX_SLEEP_TRIES):
                if await self._post(g, s, f"/sleep?level={level}", ok_conflict=True):
                    return
                await asyncio.sleep(POLL_S)
        log.warning("pool: %s refused to sleep (requests in flight)", self.name(g, s))

    async def _post(self, g: int, s: int, path: str, ok_conflict: bool = False) -> bool:
        """POST ``path`` to the engine; False on a 409 when ``ok_conflict``."""
        assert self._http is not None
        url = self.controller.emulators[self.name(g, s)].url + path
        async with self._http.post(url) as answer:
            if answer.status == 409 and ok_conflict:
                return False
            if answer.status != 200:
                raise ConfigError(f"{self.name(g, s)}: POST {path} answered {answer.status}")
        return True

    async def _watch(self, s: int) -> None:
        """Wait until draining slot ``s``'s engine holds nothing, then tell the rule."""
        rule = self.the_rule
        while rule.book.state[s] == ss.DRAINING:
            g = rule.slots.active[s]
            assert g is not None
            if self.outstanding(g, s) == 0:
                rule.drained(s, self.now())
                break
            await asyncio.sleep(POLL_S)
        self._watched.discard(s)
        self._reconcile()

    # ------------------------------------------------------------------ keeping up

    def _reconcile(self) -> None:
        """Send each engine the sleep the rule's state asks for; watch draining slots."""
        rule = self.the_rule
        for s in rule.book.of(ss.DRAINING):
            if s not in self._watched:
                self._watched.add(s)
                self._spawn(self._watch(s))
        for (g, s), level in self.level.items():
            if rule.slots.active[s] == g:
                continue  # awake, draining or being woken
            want = 1 if g in rule.slots.asleep[s] else 2
            if level is None or level < want:
                self.level[g, s] = want
                self._spawn(self._sleep(g, s, want))

    def _refresh(self) -> None:
        """Each serving slot's last finish, from the gateway's records."""
        rule = self.the_rule
        for s in rule.book.of(ss.UP):
            g = rule.slots.active[s]
            assert g is not None
            done_at = self._instance(g, s).last_done_at
            if done_at is not None and self.started_at is not None:
                rule.last_done[s] = max(rule.last_done[s], done_at - self.started_at)

    def _instance(self, g: int, s: int) -> Instance:
        name = self.name(g, s)
        for instance in self.fleet.instances_of(self.models[g]):
            if instance.name == name:
                return instance
        raise ConfigError("a pool engine left the fleet (removed through /admin?)", value=name)

    def _deployment(self, model: str) -> Any:
        fields = self.controller.emulator_fields(model)
        return deployment_of(fields, fields.model, f"controller.actuation ({model})")

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        """Forget a finished task; log why it failed (an engine's route, a removed engine)."""
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("pool: an actuation failed: %r", task.exception())

    def to_json(self) -> dict[str, Any]:
        """What ``GET /admin/actuation`` answers."""
        rule = self.the_rule
        now = self.now()
        paid = rule.book.summary(now, {})["instance_hours"]  # paid up to now
        return {
            "models": list(self.models),
            "started_at_unix": self.started_at_unix,  # event times are seconds after it
            "config": self.cfg.model_dump(),
            "now_s": now,
            "slots": [self._slot_json(s) for s in range(self.cfg.max_slots)],
            "counts": dict(rule.counts),
            "slot_seconds": float(paid) * 3600.0,  # type: ignore[arg-type]
            "num_events": rule.num_events,
            "events": [asdict(e) for e in rule.events[-MAX_EVENTS_SHOWN:]],
        }

    def metrics_text(self) -> str:
        """The pool as Prometheus text (empty before :meth:`start`)."""
        if self.started_at is None or self.rule is None:
            return ""
        return _metrics_text(self.rule, self.models, self.now())

    def _slot_json(self, s: int) -> dict[str, Any]:
        rule = self.the_rule
        g = rule.slots.active[s]
        return {
            "slot": s,
            "state": rule.book.state[s],
            "model": None if g is None else self.models[g],
            "asleep": [self.models[h] for h in rule.slots.asleep[s]],
        }


_STATES = ("down", "starting", "up", "draining", "warm")
_ACTUATIONS = ("provisions", "loads", "wakes", "sleeps", "swaps", "releases")


def _metrics_text(rule: ss.PoolRule, models: tuple[str, ...], now_s: float) -> str:
    """Slots by state, slots serving each model, actuations by kind and slot-seconds paid."""
    paid_s = float(rule.book.summary(now_s, {})["instance_hours"]) * 3600.0  # type: ignore[arg-type]
    serving = [len(rule.of(g, ss.UP)) for g in range(len(models))]
    lines = [
        "# HELP sincere_pool_slots Slots of the live pool by state (warm: empty).",
        "# TYPE sincere_pool_slots gauge",
        *(f'sincere_pool_slots{{state="{st}"}} {rule.book.count(st)}' for st in _STATES),
        "# HELP sincere_pool_serving Slots serving each model of the live pool.",
        "# TYPE sincere_pool_serving gauge",
        *(f'sincere_pool_serving{{model="{_label(m)}"}} {n}'
          for m, n in zip(models, serving, strict=True)),
        "# HELP sincere_pool_actuations_total Actuations of the live pool's slots by kind.",
        "# TYPE sincere_pool_actuations_total counter",
        *(f'sincere_pool_actuations_total{{kind="{k}"}} {rule.counts[k]}' for k in _ACTUATIONS),
        "# HELP sincere_pool_slot_seconds_total Slot-seconds paid.",
        "# TYPE sincere_pool_slot_seconds_total counter",
        f"sincere_pool_slot_seconds_total {paid_s:.6f}",
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    """A Prometheus label value, escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
