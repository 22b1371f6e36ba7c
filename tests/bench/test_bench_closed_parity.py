"""A closed-loop sweep simulated and run live (gateway + an emulated engine on the wall
clock, ``bench``'s closed loop on 127.0.0.1) agree on throughput, TTFT and TPOT."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from sincere.bench.parity import DISTURBED_LAG_S, LoopLag, live_run
from sincere.sim import simulate

pytestmark = pytest.mark.timing  # wall-clock delays of local servers (tests/conftest.py)

STALL_S = 0.1  # one event-loop stall this long moves a 40-request closed loop's mean TTFT
SPECULATING = {  # two drafts of three always kept, the third always rejected: 3 tokens a step
    "speculation": {"method": "eagle", "num_draft_tokens": 3, "acceptance": [1.0, 1.0, 0.0]}
}


def _config(concurrency: int, engine: dict[str, Any]) -> dict[str, Any]:
    # a preset runs with its front end: the emulator waits it out as the simulator counts it
    return {
        "seed": 3,
        "workload": {
            "num_requests": 40,
            "arrival": {"kind": "closed", "concurrency": concurrency},
            "lengths": {  # varied: clients fall out of lockstep as they would live
                "prompt": {"kind": "uniform", "low": 256, "high": 2048},
                "output": {"kind": "uniform", "low": 16, "high": 128},
            },
            "models": {"llama-3-8b": 1.0},
        },
        "instances": [{"model": "llama-3-8b", "accelerator": "A100-80GB", "engine": engine}],
    }


def _rel(live: float, sim: float) -> float:
    return abs(live - sim) / sim


@pytest.mark.parametrize(
    ("concurrency", "engine"),
    [(2, {"preset": "eager"}), (8, {"preset": "eager"}), (8, {}), (8, SPECULATING)],
    ids=["eager-2", "eager-8", "vllm-v1-8", "speculating-8"],
)  # eager: CPU in series; {}: today's default, vllm-v1: CUDA graphs, CPU overlapped, new
# requests one iteration late and its front end's intake, live as simulated; speculating:
# the same engine objects draft, verify and keep tokens in the emulator as in the simulator
def test_closed_loop_simulated_and_live_agree(concurrency: int, engine: dict[str, Any]) -> None:
    sim = simulate(_config(concurrency, engine))
    lag = LoopLag()
    ids = list(sim.records.instances)
    live = asyncio.run(live_run(sim.config, sim.requests_in, ids, lag, concurrency=concurrency))
    if len(lag.samples) and np.percentile(lag.samples, 99) > DISTURBED_LAG_S:
        pytest.skip("machine too busy for live timing (event-loop lag)")
    if len(lag.samples) and max(lag.samples) > STALL_S:
        pytest.skip(f"the machine stalled the live run for {max(lag.samples):.2f} s")
    assert live.summary["num_completed"] == sim.summary["num_completed"] == 40
    assert live.summary["closed_loop"]["concurrency"] == concurrency
    s, m = sim.summary, live.summary
    assert _rel(m["throughput_rps"], s["throughput_rps"]) < 0.05
    assert _rel(m["tpot_s"]["mean"], s["tpot_s"]["mean"]) < 0.05
    # live TTFT also holds the HTTP hop and the gateway, a few ms the simulator leaves out
    lag_s = max(lag.samples, default=0.0)
    assert _rel(m["ttft_s"]["mean"], s["ttft_s"]["mean"]) < 0.08, f"largest loop lag {lag_s} s"
