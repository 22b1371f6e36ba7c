"""The live pool: the simulator's pool controller over emulated engines behind the gateway,
putting one model to sleep and waking another through the engines' sleep routes.

Scenario, by hand (one slot, A serving at 0, B asleep in its host RAM; readings every
0.5 s, no cool-down, idle after 0.3 s): a request for B at about 0.05 s finds no slot
serving B and none spare (A finished nothing yet, so it is not idle, and it wanted its
slot at the last reading): it is held. The reading at 0.5 finds A idle: A stops and is
put to sleep (its offload keeps the slot busy 0.1 s); B, wanted for its held request,
takes the empty slot: it wakes from 0.6 (sleep: 0.3 s, ready at 0.9) or loads from
storage from 0.5 (swap: no offload, 0.6 s, ready at 1.1).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from sincere.catalog import default_catalog
from sincere.core.errors import ConfigError
from sincere.perf.base import Deployment
from sincere.serve.app import CONTROLLER, POOL, compose
from sincere.serve.control.sim_scaling import live_actuation, live_pool_plan
from sincere.serve.gateway.config import GatewayConfig, parse_config
from sincere.serve.gateway.instances import INSTANCE_HEADER
from sincere.serve.protocol import count_prompt_tokens

A, B = "llama-3-8b", "mistral-7b"
STEP = {"kind": "inferno", "params": {"alpha_ms": 10, "beta_ms": 0, "gamma_ms": 1, "delta_ms": 0}}
EMULATOR = {"step_model": STEP, "engine": {"num_kv_blocks": 4096}}
TIMES = {
    A: {"load_s": 0.5, "wake_s": 0.2, "sleep_s": 0.1},
    B: {"load_s": 0.6, "wake_s": 0.3, "sleep_s": 0.1},
}
SCALING = {
    "interval_s": 0.5, "max_instances": 1, "scale_up_threshold": 1.5,
    "scale_down_threshold": 0.5, "cooldown_s": 0.0, "provisioning_s": 0.4,
}  # fmt: skip
PREDICTIVE = {**SCALING, "policy": "predictive", "rate_per_instance": 1.0}


def run(factory: Callable[[], Awaitable[None]]) -> None:
    """Run one async test body with a hard time bound."""
    asyncio.run(asyncio.wait_for(factory(), 30.0))


def _pool(policy: str, **extra: Any) -> dict[str, Any]:
    return {
        "policy": policy, "groups": [A, B], "max_slots": 1, "scaling": SCALING,
        "times": TIMES, "idle_s": 0.3, "release_after_s": 100.0, "initial": {B: 0}, **extra,
    }  # fmt: skip


def _config(pool: dict[str, Any], **controller: Any) -> GatewayConfig:
    return parse_config(
        {
            "port": 0,
            "scrape": {"enabled": False},
            "planning": {"emulator": EMULATOR},
            "controller": {"max_instances": 4, "actuation": pool, **controller},
        }
    )


async def _complete(s: aiohttp.ClientSession, url: str, model: str) -> str:
    """One completion of ``model``; the instance that served it."""
    body = {"model": model, "prompt": "hello", "max_tokens": 2}
    async with s.post(url + "/v1/completions", json=body) as r:
        assert r.status == 200, await r.text()
        await r.read()
        return r.headers[INSTANCE_HEADER]


def _events(state: dict[str, Any]) -> list[tuple[float, str, str | None]]:
    return [(round(e["at_s"], 1), e["kind"], e["model"]) for e in state["events"]]


@pytest.mark.parametrize(
    ("policy", "ready_at", "kind", "a_level"), [("sleep", 0.9, "wake", 1), ("swap", 1.1, "load", 2)]
)
def test_a_held_request_wakes_its_model_on_the_slot(
    policy: str, ready_at: float, kind: str, a_level: int
) -> None:
    """B's request waits in the gateway until the reading at 0.5 frees A's slot; A sleeps
    (level 1 under sleep, its weights dropped -- level 2 -- under swap) and B is ready at
    ``ready_at``, through the engines' own sleep and wake routes."""

    for model in (A, B):  # the tokenizer's first load would hold the loop
        count_prompt_tokens("warm up", model)

    async def body() -> None:
        async with compose(_config(_pool(policy))) as gw, aiohttp.ClientSession() as s:
            pool, controller = gw.app[POOL], gw.app[CONTROLLER]
            assert controller.emulators[f"{B}-slot-0"].sleep.level == a_level  # warm set or none
            await asyncio.sleep(max(0.0, 0.05 - pool.now()))
            sent_at = pool.now()
            served_by = await _complete(s, gw.url, B)
            done_at = pool.now()
            assert served_by == f"{B}-slot-0"
            timing = (sent_at, done_at, pool.to_json()["events"])
            assert ready_at - 0.02 <= done_at <= ready_at + 0.3, timing
            async with s.get(gw.url + "/admin/actuation") as r:
                state = await r.json()
            expected = [(0.5, "stop", A), (0.5, "sleep" if policy == "sleep" else "discard", A),
                        (0.5, kind, B), (ready_at, "ready", B)]  # fmt: skip
            assert _events(state) == expected, state["events"]
            assert state["slots"][0]["model"] == B and state["slots"][0]["state"] == "up"
            assert controller.emulators[f"{A}-slot-0"].sleep.level == a_level
            assert controller.emulators[f"{B}-slot-0"].sleep.level is None
            async with s.get(gw.url + "/metrics") as r:
                page = await r.text()
            assert f'sincere_pool_serving{{model="{B}"}} 1\n' in page
            assert f'sincere_pool_actuations_total{{kind="{kind}s"}} 1\n' in page

    run(body)


