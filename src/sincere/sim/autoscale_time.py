"""A scaling scenario with its clock compressed: every time multiplied by one ``factor``.

A simulated day of autoscaling is replayed live (gateway, live pool, emulated engines)
at ``factor`` of its speed -- ``1/64``: a 3,600 s day in 56 s of wall clock. For the
replay to be the same scenario, every time in it is multiplied by ``factor`` and every
rate divided by it:

* the requests' arrivals and their tiers' targets (:func:`scaled_requests`);
* each instances entry's engine (``time_scale``, :mod:`sincere.engine.time_scale`);
* ``autoscaling`` and ``actuation.scaling``: ``interval_s``, ``cooldown_s``,
  ``provisioning_s``, ``load_s``, ``forecast_period_s``, ``forecast_bin_s`` (times);
  ``load_gbps``, ``rate_per_instance`` (rates);
* ``actuation``: ``idle_s``, ``release_after_s`` and the ``times`` given; the host link
  (``host_link_gbps``, else the accelerator's figure x ``host_link_efficiency``).

Then a simulated run of the scaled scenario is the run at scale 1 with every time
multiplied (bit for bit with a power-of-two factor, up to rounding otherwise:
``tests/sim/test_autoscale_time.py``). Dimensionless settings stay: thresholds, counts,
the forecast's smoothing per reading. Refused (:class:`ConfigError`): a seasonal
``forecast_profile`` (a trace file's arrivals are not rewritten here) and
``disaggregation`` (its KV link keeps its own times). The router's and admission's
parameters are copied unchanged: the scenarios scaled here use none with a time.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

from sincere.catalog import get_accelerator
from sincere.core.errors import ConfigError
from sincere.core.request import RequestArrays
from sincere.engine.spec import DeploymentSpec
from sincere.sim.actuation_config import DEFAULT_HOST_LINK_EFFICIENCY, ActuationConfig
from sincere.sim.autoscale_config import AutoscalingConfig

SCALED_TIMES = ("interval_s", "cooldown_s", "provisioning_s", "load_s", "forecast_period_s",
                "forecast_bin_s")  # fmt: skip
SCALED_RATES = ("load_gbps", "rate_per_instance")
_DEFAULT_ACCELERATOR = DeploymentSpec.model_fields["accelerator"].default


def check_factor(factor: float) -> None:
    """Raise :class:`ConfigError` unless ``factor`` is a positive finite number."""
    if not (isinstance(factor, int | float) and math.isfinite(factor) and factor > 0):
        raise ConfigError("time_scale must be a positive finite number", value=factor,
                          allowed="e.g. 1/64 (a 64x faster clock)")  # fmt: skip


def scaled_requests(requests: RequestArrays, factor: float) -> RequestArrays:
    """``requests`` with arrivals and tier targets multiplied by ``factor``."""
    check_factor(factor)
    tiers = tuple(
        dataclasses.replace(
            t,
            ttft_s=_times(t.ttft_s, factor),
            ttlt_s=_times(t.ttlt_s, factor),
            tbt_s=_times(t.tbt_s, factor),
        )
        for t in requests.tiers
    )
    return dataclasses.replace(requests, arrival_at=requests.arrival_at * factor, tiers=tiers)


def _times(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def time_scaled(config: dict[str, Any], factor: float) -> dict[str, Any]:
    """A copy of simulation config ``config`` (a mapping, as loaded) with every time of
    its instances, autoscaling and actuation multiplied by ``factor`` (the module
    docstring). Raises :class:`ConfigError` for what it does not scale."""
    check_factor(factor)
    if config.get("disaggregation") is not None:
        raise ConfigError("a time-scaled scenario does not scale the KV link's times",
                          where="disaggregation", allowed="absent")  # fmt: skip
    out = copy.deepcopy(config)
    for inst in out["instances"]:
        inst["time_scale"] = inst.get("time_scale", 1.0) * factor
    if out.get("autoscaling") is not None:
        out["autoscaling"] = _scaling(out["autoscaling"], factor, "autoscaling")
    act = out.get("actuation")
    if act is not None:
        act["scaling"] = _scaling(act["scaling"], factor, "actuation.scaling")
        for key in ("idle_s", "release_after_s"):  # given, else the default
            act[key] = act.get(key, ActuationConfig.model_fields[key].default) * factor
        act["times"] = {
            m: {k: v * factor for k, v in t.items() if v is not None}
            for m, t in act.get("times", {}).items()
        }
        act["host_link_gbps"] = _host_link(out, act) / factor
    return out


def _scaling(section: dict[str, Any], factor: float, where: str) -> dict[str, Any]:
    """An autoscaling section's times multiplied, rates divided (a default, the load's
    bandwidth, the cool-down, the interval, taken as given)."""
    if section.get("forecast_profile") is not None:
        raise ConfigError(
            "a time-scaled scenario does not rewrite a seasonal profile's trace file",
            where=f"{where}.forecast_profile", value=section["forecast_profile"],
            allowed="absent (or scale the profile's trace and give it yourself)",
        )  # fmt: skip
    out = dict(section)
    defaults = AutoscalingConfig.model_fields
    for key in SCALED_TIMES + SCALED_RATES:  # given, else the default
        value = out.get(key, defaults[key].default)
        if value is not None:
            out[key] = value * factor if key in SCALED_TIMES else value / factor
    return out


def _host_link(config: dict[str, Any], act: dict[str, Any]) -> float:
    """The pool's host link, GB/s per GPU, as :func:`~sincere.sim.actuation_slots.model_times`
    takes it: given, else the pool's accelerator's figure x the efficiency."""
    if act.get("host_link_gbps") is not None:
        return float(act["host_link_gbps"])
    names = act.get("groups")
    pool = [i for i in config["instances"] if names is None or i.get("name") in names]
    accelerator = get_accelerator(pool[0].get("accelerator", _DEFAULT_ACCELERATOR))
    efficiency = float(act.get("host_link_efficiency", DEFAULT_HOST_LINK_EFFICIENCY))
    return float(accelerator.host_link_gbps) * efficiency
