"""The control plane's sections of the gateway's config file: ``planning`` and ``controller``.

Pure schema (pydantic, frozen, unknown fields refused): the gateway's file schema
(:class:`~sincere.serve.gateway.config.GatewayConfig`) embeds these two sections, and the
:class:`~sincere.serve.control.controller.Controller` is given them. Units as in the rest
of the file: seconds (``*_s``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sincere.core.config import MAX_SECONDS
from sincere.serve.control.upstream_policy import parse_rules

__all__ = ["ControllerConfig", "PlanningConfig"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class PlanningConfig(_Strict):
    """The controller's planner (Inferno) over observed load."""

    problem_dir: str | None = None  # Inferno files: accelerators, models, service classes
    window_s: float = Field(60.0, gt=0, le=MAX_SECONDS)  # observed load is averaged over it
    solver: Literal["greedy", "milp"] = "greedy"
    min_replicas: int = Field(1, ge=0, le=1024)  # per model, whatever the plan says
    emulator: dict[str, Any] = Field(default_factory=dict)  # template for emulated instances


class ControllerConfig(_Strict):
    """What the controller API (``/admin``) may do; it is reachable by whoever reaches the port.

    ``allowed_upstreams``: the servers ``POST /admin/instances`` may register by URL, as
    ``host:port``, ``host:*`` or ``host:low-high`` (empty: none; servers in ``backends``
    are the operator's and need no entry). ``max_instances``: instances the gateway holds
    at most (configured, deployed and planned). ``max_plan_starts``: emulated instances
    one plan may start without ``confirm: true``. ``files_dir``: the only directory whose
    files API callers may name (a step-model ``params_file``); null = none.
    ``autoscaling``: the simulator's ``autoscaling`` section, run live on the model named
    by its ``group`` (:mod:`~sincere.serve.control.autoscaler`); null = no autoscaler.
    ``actuation``: the simulator's ``actuation`` section, several models on one pool of
    slots run live (:mod:`~sincere.serve.control.pool`; ``groups`` lists the models);
    null = no pool. One or the other: both scale instances.
    """

    allowed_upstreams: list[str] = Field(default_factory=list, max_length=1024)
    max_instances: int = Field(16, ge=1, le=4096)
    max_plan_starts: int = Field(4, ge=0, le=4096)
    files_dir: str | None = None
    # the simulator's autoscaling fields (checked by serve/control/sim_scaling.py)
    autoscaling: dict[str, Any] | None = None
    actuation: dict[str, Any] | None = None  # the simulator's actuation fields (the same)

    @field_validator("allowed_upstreams")
    @classmethod
    def _rules(cls, value: list[str]) -> list[str]:
        parse_rules(value)  # raises naming a bad entry
        return value

    @model_validator(mode="after")
    def _autoscaling(self) -> ControllerConfig:
        if self.autoscaling is not None:  # the simulator's schema, loaded only when used
            from sincere.serve.control.sim_scaling import live_autoscaling

            live_autoscaling(self.autoscaling, self.max_instances)
        if self.actuation is not None:
            from sincere.core.errors import ConfigError
            from sincere.serve.control.sim_scaling import live_actuation

            if self.autoscaling is not None:
                raise ConfigError(
                    "controller.autoscaling and controller.actuation both scale instances: "
                    "give one (a pool of one model under dedicated scales as the autoscaler)",
                    where="controller.actuation", allowed="one of the two sections",
                )  # fmt: skip
            live_actuation(self.actuation, self.max_instances)
        return self
