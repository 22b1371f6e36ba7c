"""The front door's key check: 401 / 402 / 403 / 429 and grants, also under concurrent load."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sincere.serve.security.keys import KeySpec, Prices
from sincere.serve.security.keystore import KeyStore
from sincere.serve.security.policy import (
    BUDGET_HEADER,
    AdminGrant,
    Grant,
    Refusal,
    RequestFacts,
    authorize_admin,
    authorize_request,
    bearer_token,
)
from sincere.serve.security.storage import SqliteStorage

NOW = 1_700_000_000.0
PRICES = Prices.per_million(1.0, 2.0)
FACTS = RequestFacts(model="llama-3-8b", prompt_tokens=100, max_tokens=100)


def _store(tmp_path: Path) -> KeyStore:
    return KeyStore(SqliteStorage(tmp_path / "keys.db"))


def _key(store: KeyStore, **spec: object) -> str:
    spec.setdefault("name", "acme")
    token, _ = store.create(KeySpec(**spec), actor="test", now=NOW)  # type: ignore[arg-type]
    return token


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _refused(decision: Grant | Refusal, status: int, code: str) -> Refusal:
    assert isinstance(decision, Refusal), decision
    assert (decision.status, decision.code) == (status, code), decision.message
    return decision


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"Authorization": "Basic abc"}, None),
        ({"Authorization": "Bearer"}, None),
        ({"authorization": "bearer  tok "}, "tok"),
        ({"Authorization": "Bearer sk-snc-x"}, "sk-snc-x"),
    ],
)
def test_bearer_token(headers: dict[str, str], expected: str | None) -> None:
    """Only a non-empty Bearer credential is taken, scheme case-insensitive."""
    assert bearer_token(headers) == expected


def test_no_key_and_bad_key_are_401_without_echoing_the_token(tmp_path: Path) -> None:
    """Missing or wrong keys get 401 with WWW-Authenticate; the message never quotes the key."""
    store = _store(tmp_path)
    token = _key(store)
    missing = _refused(authorize_request(store, {}, FACTS, PRICES, NOW), 401, "missing_api_key")
    assert ("WWW-Authenticate", "Bearer") in missing.headers
    forged = token[:-4] + "AAAA"
    bad = _refused(
        authorize_request(store, _auth(forged), FACTS, PRICES, NOW), 401, "invalid_api_key"
    )
    assert forged not in str(bad.body()) and forged.rpartition(".")[2] not in bad.message
    assert bad.body()["error"]["type"] == "authentication_error"


def test_revoked_and_expired_keys_are_401(tmp_path: Path) -> None:
    """A revoked key and a key past its expiry are refused with their own codes."""
    store = _store(tmp_path)
    revoked = _key(store)
    record = store.authenticate(revoked)
    assert record is not None
    store.revoke(record.key_id, actor="test", now=NOW)
    _refused(authorize_request(store, _auth(revoked), FACTS, PRICES, NOW), 401, "key_revoked")
    expiring = _key(store, expires_at=NOW + 60)
    assert isinstance(authorize_request(store, _auth(expiring), FACTS, PRICES, NOW + 59), Grant)
    late = _refused(
        authorize_request(store, _auth(expiring), FACTS, PRICES, NOW + 60), 401, "key_expired"
    )
    assert "expired at 2023-11-14T22:14:20+00:00" in late.message


def test_wrong_model_and_tier_are_403(tmp_path: Path) -> None:
    """A model or declared tier outside the key's is 403 naming what the key allows."""
    store = _store(tmp_path)
    token = _key(store, models=frozenset({"llama-3-8b", "mistral-7b"}), tier="batch")
    other = RequestFacts(model="llama-3-70b", prompt_tokens=1, max_tokens=1)
    refusal = _refused(
        authorize_request(store, _auth(token), other, PRICES, NOW), 403, "model_not_allowed"
    )
    assert refusal.message == "model: got 'llama-3-70b'; this key allows: llama-3-8b, mistral-7b"
    assert refusal.body()["error"]["param"] == "model"
    tier = RequestFacts(model="llama-3-8b", prompt_tokens=1, max_tokens=1, tier="interactive")
    _refused(authorize_request(store, _auth(token), tier, PRICES, NOW), 403, "tier_not_allowed")


