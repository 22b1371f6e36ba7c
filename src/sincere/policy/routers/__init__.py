"""The routers: importing this package registers every one of them in ``ROUTERS``.

Build one by name with ``ROUTERS.build(name, params, rng=generator, **collaborators)``
(or :func:`make_router`, which takes parameters and collaborators as keywords). See
``docs/routers.md`` for what each optimises. Every module of this package is imported
here, so a new router is one file (its class, its params model and its
``@ROUTERS.register`` line) plus its row in ``docs/routers.md``.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import numpy as np

from sincere.policy.router_base import ROUTERS, Router
from sincere.policy.routers.basic import (
    JoinShortestQueueParams,
    JoinShortestQueueRouter,
    LeastOutstandingRouter,
    PowerOfTwoParams,
    PowerOfTwoRouter,
    RandomRouter,
    RoundRobinRouter,
)
from sincere.policy.routers.cost_optimal import (
    PRESETS,
    CostOptimalParams,
    CostOptimalRouter,
    Weights,
)
from sincere.policy.routers.latency_optimal import LatencyOptimalParams, LatencyOptimalRouter
from sincere.policy.routers.price_optimal import PriceOptimalParams, PriceOptimalRouter
from sincere.policy.routers.relevance_optimal import (
    RelevanceOptimalParams,
    RelevanceOptimalRouter,
)
from sincere.policy.routers.small_model_first import SmallModelFirstParams, SmallModelFirstRouter

for _module in pkgutil.iter_modules(__path__):  # register routers added as new files
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")


def router_params(name: str) -> list[str]:
    """The parameters router ``name`` takes from config (an unknown name raises)."""
    return ROUTERS.param_names(name)


def make_router(name: str, rng: np.random.Generator, **params: Any) -> Router:
    """Router ``name`` from keyword parameters and collaborators (``ROUTERS.build``).

    A keyword naming a collaborator and holding an object of its kind (a predictor, an
    error model, a difficulty callable) is passed as that collaborator; every other one
    is a parameter. Raises ``ConfigError`` listing every problem.
    """
    values, collaborators = ROUTERS.split(name, params)
    return ROUTERS.build(name, values, rng=rng, **collaborators)


__all__ = [
    "PRESETS",
    "ROUTERS",
    "CostOptimalParams",
    "CostOptimalRouter",
    "JoinShortestQueueParams",
    "JoinShortestQueueRouter",
    "LatencyOptimalParams",
    "LatencyOptimalRouter",
    "LeastOutstandingRouter",
    "PowerOfTwoParams",
    "PowerOfTwoRouter",
    "PriceOptimalParams",
    "PriceOptimalRouter",
    "RandomRouter",
    "RelevanceOptimalParams",
    "RelevanceOptimalRouter",
    "RoundRobinRouter",
    "SmallModelFirstParams",
    "SmallModelFirstRouter",
    "Weights",
    "make_router",
    "router_params",
]
