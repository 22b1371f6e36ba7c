"""Views moved on by decode progress are kept while the progress holds, and equal fresh ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from sincere.core.types import Seconds
from sincere.engine.continuous import ContinuousEngine
from sincere.engine.instance import advanced_view
from sincere.policy.router_base import InstanceView
from sincere.sim import load_config
from sincere.sim.build import base_dir_of, build_cluster, canonical_requests
from sincere.sim.cluster import Cluster
from sincere.sim.engine_views import EngineViews
from sincere.sim.runner import run_events
from sincere.workload.config import generate

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _cluster(example: str, router: dict[str, Any], num_requests: int, seed: int) -> Cluster:
    raw: dict[str, Any] = yaml.safe_load((EXAMPLES / example).read_text())
    raw["workload"]["num_requests"] = num_requests
    raw["router"] = router
    raw["seed"] = seed
    if example == "w1.yaml":  # twelve instances, loaded: long decode runs cut by arrivals
        raw["instances"][0]["count"] = 12
        raw["workload"]["arrival"]["rate"] = 12 * 7.0
    cfg = load_config(raw).model_copy(update={"base_dir": str(EXAMPLES)})
    reqs = canonical_requests(generate(cfg.workload, cfg.seed, base_dir=base_dir_of(cfg)))
    return build_cluster(cfg, reqs)


class _Checked(EngineViews):
    """At every arrival, also moves every view on from the engine's progress right now
    (what the kept views stand for) and compares."""

    num_checked = 0
    num_kept = 0

    def move_on(self, views: list[InstanceView], choices: list[int], now: Seconds) -> None:
        bases = list(views)
        kept = [self.moved[e] for e in choices]
        super().move_on(views, choices, now)
        for k, e in enumerate(choices):
            progress = self.engines[e].progress_at(now)
            expected = bases[k] if progress is None else advanced_view(bases[k], progress)
            assert views[k] == expected, (e, now)
            self.num_checked += 1
            self.num_kept += kept[k] is not None and views[k] is kept[k][3]


@pytest.mark.parametrize(
    ("example", "router", "seed"),
    [
        ("w1.yaml", {"name": "latency-optimal"}, 2),
        ("w1.yaml", {"name": "latency-optimal", "params": {"objective": "ttft"}}, 4),
        ("w1.yaml", {"name": "join-shortest-queue", "params": {"metric": "tokens"}}, 6),
        ("hetero.yaml", {"name": "latency-optimal"}, 1),
    ],
)
def test_kept_views_equal_views_moved_on_afresh(
    example: str, router: dict[str, Any], seed: int
) -> None:
    """Routers that read token counts: at every arrival each view handed to the front
    door equals its engine's view moved on by the progress asked right then, and most
    are kept ones (only engines with news are asked)."""
    cluster = _cluster(example, router, 800, seed)
    assert cluster.shortcuts.exact_tokens
    views = cluster.views
    views.__class__ = _Checked
    run_events(cluster)
    assert isinstance(views, _Checked)
    assert views.num_checked > 2000
    assert views.num_kept > views.num_checked // 2


class _Spans(EngineViews):
    """At every arrival, samples each engine's progress inside the span it promises."""

    num_spans = 0
    rng = np.random.default_rng(0)

    def move_on(self, views: list[InstanceView], choices: list[int], now: Seconds) -> None:
        super().move_on(views, choices, now)
        for e in choices:
            engine = self.engines[e]
            progress, until = engine.progress_until(now)
            assert until >= now
            if until == np.inf or until == now:
                continue
            self.num_spans += 1
            inside = now + (until - now) * self.rng.random(6)
            for at in [now, *inside.tolist(), float(np.nextafter(until, now))]:
                assert engine.progress_at(at) == progress, (e, now, at)
            after = engine.progress_at(until)
            done = 0 if progress is None else progress.steps
            assert after is not None and after.steps == done + 1


def test_progress_holds_until_the_next_decode_iteration_ends() -> None:
    """Inside the span ``progress_until`` gives, ``progress_at`` answers the same at any
    time (sampled, both ends included); at its end one more iteration has ended."""
    cluster = _cluster("w1.yaml", {"name": "latency-optimal"}, 300, 3)
    assert all(isinstance(engine, ContinuousEngine) for engine in cluster.engines)
    views = cluster.views
    views.__class__ = _Spans
    run_events(cluster)
    assert isinstance(views, _Spans)
    assert views.num_spans > 100
