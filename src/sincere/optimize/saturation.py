"""Saturation policies: what servers that do not fit get from the accelerators left over.

With limited accelerator counts a solver may leave servers out. Inferno's saturation
policy then hands the remaining units to them, knowing they will run above their
SLO-meeting load (``saturated`` in the solution):

* ``None`` -- nothing: servers that do not fit stay unallocated.
* ``PriorityExhaustive`` -- in greedy order (priority, then regret), each server in
  turn takes as many replicas as fit, up to what its load needs, before the next.
* ``PriorityRoundRobin`` -- per priority level, most important first, one replica at
  a time to each server of that level in turn, until they are all full or nothing
  fits; then the next level.
* ``RoundRobin`` -- one replica at a time to every left-out server in turn, whatever
  its priority.

A server's replicas stay on one accelerator: at its first replica it picks the
candidate that could serve most of its load with the units left (ties: cheaper per
replica), and it stops growing when that type runs out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from sincere.core.registry import Registry
from sincere.optimize.queueing import FloatArray
from sincere.optimize.solvers import Placements, SolveInput

SaturationPolicy = Callable[[SolveInput, list[int], FloatArray], Placements]
SATURATION_POLICIES: Registry[SaturationPolicy] = Registry("saturation policy")


@dataclass(slots=True)
class _Grower:
    """Replica-by-replica placement of left-out servers on the units in ``room``."""

    inp: SolveInput
    room: FloatArray
    chosen: dict[int, int] = field(default_factory=dict)  # server -> candidate
    given: dict[int, int] = field(default_factory=dict)  # server -> replicas so far

    def pick(self, s: int) -> int | None:
        """The candidate for server ``s`` (chosen at its first replica)."""
        if s in self.chosen:
            return self.chosen[s]
        t = self.inp.table
        cands = self.inp.by_server[s]
        cands = cands[
            (t.replicas[cands] > 0) & (self.room[t.type_ix[cands]] >= t.units_per_replica[cands])
        ]
        if len(cands) == 0:
            return None
        fit = self.room[t.type_ix[cands]] // t.units_per_replica[cands]
        served = np.minimum(fit, t.replicas[cands]) * t.rate_per_min[cands]
        best = cands[np.lexsort((t.cost_per_replica[cands], -served))[0]]
        self.chosen[s] = int(best)
        return int(best)

    def grow(self, s: int, max_new: int) -> int:
        """Add up to ``max_new`` replicas to server ``s``; return how many were added."""
        c = self.pick(s)
        if c is None:
            return 0
        t = self.inp.table
        have = self.given.get(s, 0)
        fit = int(self.room[t.type_ix[c]] // t.units_per_replica[c])
        add = max(0, min(max_new, fit, int(t.replicas[c]) - have))
        if add:
            self.room[t.type_ix[c]] -= add * t.units_per_replica[c]
            self.given[s] = have + add
        return add

    def placements(self) -> Placements:
        return {s: [(self.chosen[s], n)] for s, n in self.given.items() if n > 0}


@SATURATION_POLICIES.register("None")
def saturate_none(inp: SolveInput, left_out: list[int], room: FloatArray) -> Placements:
    """Left-out servers get nothing."""
    return {}


@SATURATION_POLICIES.register("PriorityExhaustive")
def saturate_priority_exhaustive(
    inp: SolveInput, left_out: list[int], room: FloatArray
) -> Placements:
    """Each left-out server in turn takes all it can use."""
    grower = _Grower(inp, room)
    for s in left_out:
        grower.grow(s, 1 << 62)
    return grower.placements()


def _round_robin(inp: SolveInput, group: list[int], grower: _Grower) -> None:
    """One replica per server per turn until no server of ``group`` can grow."""
    active = list(group)
    while active:
        active = [s for s in active if grower.grow(s, 1) > 0]


@SATURATION_POLICIES.register("PriorityRoundRobin")
def saturate_priority_round_robin(
    inp: SolveInput, left_out: list[int], room: FloatArray
) -> Placements:
    """Round robin within each priority level, most important level first."""
    grower = _Grower(inp, room)
    prio = {s: inp.problem.classes[inp.problem.servers[s].service_class].priority for s in left_out}
    for level in sorted(set(prio.values())):
        _round_robin(inp, [s for s in left_out if prio[s] == level], grower)
    return grower.placements()


@SATURATION_POLICIES.register("RoundRobin")
def saturate_round_robin(inp: SolveInput, left_out: list[int], room: FloatArray) -> Placements:
    """Round robin over every left-out server."""
    grower = _Grower(inp, room)
    _round_robin(inp, left_out, grower)
    return grower.placements()
