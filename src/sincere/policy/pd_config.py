"""The prefill/decode (P/D) routing config: a decider and a router per phase.

One schema for every path that disaggregates (the simulator's ``disaggregation:``
section now); :func:`sincere.policy.pd.build_pd_front_door` turns it into the policy
objects. Imports nothing but pydantic and the router config, so reading it stays cheap.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sincere.policy.front_door_config import RouterConfig

_FROZEN = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

DECIDERS: tuple[str, ...] = ("always", "never", "threshold")
"""The decider names: whether a request is disaggregated."""


class DeciderConfig(BaseModel):
    """Whether a request's prefill runs on a prefill instance (llm-d's P/D decider).

    ``always`` / ``never``, or ``threshold``: when its prompt tokens not expected in the
    prefix cache of the decode instance chosen for it are at least ``min_uncached_tokens``
    (else it is served whole on that decode instance).
    """

    model_config = _FROZEN
    name: Literal["always", "never", "threshold"] = "always"
    min_uncached_tokens: int = Field(0, ge=0)  # threshold: disaggregate at or above this


class PDRoutingConfig(BaseModel):
    """The decider and the router of each phase (the existing routers, by name)."""

    model_config = _FROZEN
    decider: DeciderConfig = DeciderConfig()
    prefill_router: RouterConfig = RouterConfig(name="prefix-aware")
    decode_router: RouterConfig = RouterConfig()  # least-outstanding
