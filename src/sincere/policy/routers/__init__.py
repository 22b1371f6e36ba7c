"""The routers: importing this package registers every one of them in ``ROUTERS``.

Build one by name with :func:`make_router` (or ``ROUTERS.get(name)(rng=..., **params)``).
See ``docs/routers.md`` for what each optimises. Every module of this package is
imported here, so a new router is one file (its class and its ``@ROUTERS.register``
line) plus its row in ``docs/routers.md``.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any

import numpy as np

from sincere.core.errors import ConfigError
from sincere.policy.router_base import ROUTERS, Router
from sincere.policy.routers.basic import (
    JoinShortestQueueRouter,
    LeastOutstandingRouter,
    PowerOfTwoRouter,
    RandomRouter,
    RoundRobinRouter,
)
from sincere.policy.routers.cost_optimal import PRESETS, CostOptimalRouter, Weights
from sincere.policy.routers.latency_optimal import LatencyOptimalRouter
from sincere.policy.routers.price_optimal import PriceOptimalRouter
from sincere.policy.routers.relevance_optimal import RelevanceOptimalRouter
from sincere.policy.routers.small_model_first import SmallModelFirstRouter

for _module in pkgutil.iter_modules(__path__):  # register routers added as new files
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")


def router_params(name: str) -> list[str]:
    """The keyword parameters router ``name`` accepts (besides ``rng``)."""
    signature = inspect.signature(ROUTERS.get(name).__init__)
    return [p for p in signature.parameters if p not in ("self", "rng", "params")]


def make_router(name: str, rng: np.random.Generator, **params: Any) -> Router:
    """Router ``name`` built with ``params``; unknown names or params raise ConfigError."""
    cls = ROUTERS.get(name)
    allowed = router_params(name)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ConfigError(
            f"router {name!r} got unknown parameters", value=unknown, allowed=allowed or "none"
        )
    return cls(rng=rng, **params)


__all__ = [
    "PRESETS",
    "ROUTERS",
    "CostOptimalRouter",
    "JoinShortestQueueRouter",
    "LatencyOptimalRouter",
    "LeastOutstandingRouter",
    "PowerOfTwoRouter",
    "PriceOptimalRouter",
    "RandomRouter",
    "RelevanceOptimalRouter",
    "RoundRobinRouter",
    "SmallModelFirstRouter",
    "Weights",
    "make_router",
    "router_params",
]
