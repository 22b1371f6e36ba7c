"""SINCERE's strategies as combinations of rules, and the factory the config uses.

A strategy name joins registered rules with ``+`` (``best-batch+partial-batch+timer``).
For each non-empty queue every rule gives a :class:`Readiness`; the queue is ready
when any rule is, with the largest batch any rule asks for, and otherwise wakes at the
earliest time a rule names. While the engine drains (no more arrivals) every
non-empty queue is ready with all its requests, so BestBatch alone cannot strand a
queue below its target.

Which ready queue runs:

* ``prefer_resident`` (default on, off for ``fcfs``): a ready queue of a resident
  model goes first, saving a swap;
* then ``choose``: ``oldest-head`` (default; the queue whose oldest request arrived
  first, i.e. the most urgent under one SLA) or ``largest-queue`` (the most requests,
  oldest head on a tie).

Valid combinations follow the rules' roles (see ``RuleRole``): ``fcfs`` stands
alone; at most one target (``best-batch`` or ``select-batch``); ``partial-batch``
needs a target or ``timer``; at least one target or trigger.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeAlias

from pydantic import Field

import sincere.policy.batching.best_batch
import sincere.policy.batching.fcfs
import sincere.policy.batching.partial_batch
import sincere.policy.batching.select_batch
import sincere.policy.batching.timer  # noqa: F401 (registers the rules)
from sincere.core.errors import ConfigError
from sincere.core.params import Problem, check_params, validated
from sincere.core.types import ModelName, Seconds
from sincere.policy.batching.base import (
    ROLE_ORDER,
    STRATEGIES,
    BatchDecision,
    BatchingView,
    BatchRule,
    BatchStrategy,
    Idle,
    ModelQueueView,
    Readiness,
    RunBatch,
    StrategyParams,
    WaitUntil,
)

Choice: TypeAlias = Literal["oldest-head", "largest-queue"]


def _roles_valid(roles: Sequence[str]) -> bool:
    kinds = set(roles)
    if "exclusive" in kinds:
        return len(roles) == 1
    return roles.count("target") <= 1 and bool(kinds & {"target", "trigger"})


def _canonical(names: Sequence[str]) -> str:
    order = {role: i for i, role in enumerate(ROLE_ORDER)}
    return "+".join(sorted(names, key=lambda n: (order[STRATEGIES.get(n).role], n)))


def valid_strategy_names() -> list[str]:
    """Every valid combination of the registered rules, in canonical spelling."""
    rules = STRATEGIES.names()
    found: set[str] = set()
    for k in range(1, len(rules) + 1):
        for combo in itertools.combinations(rules, k):
            if _roles_valid([STRATEGIES.get(n).role for n in combo]):
                found.add(_canonical(combo))
    return sorted(found)


def parse_strategy_name(name: str) -> tuple[str, ...]:
    """The rule names of ``name`` in canonical order; an invalid name raises ``ConfigError``."""
    parts = [p.strip() for p in name.split("+")]
    unknown = [p for p in parts if p not in STRATEGIES]
    duplicate = len(set(parts)) != len(parts)
    if unknown or duplicate or not _roles_valid([STRATEGIES.get(p).role for p in parts]):
        raise ConfigError(
            "not a valid batching strategy", value=name, allowed=valid_strategy_names()
        )
    return tuple(_canonical(parts).split("+"))


class ComposedParams(StrategyParams):
    """Everything a strategy name takes: its rules' parameters and how ready queues compete."""

    prefer_resident: bool | None = Field(
        None, description="a resident model's ready queue first; null: on, except for fcfs"
    )
    choose: Choice = Field(
        "oldest-head", description="which ready queue runs: oldest head, or most requests"
    )


def strategy_problems(
    name: object, params: Mapping[str, Any] | None, *, name_at: str = "", params_at: str = ""
) -> list[Problem]:
    """Every problem with strategy ``name`` and its ``params`` (:class:`ComposedParams`)."""
    out = []
    if not isinstance(name, str):
        out.append(Problem(name_at, "a batching strategy must be a name", name))
    else:
        try:
            parse_strategy_name(name)
        except ConfigError:
            out.append(
                Problem(
                    name_at,
                    "not a valid batching strategy",
                    name,
                    ", ".join(valid_strategy_names()),
                )
            )
    label = f"batching strategy {name!r}"
    return out + check_params(ComposedParams, params, label, params_at)[1]


