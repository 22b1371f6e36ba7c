"""Emulator failure injection and client disconnects: errors, stalls, crashes, aborts."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from sincere.serve.emulator.config import EmulatorConfig
from sincere.serve.emulator.server import EmulatorServer

FAST = {"kind": "inferno", "params": {"alpha_ms": 2, "beta_ms": 0, "gamma_ms": 3, "delta_ms": 0}}
BODY = {"model": "llama-3-8b", "prompt": "hello", "max_tokens": 3}

Check = Callable[[EmulatorServer, aiohttp.ClientSession], Awaitable[None]]


def _run(check: Check, **kw: Any) -> None:
    config = EmulatorConfig.model_validate(
        {"step_model": FAST, "engine": {"num_kv_blocks": 4096}, **kw}
    )

    async def main() -> None:
        timeout = aiohttp.ClientTimeout(total=10)
        async with EmulatorServer(config) as server, aiohttp.ClientSession(timeout=timeout) as s:
            await asyncio.wait_for(check(server, s), 20)

    asyncio.run(main())


async def _load(server: EmulatorServer, session: aiohttp.ClientSession) -> dict[str, Any]:
    async with session.get(server.url + "/sincere/load") as resp:
        data: dict[str, Any] = await resp.json()
    return data


async def _until_idle(server: EmulatorServer, session: aiohttp.ClientSession) -> dict[str, Any]:
    """Poll the load (at most 2 s) until nothing runs, waits or holds a slot."""
    load: dict[str, Any] = {}
    for _ in range(200):
        load = await _load(server, session)
        if load["num_running"] == 0 and load["num_waiting"] == 0 and load["num_in_flight"] == 0:
            break
        await asyncio.sleep(0.01)
    return load


def test_error_rate_one_fails_every_request_with_500() -> None:
    """error_rate 1 answers every request 500 with an OpenAI server_error body."""

    async def check(server: EmulatorServer, session: aiohttp.ClientSession) -> None:
        for _ in range(3):
            async with session.post(server.url + "/v1/completions", json=BODY) as resp:
                assert resp.status == 500
                err = (await resp.json())["error"]
                assert (err["type"], err["code"]) == ("InternalServerError", 500)
                assert "injected" in err["message"]
        assert server.metrics.injected_errors._value.get() == 3

    _run(check, failures={"error_rate": 1.0})


def test_error_rate_is_seeded_and_partial() -> None:
    """error_rate 0.5 fails some but not all of 30 requests, the same ones for a seed."""

    def statuses() -> list[int]:
        out: list[int] = []

        async def check(server: EmulatorServer, session: aiohttp.ClientSession) -> None:
            for _ in range(30):
                async with session.post(server.url + "/v1/completions", json=BODY) as resp:
                    out.append(resp.status)

        _run(check, failures={"error_rate": 0.5}, seed=7)
        return out

    first = statuses()
    second = statuses()
    assert first == second
    assert 0 < first.count(500) < 30
    assert set(first) == {200, 500}


def test_stalls_pause_the_engine() -> None:
    """With stall_probability 1, every gap between tokens is at least stall_s."""

    async def check(server: EmulatorServer, session: aiohttp.ClientSession) -> None:
        body = {**BODY, "max_tokens": 5, "stream": True}
        stamps: list[float] = []
        async with session.post(server.url + "/v1/completions", json=body) as resp:
            async for line in resp.content:
                if line.startswith(b"data: {"):
                    stamps.append(time.perf_counter())
        gaps = [b - a for a, b in itertools.pairwise(stamps[:5])]
        assert min(gaps) >= 0.04, gaps

    _run(check, failures={"stall_probability": 1.0, "stall_s": 0.05})


def test_crash_after_closes_the_server() -> None:
    """After crash_after requests the next one is cut off and the port stops answering."""

    async def check(server: EmulatorServer, session: aiohttp.ClientSession) -> None:
        url = server.url + "/v1/completions"
        for _ in range(2):
            async with session.post(url, json=BODY) as resp:
                assert resp.status == 200
        with pytest.raises(aiohttp.ClientError):
            async with session.post(url, json=BODY) as resp:
                await resp.read()
        assert server.crashed
        await asyncio.sleep(0.05)
        with pytest.raises(aiohttp.ClientError):
            async with session.post(url, json=BODY) as resp:
                await resp.read()

    _run(check, failures={"crash_after": 2})


def test_stream_disconnect_aborts_and_frees_the_engine() -> None:
    """A client leaving a stream aborts its request: running returns to 0, KV to empty."""

    async def check(server: EmulatorServer, session: aiohttp.ClientSession) -> None:
        body = {**BODY, "max_tokens": 2000, "stream": True}
        resp = await session.post(server.url + "/v1/completions", json=body)
        seen = 0
        async for line in resp.content:
            seen += line.startswith(b"data: {")
            if seen == 3:
                break
        assert (await _load(server, session))["num_running"] == 1
        resp.close()
        load = await _until_idle(server, session)
        assert (load["num_running"], load["num_in_flight"], load["kv_usage"]) == (0, 0, 0.0)
        assert server.metrics.aborted._value.get() == 1

    _run(check)


def test_non_streamed_disconnect_aborts() -> None:
    """A client timing out on a plain request aborts it in the engine."""

    async def check(server: EmulatorServer, session: aiohttp.ClientSession) -> None:
        body = {**BODY, "max_tokens": 2000}
        with pytest.raises(asyncio.TimeoutError):
            timeout = aiohttp.ClientTimeout(total=0.1)
            async with session.post(server.url + "/v1/completions", json=body, timeout=timeout):
                pass
        load = await _until_idle(server, session)
        assert (load["num_running"], load["num_in_flight"]) == (0, 0)
        assert server.metrics.aborted._value.get() == 1

    _run(check)


def test_capacity_full_is_503() -> None:
    """With every slot in flight, a further request gets 503 and a retry hint."""

    async def check(server: EmulatorServer, session: aiohttp.ClientSession) -> None:
        body = {**BODY, "max_tokens": 500, "stream": True}
        first = await session.post(server.url + "/v1/completions", json=body)
        async with session.post(server.url + "/v1/completions", json=BODY) as resp:
            assert resp.status == 503
            assert "capacity" in (await resp.json())["error"]["message"]
        first.close()

    _run(check, max_num_requests=1)
