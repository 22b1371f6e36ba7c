"""The iteration scheduler contract: preemption victims and the view-only declaration."""

from __future__ import annotations

from typing import Any

from sincere.core.request import RequestArrays
from sincere.perf.base import Batch, StepTimeBase
from sincere.policy.schedulers import SCHEDULERS, StaticView, make_scheduler
from sincere.policy.schedulers.base import EngineView, IterationScheduler


class Flat(StepTimeBase):
    """10 ms per iteration."""

    def iteration_s(self, batch: Batch) -> float:
        return 0.01


def _requests() -> RequestArrays:
    return RequestArrays.build(
        [0.0, 1.0, 2.0, 2.0, 3.0], [400, 100, 300, 50, 200], [10] * 5, priority=[0, 5, 1, 1, 5]
    )


def test_default_victim_is_the_largest_key() -> None:
    """FCFS preempts the latest arrival among prefilling and decoding sequences."""
    req = _requests()
    sched = make_scheduler("fcfs", {})
    view = StaticView(req, sched, prefilling_ix=[2, 0], decoding_ix=[4, 1])
    assert sched.victim(view) == 4


def test_default_victim_ties_go_to_the_first_prefilling_then_decoding() -> None:
    """Among equal keys the first in prefilling() then decoding() order is chosen."""
    req = _requests()  # requests 2 and 3: same priority, same arrival
    sched = make_scheduler("priority", {})
    assert sched.victim(StaticView(req, sched, prefilling_ix=[3], decoding_ix=[0, 2])) == 3
    assert sched.victim(StaticView(req, sched, prefilling_ix=[2], decoding_ix=[3])) == 2
    assert sched.victim(StaticView(req, sched, decoding_ix=[3, 0, 2])) == 3


def test_registered_view_only_policies_keep_the_shared_loop() -> None:
    """A policy declared view-only overrides neither plan, relegation nor learning."""
    base = IterationScheduler
    kwargs: dict[str, Any] = {"predictor": Flat()}
    for name in SCHEDULERS.names():
        sched = make_scheduler(name, {}, **kwargs)
        cls = type(sched)
        methods = ("plan", "_admit", "should_relegate", "observe")
        overridden = [m for m in methods if getattr(cls, m) is not getattr(base, m)]
        assert not (sched.plan_is_view_only() and overridden), (name, overridden)
    assert not make_scheduler("niyama", {}, **kwargs).plan_is_view_only()


def test_view_only_is_declared_per_class_not_inherited() -> None:
    """A subclass of a view-only policy is not view-only unless it says so itself."""
    fcfs = type(make_scheduler("fcfs", {}))

    class Reordered(fcfs):
        def waiting_key(self, view: EngineView, i: int) -> tuple[float, float]:
            return (-float(view.requests.arrival_at[i]), 0.0)

    class Stated(fcfs, view_only=True):
        pass

    assert fcfs().plan_is_view_only()
    assert not Reordered().plan_is_view_only()
    assert Stated().plan_is_view_only()
