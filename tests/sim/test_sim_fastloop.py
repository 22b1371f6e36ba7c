"""The single-engine loop handles the same events as the general event-queue loop."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from sincere.policy.decision_log import DecisionLog
from sincere.sim import load_config
from sincere.sim.build import base_dir_of, build_cluster, canonical_requests
from sincere.sim.cluster import Cluster
from sincere.sim.runner import RunLog, _Loop, _mark_unfinished
from sincere.workload.config import generate

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _cluster(name: str, num_requests: int, decisions: DecisionLog | None = None) -> Cluster:
    raw: dict[str, Any] = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    raw["workload"]["num_requests"] = num_requests
    cfg = load_config(raw).model_copy(update={"base_dir": str(EXAMPLES)})
    reqs = canonical_requests(generate(cfg.workload, cfg.seed, base_dir=base_dir_of(cfg)))
    return build_cluster(cfg, reqs, decisions)


def _heap_run(cluster: Cluster) -> RunLog:
    loop = _Loop(cluster, None, 10_000)
    loop._run_heap()
    return RunLog(loop.last_at, loop.area, loop.num_events, _mark_unfinished(cluster.records))


@pytest.mark.parametrize("name", ["w1", "vllm", "niyama", "sincere"])
def test_single_engine_loop_matches_the_event_queue(name: str) -> None:
    """Same records, end time, events and time-integral of requests in the system."""
    fast_cluster, heap_cluster = _cluster(name, 300), _cluster(name, 300)
    assert len(fast_cluster.engines) == 1
    fast = _Loop(fast_cluster, None, 10_000).run()
    heap = _heap_run(heap_cluster)
    assert (fast.end_at, fast.num_events, fast.num_unfinished) == (
        heap.end_at,
        heap.num_events,
        heap.num_unfinished,
    )
    assert fast.num_in_system_area == pytest.approx(heap.num_in_system_area, rel=1e-12)
    a, b = fast_cluster.records, heap_cluster.records
    for col in ("first_scheduled_at", "first_token_at", "finished_at"):
        np.testing.assert_array_equal(getattr(a, col), getattr(b, col))
    np.testing.assert_array_equal(a.rejected, b.rejected)


def test_router_clusters_configure_their_engines_once_as_planned() -> None:
    """With a router over several engines, the plan decides how engines cut their work at
    build time: one event per iteration when the router reads loads, else pieces summed
    iteration by iteration (tests/sim/test_sim_merged_prefill.py)."""
    cluster = _cluster("hetero", 50)
    assert len(cluster.engines) > 1
    pacing = cluster.shortcuts.engine_pacing
    assert pacing == ("summed" if cluster.shortcuts.load_blind else "exact")
    runs = [getattr(e, "max_prefill_run", 1) for e in cluster.engines]
    assert runs == [1 if pacing == "exact" else 1 << 30] * len(runs)


@pytest.mark.parametrize("logged", [False, True])
def test_single_engine_loop_tells_finished_requests_only_to_an_observer(logged: bool) -> None:
    """Each finished request is told to the cluster once when someone learns from
    outcomes (here a decision log: one outcome line per finished request), and the plan
    says nobody observes when nobody does (W1: the call was a no-op costing a Python call
    per request)."""
    lines: list[str] = []
    cluster = _cluster("w1", 200, DecisionLog(lines.append) if logged else None)
    assert cluster.shortcuts.observes == logged
    _Loop(cluster, None, 10_000).run()
    finished_ids = np.flatnonzero(~np.isnan(cluster.records.finished_at)).tolist()
    assert len(finished_ids) > 150
    told = [r["request"] for r in map(json.loads, lines) if r["event"] == "outcome"]
    expected = [cluster.requests.request(i).id for i in finished_ids] if logged else []
    assert sorted(told) == sorted(expected)
