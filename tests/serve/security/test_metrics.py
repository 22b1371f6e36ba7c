"""The per-tenant page a scrape gets: bounded to the top tenants, the rest summed, nothing lost."""

from __future__ import annotations

import heapq
import math
import random
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sincere.serve.security.keys import KeySpec, Prices
from sincere.serve.security.keystore import KeyStore, Reservation
from sincere.serve.security.metrics import OTHER, TenantMetrics
from sincere.serve.security.shared import RedisState

NOW = 1_700_000_000.0


def _samples(text: str) -> dict[str, float]:
    """Prometheus text as {name{labels}: value}."""
    lines = (line.rpartition(" ") for line in text.splitlines() if not line.startswith("#"))
    return {name: float(value) for name, _, value in lines if name}


def _tenants(samples: dict[str, float]) -> set[str]:
    return {k.split('tenant="')[1].split('"')[0] for k in samples if 'tenant="' in k}


def _filled(spends: list[float]) -> TenantMetrics:
    metrics = TenantMetrics()
    for k, usd in enumerate(spends):
        metrics.decided(f"t{k}", "allowed")
        metrics.settled(f"t{k}", 10, k, usd)
    metrics.watch()
    for k in range(len(spends)):
        metrics.key_changed(f"key{k}", f"t{k}", 0.5, 2.0)
    return metrics


def test_a_bounded_page_shows_the_biggest_spenders_and_sums_the_rest() -> None:
    """300 tenants, cap 5: the 5 with the most spend have their series, the 295 others one
    (other) series each, and ``sincere_tenant_series_omitted`` says 295."""
    metrics = _filled([float(k) for k in range(300)])
    page = _samples(metrics.render(max_tenants=5))
    assert _tenants(page) == {"t299", "t298", "t297", "t296", "t295", OTHER}
    assert page["sincere_tenant_series_omitted"] == 295
    assert page['sincere_tenant_spend_usd_total{tenant="(other)"}'] == sum(range(295))
    assert page['sincere_tenant_reserved_usd{tenant="(other)"}'] == 0.5 * 295
    assert len(metrics.render(max_tenants=5)) < 3000
    full = _samples(metrics.render(max_tenants=None))
    assert len(_tenants(full)) == 300 and full["sincere_tenant_series_omitted"] == 0


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(0, 100, allow_nan=False), min_size=1, max_size=40),
    st.integers(0, 50),
)
def test_bounded_pages_keep_every_total(spends: list[float], cap: int) -> None:
    """Whatever the cap, each family's sum over tenants equals the uncapped page's."""
    metrics = _filled(spends)
    capped, full = _samples(metrics.render(cap)), _samples(metrics.render(None))
    assert len(_tenants(capped) - {OTHER}) <= cap
    families = ("sincere_tenant_spend_usd_total", "sincere_tenant_tokens_total",
                "sincere_tenant_requests_total", "sincere_tenant_budget_remaining_usd")  # fmt: skip
    for family in families:
        total = sum(v for k, v in capped.items() if k.startswith(family + "{"))
        expected = sum(v for k, v in full.items() if k.startswith(family + "{"))
        assert abs(total - expected) <= 1e-9 * max(1.0, expected)


PRICES = Prices(1e-6, 3e-6)
CREATE = st.tuples(
    st.just("create"),
    st.integers(0, 5),
    st.sampled_from(["client", "client", "admin"]),
    st.one_of(st.none(), st.floats(0, 0.2)),
)
ADMIT = st.tuples(st.just("admit"), st.integers(0, 30), st.integers(1, 4000), st.integers(1, 4000))
SETTLE = st.tuples(
    st.just("settle"), st.integers(0, 30), st.integers(0, 5000), st.integers(0, 9000)
)
OPS = st.one_of(
    CREATE, ADMIT, ADMIT, ADMIT, SETTLE, SETTLE,
    st.tuples(st.just("revoke"), st.integers(0, 30)),
    st.tuples(st.just("check"), st.integers(0, 5), st.sampled_from(["allowed", "rate_limited"])),
    st.tuples(st.just("elsewhere"), st.integers(0, 5), st.one_of(st.none(), st.floats(0, 0.2))),
    st.tuples(st.just("scrape"), st.integers(0, 7)),
)  # fmt: skip


