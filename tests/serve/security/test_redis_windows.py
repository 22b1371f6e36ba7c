"""Requests- and tokens-per-minute windows in Redis decide as the in-process windows do.

A window's hash in Redis keeps a running total of its buckets (fields ``-1`` and ``-2``,
see :mod:`sincere.serve.security.redis_scripts`), so that a check no longer reads every
bucket. These tests drive one key through the same seeded timeline of admissions and
settlements (over several minutes of its ``now``, buckets expiring all along) on a key
store in memory and on one whose books are in a real redis-server: every verdict and
every wait must agree, and the running totals must equal the buckets they sum.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from tests.serve.conftest import RedisServer

from sincere.serve.security.keys import KeyRecord, KeySpec, Prices
from sincere.serve.security.keystore import KeyStore, LimitRefusal, Reservation
from sincere.serve.security.shared import RedisState

PRICES = Prices(1e-6, 2e-6)
SPEC = KeySpec(name="w", max_requests_per_min=12, max_tokens_per_min=900, budget_usd=1e6)
T = TypeVar("T")
Outcome = tuple[str, float | None]  # "ok", or the refusal's code; its wait (rounded)


def _outcome(got: Reservation | LimitRefusal) -> Outcome:
    if isinstance(got, Reservation):
        return ("ok", None)
    wait = got.retry_after_s
    return (got.code, None if wait is None else round(wait, 6))


def _record(store: KeyStore) -> KeyRecord:
    (record,) = store.records()
    return record


async def _timeline(store: KeyStore, seed: int, start: float) -> list[Outcome]:
    """Seeded admissions over ~15 min of ``now`` (bursts, buckets leaving the window one by
    one, a few pauses longer than the window), each admitted request settled at once with
    a seeded use at or below its worst case."""
    rng = random.Random(seed)
    record, now, out = _record(store), start, []
    for _ in range(800):
        now += rng.choice([0.05, 0.3, 1.0, 2.5]) if rng.random() < 0.995 else 75.0
        prompt, cap = rng.randint(1, 60), rng.choice([10, 40, 120, 1000])
        got = await store.admit_async(record, prompt, cap, PRICES, now)
        out.append(_outcome(got))
        if isinstance(got, Reservation):
            store.settle(got, prompt, rng.randint(0, cap), PRICES)
    return out


def _window_hashes(redis_server: RedisServer) -> list[dict[bytes, bytes]]:
    client = redis_server.client()
    names = [k for k in client.keys("*") if k.endswith((b":requests", b":tokens"))]
    return [client.hgetall(k) for k in names]


def _window_key(client: Any, suffix: bytes) -> bytes:
    """The one window hash in Redis whose key ends with ``suffix``."""
    (window,) = [k for k in client.keys("*") if k.endswith(suffix)]
    return bytes(window)


def _shared_store(
    tmp_path: Path, redis_server: RedisServer, spec: KeySpec, now: float
) -> tuple[KeyStore, KeyRecord]:
    """A key store with its books in ``redis_server``, holding the one key ``spec``."""
    store = KeyStore.open(tmp_path / "keys.db", shared=RedisState(redis_server.url))
    store.create(spec, actor="t", now=now)
    return store, _record(store)


def _run_on(store: KeyStore, body: Callable[[], Awaitable[T]]) -> T:
    """Run ``body`` on a fresh loop, the store's settlements drained after it and the
    store closed after that."""

    async def run() -> T:
        try:
            return await body()
        finally:
            await store.drain()

    try:
        return asyncio.run(run())
    finally:
        store.close()


@pytest.mark.parametrize("start", [1_800_000_000.0, 0.0])  # 0: windows reaching below 0
def test_redis_windows_decide_as_in_memory_with_running_totals_in_step(
    tmp_path: Path, redis_server: RedisServer, start: float
) -> None:
    local = KeyStore.open(tmp_path / "local.db")
    local.create(SPEC, actor="t", now=start)
    shared = KeyStore.open(tmp_path / "shared.db", shared=RedisState(redis_server.url))
    shared.create(SPEC, actor="t", now=start)

    async def both() -> tuple[list[Outcome], list[Outcome]]:
        try:
            return await _timeline(local, 7, start), await _timeline(shared, 7, start)
        finally:
            await shared.drain()

    try:
        here, there = asyncio.run(both())
    finally:
        local.close()
        shared.close()
    assert here == there
    codes = {code for code, _ in here}
    assert {"ok", "requests_per_minute_exceeded", "tokens_per_minute_exceeded"} <= codes
    hashes = _window_hashes(redis_server)
    assert len(hashes) == 2
    for fields in hashes:
        buckets = {int(k): int(v) for k, v in fields.items() if int(k) >= 0}
        assert int(fields[b"-1"]) == sum(buckets.values())  # the total, in step
        assert min(buckets, default=int(fields[b"-2"])) >= int(fields[b"-2"])


@pytest.mark.parametrize("lost", [(b"-1",), (b"-1", b"-2")])
def test_a_window_without_its_running_total_is_counted_whole_again(
    tmp_path: Path, redis_server: RedisServer, lost: tuple[bytes, ...]
) -> None:
    """A hash whose own fields are gone (a script that keeps none drops them as expired
    buckets) still holds every request: the next check counts the buckets whole."""
    now = 1_800_000_000.0
    store, record = _shared_store(
        tmp_path, redis_server, KeySpec(name="r", max_requests_per_min=3), now
    )

    async def run() -> list[Outcome]:
        out = [_outcome(await store.admit_async(record, 1, 1, PRICES, now + i)) for i in (0, 1)]
        client = redis_server.client()
        client.hdel(_window_key(client, b":requests"), *lost)
        for i in (2, 3):
            out.append(_outcome(await store.admit_async(record, 1, 1, PRICES, now + i)))
        return out

    got = _run_on(store, run)
    assert [code for code, _ in got] == ["ok", "ok", "ok", "requests_per_minute_exceeded"]
    assert got[3][1] == pytest.approx(58.0)  # the first request's bucket leaves the window


def test_a_total_put_out_of_step_is_counted_whole_again_within_a_window(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """A bucket changed behind the total's back (a settlement applied by a gateway of an
    earlier version, which keeps no total) leaves the total high for at most a window."""
    now = 1_800_000_000.0
    spec = KeySpec(name="t", max_tokens_per_min=10_000)
    store, record = _shared_store(tmp_path, redis_server, spec, now)
    client = redis_server.client()

    def tokens() -> tuple[int, int]:
        fields = {
            int(k): int(v) for k, v in client.hgetall(_window_key(client, b":tokens")).items()
        }
        return fields[-1], sum(v for b, v in fields.items() if b >= 0)

    async def run() -> list[tuple[int, int]]:
        seen = []
        for i in range(200):  # one request a second for 200 s
            if i == 10:  # the earlier version's settlement: 30 tokens fewer, no total
                client.hincrby(_window_key(client, b":tokens"), str(int(now) + 5), -30)
            got = await store.admit_async(record, 10, 40, PRICES, now + i)
            assert isinstance(got, Reservation)
            seen.append(tokens())
        return seen

    seen = _run_on(store, run)
    assert seen[10][0] == seen[10][1] + 30  # out of step: high, never low
    assert all(total == buckets for total, buckets in seen[10 + 60 :])


def test_windows_of_a_refused_request_expire_like_every_window(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """A request refused after its windows were checked (here by its budget) leaves no
    window hash that Redis would keep for ever."""
    now = 1_800_000_000.0
    spec = KeySpec(name="b", max_requests_per_min=5, max_tokens_per_min=100, budget_usd=1e-9)
    store, record = _shared_store(tmp_path, redis_server, spec, now)

    async def run() -> Outcome:
        return _outcome(await store.admit_async(record, 10, 10, PRICES, now))

    got = _run_on(store, run)
    assert got == ("budget_exhausted", None)
    client = redis_server.client()
    windows = [k for k in client.keys("*") if k.endswith((b":requests", b":tokens"))]
    assert windows  # checked, so written: each with its expiry
    assert all(0 < client.ttl(k) <= 2 * 60 + 2 for k in windows)
