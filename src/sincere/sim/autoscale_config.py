"""The ``autoscaling:`` section of a simulation config: one instances group scaled in the loop.

Shape (docs/autoscaling.md has the model)::

    autoscaling:
      group: llama-a100          # an instances entry's name (default: the first entry)
      policy: threshold          # threshold | target-utilisation | predictive
      signal: in_flight          # in_flight | waiting | kv_usage: the load per instance
      interval_s: 10             # the controller reads the load every interval
      min_instances: 1
      max_instances: 8           # the group is built with this many engines
      scale_up_threshold: 8      # threshold: above this per instance, one more instance
      scale_down_threshold: 2    # threshold: below this per instance, one fewer
      target_per_instance: 4     # target-utilisation: ceil(load / target) instances
      rate_per_instance: 2.0     # predictive: requests/s one instance serves at its SLOs
      forecast_alpha: 0.5        # predictive: Holt's smoothing of the arrival rate's level
      forecast_beta: 0.3         # predictive: ... and of its trend
      forecast_profile: null     # predictive, seasonal: [[time_s, rate], ...] over a period,
                                 # or a trace file of a previous period's arrivals
      forecast_period_s: null    # ... the period (e.g. 86400: a day); needed with a profile
      forecast_bin_s: null       # ... a trace profile's bin (default: period / 48)
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

import math
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
    policy: Literal["threshold", "target-utilisation", "predictive"] = "threshold"
    # the load read on each serving instance: requests outstanding, requests queued, or
    # the fraction of KV blocks in use (continuous engines)
    signal: Literal["in_flight", "waiting", "kv_usage"] = "in_flight"
    interval_s: float = Field(10.0, gt=0)  # between two readings of the load
    min_instances: int = Field(1, ge=1)
    max_instances: int = Field(ge=1)
    scale_up_threshold: float | None = Field(None, ge=0)  # threshold policy
    scale_down_threshold: float | None = Field(None, ge=0)  # threshold policy
    target_per_instance: float | None = Field(None, gt=0)  # target-utilisation policy
    rate_per_instance: float | None = Field(None, gt=0)  # predictive: req/s per instance
    forecast_alpha: float = Field(0.5, gt=0, le=1)  # predictive: level smoothing
    forecast_beta: float = Field(0.3, ge=0, le=1)  # predictive: trend smoothing
    # predictive, seasonal (sim.autoscale_season): the rate's pattern over a period, as
    # (time_s, rate) points or a trace file of a previous period's arrivals
    forecast_profile: tuple[tuple[float, float], ...] | str | None = None
    forecast_period_s: float | None = None  # the profile's period (seconds)
    forecast_bin_s: float | None = None  # a trace profile's bin (None: period / 48)
    cooldown_s: float = Field(60.0, ge=0)  # scale-down stabilisation window
    provisioning_s: float = Field(0.0, ge=0)  # machine start, before the model loads
    load_s: float | None = Field(None, ge=0)  # model load (None: derived from load_gbps)
    load_gbps: float = Field(DEFAULT_LOAD_GBPS, gt=0)  # per GPU, for the derived load_s
    warm_pool: int = Field(0, ge=0)  # instances provisioned but idle (start in load_s)

    def load_seconds(self, weight_bytes_per_gpu: float) -> float:
        """The model's load on one instance: ``load_s`` when given, else one GPU's share of
        the weights at ``load_gbps`` (every GPU loads its share at the same time)."""
        if self.load_s is not None:
            return self.load_s
        return weight_bytes_per_gpu / (self.load_gbps * 1e9)

    def check(self) -> None:
        """Raise :class:`ConfigError` for settings that contradict each other."""
        if self.min_instances > self.max_instances:
            raise ConfigError(
                f"min_instances must be <= max_instances ({self.max_instances})",
                where=f"{WHERE}.min_instances", value=self.min_instances,
                allowed=f"1..{self.max_instances}",
            )  # fmt: skip
        if self.policy != "predictive" and self.forecast_profile is not None:
            raise ConfigError(
                "forecast_profile is a forecast of the predictive policy",
                where=f"{WHERE}.forecast_profile", value=self.policy, allowed=["predictive"],
            )  # fmt: skip
        if self.policy == "threshold":
            self._check_thresholds()
        elif self.policy == "predictive":
            if self.rate_per_instance is None:
                raise ConfigError(
                    "the predictive policy needs rate_per_instance (requests/s one instance "
                    "serves within its SLOs, e.g. from sincere plan)",
                    where=f"{WHERE}.rate_per_instance", allowed="a number > 0",
                )  # fmt: skip
            self._check_profile()
        elif self.target_per_instance is None:
            raise ConfigError(
                "the target-utilisation policy needs target_per_instance (load per instance)",
                where=f"{WHERE}.target_per_instance", allowed="a number > 0",
            )  # fmt: skip

    def _check_profile(self) -> None:
        """The seasonal profile: with its period (> 0), points at increasing times within
        it and rates >= 0 (not all 0), a bin only for a trace and within the period."""
        profile, period, bin_s = self.forecast_profile, self.forecast_period_s, self.forecast_bin_s
        if (profile is None) != (period is None):
            missing = "forecast_period_s" if period is None else "forecast_profile"
            raise ConfigError(
                "a seasonal forecast needs both forecast_profile and forecast_period_s",
                where=f"{WHERE}.{missing}", allowed="both given, or neither",
            )  # fmt: skip
        if profile is None or period is None:
            return
        if not 0 < period < math.inf:
            raise ConfigError(
                "the profile's period must be positive", where=f"{WHERE}.forecast_period_s",
                value=period, allowed="a number of seconds > 0",
            )  # fmt: skip
        if isinstance(profile, str):
            if bin_s is not None and not 0 < bin_s <= period:
                raise ConfigError(
                    "a trace profile's bin must lie within the period",
                    where=f"{WHERE}.forecast_bin_s", value=bin_s, allowed=f"(0, {period:g}]",
                )  # fmt: skip
            return
        if bin_s is not None:
            raise ConfigError(
                "forecast_bin_s bins a trace profile; points need none",
                where=f"{WHERE}.forecast_bin_s", value=bin_s, allowed="null",
            )  # fmt: skip
        _check_points(profile, period)

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


def _check_points(points: Sequence[tuple[float, float]], period: float) -> None:
    """Raise :class:`ConfigError` unless ``points`` have increasing times in ``[0, period)``
    and finite rates >= 0, not all 0."""
    where = f"{WHERE}.forecast_profile"
    if not points:
        raise ConfigError("the profile has no point", where=where, allowed="[[time_s, rate], ...]")
    for k, (at, rate) in enumerate(points):
        if not 0 <= at < period:
            raise ConfigError(
                "a profile point's time must lie within the period", where=f"{where}[{k}]",
                value=at, allowed=f"[0, {period:g})",
            )  # fmt: skip
        if k and at <= points[k - 1][0]:
            raise ConfigError(
                "the profile's times must increase", where=f"{where}[{k}]", value=at,
                allowed=f"> {points[k - 1][0]:g}",
            )  # fmt: skip
        if not 0 <= rate < math.inf:
            raise ConfigError(
                "a profile's rate must be a number >= 0 (requests/s)", where=f"{where}[{k}]",
                value=rate, allowed=">= 0",
            )  # fmt: skip
    if not any(rate > 0 for _, rate in points):
        raise ConfigError(
            "a profile of zero rates forecasts no load", where=where, value=list(points),
            allowed="at least one rate > 0",
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
