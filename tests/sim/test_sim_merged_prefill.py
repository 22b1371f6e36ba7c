"""Behind a router that reads no load, prefill iterations run as one piece, and nothing moves.

The engines end one event per piece instead of one per iteration, yet the records, the
time integral of requests in the system, busy time and the ITL sums are bit for bit those
of one event per iteration (what the shipped examples' pinned summaries were made with).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from sincere.engine.base import Engine
from sincere.engine.continuous import ContinuousEngine
from sincere.sim import load_config
from sincere.sim.build import base_dir_of, build_cluster, canonical_requests
from sincere.sim.cluster import Cluster
from sincere.sim.runner import RunLog, run_events
from sincere.workload.config import generate

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
COLUMNS = (
    "instance", "first_scheduled_at", "first_token_at", "finished_at", "output_tokens",
    "arrival_num_running", "arrival_num_waiting", "arrival_waiting_prefill_tokens",
)  # fmt: skip


def _cluster(router: str, count: int, num_requests: int) -> Cluster:
    raw: dict[str, Any] = yaml.safe_load((EXAMPLES / "w1.yaml").read_text())
    raw["workload"]["num_requests"] = num_requests
    raw["workload"]["arrival"]["rate"] = 6.45 * count
    raw["instances"][0]["count"] = count
    raw["router"] = {"name": router}
    cfg = load_config(raw).model_copy(update={"base_dir": str(EXAMPLES)})
    reqs = canonical_requests(generate(cfg.workload, cfg.seed, base_dir=base_dir_of(cfg)))
    return build_cluster(cfg, reqs)


class _Counted:
    """An engine as the event loop sees it, counting the events it ends; with
    ``per_iteration`` it keeps an event per prefill iteration whatever it is configured to
    do (what the engines did before). A wrapper, since compiled engines take no patches."""

    def __init__(self, engine: Engine, per_iteration: bool) -> None:
        self.engine = engine
        self.per_iteration = per_iteration
        self.num_events = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def advance(self, now: float) -> list[int]:
        self.num_events += 1
        return self.engine.advance(now)

    def configure(
        self, *, exact_loads: bool = False, inner_ends: list[float] | None = None
    ) -> None:
        if self.per_iteration:
            self.engine.configure(exact_loads=True)
        else:
            self.engine.configure(exact_loads=exact_loads, inner_ends=inner_ends)


def _run_counting(cluster: Cluster, per_iteration: bool) -> tuple[RunLog, int]:
    """Run ``cluster``; with ``per_iteration`` the engines keep one event per iteration.
    Returns the run log and the number of engine events."""
    counted = [_Counted(e, per_iteration) for e in cluster.engines]
    cluster.engines = counted  # type: ignore[assignment]
    pacing = cluster.shortcuts.engine_pacing
    for c in counted:  # as the cluster configured them, through the wrapper
        c.configure(
            exact_loads=pacing == "exact",
            inner_ends=cluster.inner_ends if pacing == "summed" else None,
        )
    log = run_events(cluster)
    cluster.engines = [c.engine for c in counted]
    return log, sum(c.num_events for c in counted)


@pytest.mark.parametrize(("router", "count"), [("round-robin", 8), ("least-outstanding", 4)])
def test_merged_prefill_pieces_keep_every_sum_bit_for_bit(router: str, count: int) -> None:
    """Fewer engine pieces, and records, integral, busy time and ITL sums all identical."""
    merged, apart = _cluster(router, count, 1500), _cluster(router, count, 1500)
    assert merged.shortcuts.load_blind
    log, num_merged = _run_counting(merged, per_iteration=False)
    ref, num_apart = _run_counting(apart, per_iteration=True)
    assert num_merged < 0.9 * num_apart  # whole prefills no longer end an event each
    assert log == ref  # end time, area (exact float), events counted, unfinished
    for col in COLUMNS:
        np.testing.assert_array_equal(getattr(merged.records, col), getattr(apart.records, col))
    for a, b in zip(merged.engines, apart.engines, strict=True):
        assert a.stats() == b.stats()  # busy time summed iteration by iteration
        for ga, gb in zip(a.gaps, b.gaps, strict=True):
            ga.flush()
            gb.flush()
            assert (ga.count, ga.total_s) == (gb.count, gb.total_s)
            np.testing.assert_array_equal(ga.counts, gb.counts)


def test_routers_that_read_loads_keep_one_event_per_iteration() -> None:
    """A router reading engine loads between iterations still sees them exact (one that
    reads only queue counts, join-shortest-queue by requests, need not: they do not
    change inside a merged piece; tests/sim/test_sim_by_count.py)."""
    cluster = _cluster("latency-optimal", 4, 50)
    assert not cluster.shortcuts.load_blind
    run_events(cluster)
    assert [getattr(e, "max_prefill_run", 1) for e in cluster.engines] == [1] * 4


def test_replicas_of_one_entry_share_their_step_model() -> None:
    """count: 8 builds one step-time model (a pure function), not eight copies."""
    cluster = _cluster("round-robin", 8, 10)
    models = {id(e.step_model) for e in cluster.engines if isinstance(e, ContinuousEngine)}
    assert len(models) == 1
    assert {id(info.step_model) for info in cluster.infos} == models
