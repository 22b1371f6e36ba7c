"""Limits and budgets shared through a real Redis: two gateways, one budget, one window.

Each test starts its own redis-server (the ``redis_url`` fixture) and two gateways in
this process on the same key store and Redis; requests race over both.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tests.serve.conftest import RedisServer
from tests.serve.security.test_gateway import bearer, gateway_config, make_keys

from sincere.core.errors import ConfigError
from sincere.serve.backends.fake_upstream import FakeUpstream
from sincere.serve.gateway.server import Gateway
from sincere.serve.security.keys import KeySpec
from sincere.serve.security.keystore import KeyStore
from sincere.serve.security.shared import RedisState

BODY = {"model": "m", "prompt": "hello there", "max_tokens": 4}  # 4 USD at 1 USD a token
RACE_TIMEOUT_S = 5.0
"""Redis calls of the racing gateways (``state.timeout_s``): 40 requests at once on a busy
2-core machine may keep one waiting over the default 1 s, which the books rightly refuse
(503); these tests are about the budget and the windows, not that timeout."""


def run(factory: Callable[[], Awaitable[None]]) -> None:
    """One async test body with a hard time bound."""
    asyncio.run(asyncio.wait_for(factory(), 40))


@contextlib.asynccontextmanager
async def two_gateways(
    keys: Path, redis: str, **extra: Any
) -> AsyncIterator[tuple[list[Gateway], aiohttp.ClientSession]]:
    """A fake upstream and two gateways over it sharing ``keys`` and ``redis``."""
    async with FakeUpstream(num_tokens=4) as up:
        state = {"redis": redis, "timeout_s": RACE_TIMEOUT_S}
        cfg = gateway_config(up.url, keys, state=state, **extra)
        async with Gateway(cfg) as a, Gateway(cfg) as b, aiohttp.ClientSession() as s:
            yield [a, b], s


async def race(gws: list[Gateway], s: aiohttp.ClientSession, token: str, n: int) -> list[int]:
    """``n`` requests at once, alternating between the gateways: their statuses."""

    async def one(k: int) -> int:
        url = gws[k % len(gws)].url + "/v1/completions"
        async with s.post(url, json=BODY, headers=bearer(token)) as r:
            await r.read()
            return r.status

    return list(await asyncio.gather(*(one(k) for k in range(n))))


def test_a_budget_for_five_serves_exactly_five_across_two_gateways(
    tmp_path: Path, redis_url: str
) -> None:
    """40 racing requests on two gateways, a budget for 5 answers: exactly 5 served."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(keys, acme=KeySpec(name="acme", budget_usd=5 * 4.0))

    async def main() -> None:
        async with two_gateways(keys, redis_url) as (gws, s):
            statuses = await race(gws, s, tokens["acme"], 40)
        assert statuses.count(200) == 5 and statuses.count(429) == 35

    run(main)
    store = KeyStore.open(keys)
    try:
        (record,) = store.records()
        assert store.totals(record.key_id).spent_usd == 20.0  # both flushed on close
    finally:
        store.close()


