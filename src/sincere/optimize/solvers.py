"""Allocation solvers: Inferno's greedy and an exact MILP (HiGHS through SciPy).

Both take the :class:`~sincere.optimize.candidates.CandidateTable` and the units of
each accelerator type available (``inf`` when unlimited) and return, for every
server they serve in full, its parts ``[(candidate, replicas), ...]`` (one part
unless replicas may be heterogeneous). Servers left out go to the saturation
policy (:mod:`sincere.optimize.saturation`).

* ``greedy`` -- Inferno's order: class priority first (1 is most important), then
  regret, the value of a server's second-best candidate minus its best (whoever
  loses most by missing its best goes first). Each server takes its cheapest
  candidate that still fits; heterogeneous, it may then combine types, cheapest
  per unit of capacity first.
* ``milp`` -- one binary ``x[s,a]`` per candidate (homogeneous) or an integer
  replica count ``y[s,a]`` (heterogeneous, with ``Σ_a rate·y ≥ load``), one
  ``Σ_a x[s,a] + u[s] = 1`` row per server and one capacity row per accelerator
  type. ``u[s] = 1`` leaves server ``s`` out at a price larger than any allocation's
  value, weighted by its priority, so the MILP serves as much as fits, important
  classes first, and then minimises cost plus transition penalties.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.optimize as sopt
import scipy.sparse as sp

from sincere.core.errors import ConfigError
from sincere.core.registry import Registry
from sincere.optimize.candidates import CandidateTable, planned_load
from sincere.optimize.data import Problem
from sincere.optimize.queueing import FloatArray, IntArray

Parts = list[tuple[int, int]]  # (candidate index, replicas)
Placements = dict[int, Parts]  # server index -> its parts


@dataclass(frozen=True, slots=True)
class SolveInput:
    """What a solver reads: the problem, its candidates, and units per type."""

    problem: Problem
    table: CandidateTable
    by_server: list[IntArray]  # candidate indices of each server
    capacity: FloatArray  # units per accelerator type (inf = unlimited)
    order: list[int]  # servers in greedy order (priority, then regret)


Solver = Callable[[SolveInput], Placements]
SOLVERS: Registry[Solver] = Registry("allocation solver")

MILP_TIME_LIMIT_S = 60.0


def greedy_order(problem: Problem, table: CandidateTable, by_server: list[IntArray]) -> list[int]:
    """Servers by class priority, then by regret (largest first), then by name."""
    value = table.value

    def key(s: int) -> tuple[int, float, str]:
        vals = np.sort(value[by_server[s]])
        regret = float(vals[1] - vals[0]) if len(vals) > 1 else float("inf")
        srv = problem.servers[s]
        return (problem.classes[srv.service_class].priority, -regret, srv.name)

    return sorted(range(len(problem.servers)), key=key)


@SOLVERS.register("greedy")
def solve_greedy(inp: SolveInput) -> Placements:
    """Inferno's greedy (see module docstring)."""
    t = inp.table
    room = inp.capacity.copy()
    value = t.value
    out: Placements = {}
    for s in inp.order:
        cands = inp.by_server[s][np.argsort(value[inp.by_server[s]], kind="stable")]
        parts = _first_fit(t, cands, room)
        if parts is None and inp.problem.optimizer.heterogeneous:
            parts = _mixed_fit(inp, s, cands, room)
        if parts is not None:
            out[s] = parts
    return out


def _first_fit(t: CandidateTable, cands: IntArray, room: FloatArray) -> Parts | None:
    """Cheapest candidate that fits whole; takes its units from ``room``."""
    for c in cands:
        need = t.units_per_replica[c] * t.replicas[c]
        if need <= room[t.type_ix[c]]:
            room[t.type_ix[c]] -= need
            return [(int(c), int(t.replicas[c]))]
    return None