def test_admin_key_is_refused_for_inference_and_client_key_for_admin(tmp_path: Path) -> None:
    """Admin keys serve only the admin API; client keys never pass the admin check."""
    store = _store(tmp_path)
    client = _key(store)
    admin = _key(store, kind="admin", name="ops")
    decision = authorize_request(store, _auth(admin), FACTS, PRICES, NOW)
    _refused(decision, 403, "admin_key_not_allowed")
    refusal = authorize_admin(store, _auth(client), NOW)
    assert isinstance(refusal, Refusal) and refusal.code == "client_key_not_allowed"
    assert isinstance(authorize_admin(store, {}, NOW), Refusal)
    grant = authorize_admin(store, _auth(admin), NOW)
    assert isinstance(grant, AdminGrant) and grant.actor.startswith("admin:ops/")


def test_grant_carries_tier_priority_ceiling_and_budget_header(tmp_path: Path) -> None:
    """A grant gives the key's tier, caps the priority a client asks for, shows budget left."""
    store = _store(tmp_path)
    token = _key(store, tier="interactive", priority_ceiling=2, budget_usd=1.0)
    grant = authorize_request(store, _auth(token), FACTS, PRICES, NOW)
    assert isinstance(grant, Grant)
    assert (grant.tenant, grant.tier) == ("acme", "interactive")
    assert grant.priority(requested=-1_000_000, default=5) == 2  # cannot jump the queue
    assert grant.priority(requested=9, default=5) == 9  # may lower its own priority
    assert grant.priority(requested=None, default=0) == 2
    assert dict(grant.headers)[BUDGET_HEADER] == "0.999700"  # 100 in + 100 out reserved


def test_requests_per_minute_429_with_retry_after(tmp_path: Path) -> None:
    """The (n+1)-th request in a minute is 429 with Retry-After; it passes once the window moves."""
    store = _store(tmp_path)
    token = _key(store, max_requests_per_min=3)
    for i in range(3):
        assert isinstance(authorize_request(store, _auth(token), FACTS, PRICES, NOW + i), Grant)
    refusal = _refused(
        authorize_request(store, _auth(token), FACTS, PRICES, NOW + 3),
        429,
        "requests_per_minute_exceeded",
    )
    wait = int(dict(refusal.headers)["Retry-After"])
    assert 1 <= wait <= 61
    assert isinstance(authorize_request(store, _auth(token), FACTS, PRICES, NOW + 3 + wait), Grant)


def test_tokens_per_minute_counts_worst_case_then_settles(tmp_path: Path) -> None:
    """TPM holds prompt + max_tokens while in flight and only what was used once settled."""
    store = _store(tmp_path)
    token = _key(store, max_tokens_per_min=500)
    first = authorize_request(store, _auth(token), FACTS, PRICES, NOW)  # holds 200
    second = authorize_request(store, _auth(token), FACTS, PRICES, NOW)  # holds 400
    assert isinstance(first, Grant) and isinstance(second, Grant)
    _refused(
        authorize_request(store, _auth(token), FACTS, PRICES, NOW),
        429,
        "tokens_per_minute_exceeded",
    )
    store.settle(first.reservation, 100, 0, PRICES)  # 100 used: frees 100, 500 fit again
    assert isinstance(authorize_request(store, _auth(token), FACTS, PRICES, NOW), Grant)
    huge = RequestFacts(model="m", prompt_tokens=400, max_tokens=400)
    refusal = _refused(
        authorize_request(store, _auth(token), huge, PRICES, NOW), 429, "tokens_per_minute_exceeded"
    )
    assert "Retry-After" not in dict(refusal.headers)
    assert "more than the key's limit" in refusal.message


def test_budget_402_once_spent(tmp_path: Path) -> None:
    """When the budget cannot cover the worst case, 402 names the remaining budget."""
    store = _store(tmp_path)
    token = _key(store, budget_usd=0.0005)  # 1.67 requests of 300 µUSD worst case
    grant = authorize_request(store, _auth(token), FACTS, PRICES, NOW)
    assert isinstance(grant, Grant)
    refusal = _refused(
        authorize_request(store, _auth(token), FACTS, PRICES, NOW), 402, "budget_exhausted"
    )
    assert dict(refusal.headers)[BUDGET_HEADER] == "0.000200"
    store.settle(grant.reservation, 100, 100, PRICES)
    again = _refused(
        authorize_request(store, _auth(token), FACTS, PRICES, NOW), 402, "budget_exhausted"
    )
    assert again.body()["error"]["type"] == "insufficient_quota"


