"""Iteration-level engine schedulers (clock-free; shared by simulator and emulator).

``SCHEDULERS`` holds them by name with their parameter models;
``SCHEDULERS.build(name, params, **collaborators)`` (or :func:`make_scheduler`) builds
one, handing a batch-time predictor to those that need one (Niyama). Adding a policy:
one subclass of :class:`IterationScheduler`, its :class:`~sincere.core.params.Params`
model if it takes parameters, and one ``@SCHEDULERS.register("name", params=...)`` line.
"""

from __future__ import annotations

from typing import Any

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
    "scheduler_params",
]


def scheduler_params(name: str) -> list[str]:
    """The parameters engine scheduler ``name`` takes (an unknown name raises)."""
    return SCHEDULERS.param_names(name)


def make_scheduler(
    name: str, params: dict[str, Any] | None = None, predictor: StepTimeModel | None = None
) -> IterationScheduler:
    """Scheduler ``name`` built with ``params`` (``SCHEDULERS.build``), handed ``predictor``
    when it takes one (Niyama); raises ``ConfigError`` listing every problem."""
    needs = {n.name for n in SCHEDULERS.needs(name)}
    given = {"predictor": predictor} if "predictor" in needs and predictor is not None else {}
    return SCHEDULERS.build(name, params, **given)
