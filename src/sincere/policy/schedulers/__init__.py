"""Iteration-level engine schedulers (clock-free; shared by simulator and emulator).

``SCHEDULERS`` holds them by name; :func:`make_scheduler` builds one from a name and
its parameters, passing a batch-time predictor to those that need one (Niyama).
Adding a policy: one subclass of :class:`IterationScheduler` and one
``@SCHEDULERS.register("name")`` line.
"""

from __future__ import annotations

import inspect
from typing import Any

from sincere.core.errors import ConfigError
from sincere.perf.base import StepTimeModel
from sincere.policy.schedulers import niyama, orders
from sincere.policy.schedulers.base import EngineView, IterationPlan, IterationScheduler, StaticView
from sincere.policy.schedulers.registry import SCHEDULERS

__all__ = [
    "SCHEDULERS",
    "EngineView",
    "IterationPlan",
    "IterationScheduler",
    "StaticView",
    "make_scheduler",
    "niyama",
    "orders",
]


def make_scheduler(
    name: str, params: dict[str, Any] | None = None, predictor: StepTimeModel | None = None
) -> IterationScheduler:
    """Build scheduler ``name`` with ``params``; unknown names or parameters raise."""
    cls = SCHEDULERS.get(name)
    params = dict(params or {})
    accepted = [
        p.name
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.name not in ("self", "predictor") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ConfigError(
            f"unknown parameter for engine scheduler {name!r}",
            value=unknown[0],
            allowed=accepted or ["(none)"],
        )
    try:
        if cls.needs_predictor:
            return cls(predictor=predictor, **params)  # type: ignore[call-arg]
        return cls(**params)
    except TypeError as exc:
        raise ConfigError(f"engine scheduler {name!r}: {exc}", value=params) from None
