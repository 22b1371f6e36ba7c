"""Decision logs: every front-door call as data, and replays that reproduce it."""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np

from sincere.core import Request, Tier
from sincere.perf.base import Batch, StepTimeBase
from sincere.policy.decision_log import (
    DecisionLog,
    decision_record,
    read_log,
    replay,
    request_of,
    view_of,
)
from sincere.policy.front_door import FrontDoor, Hold, Reject, Route, build_front_door
from sincere.policy.front_door_config import AdmissionConfig, RouterConfig
from sincere.policy.router_base import InstanceView, Outcome


class Linear(StepTimeBase):
    """1 ms plus 10 us per token of an iteration."""

    def iteration_s(self, batch: Batch) -> float:
        return 0.001 + 1e-5 * batch.num_tokens


STEP = {"a": Linear(), "b": Linear()}


def fresh(router: str = "latency-optimal") -> FrontDoor:
    admission = AdmissionConfig(enabled=True, priority_bands=[(0.5, 0)])
    return build_front_door(RouterConfig(name=router), admission, 3)


def write_log(router: str = "latency-optimal") -> list[str]:
    """Twenty requests through a front door, with outcomes, logged as JSON lines."""
    lines: list[str] = []
    log, fd = DecisionLog(lines.append), fresh(router)
    rng = np.random.default_rng(0)
    tier = Tier("t", ttft_s=5.0)
    for i in range(20):
        views = [
            InstanceView(n, "m", "x", num_outstanding=int(rng.integers(4)), step_model=STEP[n],
                         waiting_prefill_tokens=int(rng.integers(2000)), kv_usage=None)
            for n in ("a", "b")
        ]  # fmt: skip
        request = Request(i, float(i), "m", 100 + i, 10, max_tokens=20, tier=tier, priority=i % 3)
        decision = fd.decide(request, views, float(i))
        log.call("decide", request, views, float(i), decision, client_id=str(i))
        if i % 2:
            outcome = Outcome(request, "a", 0.2, 1.0 + i, 12, float(i) + 0.5)
            fd.observe(outcome)
            log.outcome(outcome)
            log.hold("a", 0.7, float(i) + 0.5)
    return lines


def test_a_replay_of_the_log_makes_the_same_decisions() -> None:
    """Fed the logged inputs and outcomes in order, a fresh front door answers the same."""
    for router in ("latency-optimal", "cost-optimal", "power-of-two", "round-robin"):
        records = list(read_log(write_log(router)))
        num_calls, mismatches = replay(records, fresh(router), STEP)
        assert num_calls == 20 and mismatches == [], router


def test_a_changed_input_shows_as_a_mismatch_at_its_record() -> None:
    """The replay is a real check: one altered load changes that decision and is reported."""
    records = list(read_log(write_log("power-of-two")))
    decided = [k for k, r in enumerate(records) if r["event"] == "decide"]
    altered = copy.deepcopy(records)
    k = decided[4]
    for cand in altered[k]["candidates"]:  # make the chosen instance the busy one
        busy = cand["id"] == altered[k]["decision"]["instance"]
        cand["num_outstanding"] = 50 if busy else 0
    _, mismatches = replay(altered, fresh("power-of-two"), STEP)
    assert [m.position for m in mismatches][:1] == [k]


def test_records_hold_requests_views_and_decisions_as_plain_json() -> None:
    """Unknown fields are null, the step model a flag; records round-trip to objects."""
    record: dict[str, Any] = json.loads(write_log()[0])
    assert record["event"] == "decide" and record["request"]["client_id"] == "0"
    cand = record["candidates"][0]
    assert cand["kv_usage"] is None and cand["step_model"] is True
    assert record["decision"]["kind"] in ("route", "reject")
    assert view_of(cand, STEP).step_model is STEP["a"]
    assert request_of(record["request"]).tier == Tier("t", ttft_s=5.0)


def test_decision_records_keep_their_layout() -> None:
    """Each answer is logged as its kind, then its fields in order, estimates as a mapping:
    the JSON lines of earlier logs, key for key."""
    route = Route("i0", None, "why", (("i0", 1.5), ("i1", 2.0)))
    assert json.dumps(decision_record(route)) == (
        '{"kind": "route", "instance": "i0", "max_tokens": null, "reason": "why", '
        '"estimates": {"i0": 1.5, "i1": 2.0}}'
    )
    assert json.dumps(decision_record(Hold("wait", True, 3.0))) == (
        '{"kind": "hold", "reason": "wait", "at_head": true, "max_wait_s": 3.0}'
    )
    assert json.dumps(decision_record(Reject("no_instance", "none"))) == (
        '{"kind": "reject", "code": "no_instance", "reason": "none"}'
    )
