"""The live autoscaler: the simulator's rule over emulated instances behind the gateway."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from sincere.core.errors import ConfigError
from sincere.serve.app import AUTOSCALER, compose, serve_gateway
from sincere.serve.backends.fake_upstream import FakeUpstream
from sincere.serve.control.autoscaler import LiveAutoscaler
from sincere.serve.gateway.config import GatewayConfig, parse_config
from sincere.serve.gateway.instances import INSTANCE_HEADER

STEP = {"kind": "inferno", "params": {"alpha_ms": 10, "beta_ms": 0, "gamma_ms": 1, "delta_ms": 0}}
EMULATOR = {"step_model": STEP, "engine": {"num_kv_blocks": 4096}}
SCALING = {
    "group": "m",
    "policy": "threshold",
    "signal": "in_flight",
    "interval_s": 0.25,
    "min_instances": 1,
    "max_instances": 3,
    "scale_up_threshold": 2,
    "scale_down_threshold": 1,
    "cooldown_s": 0.5,
    "provisioning_s": 0.3,
    "load_s": 0.2,
}


def run(factory: Callable[[], Awaitable[None]]) -> None:
    """Run one async test body with a hard time bound."""
    asyncio.run(asyncio.wait_for(factory(), 40.0))


def _config(**scaling: Any) -> GatewayConfig:
    return parse_config(
        {
            "port": 0,
            "scrape": {"enabled": False},
            "planning": {"emulator": EMULATOR},
            "controller": {"max_instances": 4, "autoscaling": {**SCALING, **scaling}},
        }
    )


async def _state(s: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with s.get(url + "/admin/autoscaling") as r:
        assert r.status == 200
        data: dict[str, Any] = await r.json()
        return data


async def _complete(s: aiohttp.ClientSession, url: str, max_tokens: int) -> str:
    """One completion; the instance that served it."""
    body = {"model": "m", "prompt": "hello", "max_tokens": max_tokens}
    async with s.post(url + "/v1/completions", json=body) as r:
        assert r.status == 200, await r.text()
        await r.read()
        return r.headers[INSTANCE_HEADER]


async def _until(s: aiohttp.ClientSession, url: str, ok: Callable[[dict[str, Any]], bool]) -> Any:
    """Poll ``/admin/autoscaling`` (at most 15 s) until ``ok`` holds of it."""
    for _ in range(1500):
        state = await _state(s, url)
        if ok(state):
            return state
        await asyncio.sleep(0.01)
    raise AssertionError(f"never reached: {state}")


def _events(state: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e for e in state["events"] if e["kind"] == kind]


@pytest.mark.timing
def test_burst_starts_an_instance_that_serves_only_once_ready_then_scales_back() -> None:
    """Six long requests on one instance: the next reading starts one more, listed as
    starting and given no request until provisioning + load have passed; once idle past
    the cool-down the newest instances are stopped first and every request succeeded."""

    async def body() -> None:
        async with compose(_config()) as gw, aiohttp.ClientSession() as s:
            state = await _state(s, gw.url)
            first = state["instances"][0]["name"]
            assert abs(state["started_at_unix"] + state["now_s"] - time.time()) < 1.0
            assert state["counts"]["up"] == 1 and _events(state, "initial")
            burst = [asyncio.ensure_future(_complete(s, gw.url, 150)) for _ in range(6)]
            state = await _until(s, gw.url, lambda st: st["counts"]["starting"] >= 1)
            starting = {i["name"] for i in state["instances"] if i["state"] == "starting"}
            async with s.get(gw.url + "/admin/instances") as r:
                listed = {i["name"] for i in (await r.json())["instances"]}
            assert listed == {first} and not starting & listed
            assert await _complete(s, gw.url, 2) == first  # nothing routed to a starting one
            state = await _until(s, gw.url, lambda st: _events(st, "ready"))
            up, ready = _events(state, "scale_up")[0], _events(state, "ready")[0]
            assert 0.5 <= ready["at_s"] - up["at_s"] < 0.5 + 0.3
            served = await asyncio.gather(*burst)
            assert set(served) == {first}  # the burst was routed before the start
            state = await _until(s, gw.url, lambda st: st["counts"]["up"] == 1 and
                                 st["counts"]["draining"] == 0)  # fmt: skip
            stopped = [n for e in _events(state, "scale_down") for n in e["instances"]]
            started = [n for e in _events(state, "scale_up") for n in e["instances"]]
            assert stopped == started[::-1]  # newest first
            assert [i["name"] for i in state["instances"]] == [first]
            assert state["instance_seconds"] > state["now_s"]  # more than one was paid
            async with s.get(gw.url + "/metrics") as r:
                page = await r.text()
            assert 'sincere_autoscaler_instances{model="m",state="up"} 1\n' in page
            num_downs = len(_events(state, "scale_down"))
            assert (
                f'sincere_autoscaler_decisions_total{{model="m",direction="down"}} {num_downs}\n'
                in page
            )

    run(body)


def test_a_warm_instance_serves_after_the_load_time_and_the_pool_is_refilled() -> None:
    """With a warm pool the scale-up takes the warm instance (ready after load_s, not
    provisioning_s + load_s) and provisions a replacement (warming, then warm)."""

    async def body() -> None:
        cfg = _config(warm_pool=1, provisioning_s=1.0, load_s=0.1, interval_s=1000.0)
        async with compose(cfg) as gw, aiohttp.ClientSession() as s:
            scaler = gw.app[AUTOSCALER]
            assert (await _state(s, gw.url))["counts"]["warm"] == 1
            burst = [asyncio.ensure_future(_complete(s, gw.url, 60)) for _ in range(4)]
            await _until_in_flight(gw, 4)
            scaler.tick(scaler.now())
            state = await _state(s, gw.url)
            assert state["counts"] == {"starting": 1, "up": 1, "draining": 0, "warming": 1,
                                       "warm": 0}  # fmt: skip
            state = await _until(s, gw.url, lambda st: _events(st, "ready"))
            up, ready = _events(state, "scale_up")[0], _events(state, "ready")[0]
            assert 0.1 <= ready["at_s"] - up["at_s"] < 0.4
            state = await _until(s, gw.url, lambda st: st["counts"]["warm"] == 1)
            assert _events(state, "warm")[0]["at_s"] - up["at_s"] >= 1.0
            await asyncio.gather(*burst)

    run(body)


async def _until_in_flight(gw: Any, num: int) -> None:
    for _ in range(500):
        if sum(i.num_in_flight for i in gw.instances_of("m")) >= num:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the requests never reached the instance")


def test_scale_down_waits_for_the_cooldown_and_keeps_the_largest_count_wanted() -> None:
    """Readings below the count serving stop nothing until cooldown_s has passed since the
    first of them; then the count is the largest wanted in that window."""

    async def body() -> None:
        cfg = _config(min_instances=3, max_instances=3, interval_s=1000.0, cooldown_s=10.0)
        async with compose(cfg) as gw:
            scaler: LiveAutoscaler = gw.app[AUTOSCALER]
            scaler.cfg = scaler.cfg.model_copy(update={"min_instances": 1})
            assert scaler.book.count("up") == 3
            scaler.tick(0.0)  # idle: 2 wanted
            scaler.tick(9.0)
            assert scaler.book.count("up") == 3 and scaler.book.num_scale_downs == 0
            scaler.tick(10.0)  # the window lasted 10 s: down to 2 (the largest wanted)
            assert scaler.book.num_scale_downs == 1
            assert scaler.book.count("draining") + scaler.book.count("up") == 3
            await asyncio.sleep(0.3)
            assert scaler.book.count("up") == 2 and len(gw.instances_of("m")) == 2

    run(body)


def test_waiting_signal_reads_the_engines_and_an_unreadable_instance_decides_nothing() -> None:
    """signal: waiting sums the emulated engines' queues (one sequence at a time: three
    requests leave two waiting, over the threshold of 1); an instance given by URL, whose
    engine cannot be read, makes the reading unknown (no_reading, nothing started)."""

    async def body() -> None:
        cfg = parse_config(
            {
                "port": 0,
                "scrape": {"enabled": False},
                "planning": {"emulator": {**EMULATOR, "engine": {"max_num_seqs": 1}}},
                "controller": {
                    "max_instances": 4,
                    "allowed_upstreams": ["127.0.0.1:*"],
                    "autoscaling": {**SCALING, "signal": "waiting", "interval_s": 1000.0,
                                    "scale_up_threshold": 1, "scale_down_threshold": 0},
                },
            }
        )  # fmt: skip
        async with (
            compose(cfg) as gw,
            aiohttp.ClientSession() as s,
            FakeUpstream(models=("m",)) as up,
        ):
            scaler: LiveAutoscaler = gw.app[AUTOSCALER]
            burst = [asyncio.ensure_future(_complete(s, gw.url, 60)) for _ in range(3)]
            await _until_in_flight(gw, 3)
            await asyncio.sleep(0.05)  # the engine has taken one, queued two
            scaler.tick(1.0)
            assert scaler.book.count("starting") == 1 and scaler.book.desired == 2
            await asyncio.gather(*burst)
            deploy = {"model": "m", "url": up.url, "name": "u1", "join": True,
                      "metrics_path": None}  # fmt: skip
            async with s.post(gw.url + "/admin/instances", json=deploy) as r:
                assert r.status == 200, await r.text()
            scaler.tick(2.0)
            last = scaler.book.events[-1]
            assert last.kind == "no_reading" and scaler.book.num_scale_ups == 1

    run(body)


def test_a_stopped_instance_leaves_routing_at_once_and_finishes_its_requests() -> None:
    """Two instances each hold one long request; a reading wanting one stops the newest:
    it is out of routing at once (a new request goes to the other), its request finishes
    (200), and only then is it stopped."""

    async def body() -> None:
        cfg = _config(min_instances=2, interval_s=1000.0, cooldown_s=0.0,
                      scale_up_threshold=3, scale_down_threshold=1.5)  # fmt: skip
        cfg = cfg.model_copy(update={"router": cfg.router.model_copy(
            update={"name": "least-outstanding"})})  # fmt: skip
        async with compose(cfg) as gw, aiohttp.ClientSession() as s:
            scaler: LiveAutoscaler = gw.app[AUTOSCALER]
            scaler.cfg = scaler.cfg.model_copy(update={"min_instances": 1})  # two at time 0
            older, newest = (slot.name for slot in scaler.book.of("up"))
            long = [asyncio.ensure_future(_complete(s, gw.url, 100)) for _ in range(2)]
            await _until_in_flight(gw, 2)
            scaler.tick(1.0)  # 1 in flight per instance, below 1.5: one wanted
            assert scaler.book.slots[newest].state == "draining"
            await asyncio.sleep(0)  # the stop's task takes it out of routing on its first turn
            assert [i.name for i in gw.instances_of("m")] == [older]
            assert await _complete(s, gw.url, 2) == older
            assert sorted(await asyncio.gather(*long)) == sorted([older, newest])
            for _ in range(200):
                if newest not in scaler.book.slots:
                    break
                await asyncio.sleep(0.01)
            stopped = scaler.book.events[-1]
            assert stopped.kind == "stopped" and stopped.instances == (newest,)
            assert stopped.at_s >= 1.0 - 0.05  # after its request of 1 s had finished

    run(body)


def test_unconfigured_autoscaling_is_404() -> None:
    """Without controller.autoscaling, GET /admin/autoscaling says how to configure it."""

    async def body() -> None:
        cfg = parse_config({"port": 0, "scrape": {"enabled": False}})
        async with (
            compose(cfg) as gw,
            aiohttp.ClientSession() as s,
            s.get(gw.url + "/admin/autoscaling") as r,
        ):
            assert r.status == 404
            assert "controller.autoscaling" in (await r.json())["error"]["message"]

    run(body)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"group": None}, "live autoscaling needs group"),
        ({"max_instances": 5}, r"more instances than controller.max_instances \(4\)"),
        ({"warm_pool": 3}, r"min_instances \(1\) \+ warm_pool must fit"),
        ({"scale_down_threshold": 3}, "scale_down_threshold must be below"),
        ({"interval_s": 1e9}, "too long a duration"),
        ({"policy": "target-utilisation"}, "needs target_per_instance"),
    ],
)
def test_bad_autoscaling_settings_are_config_errors(change: dict[str, Any], match: str) -> None:
    """Each contradiction or bound is refused when the gateway's config is read."""
    with pytest.raises(ConfigError, match=match):
        _config(**change)


def test_autoscaling_without_the_control_plane_or_in_several_workers_is_refused() -> None:
    """admin: false would leave the autoscaler out silently, several workers would each
    scale on their share of the load: both are refused before anything serves."""
    with pytest.raises(ConfigError, match="admin: false leaves out"):
        compose(_config().model_copy(update={"admin": False}))
    with pytest.raises(ConfigError, match="runs in one process"):
        serve_gateway(_config(), workers=2)
