"""The ``autoscaling:`` section of a simulation config: one instances group scaled in the loop.

Shape (docs/autoscaling.md has the model)::

    autoscaling:
      group: llama-a100          # an instances entry's name (default: the first entry)
      policy: threshold          # threshold | target-utilisation
      signal: in_flight          # in_flight | waiting | kv_usage: the load per instance
      interval_s: 10             # the controller reads the load every interval
      min_instances: 1
      max_instances: 8           # the group is built with this many engines
      scale_up_threshold: 8      # threshold: above this per instance, one more instance
      scale_down_threshold: 2    # threshold: below this per instance, one fewer
      target_per_instance: 4     # target-utilisation: ceil(load / target) instances
      cooldown_s: 60             # a scale-down waits until the count wanted was lower this long
      provisioning_s: 30         # a machine is provisioned (its GPUs paid from then on)
      load_s: null               # the model's weights load (null: weight bytes / load_gbps)
      load_gbps: 5.0             # per GPU, when load_s is not given
      warm_pool: 0               # instances kept provisioned but not serving

The group's ``count`` is how many instances serve at time 0. Checks that need the
instances (the group's name, its count between the bounds) are made when the run is
built (:func:`check_group`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from sincere.core.errors import ConfigError

WHERE = "autoscaling"
DEFAULT_LOAD_GBPS = 5.0
"""Weight bytes per second per GPU of a model load when ``load_s`` is not given: a local
NVMe or page-cache read into GPU memory (a remote pull is slower; measure yours)."""


class _Group(Protocol):
    name: str | None
    count: int


class AutoscalingConfig(BaseModel):
    """Scaling one instances group inside the simulated run (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    group: str | None = None  # the instances entry scaled, by name (None: the first)
    policy: Literal["threshold", "target-utilisation"] = "threshold"
    # the load read on each serving instance: requests outstanding, requests queued, or
    # the fraction of KV blocks in use (continuous engines)
    signal: Literal["in_flight", "waiting", "kv_usage"] = "in_flight"
    interval_s: float = Field(10.0, gt=0)  # between two readings of the load
    min_instances: int = Field(1, ge=1)
    max_instances: int = Field(ge=1)
    scale_up_threshold: float | None = Field(None, ge=0)  # threshold policy
    scale_down_threshold: float | None = Field(None, ge=0)  # threshold policy
    target_per_instance: float | None = Field(None, gt=0)  # target-utilisation policy
    cooldown_s: float = Field(60.0, ge=0)  # scale-down stabilisation window
    provisioning_s: float = Field(0.0, ge=0)  # machine start, before the model loads
    load_s: float | None = Field(None, ge=0)  # model load (None: derived from load_gbps)
    load_gbps: float = Field(DEFAULT_LOAD_GBPS, gt=0)  # per GPU, for the derived load_s
    warm_pool: int = Field(0, ge=0)  # instances provisioned but idle (start in load_s)

    def check(self) -> None:
        """Raise :class:`ConfigError` for settings that contradict each other."""
        if self.min_instances > self.max_instances:
            raise ConfigError(
                f"min_instances must be <= max_instances ({self.max_instances})",
                where=f"{WHERE}.min_instances", value=self.min_instances,
                allowed=f"1..{self.max_instances}",
            )  # fmt: skip
        if self.policy == "threshold":
            self._check_thresholds()
        elif self.target_per_instance is None:
            raise ConfigError(
                "the target-utilisation policy needs target_per_instance (load per instance)",
                where=f"{WHERE}.target_per_instance", allowed="a number > 0",
            )  # fmt: skip

    def _check_thresholds(self) -> None:
        up, down = self.scale_up_threshold, self.scale_down_threshold
        for name, value in (("scale_up_threshold", up), ("scale_down_threshold", down)):
            if value is None:
                raise ConfigError(
                    f"the threshold policy needs {name} (load per instance)",
                    where=f"{WHERE}.{name}", allowed="a number >= 0",
                )  # fmt: skip
        assert up is not None and down is not None
        if down >= up:
            raise ConfigError(
                f"scale_down_threshold must be below scale_up_threshold ({up})",
                where=f"{WHERE}.scale_down_threshold", value=down, allowed=f"< {up}",
            )  # fmt: skip


def check_group(cfg: AutoscalingConfig, groups: Sequence[_Group]) -> int:
    """The position of the instances entry ``cfg`` scales; raises :class:`ConfigError` when
    it names none, or when its count or the warm pool do not fit between the bounds."""
    cfg.check()
    names = [g.name for g in groups]
    if cfg.group is None:
        pos = 0
    elif cfg.group in names:
        pos = names.index(cfg.group)
    else:
        allowed = [n for n in names if n is not None] or ["(give an instances entry a name)"]
        raise ConfigError(
            "no instances entry has this name", where=f"{WHERE}.group", value=cfg.group,
            allowed=allowed,
        )  # fmt: skip
    count = groups[pos].count
    lo, hi = cfg.min_instances, cfg.max_instances
    if not lo <= count <= hi:
        raise ConfigError(
            "the scaled group's count (instances serving at time 0) must lie between "
            "min_instances and max_instances",
            where=f"instances[{pos}].count", value=count, allowed=f"{lo}..{hi}",
        )  # fmt: skip
    if count + cfg.warm_pool > hi:
        raise ConfigError(
            f"count {count} + warm_pool must fit in max_instances {hi}",
            where=f"{WHERE}.warm_pool", value=cfg.warm_pool, allowed=f"0..{hi - count}",
        )  # fmt: skip
    return pos
