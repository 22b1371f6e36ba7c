"""Autoscaling one instances group inside the simulated run: an extension of the one loop.

The group is built with ``max_instances`` engines; the first ``count`` serve at time 0, the
next ``warm_pool`` are *warm* (provisioned, idle), the rest are *down*. Only serving
instances are in the router's view (:meth:`~sincere.sim.cluster.Cluster.set_routable`).
Every ``interval_s`` (from ``interval_s`` on) the controller reads the load of the
serving instances (``in_flight``: requests outstanding there; ``waiting``: requests queued
there, not started; ``kv_usage``: the fraction of KV blocks in use), divides it by the
number serving, and asks the policy
(:func:`desired_count`) how many instances it wants, within the bounds:

* **scale-up** at once: a warm instance serves after ``load_s`` (the model's load), a down
  one after ``provisioning_s + load_s``; it joins the router's view then (before an
  arrival at that very time). A warm instance taken is replaced from the down ones
  (ready ``provisioning_s`` later);
* **scale-down** only when the count wanted has stayed below the count serving or starting
  for ``cooldown_s`` (a stabilisation window, as Kubernetes' HPA keeps), then to the
  largest count wanted in that window. The instances stopped are the newest to have
  joined (the rule of :func:`sincere.optimize.scaling.scale`, which the live controller
  runs; ``optimize`` sits above ``sim``, so it is not imported); a stopped instance leaves the
  router's view at once, finishes what it holds, then is down (or warm, when the pool is
  short).

Under ``predictive`` the reading is not a load but the arrival rate of the interval just
ended, smoothed by Holt's linear method (:class:`RateForecast`: a level and a trend) and
forecast ``provisioning_s + load_s`` ahead -- when an instance started now would serve --
and ``ceil(forecast / rate_per_instance)`` instances are wanted: it starts instances while
a ramp is still below what the serving ones can take, where the reactive policies wait for
the queue. It sees arrivals only (not queues): a burst it did not foresee is met one
reading late. With ``forecast_profile`` (the rate's pattern over a period, e.g. a day) the
forecast is the profile's rate ahead scaled to the level observed
(:class:`~sincere.sim.autoscale_season.SeasonalForecast`), so a daily ramp is met when the
profile says it comes, not once the readings have turned.

Requests already at an instance stay there (no rebalancing), so a burst queues on the
instances serving until new ones join. An instance is paid (GPU-hours) from the moment it
is provisioned until it is down: starting, serving, draining, warm. Events at one time:
an instance becoming ready comes first (priority -1), the controller's reading last
(priority 2, after the engines' wake-ups), so it reads the load after them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

from sincere.core.types import Seconds
from sincere.engine.summary import fleet_cost, instance_cost
from sincere.policy.reads import Reads
from sincere.sim.autoscale_book import DOWN, DRAINING, STARTING, UP, WARM, WARMING, FleetBook
from sincere.sim.autoscale_config import AutoscalingConfig
from sincere.sim.autoscale_season import SeasonalForecast, SeasonalProfile
from sincere.sim.cluster import Cluster
from sincere.sim.extension import Extension, Sim
from sincere.sim.plan import ExtensionNeeds

READY_PRIORITY = -1  # an instance ready at an arrival's time takes that arrival
TICK_PRIORITY = 2  # the controller reads loads after the engines' events at that time


class Cooldown:
    """The scale-down window of one group: it opens at the first reading that wants fewer
    instances than are serving or starting, and only once it has lasted ``cooldown_s``
    do instances stop, as many kept as the largest count wanted over the window. A reading
    that wants as many or more closes it (:meth:`close`)."""

    __slots__ = ("cooldown_s", "most", "since")

    def __init__(self, cooldown_s: Seconds) -> None:
        self.cooldown_s = cooldown_s
        self.since: Seconds | None = None  # the first reading of the open window
        self.most = 0  # the largest count wanted in it

    def close(self) -> None:
        """A reading wanted no fewer: the window starts anew at the next one that does."""
        self.since = None

    def fewer(self, want: int, at: Seconds) -> int | None:
        """A reading at ``at`` wants ``want``, fewer than there are: the count to keep when
        the window has lasted ``cooldown_s`` (it then closes), else None."""
        if self.since is None:
            self.since, self.most = at, want
        self.most = max(self.most, want)
        if at - self.since < self.cooldown_s:
            return None
        self.since = None
        return self.most


@dataclass(frozen=True, slots=True)
class ScalePlan:
    """The scaled group as one run builds it."""

    config: AutoscalingConfig
    engines: tuple[int, ...]  # the group's engine indices (max_instances of them)
    num_initial: int  # serving at time 0 (the first ones)
    load_s: Seconds  # the model's load time on one instance
    num_gpus: int  # accelerators one instance occupies
    profile: SeasonalProfile | None = None  # predictive's seasonal profile (None: Holt's)


def desired_count(cfg: AutoscalingConfig, load: float, num_up: int, num_active: int) -> int:
    """Instances wanted for ``load`` (summed over the ``num_up`` serving instances), given
    ``num_active`` serving or starting; within ``[min_instances, max_instances]``.

    ``threshold`` (KEDA-style): one more when the load per serving instance is above
    ``scale_up_threshold``, one fewer when below ``scale_down_threshold``;
    ``target-utilisation`` (HPA's rule): ``ceil(load / target_per_instance)``;
    ``predictive``: ``load`` is the arrival rate forecast for when an instance started now
    would serve (:class:`RateForecast`), and ``ceil(load / rate_per_instance)`` are wanted.
    """
    if cfg.policy == "target-utilisation":
        assert cfg.target_per_instance is not None
        want = math.ceil(load / cfg.target_per_instance)
    elif cfg.policy == "predictive":
        assert cfg.rate_per_instance is not None
        want = math.ceil(max(load, 0.0) / cfg.rate_per_instance - 1e-9)
    else:
        assert cfg.scale_up_threshold is not None and cfg.scale_down_threshold is not None
        per = load / max(num_up, 1)
        want = num_active
        if per > cfg.scale_up_threshold:
            want = num_active + 1
        elif per < cfg.scale_down_threshold:
            want = num_active - 1
    return min(max(want, cfg.min_instances), cfg.max_instances)


class RateForecast:
    """Holt's linear smoothing of the arrival rate read every interval: a level and a
    trend per interval, the forecast ``h`` seconds ahead ``level + trend * h / interval``.
    The first reading sets the level (no trend yet)."""

    def __init__(self, alpha: float, beta: float, interval_s: Seconds) -> None:
        self.alpha, self.beta, self.interval_s = alpha, beta, interval_s
        self.level: float | None = None
        self.trend = 0.0

    def observe(self, rate: float, at: Seconds = 0.0) -> None:
        """Fold in the rate of the interval just ended (``at`` unused: readings come every
        ``interval_s``)."""
        if self.level is None:
            self.level = rate
            return
        last = self.level
        self.level = self.alpha * rate + (1 - self.alpha) * (last + self.trend)
        self.trend = self.beta * (self.level - last) + (1 - self.beta) * self.trend

    def ahead(self, h: Seconds) -> float:
        """The rate forecast ``h`` seconds after the last reading (never below 0)."""
        assert self.level is not None, "observe() first"
        return max(self.level + self.trend * h / self.interval_s, 0.0)


class Forecast(Protocol):
    """The predictive policy's forecast of the arrival rate."""

    def observe(self, rate: float, at: Seconds) -> None:
        """Fold in the rate of the interval that ended at ``at``."""
        ...

    def ahead(self, h: Seconds) -> float:
        """The rate forecast ``h`` seconds after the last reading."""
        ...


def make_forecast(cfg: AutoscalingConfig, profile: SeasonalProfile | None) -> Forecast:
    """Holt's trend forecast, or the seasonal one when a profile is given."""
    if profile is None:
        return RateForecast(cfg.forecast_alpha, cfg.forecast_beta, cfg.interval_s)
    return SeasonalForecast(profile, cfg.forecast_alpha, cfg.interval_s)


def signal_sum(cfg: AutoscalingConfig, cluster: Cluster, engines: list[int]) -> float:
    """``cfg.signal`` summed over ``engines`` (requests outstanding, queued, or KV used)."""
    if cfg.signal == "waiting":
        return float(sum(cluster.engines[e].queue_sizes()[1] for e in engines))
    if cfg.signal == "kv_usage":
        return sum(cluster.engines[e].load().kv_usage or 0.0 for e in engines)
    return float(sum(cluster.outstanding[e] for e in engines))


class Controller(Extension):
    """What the loop's controllers share: a reading every interval and instances becoming
    ready, as two event kinds (:data:`TICK_PRIORITY`, :data:`READY_PRIORITY`) whose
    handlers, ``_tick(_, at)`` and ``_ready(index, at)``, are the subclass's."""

    def __init__(self) -> None:
        self._sim: Sim | None = None
        self.tick_kind = self.ready_kind = -1
        self.num_arrived = 0

    @property
    def sim(self) -> Sim:
        assert self._sim is not None, "attach() first"
        return self._sim

    @property
    def cluster(self) -> Cluster:
        return self.sim.cluster

    def _declare_kinds(self, sim: Sim) -> None:
        """Keep the loop and declare the reading's and the readiness's event kinds."""
        self._sim = sim
        self.tick_kind = sim.add_kind(TICK_PRIORITY, self._tick)
        self.ready_kind = sim.add_kind(READY_PRIORITY, self._ready)

    def _tick(self, _: int, at: Seconds) -> None:
        raise NotImplementedError

    def _ready(self, index: int, at: Seconds) -> None:
        raise NotImplementedError


class Autoscaler(Controller):
    """The controller of one scaled group (see the module docstring)."""

    def __init__(self, plan: ScalePlan) -> None:
        self.plan = plan
        self.cfg = plan.config
        super().__init__()
        self.book = FleetBook(plan.engines, plan.num_gpus, self.cfg.warm_pool)
        self.cooldown = Cooldown(self.cfg.cooldown_s)
        self.forecast = make_forecast(self.cfg, plan.profile)
        self.arrived_at_tick = 0  # arrivals counted at the last reading

    @property
    def needs(self) -> ExtensionNeeds:
        """Reads engine loads unless the signal is ``in_flight``; never routes or feeds."""
        reads = Reads(load=self.cfg.signal != "in_flight", tokens=False, outcomes=False)
        return ExtensionNeeds(reads=reads, routes_arrivals=False, feeds_engines=False)

    def attach(self, sim: Sim) -> None:
        """Declare the two event kinds, set the initial states, schedule the first reading."""
        self._declare_kinds(sim)
        first_warm = self.plan.num_initial + self.cfg.warm_pool
        for k, e in enumerate(self.plan.engines):
            state = UP if k < self.plan.num_initial else WARM if k < first_warm else DOWN
            self.book.set(e, state, 0.0)
            if state != UP:
                sim.cluster.set_routable(e, False)
        self.book.desired = self.plan.num_initial
        self.book.note(0.0)
        sim.schedule(self.cfg.interval_s, self.tick_kind, 0)

    def arrive(self, i: int, at: Seconds) -> bool:
        """Count the arrival; the cluster routes it."""
        self.num_arrived += 1
        return False

    def advanced(self, e: int, at: Seconds, done: list[int]) -> list[int]:
        """A draining instance that holds nothing more is down."""
        if self.book.state.get(e) == DRAINING and self.cluster.outstanding[e] == len(done):
            self._stopped(e, at)
        return done

    def report(self, summary: dict[str, Any], end_at: Seconds) -> None:
        """The ``autoscaling`` block of the summary; the scaled group's instances cost what
        they were paid for (every state but down), not the whole run."""
        summary["autoscaling"] = self.book.summary(end_at, self._settings())
        instances = summary["instances"]
        for e, paid_s in self.book.paid_by.items():
            info = self.cluster.infos[e]
            instances[info.id]["cost_usd"] = instance_cost(info, paid_s)
        summary.update(fleet_cost(instances, (summary["output_tokens_per_s"] or 0.0) * end_at))

    # ------------------------------------------------------------------ the controller

    def _tick(self, _: int, at: Seconds) -> None:
        """Read the load, decide, act, and read again an interval later while work remains."""
        book = self.book
        num_up, num_active = book.count(UP), book.count(UP) + book.count(STARTING)
        want = desired_count(self.cfg, self._load(at), num_up, num_active)
        book.want(want, at)
        if want > num_active:
            self._start(want - num_active, at)
            self.cooldown.close()
        elif want < num_active:
            self._maybe_stop(want, at)
        else:
            self.cooldown.close()
        book.note(at)
        if self._work_left():
            self.sim.schedule(at + self.cfg.interval_s, self.tick_kind, 0)

    def _load(self, at: Seconds) -> float:
        """The signal summed over the serving instances; under ``predictive``, the arrival
        rate forecast for when an instance started now would serve."""
        if self.cfg.policy != "predictive":
            return signal_sum(self.cfg, self.cluster, self.book.of(UP))
        rate = (self.num_arrived - self.arrived_at_tick) / self.cfg.interval_s
        self.arrived_at_tick = self.num_arrived
        self.forecast.observe(rate, at)
        return self.forecast.ahead(self.cfg.provisioning_s + self.plan.load_s)

    def _work_left(self) -> bool:
        """Arrivals to come, or an engine with work scheduled (else the run may drain)."""
        if self.num_arrived < len(self.cluster.requests):
            return True
        return any(engine.next_event_at() is not None for engine in self.cluster.engines)

    def _start(self, num: int, at: Seconds) -> None:
        """Start ``num`` instances: warm ones first, then down ones; refill the warm pool."""
        cfg, book = self.cfg, self.book
        warm = book.of(WARM)[:num]
        for e in warm:
            self._begin(e, STARTING, at + self.plan.load_s, at)
        cold = book.of(DOWN)[: num - len(warm)]
        for e in cold:
            self._begin(e, STARTING, at + cfg.provisioning_s + self.plan.load_s, at)
        if warm or cold:
            book.num_scale_ups += 1
        short = cfg.warm_pool - book.count(WARM) - book.count(WARMING)
        for e in book.of(DOWN)[: max(short, 0)]:
            self._begin(e, WARMING, at + cfg.provisioning_s, at)

    def _begin(self, e: int, state: str, ready_at: Seconds, at: Seconds) -> None:
        if state == STARTING:
            self.book.num_started += 1
        self.book.set(e, state, at)
        self.sim.schedule(ready_at, self.ready_kind, e)

    def _ready(self, e: int, at: Seconds) -> None:
        """Instance ``e`` finished starting (serves) or warming (is warm)."""
        if self.book.state[e] == STARTING:
            self.book.set(e, UP, at, up_at=at)
            self.cluster.set_routable(e, True)
        else:
            self.book.set(e, WARM, at)
        self.book.note(at)

    def _maybe_stop(self, want: int, at: Seconds) -> None:
        """Fewer wanted: stop instances once the window has lasted ``cooldown_s``."""
        target = self.cooldown.fewer(want, at)
        if target is None:
            return
        book = self.book
        ups = book.of(UP)  # by the time they joined, oldest first (ties: by index)
        ups.sort(key=lambda e: (book.up_at[e], e))
        keep = max(target - book.count(STARTING), 1)
        stops = ups[keep:][::-1]  # newest first
        for e in stops:
            self._stop(e, at)
        if stops:
            book.num_scale_downs += 1

    def _stop(self, e: int, at: Seconds) -> None:
        """Take ``e`` out of the router's view; it is down once it holds nothing."""
        self.cluster.set_routable(e, False)
        self.book.num_stopped += 1
        if self.cluster.outstanding[e] == 0:
            self._stopped(e, at)
        else:
            self.book.set(e, DRAINING, at)

    def _stopped(self, e: int, at: Seconds) -> None:
        book = self.book
        pool = book.count(WARM) + book.count(WARMING)
        book.set(e, WARM if pool < self.cfg.warm_pool else DOWN, at)
        book.note(at)

    def _settings(self) -> dict[str, object]:
        cfg = self.cfg
        settings: dict[str, object] = {
            "group": [self.cluster.infos[e].id for e in self.plan.engines],
            "policy": cfg.policy,
            "signal": "arrival_rate" if cfg.policy == "predictive" else cfg.signal,
            "interval_s": cfg.interval_s,
            "provisioning_s": cfg.provisioning_s,
            "load_s": self.plan.load_s,
            "num_gpus_per_instance": self.plan.num_gpus,
        }
        if self.plan.profile is not None:  # the seasonal forecast's period
            settings["forecast_period_s"] = self.plan.profile.period_s
        return settings