def test_refusals_consume_nothing(tmp_path: Path) -> None:
    """A request refused for budget leaves the request and token windows untouched."""
    store = _store(tmp_path)
    token = _key(store, budget_usd=0.0, max_requests_per_min=5, max_tokens_per_min=10_000)
    for _ in range(10):
        decision = authorize_request(store, _auth(token), FACTS, PRICES, NOW)
        _refused(decision, 402, "budget_exhausted")
    record = store.authenticate(token)
    assert record is not None
    assert store.window_totals(record.key_id, NOW) == (0, 0)


def test_concurrent_load_never_overspends_or_overruns(tmp_path: Path) -> None:
    """200 tasks racing on one key: spend <= budget, admitted <= rpm, every reservation settled."""
    store = _store(tmp_path)
    budget = 0.01
    token = _key(store, budget_usd=budget, max_requests_per_min=150)
    rng = random.Random(7)
    outcomes: list[int] = []

    async def one(delay: float, used: int) -> None:
        await asyncio.sleep(delay)
        decision = authorize_request(store, _auth(token), FACTS, PRICES, NOW)
        if isinstance(decision, Refusal):
            outcomes.append(decision.status)
            return
        outcomes.append(200)
        await asyncio.sleep(rng.uniform(0, 0.002))  # the request is in flight
        store.settle(decision.reservation, 100, used, PRICES)

    async def main() -> None:
        jobs = [one(rng.uniform(0, 0.005), rng.randint(0, 100)) for _ in range(200)]
        await asyncio.gather(*jobs)

    asyncio.run(main())
    record = store.authenticate(token)
    assert record is not None
    spent = store.totals(record.key_id).spent_usd
    assert spent <= budget + 1e-12
    assert outcomes.count(200) <= 150 and store.num_open == 0
    assert outcomes.count(402) > 0  # the budget, not only the rate, did refuse some
    assert set(outcomes) <= {200, 402, 429}


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.integers(0, 300), st.integers(0, 40)), max_size=80),
)
def test_interleavings_overspend_at_most_the_estimate_error(
    ops: list[tuple[bool, int, int]],
) -> None:
    """Any order of admits and settles: spend <= budget + the excess of actual over reserved."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        store = _store(Path(folder))
        budget = 0.003
        token = _key(store, budget_usd=budget)
        open_grants: list[Grant] = []
        excess = 0.0
        for admit, max_tokens, prompt_error in ops:
            if admit or not open_grants:
                facts = RequestFacts("m", 50, max_tokens)
                decision = authorize_request(store, _auth(token), facts, PRICES, NOW)
                if isinstance(decision, Grant):
                    open_grants.append(decision)
                continue
            grant = open_grants.pop(0)
            reserved = grant.reservation
            used = reserved.reserved_tokens - 50  # the whole max_tokens
            cost = store.settle(reserved, 50 + prompt_error, used, PRICES)
            excess += max(0.0, cost - reserved.reserved_usd)
        record = store.authenticate(token)
        assert record is not None
        assert store.totals(record.key_id).spent_usd <= budget + excess + 1e-12


def test_outcomes_are_counted_per_tenant(tmp_path: Path) -> None:
    """Each decision counts once under its tenant; requests without a valid key under ''."""
    from prometheus_client import CollectorRegistry

    from sincere.serve.security.metrics import TenantMetrics

    registry = CollectorRegistry()
    store = KeyStore(SqliteStorage(tmp_path / "keys.db"), metrics=TenantMetrics(registry))
    token = _key(store, max_requests_per_min=1, models=frozenset({"llama-3-8b"}))
    other = RequestFacts(model="other", prompt_tokens=1, max_tokens=1)
    authorize_request(store, _auth(token), FACTS, PRICES, NOW)  # allowed
    authorize_request(store, _auth(token), FACTS, PRICES, NOW)  # rate_limited
    authorize_request(store, _auth(token), other, PRICES, NOW)  # forbidden
    authorize_request(store, {}, FACTS, PRICES, NOW)  # unauthenticated

    def count(tenant: str, outcome: str) -> float | None:
        labels = {"tenant": tenant, "outcome": outcome}
        return registry.get_sample_value("sincere_tenant_requests_total", labels)

    assert count("acme", "allowed") == 1
    assert count("acme", "rate_limited") == 1
    assert count("acme", "forbidden") == 1
    assert count("", "unauthenticated") == 1
