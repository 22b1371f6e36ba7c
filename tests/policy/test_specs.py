"""Checking every policy a config names at once, with config paths, before building any."""

from __future__ import annotations

import pytest

from sincere.core.errors import ConfigError
from sincere.core.params import ParamsError
from sincere.policy.specs import PolicySpec, check_policies, policy_problems


def test_a_whole_config_of_policies_is_checked_in_one_error() -> None:
    """Problems in the router, a scheduler, a strategy, a step model and a nested predictor
    all come back in one ParamsError, each at its config path, in the order given."""
    specs = [
        PolicySpec(
            "router",
            "latency-optimal",
            {
                "objective": "p99",
                "length_predictor": {"name": "prompt-bucket", "params": {"edges": [5, 1]}},
            },
            "router.name",
            "router.params",
        ),
        PolicySpec(
            "scheduler",
            "niyama",
            {"h_s_per_token": -1.0, "chunk_sizes": []},
            "instances[2].engine.scheduler",
            "instances[2].engine.scheduler_params",
        ),
        PolicySpec(
            "strategy",
            "best-batch+timer",
            {"sla_s": 0},
            "instances[3].engine.strategy",
            "instances[3].engine",
        ),
        PolicySpec(
            "step-model",
            "inferno",
            {"alpha_ms": 1.0},
            "instances[4].step_model.kind",
            "instances[4].step_model.params",
        ),
        PolicySpec("scheduler", "lifo", None, "instances[5].engine.scheduler"),
    ]
    with pytest.raises(ParamsError) as caught:
        check_policies(specs, "cluster.yaml")
    paths = [p.where for p in caught.value.problems]
    assert paths == [
        "router.params.objective",
        "router.params.length_predictor.params.edges",
        "instances[2].engine.scheduler_params.h_s_per_token",
        "instances[2].engine.scheduler_params.chunk_sizes",
        "instances[3].engine.sla_s",
        "instances[4].step_model.params.beta_ms",
        "instances[4].step_model.params.gamma_ms",
        "instances[4].step_model.params.delta_ms",
        "instances[5].engine.scheduler",
    ]
    text = str(caught.value)
    assert text.startswith("cluster.yaml: invalid policies (9 problems)")
    assert (
        "instances[2].engine.scheduler_params.h_s_per_token: engine scheduler 'niyama' parameter "
        "h_s_per_token should be >= 0; got -1.0; allowed: a number >= 0"
    ) in text


def test_checking_builds_nothing_and_a_valid_config_passes() -> None:
    """A predictor file that does not exist is not read by the check (only by a build)."""
    specs = [
        PolicySpec(
            "router",
            "cost-optimal",
            {"latency_predictor": {"name": "lstm", "params": {"path": "absent.npz"}}},
        ),
        PolicySpec("strategy", "select-batch+timer", {"sla_s": 40.0, "select_sizes": [4, 8]}),
        PolicySpec("step-model", "roofline", {"mfu_efficiency": 0.6}),
        PolicySpec("latency-predictor", "recent-window", {"alpha": 0.5}),
    ]
    check_policies(specs)
    assert policy_problems(specs) == []


def test_names_that_are_not_strings_or_strategies_that_do_not_parse_are_problems() -> None:
    """A number where a name belongs, or an invalid rule combination, is reported at the name."""
    problems = policy_problems(
        [
            PolicySpec("router", 3, None, "router.name"),
            PolicySpec("strategy", "timer+fcfs", None, "engine.strategy", "engine"),
        ]
    )
    assert [p.where for p in problems] == ["router.name", "engine.strategy", "engine.sla_s"]
    assert problems[0].line() == "router.name: a router must be a name; got 3"
    assert (
        problems[1]
        .line()
        .startswith("engine.strategy: not a valid batching strategy; got 'timer+fcfs'")
    )
    assert "needs parameter sla_s" in problems[2].line()


def test_the_error_is_a_config_error_with_one_line_per_problem() -> None:
    """Config edges catch ConfigError; a single problem reads as one line with its file."""
    with pytest.raises(ConfigError, match=r"^c.yaml: router.params.metric: router 'power-of-two'"):
        check_policies(
            [PolicySpec("router", "power-of-two", {"metric": "x"}, "", "router.params")], "c.yaml"
        )
