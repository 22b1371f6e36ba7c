"""The live autoscaler: the simulator's autoscaling, on the gateway's wall clock.

Configured by ``controller.autoscaling``, the simulator's own
:class:`~sincere.sim.autoscale_config.AutoscalingConfig` (its ``group`` names the model
scaled), and deciding with the simulator's own :func:`~sincere.sim.autoscale.desired_count`
(both reached through :mod:`.sim_scaling`), it keeps the simulator's rules
(:mod:`sincere.sim.autoscale`) over emulated instances started and stopped through the
:class:`~sincere.serve.control.controller.Controller`:

* every ``interval_s`` (from ``interval_s`` after the start) it reads the load of the
  model's instances in routing: ``in_flight`` is the gateway's own count of requests
  sent to each and not finished (requests queued in the gateway are not counted);
  ``waiting`` and ``kv_usage`` are read from the engines of the emulated instances
  (in-process; an instance whose engine it cannot read -- one given by URL -- makes
  the reading unknown, and that tick decides nothing: a ``no_reading`` event);
* **scale-up** at once: a warm instance is ready ``load_s`` later, a new one
  ``provisioning_s + load_s`` later (``load_s`` null: one GPU's share of the model's
  weight bytes over ``load_gbps``, from the model's emulator fields). Meanwhile it is
  ``starting``: listed by ``GET /admin/autoscaling``, not in routing, paid. When due, the
  emulated engine is started and joins routing. A warm instance taken is replaced
  (``warming`` for ``provisioning_s``);
* **scale-down** when the count wanted has stayed below the count serving or starting
  for ``cooldown_s``, to the largest count wanted in that window; the newest to have
  joined are stopped first: each leaves routing at once (the event loop's next turn),
  finishes its requests in flight, then its engine stops (or it is kept warm when the
  pool is short).

Instances of the model that the autoscaler did not start (configured, or deployed
through ``/admin``) are counted as serving and never stopped by it. The instances
started at once to reach ``min_instances``, and the warm pool, are the fleet at time 0
(no scale event, as the simulator's initial count). At most ``max_instances`` are
counted (paid) at once; a start the controller refuses (``controller.max_instances``
reached by other instances) is a ``start_failed`` event. Every event and the paid
instance-seconds are in the :class:`~sincere.serve.control.scale_book.ScaleBook`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from sincere.core.errors import SincereError
from sincere.engine.build import deployment_of
from sincere.serve.binding import cancel_and_wait
from sincere.serve.control import scale_book as sb
from sincere.serve.control.sim_scaling import AutoscalingConfig, Cooldown, desired_count

if TYPE_CHECKING:
    from sincere.engine.base import EngineLoad
    from sincere.serve.control.controller import Controller

log = logging.getLogger("sincere.serve.control.autoscaler")

MAX_EVENTS_SHOWN = 1000  # events in one answer of GET /admin/autoscaling


class LiveAutoscaler:
    """Scales one model's emulated instances (see the module docstring).

    ``clock`` is the gateway's (loop time, seconds); the autoscaler's times are seconds
    since :meth:`start`.
    """

    def __init__(
        self, controller: Controller, config: AutoscalingConfig, clock: Callable[[], float]
    ) -> None:
        assert config.group is not None, "checked with the controller's config"
        self.controller = controller
        self.cfg = config
        self.model = config.group
        self.clock = clock
        self.book = sb.ScaleBook()
        self.started_at: float | None = None  # clock time of time 0
        self.started_at_unix: float | None = None  # the same moment, seconds since the epoch
        self.cooldown = Cooldown(self.cfg.cooldown_s)
        self._names = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()

    def now(self) -> float:
        """Seconds since :meth:`start`."""
        assert self.started_at is not None, "start() first"
        return self.clock() - self.started_at

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Take in the model's instances, start up to ``min_instances``, fill the warm pool,
        and begin reading the load; time 0 is when the first instances serve."""
        self.figures()  # the model's emulator fields must describe a deployment
        self._sync(0.0)
        fill = [self._new_slot() for _ in range(self.cfg.min_instances - self.book.count(sb.UP))]
        for slot in fill:
            await self.controller.deploy(self.model, None, join=True, name=slot.name)
            self.book.set(slot, sb.UP, 0.0)
        for _ in range(self.cfg.warm_pool):
            self.book.set(self._new_slot(), sb.WARM, 0.0)
        self.started_at, self.started_at_unix = self.clock(), time.time()
        self.book.desired = self.book.count(sb.UP)
        self.book.record("initial", 0.0, tuple(s.name for s in fill))
        self._spawn(self._run())

    async def stop(self) -> None:
        """Stop reading and acting (engines are stopped with the controller)."""
        tasks, self._tasks = list(self._tasks), set()
        await cancel_and_wait(tasks)

    async def _run(self) -> None:
        """Read every ``interval_s`` on the clock's grid, each reading timed at its grid
        point as the simulator's are (a wake late by more than an interval skips ticks)."""
        interval = self.cfg.interval_s
        k = 1
        while True:
            await asyncio.sleep(max(0.0, k * interval - self.now()))
            try:  # the reading's time is its place on the grid (a wake's jitter aside)
                self.tick(k * interval)
            except SincereError as exc:  # e.g. the model re-registered with bad fields
                log.warning("autoscaler: the reading at %.3f s failed: %s", self.now(), exc)
                self.book.record("error", self.now(), detail=str(exc))
            k = max(k + 1, math.floor(self.now() / interval) + 1)

    # ------------------------------------------------------------------ decisions

    def tick(self, at: float) -> None:
        """Read the load, decide with the simulator's rule, act."""
        self._sync(at)
        load = self._load()
        book = self.book
        if load is None:
            book.record("no_reading", at, detail="an engine load could not be read")
            return
        num_up, num_active = book.count(sb.UP), book.count(sb.UP) + book.count(sb.STARTING)
        want = desired_count(self.cfg, load, num_up, num_active)
        book.desired = want
        if want > num_active:
            self._start(want - num_active, at)
            self.cooldown.close()
        elif want < num_active:
            self._maybe_stop(want, at)
        else:
            self.cooldown.close()

    def _load(self) -> float | None:
        """The signal summed over the instances in routing (None: unknown)."""
        instances = self.controller.fleet.instances_of(self.model)
        if self.cfg.signal == "in_flight":
            return float(sum(i.num_in_flight for i in instances))
        total = 0.0
        for instance in instances:
            load = self._engine_load(instance.name)
            value = None if load is None else _signal(load, self.cfg.signal)
            if value is None:
                return None
            total += value
        return total

    def _engine_load(self, name: str) -> EngineLoad | None:
        server = self.controller.emulators.get(name)
        if server is None or server.live is None:
            return None
        return server.live.engine.load()

    def _start(self, num: int, at: float) -> None:
        """Start ``num`` instances: warm ones first, then new ones; refill the warm pool."""
        cfg, book = self.cfg, self.book
        load_s = self.figures()[0]
        warm = book.of(sb.WARM)[:num]
        room = cfg.max_instances - len(book.slots)
        cold = [self._new_slot() for _ in range(min(num - len(warm), room))]
        for slot, delay in [(s, load_s) for s in warm] + [(s, cfg.provisioning_s + load_s)
                                                          for s in cold]:  # fmt: skip
            book.set(slot, sb.STARTING, at)
            slot.ready_at_s = at + delay
            self._spawn(self._bring_up(slot))
        if warm or cold:
            book.num_scale_ups += 1
            book.num_started += len(warm) + len(cold)
            book.record("scale_up", at, tuple(s.name for s in warm + cold))
        short = cfg.warm_pool - book.count(sb.WARM) - book.count(sb.WARMING)
        for _ in range(min(short, cfg.max_instances - len(book.slots))):
            slot = self._new_slot()
            book.set(slot, sb.WARMING, at)
            slot.ready_at_s = at + cfg.provisioning_s
            self._spawn(self._warm_up(slot))

    def _maybe_stop(self, want: int, at: float) -> None:
        """Fewer wanted: stop the newest instances once the window lasted ``cooldown_s``."""
        target = self.cooldown.fewer(want, at)
        if target is None:
            return
        book = self.book
        ups = sorted(book.of(sb.UP), key=lambda s: s.up_at_s or 0.0)  # oldest first (stable)
        keep = max(target - book.count(sb.STARTING), 1)
        stops = [s for s in ups[keep:][::-1] if s.stoppable]  # newest first
        for slot in stops:
            book.set(slot, sb.DRAINING, at)
            book.num_stopped += 1
            self._spawn(self._drain(slot))
        if stops:
            book.num_scale_downs += 1
            book.record("scale_down", at, tuple(s.name for s in stops))

    # ------------------------------------------------------------------ actions

    async def _bring_up(self, slot: sb.Slot) -> None:
        """When due, start the emulated engine and put it in routing."""
        assert slot.ready_at_s is not None
        await asyncio.sleep(max(0.0, slot.ready_at_s - self.now()))
        try:
            await self.controller.deploy(self.model, None, join=True, name=slot.name)
        except SincereError as exc:
            log.warning("autoscaler: %s could not start: %s", slot.name, exc)
            self.book.drop(slot.name, self.now())
            self.book.record("start_failed", self.now(), (slot.name,), str(exc))
            return
        self.book.set(slot, sb.UP, self.now())
        self.book.record("ready", self.now(), (slot.name,))

    async def _warm_up(self, slot: sb.Slot) -> None:
        assert slot.ready_at_s is not None
        await asyncio.sleep(max(0.0, slot.ready_at_s - self.now()))
        self.book.set(slot, sb.WARM, self.now())
        self.book.record("warm", self.now(), (slot.name,))

    async def _drain(self, slot: sb.Slot) -> None:
        """Out of routing now; once its requests are done its engine stops."""
        with contextlib.suppress(SincereError):  # already removed through /admin
            await self.controller.remove(slot.name)
        at, book = self.now(), self.book
        if book.count(sb.WARM) + book.count(sb.WARMING) < self.cfg.warm_pool:
            book.set(slot, sb.WARM, at)
        else:
            book.drop(slot.name, at)
        book.record("stopped", at, (slot.name,))

    # ------------------------------------------------------------------ helpers

    def _sync(self, at: float) -> None:
        """Count instances added through ``/admin`` (never stopped here), forget removed ones."""
        serving = {i.name for i in self.controller.fleet.instances_of(self.model)}
        book = self.book
        for name in serving - set(book.slots):
            book.set(sb.Slot(name, sb.UP, at, stoppable=False), sb.UP, at)
        for slot in book.of(sb.UP):
            if slot.name not in serving:
                book.drop(slot.name, at)
                book.record("removed", at, (slot.name,), "removed through /admin")

    def _new_slot(self) -> sb.Slot:
        taken = set(self.book.slots) | {i.name for i in self.controller.fleet.instances_of()}
        while True:
            name = f"{self.model}-as-{next(self._names)}"
            if name not in taken and name not in self.controller.emulators:
                return sb.Slot(name, sb.STARTING, 0.0)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def figures(self) -> tuple[float, int]:
        """The model's load time on one instance and its GPUs (from its emulator fields)."""
        fields = self.controller.emulator_fields(self.model)
        dep = deployment_of(fields, fields.model, f"controller.autoscaling ({self.model})")
        return self.cfg.load_seconds(dep.weight_bytes_per_gpu), dep.num_gpus

    def metrics_text(self) -> str:
        """The book as Prometheus text (empty before :meth:`start`)."""
        if self.started_at is None:
            return ""
        return self.book.metrics_text(self.model, self.now())

    def to_json(self) -> dict[str, Any]:
        """What ``GET /admin/autoscaling`` answers."""
        load_s, num_gpus = self.figures()
        out = self.book.to_json(self.now(), MAX_EVENTS_SHOWN)
        return {
            "model": self.model,
            "started_at_unix": self.started_at_unix,  # event times are seconds after it
            "config": self.cfg.model_dump(),
            "load_s": load_s,
            "num_gpus_per_instance": num_gpus,
            "gpu_seconds": out["instance_seconds"] * num_gpus,
            **out,
        }


def _signal(load: EngineLoad, signal: str) -> float | None:
    value = load.num_waiting if signal == "waiting" else load.kv_usage
    return None if value is None else float(value)
