"""A time-scaled scaling scenario simulates as the scenario at scale 1, every time scaled."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from sincere.core.errors import ConfigError
from sincere.core.request import RequestArrays, Tier
from sincere.sim import simulate
from sincere.sim.api import SimulationResult
from sincere.sim.autoscale_time import scaled_requests, time_scaled

MODELS = ("llama-3-8b", "mistral-7b", "qwen2.5-7b")
TIER = Tier("default", ttft_s=1.0, tbt_s=0.1)


def _requests(seed: int = 0) -> RequestArrays:
    """Three models over 240 s, the first bursting (4x) from 60 to 90 s."""
    rng = np.random.default_rng(seed)
    at, model = [], []
    for m, rate in enumerate((2.0, 1.0, 0.5)):
        times = np.cumsum(rng.exponential(1.0 / rate, int(rate * 300)))
        times = times[times < 240.0]
        if m == 0:
            times = np.sort(np.concatenate([times, rng.uniform(60.0, 90.0, 450)]))
        at.extend(times)
        model.extend([m] * len(times))
    order = np.argsort(at, kind="stable")
    n = len(at)
    prompts = np.clip(rng.lognormal(np.log(600), 0.8, n), 16, 3072).astype(np.int64)
    outputs = np.clip(rng.lognormal(np.log(150), 0.8, n), 2, 1024).astype(np.int64)
    return RequestArrays.build(
        np.asarray(at)[order], prompts, outputs, models=MODELS,
        model=np.asarray(model)[order].tolist(), tiers=(TIER,),
    )  # fmt: skip


def _config(policy: str, headroom: int = 0) -> dict[str, Any]:
    groups = [
        {
            "name": f"m{k}", "model": model, "accelerator": "A100-80GB", "count": 1,
            "step_model": {"kind": "roofline"},
            "engine": {"kind": "continuous", "scheduler": "sarathi",
                       "scheduler_params": {"chunk_size": 512}, "max_num_seqs": 64,
                       "max_num_batched_tokens": 512},
        }
        for k, model in enumerate(MODELS)
    ]  # fmt: skip
    scaling = {
        "policy": "threshold", "signal": "in_flight", "interval_s": 10.0,
        "min_instances": 1, "max_instances": 4, "scale_up_threshold": 8.0,
        "scale_down_threshold": 2.0, "provisioning_s": 20.0,
    }  # fmt: skip
    # cooldown_s and idle_s left at their defaults (60 s, 10 s): scaled as well
    return {
        "seed": 0,
        "workload": {
            "num_requests": 1, "models": dict.fromkeys(MODELS, 1 / 3),
            "arrival": {"kind": "poisson", "rate": 1.0},
            "lengths": {"prompt": {"kind": "fixed", "tokens": 1},
                        "output": {"kind": "fixed", "tokens": 1}},
        },
        "router": {"name": "least-outstanding"},
        "instances": groups,
        "actuation": {"policy": policy, "max_slots": 8, "scaling": scaling,
                      "release_after_s": 60.0, "headroom_slots": headroom},  # idle_s: 10
    }  # fmt: skip


def _run(policy: str, headroom: int, factor: float) -> SimulationResult:
    cfg, requests = _config(policy, headroom), _requests()
    if factor != 1.0:
        cfg, requests = time_scaled(cfg, factor), scaled_requests(requests, factor)
    return simulate(cfg, requests=requests)


def _events(result: SimulationResult, factor: float) -> list[tuple[float, str, str, int]]:
    """Every actuation, its moment brought back to scale 1."""
    return [
        (e["at_s"] / factor, e["kind"], e["model"], e["slot"])
        for e in result.summary["actuation"]["events"]
    ]


@pytest.mark.parametrize(("policy", "headroom"), [("dedicated", 0), ("sleep", 1)])
def test_a_power_of_two_scale_is_the_same_run_bit_for_bit(policy: str, headroom: int) -> None:
    """At 1/64 every actuation, finish and first token is the run at scale 1's over 64;
    GPU-hours over 64; attainment (targets scaled too) the same."""
    base, fast = _run(policy, headroom, 1.0), _run(policy, headroom, 1 / 64)
    assert len(base.summary["actuation"]["events"]) >= 8  # the scenario scales
    assert _events(fast, 1 / 64) == _events(base, 1.0)
    assert np.array_equal(fast.records.finished_at * 64, base.records.finished_at)
    assert np.array_equal(fast.records.first_token_at * 64, base.records.first_token_at)
    assert fast.summary["actuation"]["gpu_hours"] * 64 == base.summary["actuation"]["gpu_hours"]
    assert fast.summary["slo_attainment"] == base.summary["slo_attainment"]


def test_another_scale_agrees_up_to_rounding() -> None:
    """At 1/200 the same actuations at the same moments (to 1e-9 s at scale 1)."""
    base, fast = _run("sleep", 1, 1.0), _run("sleep", 1, 1 / 200)
    a, b = _events(base, 1.0), _events(fast, 1 / 200)
    assert [e[1:] for e in a] == [e[1:] for e in b]
    assert np.allclose([e[0] for e in a], [e[0] for e in b], rtol=0, atol=1e-9)
    assert fast.summary["slo_attainment"] == base.summary["slo_attainment"]


def test_what_is_not_scaled_is_refused() -> None:
    """A seasonal profile's trace and a factor that is no positive number are refused."""
    cfg = _config("dedicated")
    cfg["actuation"]["scaling"]["forecast_profile"] = "yesterday.csv"
    with pytest.raises(ConfigError, match="seasonal profile"):
        time_scaled(cfg, 0.5)
    with pytest.raises(ConfigError, match="positive finite"):
        time_scaled(_config("sleep"), 0.0)
