"""Planning end to end: candidates, a solver, the saturation policy, predicted SLOs.

:func:`solve` is Inferno's optimizer step: it sizes every (server, accelerator)
candidate with the queueing analyzer, lets the configured solver (greedy or MILP)
place the servers that fit whole, hands the units left to the saturation policy,
and predicts each server's TTFT and ITL with its load spread over its replicas
(in proportion to their SLO-meeting rates). :meth:`Solution.to_json` writes
Inferno's solution layout; :func:`with_previous` makes a solution the next run's
``currentAlloc`` so that transition penalties apply.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from sincere.core.errors import ConfigError
from sincere.optimize.candidates import (
    MS_PER_MIN,
    CandidateTable,
    Sizer,
    build_candidates,
    current_cost,
    planned_load,
    switch_charge,
)
from sincere.optimize.data import CurrentAlloc, Load, Problem
from sincere.optimize.queueing import DecodePrefillParams, ModelParams, ReplicaBank
from sincere.optimize.saturation import SATURATION_POLICIES
from sincere.optimize.solvers import SOLVERS, Placements, SolveInput, greedy_order


@dataclass(frozen=True, slots=True)
class ServerAllocation:
    """What one server gets and how it is predicted to perform."""

    server: str
    accelerator: str | None  # main accelerator (most replicas); None = unallocated
    num_replicas: int
    max_batch: int  # N of the main accelerator's replicas
    cost: float  # cents/h, all replicas
    penalty: float  # switching charge 0.1·(c_a + c_b) paid for moving, cents/h
    ttft_ms: float  # predicted mean TTFT (0 when no replicas)
    itl_ms: float  # predicted mean ITL (0 when no replicas)
    slo_ttft_ms: float | None  # the class's targets, for display
    slo_itl_ms: float | None
    load: Load
    saturated: bool  # fewer replicas than the SLOs need, or none at all while loaded
    parts: tuple[tuple[str, int], ...] = ()  # (accelerator, replicas), heterogeneous

    def to_json(self) -> dict[str, Any]:
        """Inferno's per-server solution object."""
        out: dict[str, Any] = {
            "accelerator": self.accelerator or "",
            "numReplicas": self.num_replicas,
            "maxBatch": self.max_batch,
            "cost": round(self.cost, 4),
            "itlAverage": round(self.itl_ms, 4),
            "ttftAverage": round(self.ttft_ms, 4),
            "load": self.load.to_json(),
        }
        if len(self.parts) > 1:
            out["replicas"] = dict(self.parts)
        return out


@dataclass(frozen=True, slots=True)
class Solution:
    """An allocation of every server, in the problem's order."""

    allocations: tuple[ServerAllocation, ...]
    solver: str
    units_used: dict[str, int]  # accelerator type -> units

    @property
    def total_cost(self) -> float:
        """Cents per hour over all servers."""
        return float(sum(a.cost for a in self.allocations))

    @property
    def total_value(self) -> float:
        """Cost plus switching charges: what the solvers minimise."""
        return float(sum(a.cost + a.penalty for a in self.allocations))

    def by_server(self) -> dict[str, ServerAllocation]:
        return {a.server: a for a in self.allocations}

    def to_json(self) -> dict[str, Any]:
        """Inferno's layout: server name -> allocation object."""
        return {a.server: a.to_json() for a in self.allocations}


def _capacity(problem: Problem, table: CandidateTable) -> np.ndarray[Any, np.dtype[np.float64]]:
    if problem.optimizer.unlimited:
        return np.full(len(table.types), np.inf)
    return np.array([float(problem.capacity.get(t, 0)) for t in table.types])


def solve(problem: Problem, *, solver: str | None = None, sizer: Sizer | None = None) -> Solution:
    """Allocate every server of ``problem``; ``solver`` overrides optimizer-data; ``sizer``
    gives the per-replica rates (default: the analyzer's, Inferno's sizing)."""
    name = solver or ("milp" if problem.optimizer.milp else "greedy")
    solve_fn = SOLVERS.get(name)
    saturate = SATURATION_POLICIES.get(problem.optimizer.saturation_policy)
    table = build_candidates(problem, sizer)
    by_server = table.of_server(len(problem.servers))
    inp = SolveInput(
        problem,
        table,
        by_server,
        _capacity(problem, table),
        greedy_order(problem, table, by_server),
    )
    placed = solve_fn(inp)
    room = inp.capacity.copy()
    for parts in placed.values():
        for c, n in parts:
            room[table.type_ix[c]] -= n * table.units_per_replica[c]
    left_out = [s for s in inp.order if s not in placed]
    extra = saturate(inp, left_out, room) if left_out else {}
    return _assemble(problem, table, placed, extra, name)


