"""The simulator's scaling rules, as the live control plane uses them: the one bridge to ``sim``.

The live autoscaler (:mod:`.autoscaler`) decides exactly as the simulated one: same
config class (:class:`~sincere.sim.autoscale_config.AutoscalingConfig`), same decision
(:func:`~sincere.sim.autoscale.desired_count`). The live pool of several models
(:mod:`.pool`) is driven by the simulated pool's own controller
(:class:`~sincere.sim.actuation_rule.PoolRule`, configured by
:class:`~sincere.sim.actuation_config.ActuationConfig` and planned by
:func:`~sincere.sim.actuation_slots.pool_plan`). All live in ``sim/``, which the live path
does not otherwise import; this module is the only place in ``serve/`` that reaches them,
and it is imported only when ``controller.autoscaling`` or ``controller.actuation`` is
configured, so a gateway without them loads no simulator code. Should the rules move
below ``sim/``, only these imports change.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from sincere.core.config import MAX_SECONDS, validate_config
from sincere.core.errors import ConfigError
from sincere.perf.base import Deployment
from sincere.sim.actuation_config import ActuationConfig, check_groups, initial_counts
from sincere.sim.actuation_rule import PoolHands, PoolRule
from sincere.sim.actuation_slots import PoolPlan, pool_plan
from sincere.sim.autoscale import Cooldown, desired_count
from sincere.sim.autoscale_book import DRAINING, STARTING, UP
from sincere.sim.autoscale_config import AutoscalingConfig

__all__ = [
    "DRAINING", "STARTING", "UP", "ActuationConfig", "AutoscalingConfig", "Cooldown", "PoolHands",
    "PoolPlan", "PoolRule", "desired_count", "live_actuation", "live_autoscaling",
    "live_pool_plan",
]  # fmt: skip

WHERE = "controller.autoscaling"
POOL = "controller.actuation"


def live_autoscaling(raw: dict[str, Any], max_instances: int) -> AutoscalingConfig:
    """The ``controller.autoscaling`` section, checked to run live.

    Raises :class:`ConfigError` for a field the simulator's schema refuses, a seasonal
    forecast (``forecast_*``: the simulator's only), contradicting settings (its own
    checks), a missing ``group`` (the model scaled), a duration over a day, a warm pool
    that does not fit, or more instances than ``controller.max_instances``.
    """
    cfg = validate_config(AutoscalingConfig, raw, prefix=WHERE)
    _refuse_profile(cfg, WHERE)
    cfg.check()
    if cfg.policy == "predictive":
        raise ConfigError(
            "the predictive policy runs in the simulator only (the live reading is a load)",
            where=f"{WHERE}.policy", value=cfg.policy, allowed=["threshold", "target-utilisation"],
        )  # fmt: skip
    if cfg.group is None:
        raise ConfigError(
            "live autoscaling needs group: the model whose instances it scales",
            where=f"{WHERE}.group", allowed="a model name",
        )  # fmt: skip
    _check_durations(cfg, WHERE)
    _check_room(cfg, max_instances)
    return cfg


def _refuse_profile(cfg: AutoscalingConfig, where: str) -> None:
    """The seasonal forecast belongs to the predictive policy, which reads every arrival:
    the simulator's alone."""
    for name in ("forecast_profile", "forecast_period_s", "forecast_bin_s"):
        if getattr(cfg, name) is not None:
            raise ConfigError(
                "a seasonal forecast runs in the simulator only (it serves the predictive "
                "policy, which reads every arrival; live, the reading is a load)",
                where=f"{where}.{name}", value=getattr(cfg, name), allowed="null (left out)",
            )  # fmt: skip


def _check_room(cfg: AutoscalingConfig, max_instances: int) -> None:
    if cfg.min_instances + cfg.warm_pool > cfg.max_instances:
        raise ConfigError(
            f"min_instances ({cfg.min_instances}) + warm_pool must fit in max_instances "
            f"({cfg.max_instances})",
            where=f"{WHERE}.warm_pool", value=cfg.warm_pool,
            allowed=f"0..{cfg.max_instances - cfg.min_instances}",
        )  # fmt: skip
    if cfg.max_instances > max_instances:
        raise ConfigError(
            f"autoscaling may not hold more instances than controller.max_instances "
            f"({max_instances})",
            where=f"{WHERE}.max_instances", value=cfg.max_instances, allowed=f"1..{max_instances}",
        )  # fmt: skip


