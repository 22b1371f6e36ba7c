"""The scaling decision: plan -> replica targets -> stops and starts, with no clock and no I/O."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sincere.core.errors import ConfigError
from sincere.optimize import solve
from sincere.optimize.data import load_fleet
from sincere.optimize.scaling import LoadSummary, Scaling, problem_for, replica_targets, scale

ROOT = Path(__file__).resolve().parents[2]
PLAN_DIR = ROOT / "examples" / "plan" / "unlimited"


def test_scale_stops_the_newest_surplus_and_starts_the_missing() -> None:
    """Surplus replicas stop newest first; a short model gets what it misses; others untouched."""
    running = {"a": ["a1", "a2", "a3"], "b": ["b1"], "c": ["c1", "c2"]}
    got = scale({"a": 1, "b": 3}, running)
    assert got == Scaling(stops=("a3", "a2"), starts=(("b", 2),))
    assert got.num_stops == 2 and got.num_starts == 2
    assert scale({"a": 3}, running) == Scaling()


def test_scale_refuses_a_negative_target() -> None:
    """A negative target is an error naming the model and the value."""
    with pytest.raises(ConfigError, match="model m"):
        scale({"m": -1}, {})


@given(
    st.dictionaries(st.sampled_from(["x", "y", "z"]), st.integers(0, 6), max_size=3),
    st.dictionaries(st.sampled_from(["x", "y", "w"]), st.integers(0, 6), max_size=3),
)
def test_applying_the_decision_reaches_every_target(
    targets: dict[str, int], have: dict[str, int]
) -> None:
    """After the stops and starts each targeted model runs its target; the rest is untouched."""
    running = {m: [f"{m}{i}" for i in range(n)] for m, n in have.items()}
    got = scale(targets, running)
    stopped = Counter(name.rstrip("0123456789") for name in got.stops)
    started = dict(got.starts)
    assert all(name in running.get(name[0], []) for name in got.stops)
    assert len(set(got.stops)) == len(got.stops)
    for model in set(targets) | set(running):
        now = len(running.get(model, [])) - stopped[model] + started.get(model, 0)
        assert now == targets.get(model, len(running.get(model, [])))
        assert not (stopped[model] and started.get(model, 0))  # never both for one model


def test_problem_for_keeps_only_loads_the_planning_data_can_plan() -> None:
    """Loads of unknown tiers or models are left out; lengths below one token count as one."""
    base = load_fleet(PLAN_DIR)
    loads = [
        LoadSummary("llama_13b", "Premium", 30.0, 0.0, 200.0, 30),
        LoadSummary("llama_13b", "NoSuchTier", 30.0, 100.0, 200.0, 30),
        LoadSummary("no-such-model", "Premium", 30.0, 100.0, 200.0, 30),
    ]
    problem = problem_for(base, loads)
    assert [s.name for s in problem.servers] == ["Premium/llama_13b"]
    load = problem.servers[0].current.load
    assert load.arrival_rate == 30.0 and load.avg_in_tokens == 1.0
    assert problem.classes == base.classes and problem.models == base.models


def test_the_simulator_runs_the_same_decision() -> None:
    """A simulated fleet's observed load, planned and scaled: the decision reaches the plan."""
    from sincere.sim import simulate

    config = {
        "seed": 3,
        "workload": {
            "num_requests": 300,
            "arrival": {"kind": "poisson", "rate": 6.0},
            "lengths": {
                "prompt": {"kind": "uniform", "low": 50, "high": 500},
                "output": {"kind": "uniform", "low": 20, "high": 200},
            },
            "models": {"llama-3-8b": 1.0},
        },
        "instances": [
            {"model": "llama-3-8b", "accelerator": "A100-80GB"},
            {"model": "llama-3-8b", "accelerator": "A100-80GB"},
        ],
    }
    table = simulate(config).requests.to_pydict()
    span_s = max(table["arrival_at"]) - min(table["arrival_at"])
    n = len(table["arrival_at"])
    # the simulated model stands for the planning data's llama_13b, in its Premium class
    observed = LoadSummary(
        "llama_13b", "Premium", 60.0 * n / span_s,
        sum(table["prompt_tokens"]) / n, sum(table["output_tokens"]) / n, n,
    )  # fmt: skip
    solution = solve(problem_for(load_fleet(PLAN_DIR), [observed]))
    targets = replica_targets(solution, 1)
    running = {"llama_13b": sorted({str(i) for i in table["instance"] if i is not None})}
    assert len(running["llama_13b"]) == 2
    got = scale(targets, running)
    assert set(targets) == {"llama_13b"} and targets["llama_13b"] >= 1
    after = 2 - got.num_stops + got.num_starts
    assert after == targets["llama_13b"]
    assert scale(targets, running) == got  # no clock, no state: the same answer again
