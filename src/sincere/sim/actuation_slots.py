"""The pool of a multi-model run: its plan (engines per slot, actuation times) and the slots'
model state (which model is awake, which sleep in host RAM, what comes next).

A *slot* is one instance's worth of GPUs. Every pool group is built with ``max_slots``
engines, engine ``engine_of[g][s]`` being model ``g`` on slot ``s``; at most one of a slot's
engines is awake (in the router's view) at a time. Times per model and slot, derived from
the weight bytes one GPU holds (``bytes``) unless measured ones are given:

* ``load_s`` = ``bytes / load_gbps`` (from storage, as the autoscaler's load);
* ``wake_s`` = ``bytes / host_link`` (vLLM sleep level 1: weights back from host RAM);
* ``sleep_s`` = ``bytes / host_link`` (level 1: weights out to host RAM; a swap discards
  them instead, level 2, in no time).

``host_link`` is ``host_link_gbps`` when given, else the accelerator's one-way PCIe
figure from the catalog times ``host_link_efficiency``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sincere.core.types import Seconds
from sincere.perf.base import Deployment
from sincere.sim.actuation_config import ActuationConfig
from sincere.sim.autoscale_season import SeasonalProfile


@dataclass(frozen=True, slots=True)
class Times:
    """One model's actuation times on one slot."""

    load_s: Seconds  # weights from storage into GPU memory
    wake_s: Seconds  # level-1 wake: weights from host RAM back to GPU memory
    sleep_s: Seconds  # level-1 sleep: weights to host RAM (the KV cache is freed)


@dataclass(frozen=True, slots=True)
class PoolPlan:
    """The pool as one run builds it."""

    config: ActuationConfig
    models: tuple[str, ...]  # each group's model, in the groups' order
    engine_of: tuple[tuple[int, ...], ...]  # [group][slot]: the engine index
    initial: tuple[int, ...]  # slots serving each group's model at time 0
    times: tuple[Times, ...]  # per group
    num_gpus: int  # GPUs of one slot
    profiles: tuple[SeasonalProfile, ...] | None = None  # predictive, seasonal: per group


def pool_plan(
    cfg: ActuationConfig,
    names: list[str],
    engines: list[range],
    deployments: list[Deployment],
    initial: list[int],
) -> PoolPlan:
    """The pool of the groups serving ``names`` (as the config spells them; canonical in
    ``deployments``), whose engines are ``engines``, ``initial`` slots each at time 0."""
    times = tuple(model_times(cfg, d, n) for d, n in zip(deployments, names, strict=True))
    return PoolPlan(
        cfg, tuple(d.model.name for d in deployments), tuple(tuple(r) for r in engines),
        tuple(initial), times, deployments[0].num_gpus,
    )  # fmt: skip


def model_times(cfg: ActuationConfig, dep: Deployment, name: str) -> Times:
    """``dep``'s model's times on one slot: measured ones where ``cfg.times`` has them
    (keyed by ``name``, the model as the config spells it)."""
    per_gpu = dep.weight_bytes_per_gpu
    link = cfg.host_link_gbps or dep.accelerator.host_link_gbps * cfg.host_link_efficiency
    move_s = per_gpu / (link * 1e9)
    load_s = cfg.scaling.load_seconds(per_gpu)
    given = cfg.times.get(name)
    if given is None:
        return Times(load_s, move_s, move_s)
    return Times(
        load_s if given.load_s is None else given.load_s,
        move_s if given.wake_s is None else given.wake_s,
        move_s if given.sleep_s is None else given.sleep_s,
    )


class Slots:
    """Each slot's models: the one awake or coming (``active``), those asleep in host RAM
    (least recently used first), the one to bring in once it has drained (``next_of``),
    when its GPUs are free of a sleep's offload (``busy_until``), and since when it holds
    no awake model (``empty_since``)."""

    def __init__(self, num_slots: int, max_asleep: int) -> None:
        self.active: list[int | None] = [None] * num_slots
        self.asleep: list[list[int]] = [[] for _ in range(num_slots)]
        self.next_of: list[int | None] = [None] * num_slots
        self.busy_until: list[Seconds] = [0.0] * num_slots
        self.empty_since: list[Seconds | None] = [None] * num_slots
        self.max_asleep = max_asleep

    def put_to_sleep(self, s: int, g: int) -> None:
        """Model ``g`` goes to sleep on slot ``s`` (the least recently used one is dropped
        when host RAM holds ``max_asleep`` already)."""
        if self.max_asleep == 0:
            return
        room = self.asleep[s]
        if g in room:
            room.remove(g)
        room.append(g)
        if len(room) > self.max_asleep:
            room.pop(0)

    def pick(self, g: int, empty: list[int], spare: list[int], down: list[int]) -> int | None:
        """The slot for model ``g``: an empty one, else a spare serving one (in each, one
        where ``g`` sleeps first, then by index), else the first down one."""
        for group in (empty, spare):
            if group:
                return min(group, key=lambda s: (g not in self.asleep[s], s))
        return down[0] if down else None

    def take_awake(self, s: int, g: int) -> bool:
        """Model ``g`` leaves slot ``s``'s host RAM (it wakes): whether it was asleep there."""
        if g in self.asleep[s]:
            self.asleep[s].remove(g)
            return True
        return False


def pool_settings(plan: PoolPlan) -> dict[str, object]:
    """The settings of the pool, as the summary's ``actuation`` block shows them."""
    cfg = plan.config
    settings: dict[str, object] = {
        "policy": cfg.policy,
        "models": list(plan.models),
        "max_slots": cfg.max_slots,
        "signal": "arrival_rate" if cfg.scaling.policy == "predictive" else cfg.scaling.signal,
        "interval_s": cfg.scaling.interval_s,
        "provisioning_s": cfg.scaling.provisioning_s,
        "times_s": {
            m: {"load": t.load_s, "wake": t.wake_s, "sleep": t.sleep_s}
            for m, t in zip(plan.models, plan.times, strict=True)
        },
        "num_gpus_per_instance": plan.num_gpus,
    }
    if plan.profiles:  # the seasonal forecast's period
        settings["forecast_period_s"] = plan.profiles[0].period_s
    return settings


class Bills:
    """Each slot's paid time billed to the engine owning it (the model awake or coming, or
    the last one): ``bill`` at every change of owner, with the slot's paid seconds then."""

    def __init__(self, engine_of: tuple[tuple[int, ...], ...], paid_by: dict[int, float]) -> None:
        self.owner = [row[0] for row in zip(*engine_of, strict=True)]  # by slot
        self.charged = {e: 0.0 for row in engine_of for e in row}  # paid seconds per engine
        self.upto = [0.0] * len(self.owner)  # each slot's paid seconds billed so far
        self.paid_by = paid_by  # each slot's paid seconds (the fleet book's, kept current)

    def bill(self, s: int, e: int) -> None:
        """Bill slot ``s``'s paid time so far to its owner; ``e`` owns it from now on."""
        paid = self.paid_by[s]
        self.charged[self.owner[s]] += paid - self.upto[s]
        self.upto[s], self.owner[s] = paid, e
