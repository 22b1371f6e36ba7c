"""Disaggregated serving, simulated and live: where each phase ran, per request, both ways."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from sincere.bench.parity import (
    PD_RACE_S,
    PDCall,
    compare_phases,
    pd_answer,
    pd_parity,
    phase_loads,
    replay_pd,
)
from sincere.core.request import Request
from sincere.policy.pd import build_pd_front_door
from sincere.policy.pd_config import PDRoutingConfig
from sincere.policy.router_base import InstanceView

CONFIG: dict[str, Any] = {
    "seed": 3,
    "workload": {
        "num_requests": 24,
        "arrival": {"kind": "poisson", "rate": 4.0},
        "lengths": {
            "prompt": {"kind": "uniform", "low": 1024, "high": 3072},
            "output": {"kind": "uniform", "low": 16, "high": 48},
        },
        "models": {"llama-3-8b": 1.0},
    },
    "instances": [
        {"name": n, "model": "llama-3-8b", "accelerator": "A100-80GB", "count": 2, "role": r}
        for n, r in (("p", "prefill"), ("d", "decode"))
    ],
    # 1 GB/s: a 2k-token prompt's 256 MiB of KV takes ~270 ms, well above the live jitter
    "disaggregation": {"kv_link": {"kind": "rdma", "bandwidth_gbps": 1.0}},
}


def _column(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)


@pytest.mark.timing
def test_sim_and_live_choose_the_same_instances_or_say_why() -> None:
    """One trace through the simulator and through gateway + role emulators: every request
    is disaggregated both ways, the first decisions agree, every divergence is explained
    by a load the two paths saw differently or a race with a prefill end / finish, the
    gateway's P/D decisions replay identically on the simulator's front door, and
    the bench's per-request phases (instances, transfer, TTFT at the prefill) match the
    simulator's figures."""
    result = pd_parity(CONFIG)
    sim, live = result.sim.requests, result.live.requests
    assert not any(sim.column("rejected").to_pylist())
    assert not any(live.column("rejected").to_pylist())
    assert None not in live.column("prefill_instance").to_pylist()
    assert live.column("decode_instance").to_pylist() == live.column("instance").to_pylist()
    assert result.live.summary["disaggregation"]["num_disaggregated"] == 24
    assert all(d.position > 0 for d in result.diffs)  # the first request has nothing to race
    unexplained = [d for d in result.diffs if not d.explained]
    assert unexplained == [], unexplained
    # the same logic: the gateway's decisions, replayed on the simulator's P/D front door
    assert result.num_replayed == 24 and result.replay_mismatches == []
    # the same link model: each transfer within a few ms of the simulated one
    transfer = _column(live, "kv_transfer_s") - _column(sim, "kv_transfer_s")
    assert np.median(np.abs(transfer)) < 0.01
    # the end of the prefill: the live one pays HTTP hops and the event loop on top
    sim_done = _column(sim, "prefill_done_at") - _column(sim, "arrival_at")
    live_done = _column(live, "prefill_done_at") - _column(live, "arrival_at")
    assert np.median(live_done - sim_done) == pytest.approx(0.0, abs=0.05)
    # TTFT taken at the same point both ways: the first token the client gets, from the
    # decode side after the KV transfer (~270 ms here) and the wait for decode room
    # (live pays the same hops as at the prefill's end, and no more)
    gap = _column(live, "ttft_s") - _column(sim, "ttft_s")
    assert np.median(gap) == pytest.approx(np.median(live_done - sim_done), abs=0.1)
    assert np.median(_column(sim, "ttft_s") - sim_done) > 0.2
    for summary in (result.sim.summary, result.live.summary):
        assert summary["disaggregation"]["prefill_ttft_s"]["mean"] < summary["ttft_s"]["mean"]


def _table(prefill: list[str], decode: list[str], arrival: list[float],
           done: list[float], finished: list[float]) -> pa.Table:  # fmt: skip
    return pa.table({
        "instance": decode, "prefill_instance": prefill, "arrival_at": arrival,
        "prefill_done_at": done, "finished_at": finished,
    })  # fmt: skip


