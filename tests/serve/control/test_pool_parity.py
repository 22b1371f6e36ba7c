"""One slot shared by two models, simulated and run live (gateway, live pool, emulated
engines' sleep routes, ``bench`` on 127.0.0.1): the same actuations at the same moments,
and the same latencies.

Scenario: model A serves at 0 (a request every 2 s until 6.5), B asleep in the slot's
host RAM. B's burst at 8.05 (twenty requests in half a second) finds no slot serving B:
held. A finished its last request 0.9 s before, not idle yet, but it wanted no slot at
the reading at 8: its slot is spare, so A stops and is put to sleep at once (offload
0.5 s) and B wakes from 8.55 (1 s), ready at 9.55. B's requests, held 1 to 1.5 s, all
miss their 3 s end-to-end target; A's all meet it. B is idle (1.5 s without a request)
at the reading at 14: it stops and is put to sleep; A's next request (14.5) wakes A on
the empty slot, ready at 15.5.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from sincere.bench.parity import DISTURBED_LAG_S, run_controlled
from sincere.bench.results import BenchResult
from sincere.core.request import RequestArrays, Tier
from sincere.serve.app import CONTROLLER, compose
from sincere.serve.control.pool import LivePool
from sincere.serve.control.sim_scaling import live_actuation
from sincere.serve.gateway.config import parse_config
from sincere.serve.protocol import count_prompt_tokens
from sincere.sim import simulate
from sincere.sim.api import SimulationResult

A, B = "llama-3-8b", "mistral-7b"
STALL_S = 0.25  # one event-loop stall this long can move a reading across a tick
LAG_UNTIL_S = 16.0  # the loop's lag is sampled until then (the last actuation is at 15.5)
END_S = 18.5  # past the simulator's last reading (18 s)
TIER = Tier("default", ttlt_s=3.0)
TIMES = {m: {"load_s": 3.0, "wake_s": 1.0, "sleep_s": 0.5} for m in (A, B)}
SCALING = {
    "policy": "threshold", "signal": "in_flight", "interval_s": 1.0, "max_instances": 1,
    "scale_up_threshold": 3.0, "scale_down_threshold": 1.0, "cooldown_s": 3.0,
    "provisioning_s": 2.0,
}  # fmt: skip
POOL = {
    "policy": "sleep", "max_slots": 1, "scaling": SCALING, "times": TIMES, "idle_s": 1.5,
    "release_after_s": 100.0,
}  # fmt: skip
STEP = {"kind": "inferno", "params": {"alpha_ms": 15, "beta_ms": 2, "gamma_ms": 20, "delta_ms": 0}}


def _requests() -> RequestArrays:
    """A every 2 s, B's burst (forty a second for half a second), A again; off the grid."""
    a_early = [0.5 + 2.0 * k for k in range(4)]
    burst = [8.05 + 0.025 * k for k in range(20)]
    a_late = [14.5, 16.5]
    arrivals = a_early + burst + a_late
    models = [0] * 4 + [1] * 20 + [0] * 2
    n = len(arrivals)
    return RequestArrays.build(
        arrivals, [64] * n, [40] * n, models=(A, B), model=models, tiers=(TIER,)
    )


def _sim_config() -> dict[str, Any]:
    def group(name: str, model: str) -> dict[str, Any]:
        return {
            "name": name, "model": model, "accelerator": "A100-80GB", "count": 1,
            "step_model": STEP, "engine": {"kind": "continuous", "scheduler": "fcfs"},
        }  # fmt: skip

    return {
        "seed": 0,
        "workload": {  # replaced by the requests of _requests()
            "num_requests": 1,
            "models": {A: 0.5, B: 0.5},
            "arrival": {"kind": "poisson", "rate": 1.0},
            "lengths": {
                "prompt": {"kind": "fixed", "tokens": 64},
                "output": {"kind": "fixed", "tokens": 40},
            },
        },
        "router": {"name": "least-outstanding"},
        "instances": [group("a", A), group("b", B)],
        "actuation": {**POOL, "initial": {"b": 0}},
    }