def test_a_headroom_slot_loads_the_held_model_at_once() -> None:
    """Two slots, one kept empty: B's request at about 0.05 s loads B on the empty slot 1
    at once (its engine asleep at level 2: the load, 0.6 s), not at the reading at 0.5
    (where idle A goes to sleep on slot 0)."""
    for model in (A, B):
        count_prompt_tokens("warm up", model)

    async def body() -> None:
        pool_cfg = _pool("sleep", max_slots=2, headroom_slots=1)
        async with compose(_config(pool_cfg)) as gw, aiohttp.ClientSession() as s:
            pool, controller = gw.app[POOL], gw.app[CONTROLLER]
            assert controller.emulators[f"{B}-slot-1"].sleep.level == 2
            await asyncio.sleep(max(0.0, 0.05 - pool.now()))
            sent_at = pool.now()
            assert await _complete(s, gw.url, B) == f"{B}-slot-1"
            state = pool.to_json()
            events = [e for e in state["events"] if e["model"] == B]
            held, ready = events[0], events[1]
            assert (held["kind"], held["slot"], ready["kind"]) == ("load", 1, "ready"), events
            assert abs(ready["at_s"] - held["at_s"] - 0.6) <= 0.15
            assert held["at_s"] - sent_at <= 0.2  # at once, not at the reading at 0.5
            assert state["slots"][1]["model"] == B

    run(body)


def test_an_asleep_instance_keeps_its_model_served_and_holds_requests() -> None:
    """Out of routing, an instance's model is still served: a request waits (the gateway
    tells its listeners) and is answered once the instance is back in routing."""

    async def body() -> None:
        config = parse_config({"port": 0, "scrape": {"enabled": False},
                               "planning": {"emulator": EMULATOR}})  # fmt: skip
        async with compose(config) as gw, aiohttp.ClientSession() as s:
            controller = gw.app[CONTROLLER]
            await controller.deploy(A, None, name="a-0")
            held: list[str] = []
            gw.on_held(held.append)
            gw.set_routable("a-0", False)
            request = asyncio.ensure_future(_complete(s, gw.url, A))
            await asyncio.sleep(0.3)
            assert not request.done() and held == [A] and gw.num_queued(A) == 1
            gw.set_routable("a-0", True)
            assert await request == "a-0"
            assert gw.num_queued(A) == 0

    run(body)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"groups": None}, "groups lists the pool's models"),
        ({"groups": [A, A]}, "groups lists the pool's models"),
        ({"max_slots": 3}, "one emulated engine per model and slot"),
        ({"scaling": {**SCALING, "policy": "predictive"}}, "predictive"),
        (
            {"policy": "dedicated", "initial": {B: 1}, "max_slots": 2, "scaling": PREDICTIVE},
            "simulator only",
        ),
        ({"times": {"qwen2.5-7b": {"load_s": 1.0}}}, "times given for a model"),
        ({"initial": {}}, "must fit in max_slots"),
        ({"release_after_s": 1e9}, "too long a duration"),
        ({"scaling": {**SCALING, "cooldown_s": 1e9}}, "too long a duration"),
    ],
)
def test_pools_that_cannot_run_live_are_refused(change: dict[str, Any], match: str) -> None:
    """Live, groups names the models; the engines must fit max_instances; the simulator's
    own checks (predictive, times of a stranger, initial counts) hold."""
    with pytest.raises(ConfigError, match=match):
        _config({**_pool("sleep"), **change})


def test_a_pool_beside_an_autoscaler_or_without_admin_is_refused() -> None:
    """One section scales instances; the pool runs in the control plane."""
    scaler = {**SCALING, "group": A}
    with pytest.raises(ConfigError, match="both scale instances"):
        _config(_pool("sleep"), autoscaling=scaler)
    with pytest.raises(ConfigError, match="admin: false"):
        compose(parse_config({"port": 0, "admin": False,
                              "controller": {"actuation": _pool("sleep")}}))  # fmt: skip


def test_models_on_different_slot_kinds_are_refused_when_the_pool_is_planned() -> None:
    """The pool's models must share accelerator, TP and PP: one kind of slot."""
    catalog = default_catalog()
    config = live_actuation(_pool("sleep"), 4)
    a100, h100 = catalog.accelerator("A100-80GB"), catalog.accelerator("H100-80GB")
    deployments = [Deployment(catalog.model(A), a100), Deployment(catalog.model(B), h100)]
    with pytest.raises(ConfigError, match="one slot kind"):
        live_pool_plan(config, deployments)
    plan = live_pool_plan(config, [Deployment(catalog.model(m), a100) for m in (A, B)])
    assert plan.models == (A, B) and plan.initial == (1, 0)
    assert plan.times[1].load_s == TIMES[B]["load_s"]
