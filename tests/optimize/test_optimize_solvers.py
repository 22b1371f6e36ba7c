"""Allocation: MILP vs greedy, SLOs met, capacity respected, saturation, transitions."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sincere.core.errors import ConfigError
from sincere.optimize import (
    CurrentAlloc,
    OptimizerSpec,
    Problem,
    Solution,
    build_candidates,
    load_problem,
    meets_slos,
    solve,
    transition_penalty,
    with_previous,
)
from sincere.optimize.synthetic import synthetic_problem

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "plan"


def _units(problem: Problem, sol: Solution) -> dict[str, int]:
    """Units of each type the solution occupies, recounted from the problem's data."""
    used: dict[str, int] = {}
    for srv, a in zip(problem.servers, sol.allocations, strict=True):
        for acc, n in a.parts:
            spec = problem.accelerators[acc]
            per = spec.multiplicity * problem.models[(srv.model, acc)].acc_count
            used[spec.type] = used.get(spec.type, 0) + n * per
    return used


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), num=st.integers(3, 30), share=st.sampled_from([None, 1.0]))
def test_milp_never_costs_more_than_greedy(seed: int, num: int, share: float | None) -> None:
    """When everything fits, the MILP's cost plus penalties is at most the greedy's."""
    p = synthetic_problem(num, 4, np.random.default_rng(seed), capacity_share=share)
    g, m = solve(p, solver="greedy"), solve(p, solver="milp")
    if any(a.saturated for a in g.allocations):
        return  # greedy left servers out: objectives are not comparable
    assert not any(a.saturated for a in m.allocations)
    assert m.total_value <= g.total_value * (1 + 1e-9)


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    num=st.integers(3, 40),
    share=st.floats(0.05, 0.8),
    policy=st.sampled_from(["None", "PriorityExhaustive", "PriorityRoundRobin", "RoundRobin"]),
    solver=st.sampled_from(["greedy", "milp"]),
    hetero=st.booleans(),
)
def test_limited_counts_never_exceeded(
    seed: int, num: int, share: float, policy: str, solver: str, hetero: bool
) -> None:
    """Whatever the solver and saturation policy, no type is used beyond its count."""
    spec = OptimizerSpec(False, hetero, False, policy)
    p = synthetic_problem(num, 4, np.random.default_rng(seed), capacity_share=share, optimizer=spec)
    sol = solve(p, solver=solver)
    used = _units(p, sol)
    assert used == {k: v for k, v in sol.units_used.items() if v}
    for kind, n in used.items():
        assert n <= p.capacity[kind]


@pytest.mark.parametrize("case", ["unlimited", "unlimited-load-change", "limited"])
@pytest.mark.parametrize("solver", ["greedy", "milp"])
def test_every_full_allocation_meets_its_slos(case: str, solver: str) -> None:
    """Each server served in full is predicted within its TTFT and ITL targets."""
    p = load_problem(EXAMPLES / case)
    sol = solve(p, solver=solver)
    full = [a for a in sol.allocations if not a.saturated]
    assert full
    assert all(meets_slos(a) for a in full)


def test_replica_counts_are_minimal() -> None:
    """With one replica fewer, the per-replica load exceeds the SLO-meeting rate."""
    p = load_problem(EXAMPLES / "unlimited")
    t = build_candidates(p)
    for s, a in enumerate(solve(p).allocations):
        c = next(
            i
            for i in range(len(t.server))
            if t.server[i] == s and t.accelerator[i] == a.accelerator
        )
        load = p.servers[s].current.load.arrival_rate
        assert load <= a.num_replicas * t.rate_per_min[c] * (1 + 1e-9)
        if a.num_replicas > p.servers[s].min_replicas:
            assert load > (a.num_replicas - 1) * t.rate_per_min[c]


def _tight(policy: str) -> Problem:
    """Three servers that need ~3 G2 replicas each on a pool of 5 G2 only."""
    p = load_problem(EXAMPLES / "unlimited")
    models = {k: v for k, v in p.models.items() if k == ("granite_13b", "G2")}
    names = ["Premium-granite_13b", "Free-granite_13b"]
    servers = [s for s in p.servers if s.name in names]
    extra = replace(servers[1], name="Free2-granite_13b")
    servers = [
        replace(
            s,
            min_replicas=0,
            current=CurrentAlloc(
                replace(s.current.load, arrival_rate=90.0, avg_in_tokens=128, avg_out_tokens=1024)
            ),
        )
        for s in [*servers, extra]
    ]
    return replace(
        p,
        models=models,
        servers=tuple(servers),
        capacity={"G2": 5},
        optimizer=OptimizerSpec(False, False, False, policy),
    )


