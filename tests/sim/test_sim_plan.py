"""The run's shortcuts follow from the plug-ins' declarations alone, decided once."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from sincere.core.request import Request
from sincere.core.types import Seconds
from sincere.policy.reads import READS_NOTHING, Reads
from sincere.policy.router_base import InstanceView, RouteDecision, Router
from sincere.sim import load_config
from sincere.sim.build import base_dir_of, build_cluster, canonical_requests
from sincere.sim.plan import ExtensionNeeds, Facts, plan_shortcuts
from sincere.sim.runner import run_events
from sincere.workload.config import generate

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MANY = Facts(
    num_engines=4, has_front_door=True, screens=False, no_budgets=True, all_open=True,
    holds_back=False, closed=False,
)  # fmt: skip


def test_a_door_that_declares_nothing_gets_no_shortcut() -> None:
    """The default declaration reads everything: exact loads and tokens, outcomes, no
    routing ahead of serving."""
    s = plan_shortcuts(MANY, Reads())
    assert (s.load_blind, s.exact_tokens, s.observes, s.apart) == (False, True, True, False)
    assert s.engine_pacing == "exact"
    assert s.passthrough  # (one candidate is the answer whatever the router reads)


def test_an_oblivious_door_runs_engines_apart_with_summed_pieces() -> None:
    """A door reading nothing: load-unknown views, no outcomes, the trace routed first."""
    s = plan_shortcuts(MANY, READS_NOTHING)
    assert (s.load_blind, s.exact_tokens, s.observes, s.apart) == (True, False, False, True)
    assert s.engine_pacing == "summed"


@pytest.mark.parametrize(
    "facts",
    [
        dataclasses.replace(MANY, closed=True),
        dataclasses.replace(MANY, holds_back=True),
        dataclasses.replace(MANY, all_open=False),
    ],
)
def test_facts_of_the_cluster_keep_the_heap(facts: Facts) -> None:
    """A closed loop, an engine holding requests back or an in-flight cap: no apart."""
    assert not plan_shortcuts(facts, READS_NOTHING).apart


def test_every_reader_counts() -> None:
    """A decision log, an extension or a probe adds its reads to the door's."""
    log = plan_shortcuts(MANY, READS_NOTHING, log=Reads(tokens=False))
    assert not log.load_blind and log.observes and not log.passthrough and not log.apart
    ext = plan_shortcuts(MANY, READS_NOTHING, extension=ExtensionNeeds())
    assert not ext.apart and not ext.passthrough and ext.engine_pacing == "exact"
    quiet = ExtensionNeeds(READS_NOTHING, routes_arrivals=False, feeds_engines=False)
    assert plan_shortcuts(MANY, READS_NOTHING, extension=quiet).engine_pacing == "summed"
    probe = plan_shortcuts(MANY, READS_NOTHING, probes=[Reads(load=False, outcomes=False)])
    assert probe.exact_tokens and not probe.load_blind and not probe.apart


def test_one_engine_or_no_door_leaves_engines_free() -> None:
    """Nobody reads one engine's load between events; without a door nobody routes."""
    one = dataclasses.replace(MANY, num_engines=1)
    assert plan_shortcuts(one, Reads()).engine_pacing == "free"
    alone = dataclasses.replace(MANY, has_front_door=False)
    s = plan_shortcuts(alone, None)
    assert s.engine_pacing == "free" and not s.load_blind and not s.observes


class _Silent(Router):
    """A plug-in router that declares nothing: the first candidate, always."""

    def choose(
        self, request: Request, candidates: Sequence[InstanceView], now: Seconds
    ) -> RouteDecision:
        return RouteDecision(candidates[0].id, reason="first")


def _raw(router: str) -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load((EXAMPLES / "w1.yaml").read_text())
    raw["workload"]["num_requests"] = 200
    raw["instances"][0]["count"] = 3
    raw["router"] = {"name": router}
    return raw


def test_a_cluster_plans_once_and_its_shortcuts_cannot_change() -> None:
    """The cluster's shortcuts are frozen at build and its engines configured then; a
    router that declares nothing keeps every view exact."""
    cfg = load_config(_raw("round-robin")).model_copy(update={"base_dir": str(EXAMPLES)})
    reqs = canonical_requests(generate(cfg.workload, cfg.seed, base_dir=base_dir_of(cfg)))
    cluster = build_cluster(cfg, reqs)
    assert cluster.shortcuts.apart and cluster.shortcuts.engine_pacing == "summed"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cluster.shortcuts.apart = False  # type: ignore[misc]
    assert not hasattr(cluster, "load_blind") and not hasattr(cluster, "apart")
    assert cluster.front_door is not None
    silent = _Silent(np.random.default_rng(0))
    assert silent.reads == Reads(outcomes=False)  # the safe default (observe not overridden)


def test_engines_refuse_two_pacings_at_once() -> None:
    """configure takes exact loads or summed pieces, not both."""
    cfg = load_config(_raw("round-robin")).model_copy(update={"base_dir": str(EXAMPLES)})
    reqs = canonical_requests(generate(cfg.workload, cfg.seed, base_dir=base_dir_of(cfg)))
    engine = build_cluster(cfg, reqs).engines[0]
    with pytest.raises(ValueError, match="exclude each other"):
        engine.configure(exact_loads=True, inner_ends=[])
    run_events(build_cluster(cfg, reqs))  # (and a configured cluster runs)


def test_a_door_that_chooses_by_a_count_is_placed_by_it() -> None:
    """Routing by a count needs nothing else read at a decision; queue counts alone let
    engines cut prefill pieces whole, as load-blind routers do."""
    by_requests = dataclasses.replace(MANY, door_counts_by="requests")
    reads_load = Reads(tokens=False, outcomes=False)
    s = plan_shortcuts(by_requests, reads_load)
    assert (s.by_count, s.load_blind, s.engine_pacing) == ("requests", False, "summed")
    probed = plan_shortcuts(by_requests, reads_load, probes=[reads_load])
    assert probed.by_count == "requests" and probed.engine_pacing == "exact"
    assert plan_shortcuts(by_requests, Reads(tokens=True, outcomes=False)).by_count is None
    assert plan_shortcuts(by_requests, reads_load, log=READS_NOTHING).by_count is None
    open_not = dataclasses.replace(by_requests, all_open=False)
    assert plan_shortcuts(open_not, reads_load).by_count is None
    by_outstanding = dataclasses.replace(MANY, door_counts_by="outstanding")
    blind = Reads(load=False, tokens=False, outcomes=False)
    assert plan_shortcuts(by_outstanding, blind).by_count == "outstanding"
    assert plan_shortcuts(by_outstanding, Reads(load=False, tokens=False)).by_count is None
    assert plan_shortcuts(MANY, blind).by_count is None