def test_requests_and_tokens_per_minute_hold_across_two_gateways(
    tmp_path: Path, redis_url: str
) -> None:
    """RPM 7 over two gateways: 7 of 20 served; TPM for 3 requests: 3 of 20 served."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(
        keys,
        rpm=KeySpec(name="rpm", max_requests_per_min=7),
        tpm=KeySpec(name="tpm", max_tokens_per_min=3 * (3 + 4)),  # prompt ~3 + max_tokens 4
    )

    async def main() -> None:
        async with two_gateways(keys, redis_url) as (gws, s):
            by_rpm = await race(gws, s, tokens["rpm"], 20)
            by_tpm = await race(gws, s, tokens["tpm"], 20)
        assert by_rpm.count(200) == 7 and by_rpm.count(429) == 13
        assert by_tpm.count(200) == 3 and by_tpm.count(429) == 17

    run(main)


def test_state_timeout_reaches_the_redis_books_and_bad_values_are_refused(
    tmp_path: Path,
) -> None:
    """``state.timeout_s`` is how long the books wait on Redis; 0 or over a minute is refused
    with the field named."""
    keys = tmp_path / "keys.db"
    make_keys(keys, acme=KeySpec(name="acme", budget_usd=1.0))
    state = {"redis": "redis://127.0.0.1:1/0", "timeout_s": 2.5}
    gw = Gateway(gateway_config("http://127.0.0.1:1", keys, state=state))
    assert gw.auth.shared is not None and gw.auth.shared.timeout_s == 2.5
    default = Gateway(gateway_config("http://127.0.0.1:1", keys, state={"redis": state["redis"]}))
    assert default.auth.shared is not None and default.auth.shared.timeout_s == 1.0
    for bad in (0, -1.0, 61.0):
        with pytest.raises(ConfigError, match=r"state\.timeout_s"):
            gateway_config("http://127.0.0.1:1", keys, state={**state, "timeout_s": bad})


def test_redis_unreachable_fails_closed_and_health_says_so(tmp_path: Path) -> None:
    """With Redis down a keyed request is refused 503 with the reason; /health is degraded."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(keys, acme=KeySpec(name="acme", budget_usd=100.0))

    async def main() -> None:
        async with FakeUpstream() as up:
            cfg = gateway_config(up.url, keys, state={"redis": "redis://127.0.0.1:1/0"})
            async with Gateway(cfg) as gw, aiohttp.ClientSession() as s:
                async with s.post(
                    gw.url + "/v1/completions", json=BODY, headers=bearer(tokens["acme"])
                ) as r:
                    status, answer = r.status, await r.json()
                async with s.get(gw.url + "/health") as r:
                    health = await r.json()
            assert up.bodies == []
        assert status == 503 and answer["error"]["code"] == "state_store_unavailable"
        assert "Redis" in answer["error"]["message"]
        assert health["status"] == "degraded" and health["state"]["ok"] is False
        assert "refused (503)" in health["state"]["reason"]
        for said in (json.dumps(answer), json.dumps(health)):  # Redis's address stays private
            assert "127.0.0.1" not in said and "redis://" not in said, said

    run(main)