@pytest.mark.parametrize("solver", ["greedy", "milp"])
def test_saturation_policies_on_a_case_that_does_not_fit(solver: str) -> None:
    """None leaves units idle; PriorityExhaustive fills in order; round robins spread."""
    unlimited = solve(replace(_tight("None"), optimizer=OptimizerSpec()), solver=solver)
    need = {a.server: a.num_replicas for a in unlimited.allocations}
    assert need == {"Premium-granite_13b": 3, "Free-granite_13b": 3, "Free2-granite_13b": 3}
    got = {}
    for policy in ("None", "PriorityExhaustive", "PriorityRoundRobin", "RoundRobin"):
        sol = solve(_tight(policy), solver=solver)
        got[policy] = [(a.num_replicas, a.saturated) for a in sol.allocations]
    # Premium (priority 1) is served in full first; 2 of the 5 G2 are left for the Free pair
    assert got["None"] == [(3, False), (0, True), (0, True)]
    assert got["PriorityExhaustive"] == [(3, False), (2, True), (0, True)]
    assert got["PriorityRoundRobin"] == [(3, False), (1, True), (1, True)]
    assert got["RoundRobin"] == [(3, False), (1, True), (1, True)]


def test_round_robin_ignores_priority_but_priority_round_robin_does_not() -> None:
    """With nothing placed in full, RoundRobin shares across classes; PriorityRR does not."""
    p = _tight("RoundRobin")
    p = replace(p, capacity={"G2": 2})  # not even Premium fits whole
    rr = {a.server: a.num_replicas for a in solve(p).allocations}
    prr = {
        a.server: a.num_replicas
        for a in solve(
            replace(p, optimizer=OptimizerSpec(False, False, False, "PriorityRoundRobin"))
        ).allocations
    }
    assert rr["Premium-granite_13b"] == 1 and sum(rr.values()) == 2
    assert prr["Premium-granite_13b"] == 2 and sum(prr.values()) == 2


def test_transition_penalty_formula_and_effect() -> None:
    """Inferno's 0.1·(c_a + c_b) + (c_b − c_a); a move must beat staying by that charge."""
    assert transition_penalty(100.0, 80.0) == pytest.approx(0.1 * 180 - 20)
    p = load_problem(EXAMPLES / "unlimited")
    first = solve(p)
    again = solve(with_previous(p, first))
    assert [a.accelerator for a in again.allocations] == [a.accelerator for a in first.allocations]
    assert again.total_value == pytest.approx(first.total_cost)  # no move, no charge
    # pin every server on its second-best accelerator; a small gain is not worth a move
    t = build_candidates(p)
    assert np.all(t.penalty == 0)
    moved = build_candidates(with_previous(p, first))
    chosen = {(first.allocations[s].accelerator, s) for s in range(len(p.servers))}
    for i, s in enumerate(moved.server):
        stays = (moved.accelerator[i], int(s)) in chosen
        assert (moved.penalty[i] == 0) == stays


def test_keep_accelerator_and_min_replicas() -> None:
    """keepAccelerator pins the current type; minNumReplicas is a floor."""
    p = load_problem(EXAMPLES / "unlimited")
    srv = p.servers[0]
    pinned = replace(
        srv,
        keep_accelerator=True,
        min_replicas=25,
        current=replace(srv.current, accelerator="H100", num_replicas=1),
    )
    sol = solve(replace(p, servers=(pinned, *p.servers[1:])))
    a = sol.allocations[0]
    assert a.accelerator == "H100" and a.num_replicas == 25
    assert a.penalty == 0


def test_heterogeneous_fits_what_homogeneous_cannot() -> None:
    """Mixing types serves a server no single pool can hold, within its SLOs."""
    p = _tight("None")
    models = {
        k: v
        for k, v in load_problem(EXAMPLES / "unlimited").models.items()
        if k[0] == "granite_13b" and k[1] in ("G2", "A100")
    }
    one = replace(p, models=models, servers=p.servers[:1], capacity={"G2": 2, "A100": 2})
    homo = solve(one)
    assert homo.allocations[0].saturated
    for solver in ("greedy", "milp"):
        het = solve(
            replace(one, optimizer=OptimizerSpec(False, True, False, "None")), solver=solver
        )
        a = het.allocations[0]
        assert not a.saturated and len(a.parts) == 2 and meets_slos(a)


def test_unknown_names_raise() -> None:
    """Unknown solver or saturation policy names list the valid ones."""
    p = load_problem(EXAMPLES / "unlimited")
    with pytest.raises(ConfigError, match="allowed: greedy, milp"):
        solve(p, solver="simplex")
    bad = replace(p, optimizer=OptimizerSpec(saturation_policy="Fair"))
    with pytest.raises(ConfigError, match="PriorityExhaustive"):
        solve(bad)
