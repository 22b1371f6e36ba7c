"""The scaling decision: observed load -> planning problem, plan -> replicas -> starts / stops.

Pure functions with no clock and no I/O, so the live controller
(:class:`~sincere.serve.control.controller.Controller`) and the simulator can run the same
decision on their own state:

* :class:`~sincere.core.load.LoadSummary` (re-exported here) -- the load of one (model,
  tier) over a window: arrival rate (per minute, Inferno's unit) and mean prompt and output
  lengths;
* :func:`problem_for` -- Inferno's problem: configured planning data plus one server per
  observed (tier, model) load;
* :func:`replica_targets` -- a solved plan's replicas per model (at least a floor);
* :func:`scale` -- which replicas to stop and how many to start so that each model runs
  its target (:class:`Scaling`). Models without a target are left alone; surplus replicas
  are stopped newest first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sincere.core.errors import ConfigError
from sincere.core.load import LoadSummary
from sincere.optimize.data import CurrentAlloc, Load, Problem, Server
from sincere.optimize.plan import Solution

__all__ = ["LoadSummary", "Scaling", "problem_for", "replica_targets", "scale"]


@dataclass(frozen=True, slots=True)
class Scaling:
    """What to change: replicas to stop (in this order), then replicas to start per model."""

    stops: tuple[str, ...] = ()  # replica names
    starts: tuple[tuple[str, int], ...] = ()  # (model, replicas to start), by model name

    @property
    def num_starts(self) -> int:
        """Replicas started in all."""
        return sum(n for _, n in self.starts)

    @property
    def num_stops(self) -> int:
        """Replicas stopped in all."""
        return len(self.stops)


def problem_for(base: Problem, loads: Iterable[LoadSummary]) -> Problem:
    """``base`` (accelerators, models, classes) with one server per load it can plan.

    A load whose tier is not a service class of ``base``, or whose model ``base`` has no
    performance data for, is left out; mean lengths below one token count as one.
    """
    planned_models = {m for m, _ in base.models}
    servers = []
    for ld in loads:
        if ld.tier not in base.classes or ld.model not in planned_models:
            continue
        load = Load(ld.rate_per_min, max(ld.avg_in_tokens, 1.0), max(ld.avg_out_tokens, 1.0))
        servers.append(Server(f"{ld.tier}/{ld.model}", ld.tier, ld.model, CurrentAlloc(load)))
    return Problem(
        base.accelerators, base.models, base.classes, tuple(servers), base.capacity, base.optimizer
    )


def replica_targets(solution: Solution, min_replicas: int) -> dict[str, int]:
    """Replicas per model: summed over its (tier, model) servers, at least ``min_replicas``."""
    out: dict[str, int] = {}
    for alloc in solution.allocations:
        model = alloc.server.split("/", 1)[1]
        out[model] = out.get(model, 0) + alloc.num_replicas
    return {m: max(n, min_replicas) for m, n in out.items()}


def scale(targets: Mapping[str, int], running: Mapping[str, Sequence[str]]) -> Scaling:
    """The stops and starts that take ``running`` (replica names per model, oldest first)
    to ``targets`` (replicas per model). Models absent from ``targets`` are not touched."""
    stops: list[str] = []
    starts: list[tuple[str, int]] = []
    for model, target in sorted(targets.items()):
        if target < 0:
            raise ConfigError(
                "replica target must be >= 0", value=target, where=f"model {model}",
                allowed="an integer >= 0",
            )  # fmt: skip
        have = running.get(model, ())
        stops.extend(reversed(have[target:]))
        if target > len(have):
            starts.append((model, target - len(have)))
    return Scaling(tuple(stops), tuple(starts))