def test_spend_in_redis_equals_the_durable_record(tmp_path: Path, redis_url: str) -> None:
    """After racing requests and a flush, Redis's spend equals the SQLite record's."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(keys, acme=KeySpec(name="acme", budget_usd=1000.0))

    async def main() -> None:
        async with two_gateways(keys, redis_url) as (gws, s):
            statuses = await race(gws, s, tokens["acme"], 12)
        assert statuses == [200] * 12

    run(main)
    store = KeyStore.open(keys)
    shared = RedisState(redis_url)
    try:
        (record,) = store.records()
        assert store.totals(record.key_id).spent_usd == shared.spent_usd(record.key_id) == 48.0
    finally:
        store.close()
        shared.close()


FAST_STATE = {"renew_s": 0.2, "lease_s": 1.0}  # leases and Redis checks every 0.2 s


async def served_with_retries(
    gws: list[Gateway], s: aiohttp.ClientSession, token: str, n: int
) -> tuple[list[int], list[str]]:
    """``n`` racing requests that retry a 503 after its Retry-After (within 10 s): the
    final statuses, and the 503 messages seen on the way."""
    seen: list[str] = []

    async def one(k: int) -> int:
        url = gws[k % len(gws)].url + "/v1/completions"
        deadline = time.monotonic() + 10
        while True:
            async with s.post(url, json=BODY, headers=bearer(token)) as r:
                answer = await r.json()
                if r.status != 503 or time.monotonic() > deadline:
                    return r.status
                seen.append(answer["error"]["message"])
                await asyncio.sleep(min(float(r.headers["Retry-After"]), 1.0))

    return list(await asyncio.gather(*(one(k) for k in range(n)))), seen


def test_a_redis_that_loses_its_data_serves_no_answer_unpaid(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Two gateways, a budget for 10 answers; 5 served, then Redis flushed (FLUSHALL), 2
    more, then Redis restarted empty: keyed requests get 503 with Retry-After while the
    books are rebuilt (never 'Connection closed'), and exactly 10 answers are served."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(keys, acme=KeySpec(name="acme", budget_usd=10 * 4.0))

    async def main() -> None:
        state = {"redis": redis_server.url, **FAST_STATE}
        async with FakeUpstream(num_tokens=4) as up:
            cfg = gateway_config(up.url, keys, state=state)
            async with Gateway(cfg) as a, Gateway(cfg) as b, aiohttp.ClientSession() as s:
                first = await race([a, b], s, tokens["acme"], 5)
                await asyncio.sleep(0.2)  # some of it flushed, some not
                redis_server.client().flushall()
                second, seen = await served_with_retries([a, b], s, tokens["acme"], 2)
                redis_server.restart()
                third, seen_too = await served_with_retries([a, b], s, tokens["acme"], 20)
        assert first == [200] * 5 and second == [200] * 2
        assert third.count(200) == 3 and third.count(429) == 17, third
        for message in seen + seen_too:
            assert "rebuilt" in message and "Connection closed" not in message, message

    asyncio.run(asyncio.wait_for(main(), 60))
    store = KeyStore.open(keys)
    try:
        (record,) = store.records()
        assert store.totals(record.key_id).spent_usd == 40.0  # every answer, once
    finally:
        store.close()


def test_models_answer_at_once_while_redis_stalls(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Redis stalled 2 s (SIGSTOP) with keyed requests settling: GET /v1/models keeps
    answering within 0.3 s (nothing waits on Redis on the event loop), keyed requests get
    503, and once Redis resumes they are served again and every answer is charged once."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(keys, acme=KeySpec(name="acme", budget_usd=1000.0))
    headers = bearer(tokens["acme"])

    def poll(url: str, until: float) -> float:
        """GET /v1/models from another thread (a client the gateway's loop cannot pause)."""
        slowest = 0.0
        while time.monotonic() < until:
            began = time.monotonic()
            request = urllib.request.Request(url + "/v1/models", headers=headers)
            with urllib.request.urlopen(request, timeout=10) as r:
                assert r.status == 200
            slowest = max(slowest, time.monotonic() - began)
            time.sleep(0.05)
        return slowest

    async def main() -> None:
        state = {"redis": redis_server.url, **FAST_STATE}
        async with FakeUpstream(num_tokens=4, ttft_s=0.3) as up:
            cfg = gateway_config(up.url, keys, state=state)
            async with Gateway(cfg) as a, Gateway(cfg) as b, aiohttp.ClientSession() as s:
                assert await race([a, b], s, tokens["acme"], 4) == [200] * 4
                streams = asyncio.ensure_future(race([a, b], s, tokens["acme"], 6))
                await asyncio.sleep(0.1)  # admitted; they settle during the stall
                redis_server.pause()
                try:
                    polling = asyncio.to_thread(poll, a.url, time.monotonic() + 2.0)
                    slowest = await polling
                    during = await race([a, b], s, tokens["acme"], 2)
                finally:
                    redis_server.resume()
                in_flight = await streams
                await asyncio.sleep(0.5)  # missed settlements retried
                after, _ = await served_with_retries([a, b], s, tokens["acme"], 2)
        assert slowest < 0.3, f"GET /v1/models took {slowest:.2f} s during the stall"
        assert in_flight == [200] * 6 and during == [503] * 2 and after == [200] * 2
        return None

    asyncio.run(asyncio.wait_for(main(), 60))
    store, shared = KeyStore.open(keys), RedisState(redis_server.url)
    try:
        (record,) = store.records()
        assert store.totals(record.key_id).spent_usd == shared.spent_usd(record.key_id) == 48.0
    finally:
        store.close()
        shared.close()


async def settled(gw: Gateway, spent_usd: float) -> None:
    """Wait (at most 5 s) until Redis holds ``spent_usd`` for the gateway's only key."""
    shared, store = gw.auth.shared, gw.auth.store
    assert shared is not None and store is not None
    (record,) = store.records()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if await asyncio.to_thread(shared.spent_usd, record.key_id) >= spent_usd:
            return
        await asyncio.sleep(0.05)


def test_a_burst_after_a_redis_restart_with_its_data_is_served_in_full(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Redis restarted with its data (a snapshot of now): every pooled connection of both
    gateways is stale, and a burst of 30 keyed requests is served in full -- no 503
    'Connection closed by server', and Redis is not marked down."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(keys, acme=KeySpec(name="acme", budget_usd=1000.0))

    async def main() -> None:
        state = {"redis": redis_server.url, **FAST_STATE}
        async with FakeUpstream(num_tokens=4) as up:
            cfg = gateway_config(up.url, keys, state=state)
            async with Gateway(cfg) as a, Gateway(cfg) as b, aiohttp.ClientSession() as s:
                assert await race([a, b], s, tokens["acme"], 30) == [200] * 30
                await settled(a, 30 * 4.0)  # so that the snapshot is of now
                redis_server.save()
                redis_server.restart(from_snapshot=True)
                burst = await race([a, b], s, tokens["acme"], 30)
        assert burst == [200] * 30, burst

    asyncio.run(asyncio.wait_for(main(), 60))
