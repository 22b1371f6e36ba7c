"""The emulator's sleep mode over real HTTP: vLLM's /sleep, /wake_up and /is_sleeping."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from sincere.catalog import get_model
from sincere.serve.emulator.config import EmulatorConfig
from sincere.serve.emulator.server import EmulatorServer
from sincere.serve.emulator.sleep import SleepConfig, wake_times

FAST = {"kind": "inferno", "params": {"alpha_ms": 2, "beta_ms": 0, "gamma_ms": 3, "delta_ms": 0}}
BODY = {"model": "llama-3-8b", "prompt": "hello", "max_tokens": 3}
WAKE = {"level1_wake_s": 0.2, "level2_wake_s": 0.4}

Check = Callable[[EmulatorServer, aiohttp.ClientSession], Awaitable[None]]


def _run(check: Check, **kw: Any) -> None:
    config = EmulatorConfig.model_validate(
        {"step_model": FAST, "engine": {"num_kv_blocks": 4096}, "sleep": WAKE, **kw}
    )

    async def main() -> None:
        timeout = aiohttp.ClientTimeout(total=10)
        async with EmulatorServer(config) as server, aiohttp.ClientSession(timeout=timeout) as s:
            await asyncio.wait_for(check(server, s), 20)

    asyncio.run(main())


async def _sleeping(server: EmulatorServer, s: aiohttp.ClientSession) -> bool:
    async with s.get(server.url + "/is_sleeping") as r:
        assert r.status == 200
        flag: bool = (await r.json())["is_sleeping"]
        return flag


async def _post(server: EmulatorServer, s: aiohttp.ClientSession, path: str) -> int:
    async with s.post(server.url + path) as r:
        return r.status


async def _complete(server: EmulatorServer, s: aiohttp.ClientSession) -> tuple[int, Any]:
    async with s.post(server.url + "/v1/completions", json=BODY) as r:
        return r.status, await r.json()


async def _sleep_state(server: EmulatorServer, s: aiohttp.ClientSession) -> str:
    async with s.get(server.url + "/metrics") as r:
        text = await r.text()
    on = [ln for ln in text.splitlines() if ln.startswith("vllm:engine_sleep_state{")]
    return next(ln.split('sleep_state="')[1].split('"')[0] for ln in on if ln.endswith(" 1.0"))


@pytest.mark.parametrize(("level", "wake_s"), [(1, 0.2), (2, 0.4)])
def test_sleep_refuses_generation_and_wake_takes_the_level_s_time(
    level: int, wake_s: float
) -> None:
    """Asleep: 503 for a completion, is_sleeping true, the gauge says the level; a wake
    answers after that level's wake time, and the engine then serves again."""

    async def check(server: EmulatorServer, s: aiohttp.ClientSession) -> None:
        assert not await _sleeping(server, s)
        assert (await _complete(server, s))[0] == 200
        assert await _post(server, s, f"/sleep?level={level}") == 200
        assert await _sleeping(server, s)
        assert await _sleep_state(server, s) == ("weights_offloaded", "discard_all")[level - 1]
        status, body = await _complete(server, s)
        assert status == 503 and "asleep" in body["error"]["message"]
        began = time.perf_counter()
        waking = asyncio.ensure_future(_post(server, s, "/wake_up"))
        await asyncio.sleep(wake_s / 4)
        assert await _sleeping(server, s)  # still waking
        status, body = await _complete(server, s)
        assert status == 503 and "waking up" in body["error"]["message"]
        assert await waking == 200
        assert wake_s <= time.perf_counter() - began < wake_s + 0.3
        assert not await _sleeping(server, s)
        assert await _sleep_state(server, s) == "awake"
        assert (await _complete(server, s))[0] == 200

    _run(check)


def test_bad_level_tags_and_sleep_with_requests_in_flight_are_refused() -> None:
    """level 3 and wake tags are 400; a sleep while a request runs is 409 and changes
    nothing; waking an awake engine is a no-op 200."""

    async def check(server: EmulatorServer, s: aiohttp.ClientSession) -> None:
        async with s.post(server.url + "/sleep?level=3") as r:
            assert r.status == 400
            assert "level must be 1 or 2" in (await r.json())["error"]["message"]
        assert await _post(server, s, "/wake_up?tags=weights") == 400
        assert await _post(server, s, "/wake_up") == 200
        slow = {**BODY, "max_tokens": 400, "stream": False}
        running = asyncio.ensure_future(s.post(server.url + "/v1/completions", json=slow))
        for _ in range(200):  # until the engine holds it
            if server.live is not None and server.live.num_in_flight:
                break
            await asyncio.sleep(0.005)
        async with s.post(server.url + "/sleep") as r:
            assert r.status == 409
            assert "1 request(s) in flight" in (await r.json())["error"]["message"]
        assert not await _sleeping(server, s)
        async with await running as r:
            assert r.status == 200

    _run(check)


def test_default_wake_times_come_from_weight_bytes_over_bandwidth() -> None:
    """Without given times: one GPU's weights over host_gbps (level 1), load_gbps (level 2)."""
    cfg = SleepConfig(host_gbps=10.0, load_gbps=2.0)
    assert wake_times(cfg, 20e9) == {1: 2.0, 2: 10.0}
    server = EmulatorServer(EmulatorConfig.model_validate({"tp": 2, "accelerator": "A100-80GB"}))
    weights = get_model("llama-3-8b").weight_bytes(server.deployment.precision) / 2
    expected = {1: weights / 20e9, 2: weights / 5e9}
    assert server.sleep.wake_s == pytest.approx(expected)