def _assemble(
    problem: Problem, table: CandidateTable, placed: Placements, extra: Placements, name: str
) -> Solution:
    """Predict every server's TTFT / ITL (one vectorised analyzer call) and collect."""
    every = {**placed, **extra}
    rows = [(s, c, n) for s, parts in every.items() for c, n in parts if n > 0]
    rates = np.array([_replica_rate(problem, table, every[s], c) for s, c, _ in rows])
    metrics = (
        ReplicaBank([table.replica_models[c] for _, c, _ in rows]).evaluate(rates / MS_PER_MIN)
        if rows
        else {"ttft_ms": np.zeros(0), "itl_ms": np.zeros(0)}
    )
    pred: dict[int, list[tuple[float, float, float]]] = {}
    for i, (s, _, n) in enumerate(rows):
        pred.setdefault(s, []).append((n * rates[i], metrics["ttft_ms"][i], metrics["itl_ms"][i]))
    allocs = tuple(
        _allocation(problem, table, s, every.get(s, []), pred.get(s, []), s in extra)
        for s in range(len(problem.servers))
    )
    used: dict[str, int] = {}
    for _, c, n in rows:
        kind = table.types[table.type_ix[c]]
        used[kind] = used.get(kind, 0) + int(n * table.units_per_replica[c])
    return Solution(allocs, name, used)


def _replica_rate(
    problem: Problem, table: CandidateTable, parts: list[tuple[int, int]], c: int
) -> float:
    """Load one replica of candidate ``c`` carries: shares in proportion to SLO rates."""
    load = planned_load(problem, problem.servers[int(table.server[c])])
    weights = [(table.rate_per_min[k] or 1.0) * n for k, n in parts]
    total = sum(weights)
    return load * (table.rate_per_min[c] or 1.0) / total if total > 0 else 0.0


def _allocation(
    problem: Problem,
    table: CandidateTable,
    s: int,
    parts: list[tuple[int, int]],
    pred: list[tuple[float, float, float]],
    saturated: bool,
) -> ServerAllocation:
    srv = problem.servers[s]
    targets = problem.classes[srv.service_class].targets[srv.model]
    load = srv.current.load
    main = max(parts, key=lambda p: p[1])[0] if parts else None
    if load.arrival_rate == 0 and not any(n > 0 for _, n in parts):
        main = None  # Inferno: an idle server with no minimum gets no accelerator
    served = sum(w for w, _, _ in pred)
    ttft = sum(w * t for w, t, _ in pred) / served if served > 0 else 0.0
    itl = sum(w * i for w, _, i in pred) / served if served > 0 else 0.0
    if load.arrival_rate == 0 and main is not None:
        ttft, itl = idle_metrics(problem.models[(srv.model, table.accelerator[main])].params)
    cost = float(sum(table.cost_per_replica[c] * n for c, n in parts))
    acc = table.accelerator[main] if main is not None else None
    moved = acc is not None and srv.current.accelerator not in (None, acc)
    penalty = switch_charge(current_cost(problem, srv), cost) if moved else 0.0
    return ServerAllocation(
        srv.name,
        acc,
        sum(n for _, n in parts),
        int(table.max_batch[main]) if main is not None else 0,
        cost,
        penalty,
        ttft,
        itl,
        targets.ttft_ms,
        targets.itl_ms,
        load,
        saturated or (main is None and (load.arrival_rate > 0 or srv.min_replicas > 0)),
        tuple((table.accelerator[c], n) for c, n in parts),
    )


def idle_metrics(params: ModelParams) -> tuple[float, float]:
    """TTFT and ITL (ms) Inferno reports for a replica with no load: one lone request,
    ``(γ + δ, α + β)`` in the older form (Inferno's own figures, the prompt not scaled in),
    one iteration of one request ``(α + β + γ, α + β + γ)`` in the current form."""
    if isinstance(params, DecodePrefillParams):
        return params.gamma + params.delta, params.alpha + params.beta
    lone = params.alpha + params.beta + params.gamma
    return lone, lone


def with_previous(problem: Problem, solution: Solution) -> Problem:
    """``problem`` whose servers' ``currentAlloc`` is ``solution`` (loads unchanged)."""
    prev = solution.by_server()
    servers = []
    for srv in problem.servers:
        a = prev.get(srv.name)
        if a is None or a.accelerator is None:
            servers.append(srv)
            continue
        cur = CurrentAlloc(srv.current.load, a.accelerator, a.num_replicas, a.max_batch, a.cost)
        servers.append(replace(srv, current=cur))
    return replace(problem, servers=tuple(servers))


def with_loads(problem: Problem, loads: dict[str, Load]) -> Problem:
    """``problem`` with new loads for the named servers."""
    names = {s.name for s in problem.servers}
    for name in loads:
        if name not in names:
            raise ConfigError("load for an unknown server", value=name, allowed=sorted(names))
    servers = tuple(
        replace(s, current=replace(s.current, load=loads[s.name])) if s.name in loads else s
        for s in problem.servers
    )
    return replace(problem, servers=servers)


def meets_slos(alloc: ServerAllocation, rel_tol: float = 1e-6) -> bool:
    """Whether an allocation's predictions are within its class's targets."""
    ok_ttft = alloc.slo_ttft_ms is None or alloc.ttft_ms <= alloc.slo_ttft_ms * (1 + rel_tol)
    ok_itl = alloc.slo_itl_ms is None or alloc.itl_ms <= alloc.slo_itl_ms * (1 + rel_tol)
    return ok_ttft and ok_itl and not math.isnan(alloc.ttft_ms)