class ComposedStrategy(BatchStrategy):
    """A strategy made of rules; see the module docstring for how they combine."""

    def __init__(
        self,
        rules: Sequence[BatchRule],
        *,
        name: str = "",
        prefer_resident: bool = True,
        choose: Choice = "oldest-head",
    ) -> None:
        self.rules = tuple(rules)
        self.name = name
        self.prefer_resident = prefer_resident
        self.choose = choose

    def observe_arrival(self, model: ModelName, at: Seconds) -> None:
        """Pass the arrival on to every rule."""
        for rule in self.rules:
            rule.observe_arrival(model, at)

    def assess(self, queue: ModelQueueView, view: BatchingView, now: Seconds) -> Readiness:
        """The combined readiness of one non-empty queue."""
        answers = [rule.assess(queue, view, now) for rule in self.rules]
        size = max(a.num_requests for a in answers)
        if size == 0 and view.draining:
            size = view.cap(queue.num_queued)
        wakes = [a.wake_at for a in answers if a.wake_at is not None]
        return Readiness(size, min(wakes) if wakes and size == 0 else None)

    def decide(self, view: BatchingView, now: Seconds) -> BatchDecision:
        """Run the chosen ready queue, else wait for the earliest wake-up, else idle."""
        answers = {q.model: self.assess(q, view, now) for q in view.queues if q.num_queued}
        ready = [q for q in view.queues if q.model in answers and answers[q.model].ready]
        if ready:
            queue = self._pick(ready)
            reason = self._reason(queue, view, now)
            return RunBatch(queue.model, answers[queue.model].num_requests, reason)
        wakes = [a.wake_at for a in answers.values() if a.wake_at is not None]
        return WaitUntil(min(wakes)) if wakes else Idle()

    def _pick(self, ready: list[ModelQueueView]) -> ModelQueueView:
        if self.prefer_resident and any(q.resident for q in ready):
            ready = [q for q in ready if q.resident]
        if self.choose == "largest-queue":
            return min(ready, key=lambda q: (-q.num_queued, q.head_order))
        return min(ready, key=lambda q: q.head_order)

    def _reason(self, queue: ModelQueueView, view: BatchingView, now: Seconds) -> str:
        fired = [type(r).__name__ for r in self.rules if r.assess(queue, view, now).ready]
        return "+".join(fired) or "drain"


def make_strategy(
    name: str,
    *,
    sla_s: Seconds,
    best_batch: Mapping[ModelName, int] | None = None,
    prefer_resident: bool | None = None,
    choose: Choice = "oldest-head",
    **params: Any,
) -> ComposedStrategy:
    """Build the strategy called ``name`` (``+``-joined rules, e.g. ``best-batch+timer``).

    ``best_batch`` overrides SINCERE's per-model best batch sizes (others keep their
    defaults); ``params`` are further :class:`ComposedParams` fields
    (``est_batch_time_s``, ``min_timer_s``, ...). ``prefer_resident`` defaults to
    ``False`` for ``fcfs`` and ``True`` otherwise. Raises ``ConfigError`` on an invalid
    name, or one listing every unknown parameter and bad value.
    """
    rule_names = parse_strategy_name(name)
    values = {"sla_s": sla_s, "prefer_resident": prefer_resident, "choose": choose, **params}
    if best_batch is not None:
        values["best_batch"] = best_batch
    checked = validated(ComposedParams, values, f"batching strategy {name!r}")
    rules = [STRATEGIES.build(n, _rule_params(n, checked)) for n in rule_names]
    resident = checked.prefer_resident
    return ComposedStrategy(
        rules,
        name="+".join(rule_names),
        prefer_resident=rule_names != ("fcfs",) if resident is None else resident,
        choose=checked.choose,
    )


def _rule_params(rule: str, checked: ComposedParams) -> dict[str, Any]:
    """The part of a strategy's checked parameters that rule ``rule`` takes."""
    return checked.model_dump(include=set(STRATEGIES.param_names(rule)))