def _apply(store: KeyStore, other: KeyStore, op: tuple[Any, ...], held: list[Reservation]) -> None:
    """One step of a random history of a key store and its metrics."""
    metrics, records = store.metrics, store.records()
    assert metrics is not None
    match op:
        case ("create", tenant, kind, budget):
            budget = budget if kind == "client" else None
            spec = KeySpec(name=f"t{tenant}", kind=kind, budget_usd=budget)
            store.create(spec, actor="test", now=NOW)
        case ("elsewhere", tenant, budget):  # another process creates a key; this one refreshes
            other.create(KeySpec(name=f"t{tenant}", budget_usd=budget), actor="test", now=NOW)
            store.refresh()
        case ("admit", k, prompt, most) if records:
            record = records[k % len(records)]
            if record.kind == "client":
                got = store.admit(record, prompt, most, PRICES, NOW)
                held += [got] if isinstance(got, Reservation) else []
        case ("settle", k, prompt, completion) if held:  # may use more than it reserved
            store.settle(held.pop(k % len(held)), prompt, completion, PRICES)
        case ("revoke", k) if records and k % 4 == 0:  # rarely: a revoked key admits nothing
            store.revoke(records[k % len(records)].key_id, actor="test", now=NOW)
        case ("check", tenant, outcome):
            metrics.decided(f"t{tenant}", outcome)
        case ("scrape", cap):
            metrics.render(cap)


def _assert_kept_equals_recomputed(store: KeyStore, cap: int) -> None:
    """The metrics' kept gauges, totals and top tenants equal a recomputation from every key."""
    metrics = store.metrics
    assert metrics is not None
    assert metrics.gauges.items() == store.budget_gauges()
    client = [s for s in store.book.states.values() if s.record.kind == "client"]
    left = [v for s in client if (v := s.remaining_usd()) is not None]
    every_held = math.fsum(s.reserved_usd for s in client)
    assert metrics.gauges.others(()) == (every_held, math.fsum(max(v, 0.0) for v in left))
    shown = metrics.shown(cap)
    if shown is not None:
        rank = {t: (metrics.spend_usd.get(t, 0.0), metrics.checks.get(t, 0), t)
                for t in metrics.tenants}  # fmt: skip
        assert shown == frozenset(heapq.nlargest(cap, rank, key=rank.__getitem__))
    capped, full = _samples(metrics.render(cap)), _samples(metrics.render(None))
    for family in FAMILY_NAMES:
        total = sum(v for k, v in capped.items() if k.startswith(family + "{"))
        expected = sum(v for k, v in full.items() if k.startswith(family + "{"))
        assert abs(total - expected) <= 1e-9 * max(1.0, expected)


FAMILY_NAMES = ("sincere_tenant_spend_usd_total", "sincere_tenant_tokens_total",
                "sincere_tenant_requests_total", "sincere_tenant_reserved_usd",
                "sincere_tenant_budget_remaining_usd")  # fmt: skip


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OPS, min_size=20, max_size=80), st.integers(0, 4))
def test_kept_aggregates_equal_a_full_recomputation(ops: list[tuple[Any, ...]], cap: int) -> None:
    """After any history of key creations (here and in another process), admissions,
    settlements over and under the reservation, revocations, key checks and scrapes, the
    gauges kept as keys change equal a full pass over the keys to the bit, and the top
    tenants kept as ranks rise equal the top tenants picked afresh."""
    with tempfile.TemporaryDirectory() as folder:
        store = KeyStore.open(Path(folder) / "k.db", metrics=TenantMetrics())
        other = KeyStore.open(Path(folder) / "k.db")
        held: list[Reservation] = []
        try:
            metrics = store.metrics
            assert metrics is not None
            for op in ops:
                _apply(store, other, op, held)
                if op[0] == "scrape":  # the top tenants are kept for this cap from here on
                    metrics.shown(cap)
            _assert_kept_equals_recomputed(store, cap)
        finally:
            other.close()
            store.close()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.floats(0, 10)), max_size=200), st.integers(0, 8))