def _mixed_fit(inp: SolveInput, s: int, cands: IntArray, room: FloatArray) -> Parts | None:
    """Cover the load with replicas of several types, cheapest capacity first."""
    t = inp.table
    srv = inp.problem.servers[s]
    left = planned_load(inp.problem, srv)
    min_left = srv.min_replicas
    trial = room.copy()
    parts: Parts = []
    cands = cands[t.rate_per_min[cands] > 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        per_capacity = t.cost_per_replica[cands] / t.rate_per_min[cands]
    for c in cands[np.argsort(per_capacity, kind="stable")]:
        fit = int(trial[t.type_ix[c]] // t.units_per_replica[c])
        want = max(int(np.ceil(left / t.rate_per_min[c] - 1e-9)), min_left)
        take = min(fit, want)
        if take > 0:
            parts.append((int(c), take))
            trial[t.type_ix[c]] -= take * t.units_per_replica[c]
            left -= take * t.rate_per_min[c]
            min_left -= take
        if left <= 1e-9 and min_left <= 0:
            room[:] = trial
            return parts
    return None


def _priority_weights(inp: SolveInput) -> FloatArray:
    """Price of leaving each server out: above any allocation, more for higher priority."""
    prios = np.array([inp.problem.classes[s.service_class].priority for s in inp.problem.servers])
    big = float(np.sum(np.abs(inp.table.value))) + 1.0
    levels = np.unique(prios)
    rank = np.searchsorted(levels, prios)  # 0 = most important
    weights: FloatArray = big * (len(levels) - rank).astype(np.float64)
    return weights


@SOLVERS.register("milp")
def solve_milp(inp: SolveInput) -> Placements:
    """Exact MILP on HiGHS (see module docstring)."""
    t = inp.table
    hetero = inp.problem.optimizer.heterogeneous
    num_c, num_s = len(t.server), len(inp.problem.servers)
    served = np.array([len(c) > 0 for c in inp.by_server])
    limited = bool(np.isfinite(inp.capacity).any())
    cost_c = t.cost_per_replica + t.penalty / np.maximum(t.replicas, 1) if hetero else t.value
    c_vec = np.concatenate([cost_c, np.where(served, _priority_weights(inp), 0.0)])
    if not limited:
        c_vec[num_c:] = 0.0
    rows = _assignment_rows(inp, hetero, limited, num_c, num_s)
    integrality = np.ones(num_c + num_s)
    hi = np.concatenate(
        [t.replicas if hetero else np.ones(num_c), np.where(limited & served, 1, 0)]
    )
    res = sopt.milp(
        c_vec,
        constraints=rows,
        integrality=integrality,
        bounds=sopt.Bounds(np.zeros(num_c + num_s), hi.astype(np.float64)),
        options={"time_limit": MILP_TIME_LIMIT_S},
    )
    if res.x is None:
        raise ConfigError(f"the MILP solver found no allocation: {res.message}")
    x = np.round(res.x).astype(np.int64)
    out = _placements_from(t, x[:num_c], hetero)
    for s in np.flatnonzero(served & (x[num_c:] == 0)):  # served, maybe with zero replicas
        if int(s) not in out:
            best = inp.by_server[s][np.argmin(t.value[inp.by_server[s]])]
            out[int(s)] = [(int(best), 0)]
    return {s: parts for s, parts in out.items() if x[num_c + s] == 0}


def _assignment_rows(
    inp: SolveInput, hetero: bool, limited: bool, num_c: int, num_s: int
) -> list[sopt.LinearConstraint]:
    """One covering row per server (plus a replica-count row if heterogeneous); capacity."""
    t = inp.table
    srv_ix = np.arange(num_c)
    loads = np.array([planned_load(inp.problem, s) for s in inp.problem.servers])
    mins = np.array([s.min_replicas for s in inp.problem.servers], dtype=np.float64)
    served = np.array([len(c) > 0 for c in inp.by_server], dtype=np.float64)
    rows: list[sopt.LinearConstraint] = []
    if hetero:
        cover = sp.csr_matrix((t.rate_per_min, (t.server, srv_ix)), shape=(num_s, num_c))
        count = sp.csr_matrix((np.ones(num_c), (t.server, srv_ix)), shape=(num_s, num_c))
        rows.append(sopt.LinearConstraint(sp.hstack([cover, sp.diags(loads)]), loads * served))
        rows.append(sopt.LinearConstraint(sp.hstack([count, sp.diags(mins)]), mins * served))
    else:
        pick = sp.csr_matrix((np.ones(num_c), (t.server, srv_ix)), shape=(num_s, num_c))
        rows.append(
            sopt.LinearConstraint(
                sp.hstack([pick, sp.identity(num_s, format="csr")]), served, served
            )
        )
    if limited:
        per = t.units_per_replica * (1 if hetero else t.replicas)
        cap = sp.csr_matrix(
            (per.astype(np.float64), (t.type_ix, srv_ix)), shape=(len(t.types), num_c)
        )
        finite = np.isfinite(inp.capacity)
        rows.append(
            sopt.LinearConstraint(
                sp.hstack([cap[finite], sp.csr_matrix((int(finite.sum()), num_s))]),
                -np.inf,
                inp.capacity[finite],
            )
        )
    return rows


def _placements_from(t: CandidateTable, x: IntArray, hetero: bool) -> Placements:
    """Turn the MILP's chosen variables into per-server parts."""
    out: Placements = {}
    for c in np.flatnonzero(x > 0):
        reps = int(x[c]) if hetero else int(t.replicas[c])
        out.setdefault(int(t.server[c]), []).append((int(c), reps))
    return out


@dataclass(frozen=True, slots=True)
class PoolChoice:
    """Candidates of several pools, each with the instances it needs alone.

    Every candidate ``c`` belongs to pool ``pool[c]`` and needs ``count[c]`` instances
    of ``units[c]`` units of accelerator type ``type_ix[c]`` at ``cost[c]`` per instance
    to carry its pool's whole load. ``capacity[t]`` bounds the units of type ``t`` all
    pools together use (``inf``: unlimited).
    """

    pool: IntArray
    count: IntArray
    cost: FloatArray  # per instance
    units: IntArray  # per instance
    type_ix: IntArray
    capacity: FloatArray  # per type
    num_pools: int


def solve_pools(choice: PoolChoice) -> IntArray:
    """One candidate per pool at least total cost within the shared capacity (MILP).

    A binary ``z[c]`` per candidate, ``Σ_{c in p} z[c] = 1`` for every pool ``p``,
    ``Σ_c units[c]·count[c]·z[c] ≤ capacity[t]`` per type, minimising
    ``Σ_c cost[c]·count[c]·z[c]``: pools compete for the same accelerators, which is
    what makes this more than a cheapest pick per pool. Returns the chosen candidate
    of each pool; raises :class:`ConfigError` when no choice fits.
    """
    num_c = len(choice.pool)
    missing = sorted(set(range(choice.num_pools)) - {int(p) for p in choice.pool})
    if missing:
        raise ConfigError("a pool has no candidate that meets its SLO", value=missing)
    total = choice.cost * choice.count
    pick = sp.csr_matrix(
        (np.ones(num_c), (choice.pool, np.arange(num_c))), shape=(choice.num_pools, num_c)
    )
    rows = [sopt.LinearConstraint(pick, 1.0, 1.0)]
    finite = np.isfinite(choice.capacity)
    if finite.any():
        use = sp.csr_matrix(
            ((choice.units * choice.count).astype(np.float64), (choice.type_ix, np.arange(num_c))),
            shape=(len(choice.capacity), num_c),
        )
        rows.append(sopt.LinearConstraint(use[finite], -np.inf, choice.capacity[finite]))
    res = sopt.milp(
        total,
        constraints=rows,
        integrality=np.ones(num_c),
        bounds=sopt.Bounds(np.zeros(num_c), np.ones(num_c)),
        options={"time_limit": MILP_TIME_LIMIT_S},
    )
    if res.x is None:
        raise ConfigError(
            f"no choice of pools fits the accelerators available: {res.message}",
            value={int(i): float(c) for i, c in enumerate(choice.capacity) if np.isfinite(c)},
        )
    chosen = np.flatnonzero(np.round(res.x) > 0)
    out: IntArray = chosen[np.argsort(choice.pool[chosen], kind="stable")]
    return out
