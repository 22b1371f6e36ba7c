"""The simulator in the planning loop: outcomes, capacity search, its cache, the sizer."""

from __future__ import annotations

from pathlib import Path

import pytest

from sincere.core.errors import ConfigError
from sincere.optimize import load_problem, solve
from sincere.optimize.queueing import DecodePrefillParams, PerfParams
from sincere.optimize.simsize import (
    ReplicaJob,
    SimOutcome,
    SimSettings,
    Verdict,
    capacities,
    replica_capacity,
    simulate_replica,
    simulated_sizer,
    verify,
)
from sincere.optimize.sizing import Targets

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "plan"
GRANITE = DecodePrefillParams(alpha=20.58, beta=0.41, gamma=164.64, delta=0.0128125)
TARGETS = Targets(ttft_ms=1000.0, itl_ms=80.0)


def _job(params: DecodePrefillParams | PerfParams = GRANITE, n: int = 60) -> ReplicaJob:
    return ReplicaJob(params, 128, 64, 16, TARGETS, n, (0,), None)


def test_outcome_meets_needs_means_finished_and_attainment() -> None:
    """Means within targets, everything finished, and the attainment floor: all three."""
    ok = SimOutcome(1.0, 500.0, 50.0, 0.95, 1.0)
    assert ok.meets(TARGETS) and ok.meets(TARGETS, 0.9)
    assert not ok.meets(TARGETS, 0.99)
    assert not SimOutcome(1.0, 1500.0, 50.0, 0.95, 1.0).meets(TARGETS)
    assert not SimOutcome(1.0, 500.0, 90.0, 0.95, 1.0).meets(TARGETS)
    assert not SimOutcome(1.0, 500.0, 50.0, 0.95, 0.9).meets(TARGETS)
    assert SimOutcome(1.0, 9e9, 9e9, 0.0, 1.0).meets(Targets())


def test_more_load_is_slower_in_simulation() -> None:
    """The simulated mean TTFT grows with the rate (what the bisection relies on)."""
    job = _job(n=200)
    low, high = simulate_replica(job, 0.5), simulate_replica(job, 8.0)
    assert high.ttft_ms > low.ttft_ms
    assert low.finished == 1.0 and 0.0 <= low.attainment <= 1.0


def test_capacity_search_brackets_the_targets() -> None:
    """The capacity passes; a rate 30 % above it fails (the bracket is 5 % wide)."""
    job = _job()
    cap = replica_capacity(job, start_rate=1.0)
    assert cap > 0
    assert job.passes(simulate_replica(job, cap))
    assert not job.passes(simulate_replica(job, cap * 1.3))


def test_capacity_is_zero_when_nothing_passes() -> None:
    """A TTFT target below one prefill can never be met: capacity 0."""
    job = ReplicaJob(GRANITE, 128, 64, 16, Targets(ttft_ms=1.0), 30, (0,), None)
    assert replica_capacity(job, start_rate=1.0, max_points=14) == 0.0


def test_capacities_are_cached_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second search of the same job reads the cache and simulates nothing; another
    job (other targets) misses it."""
    settings = SimSettings(num_requests=40, cache_dir=tmp_path)
    job = _job(n=40)
    (first,) = capacities([job], [1.0], settings)
    assert len(list(tmp_path.glob("*.json"))) == 1

    def boom(*_: object) -> SimOutcome:
        raise AssertionError("simulated despite a cache hit")

    monkeypatch.setattr("sincere.optimize.simsize.simulate_replica", boom)
    assert capacities([job, job], [5.0, 7.0], settings) == [first, first]
    other = ReplicaJob(GRANITE, 128, 64, 16, Targets(ttft_ms=500.0), 40, (0,), None)
    with pytest.raises(AssertionError, match="simulated despite"):
        capacities([other], [1.0], settings)


def test_parallel_workers_give_the_serial_answer(tmp_path: Path) -> None:
    """Searches over two processes equal the in-process ones (seeded simulations)."""
    jobs = [_job(n=40), ReplicaJob(GRANITE, 256, 64, 16, TARGETS, 40, (0,), None)]
    serial = capacities(jobs, [1.0, 1.0], SimSettings(num_requests=40, cache_dir=None))
    par = capacities(jobs, [1.0, 1.0], SimSettings(num_requests=40, cache_dir=None, workers=2))
    assert par == serial


def test_simulated_sizer_drives_the_same_allocation(tmp_path: Path) -> None:
    """solve() with the simulated sizer allocates every loaded server of an example; each
    allocation passes in simulation at its per-replica rate."""
    problem = load_problem(EXAMPLES / "l4-llama8b")
    settings = SimSettings(num_requests=80, cache_dir=tmp_path)
    sol = solve(problem, sizer=simulated_sizer(settings))
    (alloc,) = sol.allocations
    assert alloc.accelerator == "L4" and alloc.num_replicas >= 1
    (verdict,) = verify(problem, sol, settings)
    assert verdict.sim_meets


def test_verdict_flags_gaps_and_disagreeing_verdicts() -> None:
    """A gap beyond the threshold, or analyzer and simulation disagreeing on the SLO,
    is a disagreement; close answers on the same side agree."""
    sim = SimOutcome(1.0, 400.0, 50.0, 1.0, 1.0)
    assert not Verdict("s", 1, 420.0, 52.0, sim, TARGETS, 0.25).disagrees
    assert Verdict("s", 1, 900.0, 52.0, sim, TARGETS, 0.25).disagrees
    assert Verdict("s", 1, 1200.0, 52.0, sim, TARGETS, 5.0).disagrees  # analyzer: misses
    assert "[agree]" in Verdict("s", 2, 420.0, 52.0, sim, TARGETS, 0.25).line()


def test_bad_settings_raise() -> None:
    """Settings outside their ranges name the value."""
    with pytest.raises(ConfigError):
        SimSettings(num_requests=0)
    with pytest.raises(ConfigError):
        SimSettings(rel_tol=1.5)
    with pytest.raises(ConfigError):
        SimSettings(min_attainment=2.0)
    with pytest.raises(ConfigError):
        replica_capacity(_job(), start_rate=0.0)
