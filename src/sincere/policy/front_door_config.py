"""The front door's config sections: the router and admission, one schema for both paths.

The simulator's config (``router:``, ``admission:``) and the gateway's use these very
classes, validated once at the config edge;
:func:`sincere.policy.front_door.build_front_door` turns them into the policy objects.
This module imports nothing but pydantic, so reading a config stays cheap.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

_FROZEN = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class RouterConfig(BaseModel):
    """The router: a name from ``sincere.policy.routers`` and its parameters."""

    model_config = _FROZEN
    name: str = "least-outstanding"  # the default on both paths
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int | None = None  # seed of its random stream; None: the run's seed (gateway: 0)


class AdmissionConfig(BaseModel):
    """Early rejection of requests that cannot meet their deadline, or are shed by priority.

    Latency estimates come from an instance's step-time model and engine load when its
    view has both, else from measured TTFTs, which expire ``max_estimate_age_s`` after an
    instance's last one. Off by default in the simulator (results stay comparable), on by
    default in the gateway.
    """

    model_config = _FROZEN
    enabled: bool = False
    shed_factor: float = Field(1.0, gt=0, le=1e6)  # reject when predicted > factor x time left
    priority_bands: list[tuple[float, int]] = Field(default_factory=list, max_length=64)
    max_estimate_age_s: float = Field(10.0, gt=0, le=86_400.0)
