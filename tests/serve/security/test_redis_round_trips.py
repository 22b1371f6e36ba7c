"""One Redis round trip per keyed request: a settlement rides the next admission.

A real redis-server of the test's own counts the commands it runs (``INFO
commandstats``). Settlements are deferred (:mod:`sincere.serve.security.settlements`):
until one reaches Redis its request's worst case stays reserved, so budgets racing over
two key stores are never over-spent; a deferred settlement goes on its own within
``settle_within_s``, and one whose call failed is retried by the background round,
applied once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tests.serve.conftest import RedisServer
from tests.serve.security.test_gateway import bearer, gateway_config, make_keys

from sincere.serve.backends.fake_upstream import FakeUpstream
from sincere.serve.gateway.server import Gateway
from sincere.serve.security.keys import KeyRecord, KeySpec, Prices
from sincere.serve.security.keystore import KeyStore, LimitRefusal, Reservation
from sincere.serve.security.shared import RedisState, StateUnavailableError

PRICES = Prices(1.0, 1.0)  # 1 USD a token: max_tokens 4 reserves 4 USD
WORST = 4.0  # what each admission reserves
BODY = {"model": "m", "prompt": "hello there", "max_tokens": 4}


INSIDE_SCRIPTS = {  # what the books' scripts run inside Redis (not round trips)
    "exists", "expire", "hdel", "hexists", "hget", "hgetall", "hincrby", "hincrbyfloat",
    "hmget", "hset", "zadd", "zcard", "zrangebyscore", "zrem", "zremrangebyscore", "zscore",
}  # fmt: skip
THE_TESTS_OWN = ("info", "config", "hello", "client")  # this test's client: stats, handshake


def redis_calls(server: RedisServer) -> dict[str, int]:
    """The commands clients sent Redis since its stats were last reset, by name: one a
    round trip (what scripts run inside Redis, and this test's own calls, left out)."""
    client = server.client()
    try:
        stats: dict[str, Any] = client.info("commandstats")
    finally:
        client.close()
    calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
    return {
        k: n
        for k, n in calls.items()
        if k not in INSIDE_SCRIPTS and not k.startswith(THE_TESTS_OWN)
    }


def reset_calls(server: RedisServer) -> None:
    client = server.client()
    try:
        client.config_resetstat()
    finally:
        client.close()


def money(server: RedisServer, record: KeyRecord) -> tuple[float, float]:
    """(spent, reserved) of the key as Redis holds them now."""
    client = server.client()
    try:
        token = client.hget("sincere:instance", "token").decode()
        spent, reserved = client.hmget(
            f"sincere:{token}:{record.key_id}:money", "spent", "reserved"
        )
        return float(spent), float(reserved)
    finally:
        client.close()


def test_a_keyed_request_through_the_gateway_is_one_redis_call(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """20 sequential keyed requests after a warm-up: Redis runs exactly 20 commands (one
    admission script each, carrying the previous request's settlement); the last
    settlement reaches Redis when the gateway stops: spend there equals the durable record."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(keys, acme=KeySpec(name="acme", budget_usd=1000.0))
    slow = {"lease_s": 60.0, "renew_s": 20.0, "settle_within_s": 20.0}  # no background call
    num_requests = 20

    async def main() -> None:
        async with FakeUpstream(num_tokens=4) as up:
            cfg = gateway_config(up.url, keys, state={"redis": redis_server.url, **slow})
            async with Gateway(cfg) as gw, aiohttp.ClientSession() as s:

                async def one() -> None:
                    url = gw.url + "/v1/completions"
                    async with s.post(url, json=BODY, headers=bearer(tokens["acme"])) as r:
                        assert r.status == 200, await r.text()

                await one()  # joins the books: instance, sync, script loads
                reset_calls(redis_server)
                for _ in range(num_requests):
                    await one()
                calls = redis_calls(redis_server)
        assert calls == {"evalsha": num_requests}, calls

    asyncio.run(asyncio.wait_for(main(), 60))
    store = KeyStore.open(keys)
    try:
        (record,) = store.records()
        spent, reserved = money(redis_server, record)
        assert reserved == 0.0
        assert spent == store.totals(record.key_id).spent_usd > 0
        assert store.totals(record.key_id).num_requests == num_requests + 1
    finally:
        store.close()


@pytest.fixture
def two(tmp_path: Path, redis_server: RedisServer) -> Iterator[tuple[KeyStore, KeyStore]]:
    """Two key stores on one key file and one Redis, settlements deferred up to 0.3 s."""
    path = tmp_path / "keys.db"
    stores = [
        KeyStore.open(
            path,
            shared=RedisState(
                redis_server.url, lease_s=3.0, renew_s=0.5, settle_within_s=0.3, timeout_s=0.3
            ),
        )
        for _ in range(2)
    ]
    try:
        yield stores[0], stores[1]
    finally:
        for store in stores:
            store.close()


def make_key(a: KeyStore, b: KeyStore, budget_usd: float) -> KeyRecord:
    _, record = a.create(KeySpec(name="acme", budget_usd=budget_usd), actor="t", now=0.0)
    b.refresh()
    return record


async def admit(store: KeyStore, record: KeyRecord) -> Reservation | LimitRefusal:
    return await store.admit_async(record, 0, 4, PRICES, time.time())


def test_a_deferred_settlement_holds_its_worst_case_until_it_reaches_redis(
    two: tuple[KeyStore, KeyStore], redis_server: RedisServer
) -> None:
    """A settles 1 USD of a 4 USD reservation: until Redis has it the 4 stay reserved (B
    sees the budget smaller, never larger); it reaches Redis within settle_within_s with
    no admission; the next one rides A's next admission, in that single call."""
    a, b = two
    record = make_key(a, b, 3 * WORST)

    async def main() -> None:
        got = await admit(a, record)
        assert isinstance(got, Reservation)
        a.settle(got, 0, 1, PRICES)  # deferred
        assert money(redis_server, record) == (0.0, WORST)
        held = [await admit(b, record) for _ in range(3)]
        assert [isinstance(r, Reservation) for r in held] == [True, True, False]
        assert isinstance(held[2], LimitRefusal) and held[2].status == 402
        await asyncio.sleep(0.6)  # settle_within_s 0.3: sent on its own
        assert money(redis_server, record) == (1.0, 2 * WORST)
        for r in held[:2]:
            assert isinstance(r, Reservation)
            await b.settle_async(r, 0, 1, PRICES)
        again = await admit(a, record)
        assert isinstance(again, Reservation)
        a.settle(again, 0, 1, PRICES)
        reset_calls(redis_server)
        last = await admit(a, record)  # carries the settlement of ``again``
        assert isinstance(last, Reservation)
        assert redis_calls(redis_server) == {"evalsha": 1}
        assert money(redis_server, record) == (4.0, WORST)
        a.settle(last, 0, 1, PRICES)
        await a.drain()  # stopping sends what is deferred
        assert money(redis_server, record) == (5.0, 0.0)

    asyncio.run(asyncio.wait_for(main(), 30))


def test_racing_requests_with_deferred_settlements_never_over_spend(
    two: tuple[KeyStore, KeyStore], redis_server: RedisServer
) -> None:
    """16 racers over two stores, 4 USD reserved and 2 USD settled (deferred) each time, a
    40 USD budget: after every admission spent + reserved <= 40 in Redis; at the end the
    spend is 2 USD per answer, within the budget, equal in Redis and the durable record,
    and more than 10 answers were served (the settlements freed what was over-reserved)."""
    a, b = two
    budget = 40.0
    record = make_key(a, b, budget)
    over: list[tuple[float, float]] = []

    async def racer(store: KeyStore) -> int:
        served = 0
        for _ in range(12):
            got = await admit(store, record)
            spent, reserved = money(redis_server, record)
            if spent + reserved > budget + 1e-9:
                over.append((spent, reserved))
            if isinstance(got, Reservation):
                await asyncio.sleep(0.005)  # the upstream
                store.settle(got, 0, 2, PRICES)
                served += 1
            await asyncio.sleep(0.02)
        return served

    async def main() -> int:
        served = sum(await asyncio.gather(*(racer(a if k % 2 else b) for k in range(16))))
        await a.drain()
        await b.drain()
        return served

    served = asyncio.run(asyncio.wait_for(main(), 60))
    a.flush()
    b.flush()
    assert over == []
    assert 10 < served <= budget / 2
    assert money(redis_server, record) == (2.0 * served, 0.0)
    assert a.storage.usage(record.key_id).spent_usd == 2.0 * served


def test_settlements_deferred_through_a_redis_stall_fail_closed_and_apply_once(
    two: tuple[KeyStore, KeyStore], redis_server: RedisServer
) -> None:
    """Redis stalls with two settlements deferred and one riding an admission: that
    admission is refused 503 (fail closed), the sends time out and are kept; Redis runs
    them when it resumes, the background round sends them again: each is charged once,
    and the refused admission holds nothing."""
    a, b = two
    record = make_key(a, b, 100.0)

    async def main() -> None:
        held = [await admit(a, record) for _ in range(3)]
        reservations = [r for r in held if isinstance(r, Reservation)]
        assert len(reservations) == 3
        a.settle(reservations[0], 0, 1, PRICES)
        a.settle(reservations[1], 0, 2, PRICES)
        redis_server.pause()
        try:
            await asyncio.sleep(0.8)  # the timer's send times out: kept for the round
            a.settle(reservations[2], 0, 3, PRICES)
            refused = await admit(a, record)  # carries the third, times out
            assert isinstance(refused, LimitRefusal) and refused.status == 503
        finally:
            redis_server.resume()
        for _ in range(3):
            try:
                await a.maintain(time.time())
            except StateUnavailableError:
                await asyncio.sleep(0.3)
        assert money(redis_server, record) == (6.0, 0.0)

    asyncio.run(asyncio.wait_for(main(), 30))
    a.flush()
    assert a.storage.usage(record.key_id).spent_usd == 6.0


def test_a_settlement_deferred_on_another_event_loop_still_goes_within_its_bound(
    two: tuple[KeyStore, KeyStore], redis_server: RedisServer
) -> None:
    """A store used from one event loop that ended with a settlement deferred (its timer
    never ran), then from another: a settlement deferred there reaches Redis within
    settle_within_s, with the one left behind, and no admission to carry them."""
    a, b = two
    record = make_key(a, b, 100.0)

    async def first() -> Reservation:
        now, later = [await admit(a, record) for _ in range(2)]
        assert isinstance(now, Reservation) and isinstance(later, Reservation)
        a.settle(now, 0, 1, PRICES)
        assert a.shared is not None
        await a.shared.aclose()  # this loop's connections; the settlement stays deferred
        return later

    async def second(later: Reservation) -> None:
        a.settle(later, 0, 2, PRICES)
        await asyncio.sleep(0.6)  # settle_within_s 0.3
        assert money(redis_server, record) == (3.0, 0.0)
        await a.drain()

    later = asyncio.run(asyncio.wait_for(first(), 30))
    assert money(redis_server, record) == (0.0, 2 * WORST)
    asyncio.run(asyncio.wait_for(second(later), 30))


def test_a_clock_read_overtaken_by_an_admission_carrying_a_settlement_is_no_regression(
    two: tuple[KeyStore, KeyStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upkeep's read of Redis's clock is answered, then an admission carrying a
    deferred settlement (which advances the clock) is processed before that read is: the
    process must not take its own newer clock for Redis going back (keys stay admitted)."""
    a, b = two
    record = make_key(a, b, 100.0)
    ledger = a.ledger
    assert ledger is not None
    real_call = ledger.state.call
    overtaken: list[Reservation | LimitRefusal] = []

    async def late_read(name: str, keys: list[str], args: list[object]) -> object:
        out = await real_call(name, keys, args)
        if name == "instance" and args[0] == "?" and not overtaken:
            got = await admit(a, record)
            assert isinstance(got, Reservation)
            a.settle(got, 0, 1, PRICES)
            clock = ledger._clock
            overtaken.append(await admit(a, record))  # carries it: the clock advances
            assert ledger._clock > clock
        return out

    async def main() -> None:
        got = await admit(a, record)
        assert isinstance(got, Reservation)
        a.settle(got, 0, 1, PRICES)
        await ledger.flush()
        monkeypatch.setattr(ledger.state, "call", late_read)
        await ledger.maintain(time.time())
        assert [type(g).__name__ for g in overtaken] == ["Reservation"]
        got_all = [await admit(a if k % 2 else b, record) for k in range(6)]
        assert [type(g).__name__ for g in got_all] == ["Reservation"] * 6, got_all

    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_carried_settlement_whose_key_books_expired_is_counted_once_by_the_resync(
    two: tuple[KeyStore, KeyStore], redis_server: RedisServer
) -> None:
    """A settlement deferred while its key's books leave Redis (expired) rides an
    admission of another key: it is not applied, the process syncs its key again (the
    background round) from the durable record plus its unwritten usage, that settlement's
    included, and the spend in Redis counts every answer once."""
    a, b = two
    record = make_key(a, b, 100.0)
    _, other = a.create(KeySpec(name="other", budget_usd=100.0), actor="t", now=0.0)

    async def main() -> None:
        first = await admit(a, record)
        assert isinstance(first, Reservation)
        await a.settle_async(first, 0, 1, PRICES)
        a.flush()  # the durable record: 1 USD
        second = await admit(a, record)
        assert isinstance(second, Reservation)
        a.settle(second, 0, 2, PRICES)  # deferred, unwritten
        client = redis_server.client()
        token = client.hget("sincere:instance", "token").decode()
        books = ("money", "res", "lease", "gone", "synced")
        client.delete(*(f"sincere:{token}:{record.key_id}:{w}" for w in books))
        client.close()
        assert isinstance(await admit(a, other), Reservation)  # carries the settlement
        await a.maintain(time.time())  # the key is synced again
        assert money(redis_server, record) == (3.0, 0.0)
        await a.drain()

    asyncio.run(asyncio.wait_for(main(), 30))
    a.flush()
    assert a.storage.usage(record.key_id).spent_usd == 3.0


def test_settlements_lost_with_redis_mid_call_are_kept_and_apply_once_after_it_returns(
    two: tuple[KeyStore, KeyStore], redis_server: RedisServer
) -> None:
    """Redis is killed while an admission carrying two settlements waits for its answer:
    the admission is refused 503 (fail closed) and the settlements are kept. Redis comes
    back from a snapshot taken before them (both worst cases held there): the background
    round applies each once -- again once more changes nothing -- and the refused
    admission holds nothing."""
    a, b = two
    record = make_key(a, b, 100.0)

    async def settled_by_rounds(expected: tuple[float, float]) -> tuple[float, float]:
        deadline = time.monotonic() + 10.0
        while money(redis_server, record) != expected and time.monotonic() < deadline:
            with contextlib.suppress(StateUnavailableError):
                await a.maintain(time.time())
            await asyncio.sleep(0.2)
        return money(redis_server, record)

    async def main() -> None:
        held = [await admit(a, record) for _ in range(2)]
        assert all(isinstance(r, Reservation) for r in held)
        redis_server.save()
        for reservation, tokens in zip(held, (1, 2), strict=True):
            assert isinstance(reservation, Reservation)
            a.settle(reservation, 0, tokens, PRICES)
        redis_server.pause()
        carrying = asyncio.ensure_future(admit(a, record))
        await asyncio.sleep(0.05)
        redis_server.kill()
        refused = await carrying
        assert isinstance(refused, LimitRefusal) and refused.status == 503
        redis_server.restart(from_snapshot=True)
        assert money(redis_server, record) == (0.0, 2 * WORST)
        assert await settled_by_rounds((3.0, 0.0)) == (3.0, 0.0)
        await a.maintain(time.time())
        assert money(redis_server, record) == (3.0, 0.0)

    asyncio.run(asyncio.wait_for(main(), 30))
    a.flush()
    assert a.storage.usage(record.key_id).spent_usd == 3.0
