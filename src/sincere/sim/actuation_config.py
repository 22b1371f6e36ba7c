"""The ``actuation:`` section of a simulation config: several models on one pool of GPU slots.

Shape (docs/autoscaling.md has the model)::

    actuation:
      policy: sleep              # dedicated | swap | sleep
      groups: [a, b, c]          # instances entries sharing the pool (default: all), one
                                 # model each, same accelerator and GPUs per instance
      max_slots: 8               # GPU slots (instances) provisioned together at most
      scaling:                   # the per-model decision: an autoscaling section's keys
        {policy: threshold, interval_s: 10, max_instances: 8, scale_up_threshold: 8,
         scale_down_threshold: 2, cooldown_s: 60, provisioning_s: 30, load_gbps: 5}
      idle_s: 10                 # swap / sleep: a slot that finished its last request this
                                 # long ago and holds none is idle: put to sleep (or its
                                 # model discarded) at a reading, or taken by another model
      release_after_s: 300       # swap / sleep: a slot with no model awake is released
                                 # (no longer paid) after this long
      max_asleep_per_slot: 2     # sleep: models a slot keeps asleep in host RAM
      headroom_slots: 0          # swap / sleep: empty slots kept provisioned for a
                                 # model no slot serves (replaced when taken)
      host_link_gbps: null       # per GPU, a sleep's offload and a wake's copy back
                                 # (null: the accelerator's PCIe figure x host_link_efficiency)
      host_link_efficiency: 0.8
      times:                     # measured times per model, overriding the derived ones
        llama-3-8b: {load_s: 12.0, wake_s: 0.9, sleep_s: 0.8}
      initial: {b: 0}            # slots serving a group's model at time 0 (default: count)

Slots serving at time 0 are given out in the groups' order; under ``sleep`` each of them
also holds the pool's other models asleep (in the groups' order, up to
``max_asleep_per_slot``): the warm set. Checks that need the instances are made when the
run is built (:func:`check_groups`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from sincere.core.errors import ConfigError
from sincere.sim.autoscale_config import AutoscalingConfig

WHERE = "actuation"
DEFAULT_HOST_LINK_EFFICIENCY = 0.8
"""Share of the accelerator's one-way PCIe figure a sleep's offload or a wake's copy
reaches (pinned host memory; vLLM's level-1 wake of an 8B model on an H100 is about a
second at this figure)."""

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class _Group(Protocol):
    name: str | None
    count: int
    accelerator: str
    tp: int
    pp: int

    @property
    def model_names(self) -> list[str]: ...


class ModelTimes(BaseModel):
    """Measured actuation times of one model on one slot (None: derived)."""

    model_config = _FROZEN
    load_s: float | None = Field(None, ge=0)  # load the weights from storage
    wake_s: float | None = Field(None, ge=0)  # level-1 wake: weights back from host RAM
    sleep_s: float | None = Field(None, ge=0)  # level-1 sleep: weights out to host RAM


class ActuationConfig(BaseModel):
    """Several models sharing a pool of GPU slots (see the module docstring)."""

    model_config = _FROZEN
    # dedicated: a slot serves one model until released (per-model threshold scaling);
    # swap: a slot changes model by discarding its weights and loading others from storage;
    # sleep: as swap, but a slot keeps models asleep in host RAM and wakes them over PCIe
    policy: Literal["dedicated", "swap", "sleep"] = "sleep"
    groups: list[str] | None = None  # the instances entries of the pool (None: all)
    max_slots: int = Field(ge=1)  # slots provisioned together at most
    scaling: AutoscalingConfig  # the per-model decision (its group is not read)
    idle_s: float = Field(10.0, ge=0)  # a slot with nothing to do this long is idle
    release_after_s: float = Field(300.0, ge=0)  # an empty slot is released after this
    max_asleep_per_slot: int = Field(2, ge=0)  # sleep: models kept in one slot's host RAM
    # swap / sleep: empty slots kept provisioned (paid) for a model no slot serves; one
    # taken is replaced at once from the down ones, and none is released below this
    headroom_slots: int = Field(0, ge=0)
    host_link_gbps: float | None = Field(None, gt=0)  # per GPU (None: catalog x efficiency)
    host_link_efficiency: float = Field(DEFAULT_HOST_LINK_EFFICIENCY, gt=0, le=1)
    times: dict[str, ModelTimes] = Field(default_factory=dict)  # by model name
    # slots serving a group's model at time 0, by group name (others: the group's count;
    # 0 only with a sharing policy)
    initial: dict[str, int] = Field(default_factory=dict)

    @property
    def shares(self) -> bool:
        """Whether a slot may change model (swap and sleep) and models may scale to zero."""
        return self.policy != "dedicated"


def initial_counts(
    cfg: ActuationConfig, groups: Sequence[_Group], positions: list[int]
) -> list[int]:
    """Slots serving each pool group's model at time 0 (``initial``, else its count)."""
    return [cfg.initial.get(groups[p].name or "", groups[p].count) for p in positions]


