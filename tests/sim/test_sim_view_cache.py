"""Routers see cached instance views only while the instance is unchanged."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from sincere.policy.reads import READS_NOTHING, Reads
from sincere.sim import load_config
from sincere.sim.build import base_dir_of, build_cluster, canonical_requests
from sincere.sim.cluster import Cluster
from sincere.sim.engine_views import EngineViews
from sincere.sim.runner import run_events
from sincere.workload.config import generate

READS_LOAD = replace(READS_NOTHING, load=True, oblivious=False)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _cluster(router: str, num_requests: int, probes: tuple[Reads, ...] = ()) -> Cluster:
    raw: dict[str, Any] = yaml.safe_load((EXAMPLES / "hetero.yaml").read_text())
    raw["workload"]["num_requests"] = num_requests
    raw["router"] = {"name": router}
    cfg = load_config(raw).model_copy(update={"base_dir": str(EXAMPLES)})
    reqs = canonical_requests(generate(cfg.workload, cfg.seed, base_dir=base_dir_of(cfg)))
    return build_cluster(cfg, reqs, probes=probes)


class _Uncached(EngineViews):
    """Views built afresh every time (what the cache must be equal to)."""

    def view(self, e: int) -> Any:
        return self.fresh(e)

    def refresh(self) -> None:  # every view, not only the stale ones
        self.cached[:] = [self.fresh(e) for e in range(len(self.engines))]
        self.stale.clear()


@pytest.mark.parametrize("router", ["least-outstanding", "latency-optimal", "cost-optimal"])
def test_cached_views_give_the_same_run_as_fresh_ones(router: str) -> None:
    """Same decisions, hence identical records, with and without the cache."""
    cached = _cluster(router, 1500)
    fresh = _cluster(router, 1500)
    fresh.views.__class__ = _Uncached
    run_events(cached)
    run_events(fresh)
    a, b = cached.records, fresh.records
    np.testing.assert_array_equal(a.instance, b.instance)
    for col in ("first_scheduled_at", "first_token_at", "finished_at"):
        np.testing.assert_array_equal(getattr(a, col), getattr(b, col))
    assert len(set(a.instance.tolist())) > 2  # the router did spread the load


def test_a_view_is_reused_until_its_engine_is_touched() -> None:
    """Same object while unchanged; after touched(), one that shows the new load."""
    cluster = _cluster("join-shortest-queue", 10)
    assert not cluster.shortcuts.load_blind
    before = cluster.views.view(0)
    assert cluster.views.view(0) is before
    cluster.outstanding[0] += 1
    cluster.engines[0].add(0, 0.0)
    assert cluster.views.view(0) is before  # nobody said the engine changed
    cluster.touched(0)
    after = cluster.views.view(0)
    assert after is not before
    assert (after.num_waiting, after.num_outstanding) == (1, before.num_outstanding + 1)
    assert after == cluster.views.fresh(0)


RECORD_COLUMNS = (
    "instance", "first_scheduled_at", "first_token_at", "finished_at", "output_tokens",
    "arrival_num_running", "arrival_num_waiting", "arrival_waiting_prefill_tokens",
    "arrival_num_outstanding",
)  # fmt: skip


@pytest.mark.parametrize(
    "router", ["round-robin", "least-outstanding", "random", "relevance-optimal"]
)
def test_load_blind_views_give_the_same_run_as_full_ones(router: str) -> None:
    """A router that reads no engine load gets load-unknown views; records are identical."""
    blind = _cluster(router, 1500)
    full = _cluster(router, 1500, probes=(READS_LOAD,))  # a probe that reads engine load
    assert blind.shortcuts.load_blind
    assert not full.shortcuts.load_blind
    log_blind, log_full = run_events(blind), run_events(full)
    for col in RECORD_COLUMNS:
        np.testing.assert_array_equal(getattr(blind.records, col), getattr(full.records, col))
    assert log_blind == log_full
    assert (blind.records.arrival_num_running > 0).any()  # the engines' load was recorded


def test_load_blind_views_show_the_load_unknown_and_track_outstanding() -> None:
    """Load-blind views carry no engine load, and show a new outstanding count once told."""
    cluster = _cluster("least-outstanding", 10)
    assert cluster.shortcuts.load_blind
    before = cluster.views.view(0)
    assert (before.num_running, before.num_waiting, before.kv_usage) == (None, None, None)
    cluster.outstanding[0] += 1
    cluster.touched(0)
    assert cluster.views.view(0).num_outstanding == before.num_outstanding + 1


def test_a_router_that_reads_load_is_not_load_blind() -> None:
    """Routers that compare engine load, and any decision log, keep full views."""
    assert not _cluster("join-shortest-queue", 10).shortcuts.load_blind
    assert not _cluster("latency-optimal", 10).shortcuts.load_blind
    assert not _cluster("session-affinity", 10).shortcuts.load_blind  # a bound one's KV usage


def _sessions_cluster(router: dict[str, Any], probes: tuple[Reads, ...] = ()) -> Cluster:
    """Multi-turn sessions with shared system prompts on four H100s, prefix caching on."""
    raw: dict[str, Any] = {
        "seed": 3,
        "workload": {
            "num_requests": 800,
            "arrival": {"kind": "poisson", "rate": 6.0},
            "lengths": {
                "prompt": {"kind": "uniform", "low": 20, "high": 400},
                "output": {"kind": "uniform", "low": 20, "high": 300},
            },
            "sessions": {"max_turns": 6, "think_s": 5.0, "system_prompt_tokens": 1000,
                         "num_system_prompts": 8, "block_tokens": 16},
            "models": {"llama-3-8b": 1.0},
        },
        "instances": [{"model": "llama-3-8b", "accelerator": "H100-SXM", "count": 4,
                       "engine": {"kind": "continuous", "enable_prefix_caching": True}}],
        "router": router,
    }  # fmt: skip
    cfg = load_config(raw)
    reqs = canonical_requests(generate(cfg.workload, cfg.seed, base_dir=base_dir_of(cfg)))
    return build_cluster(cfg, reqs, probes=probes)


def test_prefix_aware_by_outstanding_is_load_blind_with_the_same_run() -> None:
    """Prefix-aware comparing outstanding counts reads no engine load: its run is load-blind
    (engines paced by sums, not iteration by iteration) and its records are those of the
    run whose views show every engine's load; by requests it reads the load."""
    router = {"name": "prefix-aware", "params": {"max_load_gap": 2}}
    blind = _sessions_cluster(router)
    full = _sessions_cluster(router, probes=(READS_LOAD,))
    assert blind.shortcuts.load_blind and blind.shortcuts.engine_pacing == "summed"
    # block ids: placed from the outstanding counts and each prompt's keys, no view
    assert blind.shortcuts.by_count == "outstanding" and blind._by_prompt
    assert not full.shortcuts.load_blind and full.shortcuts.engine_pacing == "exact"
    log_blind, log_full = run_events(blind), run_events(full)
    for col in (*RECORD_COLUMNS, "cached_tokens"):
        np.testing.assert_array_equal(getattr(blind.records, col), getattr(full.records, col))
    assert log_blind == log_full
    assert len(set(blind.records.instance.tolist())) == 4
    assert blind.records.cached_tokens.sum() > 0  # prefixes were matched and reused
    by_requests = {"name": "prefix-aware", "params": {"metric": "requests"}}
    assert not _sessions_cluster(by_requests).shortcuts.load_blind
