"""The shared books through Redis faults: flushed, restarted empty, stalled, restored, and a
process that stops renewing its leases (killed) -- two key stores on one key file and one
real redis-server, as two gateways use them, with budgets racing.

Every test checks the three books: nothing served beyond the budget (costs here equal the
reservations, so "within budget" means exactly the budget's number of answers), nothing
charged twice and nothing lost (the durable record and Redis both equal the answers served).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.serve.conftest import RedisServer

from sincere.serve.security.keys import KeyRecord, KeySpec, Prices
from sincere.serve.security.keystore import KeyStore, LimitRefusal, Reservation
from sincere.serve.security.shared import RedisState, StateUnavailableError

PRICES = Prices(1.0, 1.0)  # 1 USD a token: a request of max_tokens 4 costs 4 USD
COST = 4.0
RENEW_S = 0.2  # leases renewed and Redis checked this often; grace after a loss: 0.6 s
LEASE_S = 1.0


@pytest.fixture
def two(tmp_path: Path, redis_server: RedisServer) -> Iterator[tuple[KeyStore, KeyStore]]:
    """Two key stores on one key file and one Redis (two gateways' view)."""
    path = tmp_path / "keys.db"
    stores = [
        KeyStore.open(path, shared=RedisState(redis_server.url, lease_s=LEASE_S, renew_s=RENEW_S))
        for _ in range(2)
    ]
    try:
        yield stores[0], stores[1]
    finally:
        for store in stores:
            store.close()


def make_key(a: KeyStore, b: KeyStore, num_answers: int) -> KeyRecord:
    """A key with a budget for ``num_answers`` answers, known to both stores."""
    _, record = a.create(KeySpec(name="acme", budget_usd=num_answers * COST), actor="t", now=0.0)
    b.refresh()
    return record


async def admit(store: KeyStore, record: KeyRecord) -> Reservation | LimitRefusal:
    return await store.admit_async(record, 0, 4, PRICES, time.time())


async def serve(store: KeyStore, record: KeyRecord) -> int:
    """One request start to end: 1 if served (and settled), else 0."""
    got = await admit(store, record)
    if not isinstance(got, Reservation):
        return 0
    await store.settle_async(got, 0, 4, PRICES)
    return 1


async def race(a: KeyStore, b: KeyStore, record: KeyRecord, n: int) -> int:
    """``n`` requests at once alternating over both stores; how many were served."""
    done = await asyncio.gather(*(serve(a if k % 2 else b, record) for k in range(n)))
    return sum(done)


async def tick(*stores: KeyStore) -> None:
    """One round of each store's background upkeep (the gateway runs it every renew_s)."""
    for store in stores:
        with contextlib.suppress(StateUnavailableError):
            await store.maintain(time.time())


async def settle_rebuild(a: KeyStore, b: KeyStore) -> None:
    """Let both stores notice a rebuilt Redis and its grace pass."""
    for _ in range(5):
        await tick(a, b)
        await asyncio.sleep(RENEW_S)


def books(store: KeyStore, shared: RedisState, record: KeyRecord) -> tuple[float, float]:
    """(the durable record's spend, Redis's spend) after every store has flushed."""
    durable = store.storage.usage(record.key_id).spent_usd
    return durable, shared.spent_usd(record.key_id)


def reserved_usd(server: RedisServer, record: KeyRecord) -> float:
    """What Redis holds reserved for the key now."""
    client = server.client()
    try:
        token = client.hget("sincere:instance", "token").decode()
        return float(client.hget(f"sincere:{token}:{record.key_id}:money", "reserved"))
    finally:
        client.close()


@pytest.mark.parametrize("fault", ["flushall", "restart-empty"])
def test_redis_losing_its_data_does_not_reopen_a_budget(
    two: tuple[KeyStore, KeyStore], redis_server: RedisServer, fault: str
) -> None:
    """Budget for 10; 5 served (some flushed, some not, one in flight) when Redis loses
    everything: keys are refused 503 with Retry-After while the books are rebuilt from the
    durable record's current spend plus each process's unwritten usage and reservations;
    a settlement reaching the empty Redis creates no spend; then exactly 5 more are served."""
    a, b = two
    record = make_key(a, b, 10)

    async def main() -> None:
        assert await serve(a, record) + await serve(a, record) == 2
        await a.flush_async()  # written: the durable record says 8
        assert await serve(b, record) == 1  # B's 4 USD not written yet
        held_a, held_b = await admit(a, record), await admit(b, record)
        assert isinstance(held_a, Reservation) and isinstance(held_b, Reservation)
        if fault == "flushall":
            redis_server.client().flushall()
        else:
            redis_server.restart()
        await b.settle_async(held_b, 0, 4, PRICES)  # reaches the empty Redis first
        refused = await admit(a, record)
        assert isinstance(refused, LimitRefusal) and refused.status == 503
        assert refused.code == "state_store_unavailable" and refused.retry_after_s
        assert "rebuilt" in refused.message
        await settle_rebuild(a, b)
        shared = a.shared
        assert shared is not None
        assert shared.spent_usd(record.key_id) == 4 * COST  # 8 written + B's 8 unwritten
        more = await race(a, b, record, 20)
        await a.settle_async(held_a, 0, 4, PRICES)
        assert 4 + 1 + more == 10, f"served {4 + 1 + more} on a budget for 10"
        await a.flush_async()
        await b.flush_async()
        assert books(a, shared, record) == (10 * COST, 10 * COST)

    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_redis_stall_charges_each_settlement_once_and_loses_none(
    two: tuple[KeyStore, KeyStore], redis_server: RedisServer
) -> None:
    """Twelve requests in flight on two processes when Redis stalls 2 s (SIGSTOP): their
    settlements time out, Redis runs them when it resumes, the processes retry them, and
    flushes run meanwhile -- Redis and the durable record each count every answer once.
    An admission that timed out (503) but ran late holds nothing once the process has
    retried its cancellation (no waiting for its lease)."""
    a, b = two
    record = make_key(a, b, 1000)

    async def main() -> None:
        held = await asyncio.gather(*(admit(a if k % 2 else b, record) for k in range(12)))
        assert all(isinstance(r, Reservation) for r in held)  # and connections pooled
        redis_server.pause()
        try:
            settles = [
                (a if k % 2 else b).settle_async(r, 0, 4, PRICES)
                for k, r in enumerate(held)
                if isinstance(r, Reservation)
            ]
            late = await admit(a, record)  # sent on a pooled connection; runs on resume
            assert isinstance(late, LimitRefusal) and late.status == 503
            await asyncio.gather(*settles)  # each times out after ~1 s
            await a.flush_async()
            await b.flush_async()
            await asyncio.sleep(1.0)
        finally:
            redis_server.resume()
        await tick(a, b)  # the missed settlements retried: each applies once
        assert reserved_usd(redis_server, record) == 0.0
        await a.flush_async()
        await b.flush_async()
        shared = a.shared
        assert shared is not None
        assert books(a, shared, record) == (12 * COST, 12 * COST)

    asyncio.run(asyncio.wait_for(main(), 60))


def test_reservations_of_a_process_that_stops_renewing_them_are_released(
    two: tuple[KeyStore, KeyStore],
) -> None:
    """A holds 4 of a 5-answer budget and falls silent (renews nothing): B gets 1 at once,
    and 4 more once A's leases have run out. If A was only stalled, an answer it settles
    then is still charged (once): the lease's documented over-commit, not a lost charge."""
    a, b = two
    record = make_key(a, b, 5)

    async def main() -> None:
        held = [await admit(a, record) for _ in range(4)]
        assert all(isinstance(r, Reservation) for r in held)  # A is now "killed"
        assert await race(b, b, record, 3) == 1
        refused = await admit(b, record)  # A's 4 still held: the budget is full
        assert isinstance(refused, LimitRefusal) and refused.status == 402
        deadline = time.monotonic() + LEASE_S + 3 * RENEW_S
        while time.monotonic() < deadline:
            await tick(b)
            await asyncio.sleep(RENEW_S)
        assert await race(b, b, record, 10) == 4
        late = held[0]  # A was only stalled: its answer, settled after its lease ran out,
        assert isinstance(late, Reservation) and a.ledger is not None
        await a.settle_async(late, 0, 4, PRICES)  # is still charged, once
        again = a.ledger.settle(record.key_id, f"{a.ledger.process_id}:{late.number}",
                                COST, None, 0, late.made_at, 1, (0, 4))  # fmt: skip
        await a.ledger.send(again)
        shared = a.shared
        assert shared is not None and shared.spent_usd(record.key_id) == 6 * COST

    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_live_process_keeps_its_leases_held(two: tuple[KeyStore, KeyStore]) -> None:
    """B holds 2 of a 3-answer budget and renews them past the lease: A gets exactly 1."""
    a, b = two
    record = make_key(a, b, 3)

    async def main() -> None:
        held = [await admit(b, record) for _ in range(2)]
        assert all(isinstance(r, Reservation) for r in held)
        deadline = time.monotonic() + LEASE_S * 2
        while time.monotonic() < deadline:
            await tick(b)
            await asyncio.sleep(RENEW_S)
        assert await race(a, a, record, 5) == 1

    asyncio.run(asyncio.wait_for(main(), 60))


def test_redis_restored_from_a_snapshot_counts_nothing_twice(
    two: tuple[KeyStore, KeyStore], redis_server: RedisServer
) -> None:
    """Snapshot (SAVE) with usage unflushed, more served and flushed, Redis restarted from
    the snapshot: the books go back in time, are rebuilt from the durable record, the
    budget holds and nothing is counted twice."""
    a, b = two
    record = make_key(a, b, 12)

    async def main() -> None:
        assert await race(a, b, record, 4) == 4
        redis_server.save()  # Redis holds 4 answers; nothing flushed yet
        assert await race(a, b, record, 4) == 4
        await a.flush_async()
        await b.flush_async()
        redis_server.restart(from_snapshot=True)
        await settle_rebuild(a, b)
        more = await race(a, b, record, 10)
        assert 8 + more == 12, f"served {8 + more} on a budget for 12"
        await a.flush_async()
        await b.flush_async()
        shared = a.shared
        assert shared is not None
        assert books(a, shared, record) == (12 * COST, 12 * COST)

    asyncio.run(asyncio.wait_for(main(), 60))


def test_stale_connections_after_a_redis_restart_are_retried_not_refused(
    two: tuple[KeyStore, KeyStore], redis_server: RedisServer
) -> None:
    """Redis restarted with its data (from a snapshot of now): every pooled connection is
    stale; a burst of 30 is served in full, none refused 503, Redis not marked down."""
    a, b = two
    record = make_key(a, b, 1000)

    async def main() -> None:
        assert await race(a, b, record, 30) == 30  # fills both pools
        redis_server.save()
        redis_server.restart(from_snapshot=True)
        results = await asyncio.gather(*(admit(a if k % 2 else b, record) for k in range(30)))
        refused = [r.message for r in results if isinstance(r, LimitRefusal)]
        assert refused == []

    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_silent_process_usage_is_written_by_a_survivor_once(
    two: tuple[KeyStore, KeyStore],
) -> None:
    """A settles 3 answers and falls silent (no heartbeat, no flush) past its lease: B,
    beating all along, writes A's mirrored usage to the durable record; when A comes back
    and flushes the same batch, the record skips it -- 3 answers, counted once."""
    a, b = two
    record = make_key(a, b, 100)

    async def main() -> None:
        await tick(a, b)
        assert await serve(a, record) + await serve(a, record) + await serve(a, record) == 3
        shared = a.shared
        assert shared is not None
        deadline = time.monotonic() + 10 * LEASE_S  # B beats; A is silent
        while time.monotonic() < deadline and books(b, shared, record)[0] < 3 * COST:
            await tick(b)
            await asyncio.sleep(RENEW_S)
        assert books(b, shared, record) == (3 * COST, 3 * COST)  # written by B
        await a.flush_async()  # A's own write of the same batch: already written
        await tick(a)
        assert await serve(a, record) == 1
        await a.flush_async()
        assert books(a, shared, record) == (4 * COST, 4 * COST)

    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_survivor_whose_key_store_refuses_keeps_renewing_its_leases(
    two: tuple[KeyStore, KeyStore],
) -> None:
    """A settles 1 of a 3-answer budget and falls silent; B holds 1 while its key store
    refuses writes (locked) for three leases: B's upkeep goes on -- its reservation stays
    held (exactly 1 more is served, not 2) -- and once the store takes writes again B
    writes A's usage: 3 answers, counted once in both books."""
    a, b = two
    record = make_key(a, b, 3)

    async def main() -> None:
        await tick(a, b)
        assert await serve(a, record) == 1  # A falls silent with it unwritten
        held = await admit(b, record)
        assert isinstance(held, Reservation)
        real = b.storage.add_usage

        def locked(*args: object) -> None:
            raise sqlite3.OperationalError("database is locked")

        b.storage.add_usage = locked  # type: ignore[method-assign]
        deadline = time.monotonic() + 3 * LEASE_S
        while time.monotonic() < deadline:
            await tick(b)
            await asyncio.sleep(RENEW_S)
        assert await race(b, b, record, 3) == 1  # B's reservation was renewed all along
        b.storage.add_usage = real  # type: ignore[method-assign]
        shared = a.shared
        assert shared is not None
        deadline = time.monotonic() + 10 * LEASE_S
        while time.monotonic() < deadline and books(b, shared, record)[0] < COST:
            await tick(b)
            await asyncio.sleep(RENEW_S)
        await b.settle_async(held, 0, 4, PRICES)
        await b.flush_async()
        assert books(b, shared, record) == (3 * COST, 3 * COST)

    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_key_whose_spend_cannot_be_read_does_not_stop_the_others_upkeep(
    two: tuple[KeyStore, KeyStore], redis_server: RedisServer
) -> None:
    """B holds one answer on each of two keys (budgets for 2) when Redis loses its books,
    and the key store cannot read the first key's spend: B rejoins the second key's books
    all the same (its reservation registered again), so A gets exactly 1 answer on it."""
    a, b = two
    _, one = a.create(KeySpec(name="one", budget_usd=2 * COST), actor="t", now=0.0)
    _, two_ = a.create(KeySpec(name="two", budget_usd=2 * COST), actor="t", now=0.0)
    b.refresh()
    first, second = sorted([one, two_], key=lambda r: r.key_id)  # upkeep goes in id order

    async def main() -> None:
        held = [await admit(b, first), await admit(b, second)]
        assert all(isinstance(r, Reservation) for r in held)
        real = b.storage.usage

        def unreadable(key_id: str) -> object:
            if key_id == first.key_id:
                raise sqlite3.OperationalError("database is locked")
            return real(key_id)

        b.storage.usage = unreadable  # type: ignore[method-assign]
        redis_server.client().flushall()
        deadline = time.monotonic() + 6 * RENEW_S  # past the rebuild's grace
        while time.monotonic() < deadline:
            await tick(b)
            await asyncio.sleep(RENEW_S)
        assert await race(a, a, second, 3) == 1  # B's reservation on it is back in the books

    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_settlement_sent_twice_is_charged_once(two: tuple[KeyStore, KeyStore]) -> None:
    """A settlement Redis ran although its sender timed out, then sent again (the retry),
    changes the books once: spend and the durable record count one answer."""
    a, b = two
    record = make_key(a, b, 100)

    async def main() -> None:
        got = await admit(a, record)
        assert isinstance(got, Reservation) and a.ledger is not None
        await a.settle_async(got, 0, 4, PRICES)
        rid = f"{a.ledger.process_id}:{got.number}"  # the same settlement, sent again
        again = a.ledger.settle(record.key_id, rid, COST, None, 0, got.made_at, 1, (0, 4))
        await a.ledger.send(again)
        await a.flush_async()
        shared = a.shared
        assert shared is not None
        assert books(a, shared, record) == (COST, COST)

    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_clock_read_overtaken_by_a_settlement_is_not_taken_for_a_regression(
    two: tuple[KeyStore, KeyStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upkeep's read of Redis's clock is answered, then a settlement's later clock
    is processed before that read is: the process must not take its own newer clock
    for Redis going back (which rebuilt the books and refused every key with 503)."""
    a, b = two
    record = make_key(a, b, 100)
    ledger = a.ledger
    assert ledger is not None
    real_call = ledger.state.call
    overtaken = []

    async def late_read(name: str, keys: list[str], args: list[object]) -> object:
        out = await real_call(name, keys, args)
        if name == "instance" and args[0] == "?" and not overtaken:
            overtaken.append(await serve(a, record))  # its settlement advances the clock
        return out

    async def main() -> None:
        assert await serve(a, record) == 1
        monkeypatch.setattr(ledger.state, "call", late_read)
        await ledger.maintain(time.time())
        assert overtaken == [1]
        got = [await admit(a if k % 2 else b, record) for k in range(6)]
        assert [type(g).__name__ for g in got] == ["Reservation"] * 6, got

    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_renewal_interval_too_long_for_the_lease_is_refused() -> None:
    """state.renew_s above a third of state.lease_s would let live leases run out."""
    from sincere.core.errors import ConfigError
    from sincere.serve.gateway.config import parse_config

    state = {"redis": "redis://127.0.0.1:1/0", "renew_s": 20, "lease_s": 30}
    with pytest.raises(ConfigError, match=r"renew_s \(20.0\) must be at most a third"):
        parse_config({"state": state})
