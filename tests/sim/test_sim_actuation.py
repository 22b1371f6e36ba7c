"""Model actuation on a shared pool: wake, sleep and swap moments, held requests and paid
GPU time, by hand.

As in the autoscaling tests, every engine runs one sequence at a time and every iteration
takes 1 s, so a request with 4 output tokens has its first token 1 s after it starts and
ends 4 s after it starts. Measured times are given for both models (A: load 8 s, wake 2 s,
sleep 1 s; B: load 6 s, wake 3 s, sleep 1.5 s) so the moments are plain sums.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.sim.test_sim_autoscale import _burst
from tests.sim.test_sim_autoscale import _config as scaled

from sincere.catalog import default_catalog
from sincere.core.errors import ConfigError
from sincere.core.request import RequestArrays
from sincere.perf.base import Deployment
from sincere.sim.actuation_config import ActuationConfig
from sincere.sim.actuation_slots import model_times
from sincere.sim.api import SimulationResult, simulate

A, B = "llama-3-8b", "mistral-7b"
TIMES = {
    A: {"load_s": 8.0, "wake_s": 2.0, "sleep_s": 1.0},
    B: {"load_s": 6.0, "wake_s": 3.0, "sleep_s": 1.5},
}


def _group(name: str, model: str, count: int) -> dict[str, Any]:
    second = {"alpha_ms": 1000.0, "beta_ms": 0.0, "gamma_ms": 1000.0, "delta_ms": 0.0}
    return {
        "name": name, "model": model, "accelerator": "A100-80GB", "count": count,
        "step_model": {"kind": "inferno", "params": second},
        "engine": {"kind": "continuous", "scheduler": "fcfs", "max_num_seqs": 1},
    }  # fmt: skip


def _config(policy: str, b_count: int = 0, **actuation: Any) -> dict[str, Any]:
    """Groups ``a`` (model A, one slot at 0) and ``b`` (model B, ``b_count`` slots at 0)."""
    scaling = {
        "interval_s": 10.0, "max_instances": 2, "scale_up_threshold": 1.5,
        "scale_down_threshold": 0.5, "cooldown_s": 0.0, "provisioning_s": 20.0,
        **actuation.pop("scaling", {}),
    }  # fmt: skip
    section = {
        "policy": policy, "max_slots": 1, "scaling": scaling, "times": TIMES,
        "release_after_s": 1000.0, "initial": {"b": b_count}, **actuation,
    }  # fmt: skip
    return {
        "seed": 0,
        "workload": {
            "num_requests": 1,
            "models": {A: 0.5, B: 0.5},
            "arrival": {"kind": "poisson", "rate": 1.0},
            "lengths": {
                "prompt": {"kind": "fixed", "tokens": 10},
                "output": {"kind": "fixed", "tokens": 4},
            },
        },
        "router": {"name": "least-outstanding"},
        "instances": [_group("a", A, 1), _group("b", B, 1)],
        "actuation": section,
    }


def _requests(arrivals: list[float], models: list[int]) -> RequestArrays:
    n = len(arrivals)
    return RequestArrays.build(arrivals, [10] * n, [4] * n, models=(A, B), model=models)


def _run(config: dict[str, Any], arrivals: list[float], models: list[int]) -> SimulationResult:
    return simulate(config, requests=_requests(arrivals, models))


def _ttft(result: SimulationResult) -> list[float]:
    rec = result.records
    return (rec.first_token_at - result.requests_in.arrival_at).tolist()


def _block(result: SimulationResult) -> dict[str, Any]:
    block: dict[str, Any] = result.summary["actuation"]
    return block


# A at 0.5 ends at 4.5; the reading at 10 finds A idle (cooldown 0): A leaves slot 0 at 10.
# B's burst at 10.5 finds no slot serving B: it is held.


def test_sleep_wakes_b_after_a_offloads_and_serves_the_held_burst() -> None:
    """Sleep: A's offload keeps the GPUs busy to 11, B wakes in 3 s: ready at 14; the two
    held requests start at 14 and 18 (TTFT 4.5 and 8.5)."""
    result = _run(_config("sleep"), [0.5, 10.5, 10.5], [0, 1, 1])
    assert _ttft(result) == [1.0, 4.5, 8.5]
    block = _block(result)
    assert (block["num_sleeps"], block["num_wakes"], block["num_loads"]) == (2, 1, 0)
    assert list(np.asarray(result.records.instance)) == [0, 1, 1]  # a-0, then b-0
    assert result.warnings == []  # B asleep at the end is still served by the pool


def test_sleep_events_list_every_actuation_of_the_slot() -> None:
    """The block's events, by hand: A stops and sleeps at 10, B's wake is decided at 10.5
    and B is ready at 14; the reading at 30 finds B without load: it stops and sleeps."""
    result = _run(_config("sleep"), [0.5, 10.5, 10.5], [0, 1, 1])
    block = _block(result)
    events = [(e["at_s"], e["kind"], e["model"], e["slot"]) for e in block["events"]]
    assert events == [
        (10.0, "stop", A, 0), (10.0, "sleep", A, 0), (10.5, "wake", B, 0),
        (14.0, "ready", B, 0), (30.0, "stop", B, 0), (30.0, "sleep", B, 0),
    ]  # fmt: skip
    assert block["num_events"] == len(events)


def test_swap_discards_a_and_loads_b_from_storage() -> None:
    """Swap: A is discarded at 10 (no offload), B loads in 6 s from 10.5: ready at 16.5;
    TTFT 7 and 11."""
    result = _run(_config("swap"), [0.5, 10.5, 10.5], [0, 1, 1])
    assert _ttft(result) == [1.0, 7.0, 11.0]
    block = _block(result)
    assert (block["num_sleeps"], block["num_wakes"], block["num_loads"]) == (0, 0, 1)


def test_a_serving_slot_is_taken_when_a_wanted_fewer() -> None:
    """With a 30 s cool-down A still holds slot 0 at 10.5, but wanted none at 10: B takes
    it; A offloads 10.5-11.5, B wakes by 14.5 (TTFT 5 and 9)."""
    config = _config("sleep", scaling={"cooldown_s": 30.0})
    result = _run(config, [0.5, 10.5, 10.5], [0, 1, 1])
    assert _ttft(result) == [1.0, 5.0, 9.0]
    assert _block(result)["num_swaps"] == 1


def test_empty_slot_with_a_sleeping_model_is_paid() -> None:
    """The slot is paid from 0 to the last reading (30: B idle, put to sleep) although no
    model is awake 10-14; GPU-hours = 30 s x 1 GPU, billed to A to 10.5, then to B."""
    result = _run(_config("sleep"), [0.5, 10.5, 10.5], [0, 1, 1])
    block = _block(result)
    assert result.log.end_at == 30.0
    assert block["gpu_hours"] == pytest.approx(30.0 / 3600.0)
    assert block["gpu_hours_by_model"][A] == pytest.approx(10.5 / 3600.0)
    assert block["gpu_hours_by_model"][B] == pytest.approx(19.5 / 3600.0)


def test_release_after_empty_time_stops_paying() -> None:
    """An empty slot is released once it has been empty release_after_s (read at 20: empty
    since 10, 10 s): paid 0-20 only, its host RAM emptied, B then provisioned and loaded."""
    result = _run(_config("sleep", release_after_s=10.0), [0.5, 25.0], [0, 1])
    block = _block(result)
    assert block["num_releases"] == 1
    # B at 25: provisioning 20 + load 6 (its sleeping copy went with the release): 51
    assert _ttft(result) == [1.0, 27.0]
    assert block["num_provisions"] == 1


def test_dedicated_keeps_each_model_on_its_slot() -> None:
    """Dedicated, one slot per model: B's request goes to b's slot, never to a's; two
    slots paid from 0 to the last reading."""
    config = _config("dedicated", b_count=1, max_slots=2)
    result = _run(config, [0.5, 0.5], [0, 1])
    assert _ttft(result) == [1.0, 1.0]
    # engines: a-0, a-1 (slots 0, 1), b-0, b-1; a serves on slot 0, b on slot 1
    assert list(np.asarray(result.records.instance)) == [0, 3]
    block = _block(result)
    end = 10.0  # the first reading: nothing left to do
    assert block["gpu_hours"] == pytest.approx(2 * end / 3600.0)


def test_derived_times_follow_weight_bytes_and_links() -> None:
    """Derived times: weights per GPU over load_gbps (load) and over the accelerator's
    PCIe figure x efficiency (wake and sleep)."""
    catalog = default_catalog()
    acc = catalog.accelerator("A100-80GB")
    dep = Deployment(catalog.model(A), acc)
    cfg = ActuationConfig.model_validate(
        {"max_slots": 1, "scaling": {"max_instances": 1, "scale_up_threshold": 2,
                                     "scale_down_threshold": 1, "load_gbps": 4.0}}
    )  # fmt: skip
    times = model_times(cfg, dep, A)
    weights = dep.model.weight_bytes(dep.precision)
    assert times.load_s == pytest.approx(weights / 4e9)
    assert times.wake_s == pytest.approx(weights / (acc.host_link_gbps * 0.8e9))


def test_bad_pools_are_refused() -> None:
    """Two groups of one model, counts over max_slots and times of a stranger are errors."""
    same = _config("sleep")
    same["instances"][1]["model"] = A
    with pytest.raises(ConfigError, match="a different one each"):
        _run(same, [0.5], [0])
    with pytest.raises(ConfigError, match="max_slots"):
        _run(_config("sleep", b_count=1), [0.5], [0])
    stranger = _config("sleep", times={"qwen3-8b": {"load_s": 1.0}})
    with pytest.raises(ConfigError, match="times given"):
        _run(stranger, [0.5], [0])


def test_dedicated_scale_up_provisions_and_gpu_hours_sum_by_slot() -> None:
    """Dedicated, three slots: six A requests at 0 queue on a's slot (TTFT 1, 5, .. 21);
    the reading at 10 sees 4 in flight, provisions slot 2 for A (ready 10 + 20 + 8 = 38);
    at 40 A is idle and slot 2 is released. Paid: 40 + 40 + (40 - 10) slot-seconds."""
    config = _config("dedicated", b_count=1, max_slots=3)
    result = _run(config, [0.0] * 6, [0] * 6)
    assert _ttft(result) == [1.0, 5.0, 9.0, 13.0, 17.0, 21.0]
    block = _block(result)
    assert result.log.end_at == 40.0
    assert block["gpu_hours"] == pytest.approx(110.0 / 3600.0)
    assert block["gpu_hours_by_model"] == pytest.approx({A: 70.0 / 3600.0, B: 40.0 / 3600.0})
    assert (block["num_provisions"], block["num_loads"]) == (1, 1)
    per_hour = default_catalog().accelerator("A100-80GB").price_per_hour_usd
    assert result.summary["cost_usd"] == pytest.approx(110.0 * per_hour / 3600.0)
    assert result.warnings == []


def test_idle_slot_goes_to_sleep_at_a_reading() -> None:
    """Sleep, 30 s cool-down (the window does not stop A): at the reading at 20 A's slot
    has been idle since 4.5 (over idle_s 10) and is put to sleep (offload to 21); B at 25
    wakes into the empty slot by 28 (TTFT 4); the run ends at the reading at 40, B still
    awake (idle only since 32)."""
    config = _config("sleep", scaling={"cooldown_s": 30.0})
    result = _run(config, [0.5, 25.0], [0, 1])
    assert _ttft(result) == [1.0, 4.0]
    block = _block(result)
    assert (block["num_sleeps"], block["num_wakes"], block["num_swaps"]) == (1, 1, 0)
    assert result.log.end_at == 40.0


@pytest.mark.parametrize(
    "rule",
    [{}, {"policy": "predictive", "rate_per_instance": 0.25}],
    ids=["threshold", "predictive"],
)
def test_dedicated_pool_of_one_model_scales_as_the_autoscaler(rule: dict[str, Any]) -> None:
    """One model under dedicated makes the autoscaler's decisions, on its load or on its
    arrival rate's forecast: the same burst gives the same time series, requests'
    instances and first tokens, and GPU-hours."""
    reference = simulate(scaled(**rule), requests=_burst())
    config = scaled(**rule)
    scaling = config.pop("autoscaling")
    config["actuation"] = {"policy": "dedicated", "max_slots": 3, "scaling": scaling}
    pooled = simulate(config, requests=_burst())
    ref, got = reference.summary["autoscaling"], pooled.summary["actuation"]
    assert ref["num_scale_ups"] >= 1 and ref["num_scale_downs"] >= 1  # the burst scales
    assert got["timeline"] == ref["timeline"]
    assert got["gpu_hours"] == ref["gpu_hours"]
    assert pooled.records.instance.tolist() == reference.records.instance.tolist()
    assert pooled.records.first_token_at.tolist() == reference.records.first_token_at.tolist()
    assert pooled.summary["cost_usd"] == pytest.approx(reference.summary["cost_usd"])


def test_sections_and_names_that_do_not_fit_are_refused() -> None:
    """actuation with autoscaling, an unknown group in initial, a dedicated model starting
    with no slot, and a decision that does not read per-model loads are errors naming the
    key."""
    both = _config("sleep")
    both["autoscaling"] = both["actuation"]["scaling"]
    with pytest.raises(ConfigError, match="actuation is not supported together"):
        _run(both, [0.5], [0])
    with pytest.raises(ConfigError, match=r"actuation\.initial"):
        _run(_config("sleep", initial={"zz": 0}), [0.5], [0])
    with pytest.raises(ConfigError, match=r"instances\[1\]\.count"):
        _run(_config("dedicated", max_slots=2), [0.5], [0])
    with pytest.raises(ConfigError, match=r"actuation\.scaling\.warm_pool"):
        _run(_config("sleep", scaling={"warm_pool": 1}), [0.5], [0])
    predictive = {"policy": "predictive", "rate_per_instance": 1.0}
    with pytest.raises(ConfigError, match=r"actuation\.scaling\.policy.*dedicated only"):
        _run(_config("sleep", scaling=predictive), [0.5], [0])


@pytest.mark.parametrize("policy", ["dedicated", "swap", "sleep"])
def test_no_request_is_lost_and_the_pool_stays_in_bounds(policy: str) -> None:
    """Random arrivals of both models on two slots: every request finishes (none held
    forever, none sent to a slot of the other model), and the paid time stays within
    max_slots times the run."""
    rng = np.random.default_rng(7)
    arrivals = np.sort(rng.uniform(0.0, 200.0, 60)).tolist()
    models = rng.integers(0, 2, 60).tolist()
    config = _config(policy, b_count=1, max_slots=2, idle_s=5.0, release_after_s=20.0)
    result = _run(config, arrivals, models)
    rec = result.records
    assert int(result.summary["num_completed"]) == 60
    served_by = np.where(rec.instance >= 2, 1, 0)  # engines 0-1 serve A, 2-3 serve B
    assert served_by.tolist() == models
    block = _block(result)
    assert block["gpu_hours"] <= 2 * result.log.end_at / 3600.0 + 1e-12
    assert max(block["timeline"]["up"]) <= 2


def test_plot_writes_the_pool_figure_beside_the_run_figure(tmp_path: Path) -> None:
    """With a pool, ``plot`` also writes its slots-over-time PNG."""
    result = _run(_config("sleep"), [0.5, 10.5, 10.5], [0, 1, 1])
    result.plot(tmp_path / "simulation.png")
    assert (tmp_path / "simulation_actuation.png").read_bytes()[:4] == b"\x89PNG"


def test_headroom_slot_serves_a_model_without_a_slot_in_its_load_time() -> None:
    """Three slots, one kept empty: B's request at 0.5 loads on the empty slot 1 (ready at
    6.5, TTFT 7) and slot 2 is provisioned empty at once to replace it; without headroom
    B waits for a down slot's provisioning (20 s) and load (TTFT 27)."""
    kept = _run(_config("sleep", max_slots=3, headroom_slots=1), [0.5], [1])
    assert _ttft(kept) == [7.0]
    events = [(e["at_s"], e["kind"], e["model"], e["slot"]) for e in _block(kept)["events"]]
    assert events[:3] == [(0.5, "load", B, 1), (0.5, "provision", None, 2), (6.5, "ready", B, 1)]
    assert _block(kept)["num_provisions"] == 1
    bare = _run(_config("sleep", max_slots=3), [0.5], [1])
    assert _ttft(bare) == [27.0]


def test_empty_slots_are_released_down_to_the_headroom() -> None:
    """Released after 5 s empty: at 10 slot 2 (empty since 0.5) goes, slot 0 (A asleep
    since 10) stays; at 20 slot 0 goes and slot 1 (B asleep since 20) is the headroom."""
    result = _run(_config("sleep", max_slots=3, headroom_slots=1, release_after_s=5.0), [0.5], [1])
    block = _block(result)
    releases = [(e["at_s"], e["slot"]) for e in block["events"] if e["kind"] == "release"]
    assert releases == [(10.0, 2), (20.0, 0)]
    assert block["timeline"]["warm"][-1] == 1


def test_headroom_that_does_not_fit_is_refused() -> None:
    """headroom_slots with the initial slots over max_slots, or under dedicated."""
    with pytest.raises(ConfigError, match="headroom_slots must fit"):
        _run(_config("sleep", headroom_slots=1), [0.5], [0])
    with pytest.raises(ConfigError, match="dedicated takes down slots"):
        _run(_config("dedicated", max_slots=3, headroom_slots=1), [0.5], [0])