def test_top_tenants_kept_as_ranks_rise_are_the_top_tenants(
    rises: list[tuple[int, float]], cap: int
) -> None:
    """Spend and checks arriving in any order: the capped page's tenants are always the
    ``cap`` largest by (spend, checks, name), as a full sort would pick them."""
    metrics = TenantMetrics()
    metrics.decided("first", "allowed")
    metrics.shown(cap)  # from here on the top tenants are kept, not picked afresh
    for tenant, usd in rises:
        if usd < 5:
            metrics.decided(f"t{tenant}", "allowed")
        else:
            metrics.settled(f"t{tenant}", 1, 1, usd)
        shown = metrics.shown(cap)
        if shown is not None:
            rank = {t: (metrics.spend_usd.get(t, 0.0), metrics.checks.get(t, 0), t)
                    for t in metrics.tenants}  # fmt: skip
            assert shown == frozenset(heapq.nlargest(cap, rank, key=rank.__getitem__))


def test_shared_state_gauges_are_kept_locally_and_a_scrape_asks_redis_nothing(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With limits and spend in Redis, a seeded random history of admissions and
    settlements leaves the kept gauges equal to a full recomputation, and a scrape (capped
    or every tenant) makes no call to Redis at all: the page reads this process's mirror."""
    shared = RedisState(redis_url)
    store = KeyStore.open(tmp_path / "k.db", metrics=TenantMetrics(), shared=shared)
    rng = random.Random(7)
    try:
        records = [
            store.create(KeySpec(name=f"t{k % 7}", budget_usd=rng.choice([None, 0.05, 1.0])),
                         actor="test", now=NOW)[1]
            for k in range(20)
        ]  # fmt: skip
        held: list[Reservation] = []
        for _ in range(300):
            if held and rng.random() < 0.45:
                reservation = held.pop(rng.randrange(len(held)))
                store.settle(reservation, rng.randint(0, 3000), rng.randint(0, 6000), PRICES)
            else:
                got = store.admit(rng.choice(records), rng.randint(1, 3000), 3000, PRICES, NOW)
                held += [got] if isinstance(got, Reservation) else []
        assert held and store.metrics is not None
        store.metrics.render(3)

        def no_redis(*args: object) -> None:
            raise AssertionError("a scrape called Redis")

        monkeypatch.setattr(shared, "call", no_redis)
        monkeypatch.setattr(shared, "call_raw", no_redis)
        _assert_kept_equals_recomputed(store, 3)
        assert store.metrics.gauges.others(())[0] > 0  # reservations in flight are shown
    finally:
        monkeypatch.undo()
        store.close()


def test_gauge_sums_beyond_the_largest_float_are_infinite_not_an_error() -> None:
    """Two keys with budgets of 1e308 USD: the tenant's remaining budget and the total read
    as +inf (what a float sum gives), and the capped page still renders."""
    metrics = TenantMetrics()
    metrics.watch()
    metrics.key_changed("a", "big", 0.0, 1e308)
    metrics.key_changed("b", "big", 0.0, 1e308)
    metrics.key_changed("c", "small", 1.0, 2.0)
    assert metrics.gauges.get("big") == (0.0, math.inf)
    assert metrics.gauges.others(["small"]) == (0.0, math.inf)
    page = _samples(metrics.render(1))
    assert page['sincere_tenant_budget_remaining_usd{tenant="(other)"}'] == math.inf
