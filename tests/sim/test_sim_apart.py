"""Behind an oblivious router the loop routes the whole trace first and runs each engine
alone, and every result is the heap loop's, bit for bit.

Round-robin and random answer without reading the instances, so where a request goes
does not depend on how the others are served; an engine's events are then those it has
when 64 engines take turns on one event heap. The time integral of requests in the
system is summed over every event in time order, as the heap loop sums it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sincere.policy.decision_log import DecisionLog
from sincere.policy.reads import READS_NOTHING, Reads
from sincere.policy.router_base import InstanceView
from sincere.policy.routers.basic import RandomRouter, RoundRobinRouter
from sincere.sim import load_config
from sincere.sim.build import base_dir_of, build_cluster, canonical_requests
from sincere.sim.cluster import Cluster
from sincere.sim.runner import _integral, run_events
from sincere.workload.config import generate

NOT_OBLIVIOUS = replace(READS_NOTHING, oblivious=False)  # a probe reading nothing, not oblivious

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
COLUMNS = (
    "instance", "first_scheduled_at", "first_token_at", "finished_at", "output_tokens",
    "num_preemptions", "rejected", "reject_reason", "arrival_num_running",
    "arrival_num_waiting", "arrival_waiting_prefill_tokens", "arrival_num_outstanding",
)  # fmt: skip


def view(name: str) -> InstanceView:
    return InstanceView(name, "m", "A100-80GB")


def _raw(router: str, count: int, num_requests: int, example: str = "w1.yaml") -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load((EXAMPLES / example).read_text())
    raw["workload"]["num_requests"] = num_requests
    if example == "w1.yaml":
        raw["workload"]["arrival"]["rate"] = 6.45 * count
        raw["instances"][0]["count"] = count
    raw["router"] = {"name": router}
    return raw


def _cluster(
    raw: dict[str, Any], decisions: DecisionLog | None = None, probes: tuple[Reads, ...] = ()
) -> Cluster:
    cfg = load_config(raw).model_copy(update={"base_dir": str(EXAMPLES)})
    reqs = canonical_requests(generate(cfg.workload, cfg.seed, base_dir=base_dir_of(cfg)))
    return build_cluster(cfg, reqs, decisions, probes)


@pytest.mark.parametrize(
    ("router", "count", "num_requests", "example"),
    [
        ("round-robin", 8, 2000, "w1.yaml"),
        ("round-robin", 64, 3000, "w1.yaml"),
        ("random", 4, 2000, "w1.yaml"),
        ("random", 0, 1500, "hetero-explore.yaml"),  # several models, several accelerators
        ("round-robin", 0, 1500, "hetero-explore.yaml"),
        ("round-robin", 0, 400, "sincere.yaml"),  # SINCERE's request-level server
    ],
)
def test_engines_run_apart_give_the_heap_loops_results_bit_for_bit(
    router: str, count: int, num_requests: int, example: str
) -> None:
    """Records, the run log (area as an exact float, events counted), every engine's
    totals and inter-token gaps: identical with and without running engines apart."""
    raw = _raw(router, count, num_requests, example)
    if example == "sincere.yaml":
        raw["instances"][0]["count"] = 3
    # a probe whose reads are not oblivious keeps the general loop (arrivals and every
    # engine on one event heap), every other shortcut as it was
    apart, heap = _cluster(raw), _cluster(raw, probes=(NOT_OBLIVIOUS,))
    assert apart.shortcuts.apart and not heap.shortcuts.apart
    assert replace(heap.shortcuts, apart=True) == apart.shortcuts
    log, ref = run_events(apart), run_events(heap)
    assert log == ref
    assert log.num_in_system_area > 0  # (SINCERE's server leaves some unfinished: no flush)
    for col in COLUMNS:
        np.testing.assert_array_equal(getattr(apart.records, col), getattr(heap.records, col))
    assert (apart.records.arrival_num_running >= 0).all()  # noted for every request
    np.testing.assert_array_equal(apart.max_tokens, heap.max_tokens)
    assert apart.outstanding == heap.outstanding  # (the unfinished, if any)
    for a, b in zip(apart.engines, heap.engines, strict=True):
        assert a.stats() == b.stats()
        for ga, gb in zip(a.gaps, b.gaps, strict=True):
            ga.flush()
            gb.flush()
            assert (ga.count, ga.total_s) == (gb.count, gb.total_s)
            np.testing.assert_array_equal(ga.counts, gb.counts)


def test_a_router_that_reads_the_instances_keeps_the_heap() -> None:
    """Least-outstanding reads the outstanding counts: its answers depend on the finishes."""
    assert not _cluster(_raw("least-outstanding", 4, 10)).shortcuts.apart
    assert not _cluster(_raw("power-of-two", 4, 10)).shortcuts.apart


def test_admission_or_a_decision_log_keeps_the_heap() -> None:
    """Admission reads loads and latency history; a decision log records the views at each
    arrival, which only the heap loop has."""
    raw = _raw("round-robin", 4, 10)
    raw["admission"] = {"enabled": True}
    assert not _cluster(raw).shortcuts.apart
    assert not _cluster(_raw("round-robin", 4, 10), DecisionLog(lambda line: None)).shortcuts.apart


def test_request_level_engines_keep_the_heap() -> None:
    """A request-level engine may wait for a fuller batch until the run's last arrival,
    which no engine alone knows."""
    raw = _raw("round-robin", 3, 10)
    raw["instances"][0]["engine"] = {"kind": "request-level", "dispatch": "idle"}
    cluster = _cluster(raw)
    assert any(e.holds_back for e in cluster.engines)
    assert not cluster.shortcuts.apart


def test_the_integral_sums_in_time_order_whatever_order_events_come_in() -> None:
    """Two arrivals at 1 and 2 s, one leaving at 4 s and one at 5 s: 1·1 + 2·2 + 1·1 = 6,
    events listed out of order; ties add nothing."""
    times, change = np.array([2.0, 5.0, 1.0, 4.0, 4.0]), np.array([1, -1, 1, -1, 0])
    assert _integral(times, change) == (6.0, 5.0, 0, 5)
    assert _integral(np.zeros(0), np.zeros(0, np.int64)) == (0.0, 0.0, 0, 0)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.lists(st.tuples(st.integers(1, 70), st.integers(0, 40)), min_size=1, max_size=8),
)
def test_choosing_many_is_choosing_one_by_one(seed: int, runs: list[tuple[int, int]]) -> None:
    """Round-robin and random pick the same instances, and end in the same state, whether
    asked once per request or once per run of requests (candidate counts changing
    between runs, as with several models)."""
    for cls in (RoundRobinRouter, RandomRouter):
        one, many = cls(np.random.default_rng(seed)), cls(np.random.default_rng(seed))
        for num_candidates, count in runs:
            views = [view(f"i{k}") for k in range(num_candidates)]
            ids = [one.choose(None, views, 0.0).instance for _ in range(count)]  # type: ignore[arg-type]
            picks = many.choose_many(count, views)
            assert picks is not None
            assert [views[k].id for k in picks] == ids
        probe = [view(f"i{k}") for k in range(5)]
        assert one.choose(None, probe, 0.0) == many.choose(None, probe, 0.0)  # type: ignore[arg-type]
