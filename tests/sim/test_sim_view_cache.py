"""Routers see cached instance views only while the instance is unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from sincere.sim import load_config
from sincere.sim.build import base_dir_of, build_cluster, canonical_requests
from sincere.sim.cluster import Cluster
from sincere.sim.runner import run_events
from sincere.workload.config import generate

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _cluster(router: str, num_requests: int) -> Cluster:
    raw: dict[str, Any] = yaml.safe_load((EXAMPLES / "hetero.yaml").read_text())
    raw["workload"]["num_requests"] = num_requests
    raw["router"] = {"name": router}
    cfg = load_config(raw).model_copy(update={"base_dir": str(EXAMPLES)})
    reqs = canonical_requests(generate(cfg.workload, cfg.seed, base_dir=base_dir_of(cfg)))
    return build_cluster(cfg, reqs)


class _Uncached(Cluster):
    """A cluster that builds every view afresh (what the cache must be equal to)."""

    def _view(self, e: int) -> Any:
        return self._fresh_view(e)

    def _refresh(self) -> None:  # every view, not only the stale ones
        self._views[:] = [self._fresh_view(e) for e in range(len(self.engines))]
        self._stale.clear()


@pytest.mark.parametrize("router", ["least-outstanding", "latency-optimal", "cost-optimal"])
def test_cached_views_give_the_same_run_as_fresh_ones(router: str) -> None:
    """Same decisions, hence identical records, with and without the cache."""
    cached = _cluster(router, 1500)
    fresh = _cluster(router, 1500)
    fresh.__class__ = _Uncached
    run_events(cached)
    run_events(fresh)
    a, b = cached.records, fresh.records
    np.testing.assert_array_equal(a.instance, b.instance)
    for col in ("first_scheduled_at", "first_token_at", "finished_at"):
        np.testing.assert_array_equal(getattr(a, col), getattr(b, col))
    assert len(set(a.instance.tolist())) > 2  # the router did spread the load


def test_a_view_is_reused_until_its_engine_is_touched() -> None:
    """Same object while unchanged; after touched(), one that shows the new load."""
    cluster = _cluster("least-outstanding", 10)
    before = cluster._view(0)
    assert cluster._view(0) is before
    cluster.outstanding[0] += 1
    cluster.engines[0].add(0, 0.0)
    assert cluster._view(0) is before  # nobody said the engine changed
    cluster.touched(0)
    after = cluster._view(0)
    assert after is not before
    assert (after.num_waiting, after.num_outstanding) == (1, before.num_outstanding + 1)
    assert after == cluster._fresh_view(0)
