"""Inferno's queueing analyzer against the simulator on one replica."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sincere.core.errors import ConfigError
from sincere.optimize import load_problem, solve
from sincere.optimize.hooks import cross_check
from sincere.optimize.queueing import DecodePrefillParams, PerfParams
from sincere.optimize.xcheck import (
    ReplicaCheck,
    check_replica,
    max_rate_per_s,
    replica_sim_config,
    replica_simulator,
)
from sincere.sim.config import load_config

GRANITE = DecodePrefillParams(alpha=20.58, beta=0.41, gamma=164.64, delta=0.0128125)
SHAPE = {"in_tokens": 128, "out_tokens": 1024, "max_batch": 32}
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "plan"


def _at_load(fraction: float, num_requests: int = 3000) -> ReplicaCheck:
    mu = max_rate_per_s(GRANITE, **SHAPE)
    return check_replica(GRANITE, **SHAPE, rate_per_s=fraction * mu, num_requests=num_requests)


def test_low_load_prediction_matches_simulation() -> None:
    """At 10 % of μ(N) the analyzer's mean ITL is within 15 % and TTFT within 25 %."""
    c = _at_load(0.10)
    assert c.load_fraction == pytest.approx(0.10)
    assert abs(c.itl_rel_error) < 0.15
    assert abs(c.ttft_rel_error) < 0.25
    assert c.measured_throughput_rps == pytest.approx(c.rate_per_s, rel=0.1)


def test_analyzer_is_optimistic_about_itl_under_load() -> None:
    """At 50 % load prefill stalls make the simulated ITL exceed the analyzer's decode(n*)."""
    c = _at_load(0.50, num_requests=2000)
    assert c.measured_itl_ms > c.predicted_itl_ms
    assert c.measured_itl_ms > GRANITE.alpha + GRANITE.beta  # at least one-sequence decode


def test_simulation_is_seeded() -> None:
    """The same seed gives the same measurement; another seed a different one."""
    kw = {**SHAPE, "rate_per_s": 0.3, "num_requests": 300}
    a = check_replica(GRANITE, **kw, seed=1)  # type: ignore[arg-type]
    b = check_replica(GRANITE, **kw, seed=1)  # type: ignore[arg-type]
    c = check_replica(GRANITE, **kw, seed=2)  # type: ignore[arg-type]
    assert a == b
    assert a.measured_ttft_ms != c.measured_ttft_ms


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rate_per_s": 0.0}, "arrival rate"),
        ({"rate_per_s": math.inf}, "arrival rate"),
        ({"in_tokens": 0}, "in_tokens"),
        ({"num_requests": 0}, "num_requests"),
    ],
)
def test_bad_inputs_are_refused(kwargs: dict[str, float], match: str) -> None:
    """Non-positive lengths, counts or rates raise a ConfigError naming the field."""
    base = {**SHAPE, "rate_per_s": 1.0, "num_requests": 10, **kwargs}
    with pytest.raises(ConfigError, match=match):
        replica_sim_config(GRANITE, **base)  # type: ignore[arg-type]


@settings(max_examples=25, deadline=None)
@given(
    in_tokens=st.integers(1, 8000),
    out_tokens=st.integers(1, 4000),
    max_batch=st.integers(1, 512),
    chunked=st.booleans(),
)
def test_generated_config_is_valid(
    in_tokens: int, out_tokens: int, max_batch: int, chunked: bool
) -> None:
    """Every generated config validates, never chunks a prompt (both forms), and keeps N."""
    params = PerfParams(1.0, 0.01, 1e-5) if chunked else GRANITE
    cfg = load_config(
        replica_sim_config(
            params,
            in_tokens=in_tokens,
            out_tokens=out_tokens,
            max_batch=max_batch,
            rate_per_s=1.0,
            num_requests=10,
        )
    )
    engine = cfg.instances[0].engine
    assert engine.max_num_seqs == max_batch  # type: ignore[union-attr]
    budget = engine.max_num_batched_tokens  # type: ignore[union-attr]
    assert budget >= max_batch * in_tokens  # whole prompts in both forms


def test_replica_simulator_feeds_cross_check() -> None:
    """cross_check with the simulator callable measures every allocated server."""
    problem = load_problem(EXAMPLES / "unlimited")
    solution = solve(problem)
    rows = cross_check(problem, solution, replica_simulator(num_requests=200, seed=0))
    allocated = [a for a in solution.allocations if a.num_replicas > 0]
    assert [r.server for r in rows] == [a.server for a in allocated]
    for row in rows:
        assert row.measured_ttft_ms > 0 and row.measured_itl_ms > 0
        assert math.isfinite(row.ttft_rel_error) and math.isfinite(row.itl_rel_error)


def test_kv_cache_bound_limits_the_simulated_batch() -> None:
    """With ``kv_tokens`` the cache holds ceil(kv/16) blocks; a cache for four whole
    requests keeps a batch of 32 from running 32 at once, so at 60 % load requests wait."""
    cfg = replica_sim_config(GRANITE, **SHAPE, rate_per_s=0.3, num_requests=10, kv_tokens=4 * 1152)
    assert cfg["instances"][0]["engine"]["num_kv_blocks"] == 288
    mu = max_rate_per_s(GRANITE, **SHAPE)
    kw = {**SHAPE, "rate_per_s": 0.6 * mu, "num_requests": 600}
    free = check_replica(GRANITE, **kw)  # type: ignore[arg-type]
    tight = check_replica(GRANITE, **kw, kv_tokens=4 * 1152)  # type: ignore[arg-type]
    assert tight.measured_ttft_ms > 3 * free.measured_ttft_ms
    with pytest.raises(ConfigError, match="at least one whole request"):
        replica_sim_config(GRANITE, **SHAPE, rate_per_s=0.3, num_requests=10, kv_tokens=1000)