def check_groups(cfg: ActuationConfig, groups: Sequence[_Group]) -> list[int]:
    """The positions of the instances entries of the pool; raises :class:`ConfigError` when
    a name matches none, two entries serve one model, their deployments differ in
    accelerator or GPUs, or their counts do not fit the pool."""
    cfg.scaling.check()
    _check_scaling(cfg)
    names = [g.name for g in groups]
    if cfg.groups is None:
        positions = list(range(len(groups)))
    else:
        unknown = [n for n in cfg.groups if n not in names]
        if unknown:
            allowed = [n for n in names if n is not None] or ["(give instances entries names)"]
            raise ConfigError(
                "no instances entry has this name", where=f"{WHERE}.groups", value=unknown[0],
                allowed=allowed,
            )  # fmt: skip
        positions = [names.index(n) for n in cfg.groups]
    _check_models(cfg, [groups[p] for p in positions])
    _check_counts(cfg, groups, positions)
    return positions


def _check_scaling(cfg: ActuationConfig) -> None:
    """The scaling keys a pool does not read are refused rather than ignored."""
    unread = {"group": cfg.scaling.group, "warm_pool": cfg.scaling.warm_pool or None}
    if cfg.scaling.policy == "predictive" and cfg.shares:
        raise ConfigError(
            "the predictive policy keeps min_instances slots per model, and a sharing pool "
            "gives a model without load none: predictive runs under dedicated only",
            where=f"{WHERE}.scaling.policy", value="predictive",
            allowed=["threshold", "target-utilisation", "predictive with policy: dedicated"],
        )  # fmt: skip
    for key, value in unread.items():
        if value is not None:
            raise ConfigError(
                f"a pool does not read scaling.{key} (the pool is the groups; empty slots "
                "kept for release_after_s are its warm ones)",
                where=f"{WHERE}.scaling.{key}", value=value, allowed="absent",
            )  # fmt: skip


def _check_models(cfg: ActuationConfig, pool: Sequence[_Group]) -> None:
    models = [g.model_names for g in pool]
    if any(len(m) != 1 for m in models) or len({m[0] for m in models}) != len(models):
        raise ConfigError(
            "each instances entry of the pool serves one model, a different one each",
            where=f"{WHERE}.groups", value=[list(m) for m in models],
        )  # fmt: skip
    shapes = {(g.accelerator, g.tp, g.pp) for g in pool}
    if len(shapes) != 1:
        raise ConfigError(
            "the pool's instances entries must share accelerator, tp and pp (one slot "
            "kind)", where=f"{WHERE}.groups", value=sorted(shapes),
        )  # fmt: skip
    unknown = sorted(set(cfg.times) - {m[0] for m in models})
    if unknown:
        raise ConfigError(
            "times given for a model no group of the pool serves", where=f"{WHERE}.times",
            value=unknown[0], allowed=[m[0] for m in models],
        )  # fmt: skip


def _check_counts(cfg: ActuationConfig, groups: Sequence[_Group], positions: list[int]) -> None:
    pool = {groups[p].name for p in positions}
    for name in cfg.initial:
        if name not in pool:
            raise ConfigError(
                "initial names a group outside the pool", where=f"{WHERE}.initial",
                value=name, allowed=[n for n in pool if n is not None],
            )  # fmt: skip
    counts = initial_counts(cfg, groups, positions)
    total = sum(counts) + cfg.headroom_slots
    if total > cfg.max_slots:
        raise ConfigError(
            "the pool's counts (slots serving at time 0) and headroom_slots must fit in "
            "max_slots", where=f"{WHERE}.max_slots", value=cfg.max_slots, allowed=f">= {total}",
        )  # fmt: skip
    if cfg.headroom_slots and not cfg.shares:
        raise ConfigError(
            "headroom_slots keeps empty slots for any model: swap and sleep only "
            "(dedicated takes down slots)", where=f"{WHERE}.headroom_slots",
            value=cfg.headroom_slots, allowed="0 under dedicated",
        )  # fmt: skip
    lo, hi = cfg.scaling.min_instances, cfg.scaling.max_instances
    for p, count in zip(positions, counts, strict=True):
        if count > hi or count < (lo if not cfg.shares else 0):
            raise ConfigError(
                "a pool group's count (slots serving at time 0) must lie between "
                "scaling.min_instances and scaling.max_instances",
                where=f"instances[{p}].count", value=count, allowed=f"{lo}..{hi}",
            )  # fmt: skip
