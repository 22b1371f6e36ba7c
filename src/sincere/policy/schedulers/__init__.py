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
    "check_scheduler_params",
    "make_scheduler",
    "niyama",
    "orders",
    "scheduler_params",
]


def scheduler_params(name: str) -> list[str]:
    """The parameters engine scheduler ``name`` takes (an unknown name raises)."""
    cls = SCHEDULERS.get(name)
    return [
        p.name
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.name not in ("self", "predictor") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]


def check_scheduler_params(name: str, params: dict[str, Any] | None) -> None:
    """Raise :class:`ConfigError` when ``params`` holds a name scheduler ``name`` does not take."""
    accepted = scheduler_params(name)
    unknown = sorted(set(params or {}) - set(accepted))
    if unknown:
        raise ConfigError(
            f"unknown parameter for engine scheduler {name!r}",
            value=unknown[0],
            allowed=accepted or ["(none)"],
        )


def make_scheduler(
    name: str, params: dict[str, Any] | None = None, predictor: StepTimeModel | None = None
) -> IterationScheduler:
    """Build scheduler ``name`` with ``params``; unknown names or parameters raise."""
    check_scheduler_params(name, params)
    cls = SCHEDULERS.get(name)
    params = dict(params or {})
    try:
        if cls.needs_predictor:
            return cls(predictor=predictor, **params)  # type: ignore[call-arg]
        return cls(**params)
    except TypeError as exc:
        raise ConfigError(f"engine scheduler {name!r}: {exc}", value=params) from None