SCALING_DURATIONS = ("interval_s", "cooldown_s", "provisioning_s", "load_s")


def _check_durations(cfg: Any, where: str, names: tuple[str, ...] = SCALING_DURATIONS) -> None:
    """Each of ``cfg``'s ``names`` (seconds, None: not set) at most a day."""
    for name in names:
        value = getattr(cfg, name)
        if value is not None and not value <= MAX_SECONDS:
            raise ConfigError(
                "too long a duration", where=f"{where}.{name}", value=value,
                allowed=f"0..{MAX_SECONDS:g} seconds",
            )  # fmt: skip


@dataclass(slots=True)
class _LiveGroup:
    """A pool model as the simulator's checks read an instances entry."""

    name: str | None
    count: int
    accelerator: str
    tp: int
    pp: int

    @property
    def model_names(self) -> list[str]:
        return [self.name or ""]


def live_actuation(raw: dict[str, Any], max_instances: int) -> ActuationConfig:
    """The ``controller.actuation`` section, checked to run live.

    Raises :class:`ConfigError` for a field the simulator's schema refuses, the predictive
    policy and its seasonal forecast (they read every arrival), a missing or repeated
    ``groups`` (live, the pool's model names), ``times`` or ``initial`` naming another
    model, initial counts over ``max_slots``, a duration over a day, or more engines
    (``max_slots`` per model) than ``controller.max_instances``.
    """
    cfg = validate_config(ActuationConfig, raw, prefix=POOL)
    _refuse_profile(cfg.scaling, f"{POOL}.scaling")
    models = cfg.groups
    if not models or len(set(models)) != len(models):
        raise ConfigError(
            "live, groups lists the pool's models (each once): one engine of each model "
            "per slot", where=f"{POOL}.groups", value=models, allowed="model names",
        )  # fmt: skip
    if cfg.scaling.policy == "predictive":
        raise ConfigError(
            "the predictive policy runs in the simulator only (the live pool is told of "
            "the requests held, not of every arrival)", where=f"{POOL}.scaling.policy",
            value="predictive", allowed=["threshold", "target-utilisation"],
        )  # fmt: skip
    _check_durations(cfg.scaling, f"{POOL}.scaling")
    _check_durations(cfg, POOL, ("idle_s", "release_after_s"))
    groups = [_LiveGroup(m, 1, "-", 1, 1) for m in models]
    check_groups(cfg, groups)  # the simulator's own checks, before any engine exists
    num_engines = cfg.max_slots * len(models)
    if num_engines > max_instances:
        raise ConfigError(
            f"the pool runs one emulated engine per model and slot ({len(models)} x "
            f"{cfg.max_slots}), over controller.max_instances = {max_instances}",
            where=f"{POOL}.max_slots", value=cfg.max_slots,
            allowed=f"1..{max_instances // len(models)}",
        )  # fmt: skip
    return cfg


def live_pool_plan(cfg: ActuationConfig, deployments: list[Deployment]) -> PoolPlan:
    """The live pool's plan: its models (``cfg.groups``, as served) deployed as
    ``deployments``; engine ``g * max_slots + s`` is model ``g`` on slot ``s``. Raises
    :class:`ConfigError` when the deployments differ in accelerator or GPUs."""
    models = cfg.groups
    assert models is not None, "checked by live_actuation"
    groups = [
        _LiveGroup(m, 1, d.accelerator.name, d.tp, d.pp)
        for m, d in zip(models, deployments, strict=True)
    ]
    check_groups(cfg, groups)
    num = cfg.max_slots
    engines = [range(g * num, (g + 1) * num) for g in range(len(models))]
    initial = initial_counts(cfg, groups, list(range(len(models))))
    plan = pool_plan(cfg, list(models), engines, deployments, initial)
    return dataclasses.replace(plan, models=tuple(models))
