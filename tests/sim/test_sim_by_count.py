"""Arrivals routed from the cluster's counts go where the router would send them by the views."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from sincere.policy.reads import READS_NOTHING, Reads
from sincere.policy.router_base import Router
from sincere.sim import load_config
from sincere.sim.build import base_dir_of, build_cluster, canonical_requests
from sincere.sim.cluster import Cluster
from sincere.sim.runner import run_events
from sincere.workload.config import generate

READS_LOAD = Reads(load=True, tokens=False, outcomes=False, oblivious=False)
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ROUTERS = [
    ({"name": "least-outstanding"}, "outstanding"),
    ({"name": "power-of-two"}, "outstanding"),
    ({"name": "power-of-two", "params": {"num_choices": 3}}, "outstanding"),
    ({"name": "join-shortest-queue"}, "requests"),
    ({"name": "power-of-two", "params": {"metric": "requests"}}, "requests"),
    ({"name": "prefix-aware"}, "outstanding"),  # (no block ids in these workloads)
]
RECORD_COLUMNS = (
    "instance", "first_scheduled_at", "first_token_at", "finished_at", "output_tokens",
    "arrival_num_running", "arrival_num_waiting", "arrival_waiting_prefill_tokens",
    "arrival_num_outstanding",
)  # fmt: skip


def _config(example: str, router: dict[str, Any], num_requests: int, seed: int) -> Any:
    raw: dict[str, Any] = yaml.safe_load((EXAMPLES / example).read_text())
    raw["workload"]["num_requests"] = num_requests
    raw["router"] = router
    raw["seed"] = seed
    if example == "w1.yaml":  # twelve instances at ten times the load each can take
        raw["instances"][0]["count"] = 12
        raw["workload"]["arrival"]["rate"] = 12 * 12.0
    return load_config(raw).model_copy(update={"base_dir": str(EXAMPLES)})


def _cluster(cfg: Any, probes: tuple[Reads, ...] = ()) -> Cluster:
    reqs = canonical_requests(generate(cfg.workload, cfg.seed, base_dir=base_dir_of(cfg)))
    return build_cluster(cfg, reqs, probes=probes)


class _Checked:
    """Told of every arrival the counts placed (``Cluster.on_placed``), asks a second
    router of the same parameters over views built afresh from every engine (what the
    counts stand for) and checks it chooses the same instance, its generator left in the
    same state. Asked at every placement, it makes the same decisions, so its state
    (draws, a prefix index's runs) follows the cluster's router."""

    def __init__(self, cluster: Cluster, twin: Cluster) -> None:
        assert twin.front_door is not None  # (a cluster built alike: its router, unused)
        self.cluster = cluster
        self.reference: Router = twin.front_door.router
        self.num_checked = 0
        cluster.on_placed = self

    def __call__(self, i: int, e: int) -> None:
        cluster = self.cluster
        choices = cluster.eligible[int(cluster.requests.model[i])]
        if len(choices) < 2:  # the router is not asked
            return
        views = [cluster.views.fresh(k) for k in choices]
        now = float(cluster.requests.arrival_at[i])
        expected = self.reference.choose(cluster.requests.request(i), views, now).instance
        assert cluster.infos[e].id == expected, (i, now)
        assert cluster.front_door is not None
        rng = getattr(cluster.front_door.router, "rng", None)
        if rng is not None:
            ref_rng = self.reference.rng  # type: ignore[attr-defined]
            assert ref_rng.bit_generator.state == rng.bit_generator.state
        self.num_checked += 1


@pytest.mark.parametrize(("router", "key"), ROUTERS)
@pytest.mark.parametrize(("example", "seed"), [("w1.yaml", 3), ("hetero.yaml", 5)])
def test_every_arrival_goes_where_the_views_send_it(
    router: dict[str, Any], key: str, example: str, seed: int
) -> None:
    """W1 on twelve loaded instances (ties and queues) and the heterogeneous example
    (a model on some instances only): the engine chosen from the counts is the one the
    router chooses over fresh views, at every routed arrival."""
    cfg = _config(example, router, 1200, seed)
    cluster = _cluster(cfg)
    assert cluster.shortcuts.by_count == key
    checked = _Checked(cluster, _cluster(cfg))
    run_events(cluster)
    assert checked.num_checked > 900  # (the 70B requests of hetero.yaml have one instance)
    assert len(set(cluster.records.instance.tolist())) > 3


@pytest.mark.parametrize(("router", "key"), ROUTERS)
def test_runs_by_count_and_by_views_are_identical(router: dict[str, Any], key: str) -> None:
    """The whole run, records with their arrival loads and the run log, both ways: by
    the counts (prefill runs in one piece, ``summed``), and by full views rebuilt at
    every iteration (``exact``, as a probe reading loads between iterations gets it)."""
    cfg = _config("w1.yaml", router, 1500, 11)
    by_count = _cluster(cfg)
    by_views = _cluster(cfg, probes=(READS_LOAD,))
    by_views._counts_by = None  # (the shortcut off: every arrival asks the front door)
    assert by_count.shortcuts.by_count == key
    assert by_count.shortcuts.engine_pacing == "summed"
    assert by_views.shortcuts.engine_pacing == "exact" and not by_views.shortcuts.load_blind
    # by counts nothing reads a view: engine changes go untold, the loop keeps the counts
    # (outstanding, or by requests each engine's waiting + running)
    assert not by_count.watches_engines and by_views.watches_engines
    assert (by_count.queued_by_loop is not None) == (key == "requests")
    log_count, log_views = run_events(by_count), run_events(by_views)
    for col in RECORD_COLUMNS:
        a, b = getattr(by_count.records, col), getattr(by_views.records, col)
        np.testing.assert_array_equal(a, b)
    assert log_count == log_views
    assert (by_count.records.arrival_num_waiting > 0).any()  # queues did build


def test_what_else_is_read_turns_the_counts_off() -> None:
    """A token-reading probe, or admission, and arrivals go through the views again."""
    lo = {"name": "least-outstanding"}
    tokens = Reads(load=False, tokens=True, outcomes=False, oblivious=False)
    assert _cluster(_config("w1.yaml", lo, 10, 0), probes=(tokens,)).shortcuts.by_count is None
    assert _cluster(_config("w1.yaml", lo, 10, 0), probes=(READS_NOTHING,)).shortcuts.by_count
    raw = _config("w1.yaml", lo, 10, 0).model_dump()
    raw["admission"] = {"enabled": True}
    assert _cluster(load_config(raw)).shortcuts.by_count is None


def _sessions(num_instances: int, rate: float, router: dict[str, Any]) -> Any:
    """Multi-turn sessions over shared system prompts (16-token block ids) on H100s."""
    sessions = {
        "min_turns": 1, "max_turns": 6, "think_s": 2.0, "system_prompt_tokens": 400,
        "num_system_prompts": 5, "popularity_s": 1.1, "block_tokens": 16,
    }  # fmt: skip
    return load_config({
        "seed": 4,
        "workload": {
            "num_requests": 1500,
            "arrival": {"kind": "poisson", "rate": rate},
            "lengths": {
                "prompt": {"kind": "uniform", "low": 20, "high": 400},
                "output": {"kind": "uniform", "low": 20, "high": 300},
            },
            "sessions": sessions,
            "models": {"llama-3-8b": 1.0},
        },
        "instances": [{
            "model": "llama-3-8b", "accelerator": "H100-SXM", "count": num_instances,
            "step_model": {"kind": "roofline"},
            "engine": {"kind": "continuous", "enable_prefix_caching": True},
        }],
        "router": router,
    })  # fmt: skip


PREFIX_ROUTERS = [
    {"name": "prefix-aware"},
    {"name": "prefix-aware", "params": {"max_load_gap": 1.0, "max_tokens_per_instance": 4096}},
    {"name": "prefix-aware", "params": {"min_match_tokens": 600, "max_prefix_blocks": 40}},
]


@pytest.mark.parametrize("router", PREFIX_ROUTERS)
def test_prefix_aware_by_prompt_goes_where_the_views_send_it(router: dict[str, Any]) -> None:
    """Requests with block ids behind prefix-aware (loaded enough for the load gap to
    matter; a small index that evicts; a minimum match and a prefix cap): placed from the
    counts and the prompt's keys, every arrival goes where the router sends it over fresh
    views, and the whole run equals the one by the views (records and run log)."""
    cfg = _sessions(8, 60.0, router)
    cluster = _cluster(cfg)
    assert cluster.shortcuts.by_count == "outstanding" and cluster._by_prompt
    assert not cluster._first_least  # (prefix-aware's count rule is for no block ids)
    checked = _Checked(cluster, _cluster(cfg))
    run_events(cluster)
    assert checked.num_checked == 1500
    by_count = _cluster(cfg)
    by_views = _cluster(cfg)
    by_views._counts_by = None  # (the shortcut off: every arrival asks the front door)
    log_count, log_views = run_events(by_count), run_events(by_views)
    for col in RECORD_COLUMNS:
        a, b = getattr(by_count.records, col), getattr(by_views.records, col)
        np.testing.assert_array_equal(a, b)
    assert log_count == log_views
    assert (by_count.records.arrival_num_outstanding > 4).any()  # loads past the gap
    assert len(set(by_count.records.instance.tolist())) == 8
    assert (by_count.records.cached_tokens > 0).mean() > 0.3  # prefixes matched