def test_compare_phases_explains_by_loads_or_races() -> None:
    """A divergence with equal loads and no nearby event is unexplained; one whose
    arrival fell within PD_RACE_S of a prefill end, or one with other loads, is explained."""
    sim = _table(["p0", "p0"], ["d0", "d1"], [0.0, 1.0], [0.5, 1.5], [0.8, 2.0])
    live = _table(["p0", "p1"], ["d0", "d1"], [0.0, 1.0], [0.5, 1.5], [0.8, 2.0])
    (diff,) = compare_phases(sim, live)
    assert (diff.position, diff.sim, diff.live) == (1, ("p0", "d1"), ("p1", "d1"))
    assert not diff.explained
    raced = _table(["p0", "p1"], ["d0", "d1"], [0.0, 1.0], [1.0 - PD_RACE_S / 2, 1.5],
                   [1.2, 2.0])  # fmt: skip
    assert compare_phases(sim, raced)[0].explained
    loaded = _table(["p0", "p1"], ["d0", "d1"], [0.0, 1.0], [0.5, 1.5], [1.4, 2.0])
    (diff,) = compare_phases(sim, loaded)
    assert diff.live_outstanding["d0"] == 1 and diff.sim_outstanding["d0"] == 0
    assert diff.explained


def test_phase_loads_count_prefill_until_its_end() -> None:
    """A prefill instance holds a request from its arrival to its prefill's end; a decode
    instance from its arrival (the decision) to its finish."""
    table = _table(["p0", "p0", "p0"], ["d0", "d0", "d0"], [0.0, 0.4, 0.6],
                   [0.5, 0.9, 1.0], [2.0, 2.0, 2.0])  # fmt: skip
    loads = phase_loads(table)
    assert loads["p0"].tolist() == [0, 1, 1]
    assert loads["d0"].tolist() == [0, 1, 2]


def test_replay_catches_other_logic() -> None:
    """Recorded P/D calls replay identically on a door built the same way, and not on one
    whose decode router differs (the replay can tell logics apart)."""

    def view(name: str, outstanding: int) -> InstanceView:
        return InstanceView(name, "m", "A100-80GB", num_outstanding=outstanding)

    same = PDRoutingConfig()
    other = PDRoutingConfig.model_validate({"decode_router": {"name": "round-robin"}})
    recorded = build_pd_front_door(same, 0)
    calls = []
    for k in range(6):
        req = Request(k, float(k), "m", 100, 10)
        pv = (view("p0", 0), view("p1", 0))
        dv = (view("d0", 0), view("d1", 0), view("d2", 3))  # d2 busy: least-outstanding avoids it
        answer = pd_answer(recorded.decide(req, pv, dv, float(k)))
        calls.append(PDCall(req, pv, dv, float(k), answer))
    assert replay_pd(calls, build_pd_front_door(same, 0)) == []
    assert replay_pd(calls, build_pd_front_door(other, 0)) != []


def test_the_measured_prefix_hit_rate_is_the_prefill_instances_and_is_in_the_summary() -> None:
    """Shared system prompts through gateway + P/D emulators: the bench's top-level
    ``prefix_cache.hit_rate`` is filled, counts the prefill instances' hits (the decode
    side computes no prompt), and is the client section's figure."""
    config = {**CONFIG, "workload": {
        "num_requests": 16, "arrival": {"kind": "poisson", "rate": 4.0},
        "lengths": {"prompt": {"kind": "uniform", "low": 20, "high": 200},
                    "output": {"kind": "uniform", "low": 4, "high": 16}},
        "sessions": {"min_turns": 1, "max_turns": 1, "system_prompt_tokens": 512,
                     "num_system_prompts": 1, "block_tokens": 16},
        "models": {"llama-3-8b": 1.0},
    }}  # fmt: skip
    result = pd_parity(config)
    live = result.live.summary
    assert live["prefix_cache"]["hit_rate"] == live["client"]["prefix_cache"]["hit_rate"]
    assert live["prefix_cache"]["hit_rate"] > 0.3
    assert result.sim.summary["prefix_cache"]["hit_rate"] > 0.3