def _gateway_config(sim: SimulationResult) -> Any:
    inst = sim.config.instances[0]
    emulator = {**inst.deployment_fields(), "models": None, "max_num_requests": 512}
    return parse_config(
        {
            "port": 0,
            "router": {"name": "least-outstanding", "seed": 0},
            "admission": sim.config.admission.model_dump(),
            "tiers": {TIER.name: {"ttlt_s": TIER.ttlt_s}},
            "default_tier": TIER.name,
            "scrape": {"enabled": False},
            "queue": {"max_len": 1 << 20, "timeout_s": 3600.0, "shed_early": False},
            "planning": {"emulator": emulator},
            "controller": {"max_instances": 4},
        }
    )


async def _live(sim: SimulationResult) -> tuple[BenchResult, dict[str, Any], list[float]]:
    """The requests through a gateway whose pool starts with the bench; the event loop's
    lags sampled until the scenario's last actuation is past (the bench's own summing-up
    afterwards may hold the loop, and reads nothing the test checks)."""
    async with compose(_gateway_config(sim)) as gw:
        config = live_actuation({**POOL, "groups": [A, B], "initial": {B: 0}}, 4)
        pool = LivePool(gw.app[CONTROLLER], config, gw.loop.time)
        result, decided, lags = await run_controlled(  # A serving, B asleep at time 0
            gw.url, sim.requests_in, pool, pool.to_json,
            lag_until_s=LAG_UNTIL_S, end_s=END_S, time_limit_s=120.0,
        )  # fmt: skip
        return result, decided, list(lags)


def _moves(events: list[dict[str, Any]], until_s: float) -> list[tuple[float, str, str]]:
    """(moment, kind, model) of the actuations decided up to ``until_s``."""
    return [(e["at_s"], e["kind"], e["model"]) for e in events if e["at_s"] <= until_s]


def test_a_shared_slot_simulated_and_live_agree() -> None:
    """The same actuations in the same order, each within one interval of the simulated
    moment; every request served; mean E2E within 15 %, attainment within 0.1."""
    sim = simulate(_sim_config(), requests=_requests())
    block = sim.summary["actuation"]
    last_reading = block["timeline"]["at_s"][-1]
    sim_moves = _moves(block["events"], last_reading)
    assert [(k, m) for _, k, m in sim_moves][:4] == [
        ("stop", A),
        ("sleep", A),
        ("wake", B),
        ("ready", B),
    ]  # the scenario: B's burst takes A's spare slot
    for model in (A, B):  # the tokenizer's first load would hold the loop
        count_prompt_tokens("warm up", model)
    live, pooled, lags = asyncio.run(asyncio.wait_for(_live(sim), 90.0))
    if len(lags) and np.percentile(lags, 99) > DISTURBED_LAG_S:
        pytest.skip("machine too busy for live timing (event-loop lag)")
    if len(lags) and max(lags) > STALL_S:
        pytest.skip(f"the machine stalled the live run for {max(lags):.2f} s")
    live_moves = _moves(pooled["events"], last_reading)
    assert [(k, m) for _, k, m in live_moves] == [(k, m) for _, k, m in sim_moves], live_moves
    for (live_at, _, _), (sim_at, _, _) in zip(live_moves, sim_moves, strict=True):
        assert abs(live_at - sim_at) <= SCALING["interval_s"] + 0.1, (live_moves, sim_moves)
    assert live.summary["num_completed"] == sim.summary["num_completed"] == len(sim.requests_in)
    m, s = live.summary, sim.summary
    assert abs(m["e2e_s"]["mean"] - s["e2e_s"]["mean"]) <= 0.15 * s["e2e_s"]["mean"]
    assert abs(m["slo_attainment"] - s["slo_attainment"]) <= 0.1
