"""The gateway with keys on: 401/403/429 at the front door, admin keys, audit, spend persisted.

Real HTTP on 127.0.0.1: the gateway and in-process fake upstreams, a key store in a
temporary SQLite file (or JSON keys file) made with the same calls ``sincere keys`` uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sincere.core.errors import ConfigError
from sincere.serve.app import compose
from sincere.serve.backends.fake_upstream import FakeUpstream
from sincere.serve.gateway.config import GatewayConfig, parse_config
from sincere.serve.gateway.server import Gateway
from sincere.serve.security.keys import KeySpec
from sincere.serve.security.keystore import KeyStore
from sincere.serve.security.policy import BUDGET_HEADER

BODY = {"model": "m", "prompt": "hello there", "max_tokens": 4}
PRICE_OUT_PER_1M = 1_000_000.0  # 1 USD per generated token: budgets in whole requests


def run(factory: Callable[[], Awaitable[None]]) -> None:
    """One async test body with a hard time bound."""
    asyncio.run(asyncio.wait_for(factory(), 30))


def make_keys(path: Path, **specs: KeySpec) -> dict[str, str]:
    """Tokens of freshly created keys in the store at ``path``, by the given labels."""
    store = KeyStore.open(path)
    try:
        return {
            label: store.create(spec, actor="test", now=time.time())[0]
            for label, spec in specs.items()
        }
    finally:
        store.close()


def gateway_config(
    url: str, keys: Path | None, security: dict[str, Any] | None = None, **extra: Any
) -> GatewayConfig:
    backend = {
        "name": "b0",
        "url": url,
        "models": ["m", "n"],
        "metrics_path": None,
        "price_out_per_1m_usd": PRICE_OUT_PER_1M,
    }
    raw: dict[str, Any] = {
        "port": 0,
        "backends": [backend],
        "scrape": {"enabled": False},
        "admission": {"enabled": False},
        "tiers": {"default": {"priority": 5}, "interactive": {"priority": 0}},
        "security": {
            "keys": None if keys is None else str(keys),
            "flush_interval_s": 0.05,
            **(security or {}),
        },
    }
    raw.update(extra)
    return parse_config(raw)


@contextlib.asynccontextmanager
async def serving(
    keys: Path, upstream: FakeUpstream, **extra: Any
) -> AsyncIterator[tuple[FakeUpstream, Gateway, aiohttp.ClientSession]]:
    """``upstream`` started, a gateway with the key store ``keys`` over it, a client session."""
    async with (
        upstream as up,
        compose(gateway_config(up.url, keys, **extra)) as gw,
        aiohttp.ClientSession() as s,
    ):
        yield up, gw, s


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def post(
    s: aiohttp.ClientSession, url: str, token: str | None, body: dict[str, Any] = BODY
) -> tuple[int, dict[str, Any], dict[str, str]]:
    headers = {} if token is None else bearer(token)
    async with s.post(url + "/v1/completions", json=body, headers=headers) as r:
        return r.status, await r.json(), dict(r.headers)


def test_no_key_wrong_key_and_valid_key(tmp_path: Path) -> None:
    """No key and a wrong key get 401 (with WWW-Authenticate); a client key gets its answer."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(keys, acme=KeySpec(name="acme", budget_usd=100.0))

    async def body() -> None:
        async with serving(keys, FakeUpstream()) as (up, gw, s):
            status, answer, headers = await post(s, gw.url, None)
            assert (status, answer["error"]["code"]) == (401, "missing_api_key")
            assert headers["WWW-Authenticate"] == "Bearer"
            forged = tokens["acme"][:-4] + "AAAA"
            status, answer, _ = await post(s, gw.url, forged)
            assert (status, answer["error"]["code"]) == (401, "invalid_api_key")
            assert forged not in json.dumps(answer)
            status, answer, headers = await post(s, gw.url, tokens["acme"])
            assert status == 200 and answer["choices"][0]["text"]
            assert float(headers[BUDGET_HEADER]) == pytest.approx(100.0 - 4.0)
            assert up.bodies and len(up.bodies) == 1  # refused requests never went upstream

    run(body)


def test_wrong_model_and_admin_key_are_403(tmp_path: Path) -> None:
    """A key limited to model m gets 403 for model n; an admin key cannot send requests."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(
        keys,
        acme=KeySpec(name="acme", models=frozenset({"m"})),
        ops=KeySpec(kind="admin", name="ops"),
    )

    async def body() -> None:
        async with serving(keys, FakeUpstream()) as (_up, gw, s):
            status, answer, _ = await post(s, gw.url, tokens["acme"], {**BODY, "model": "n"})
            assert (status, answer["error"]["code"]) == (403, "model_not_allowed")
            assert "allows: m" in answer["error"]["message"]
            status, answer, _ = await post(s, gw.url, tokens["ops"])
            assert (status, answer["error"]["code"]) == (403, "admin_key_not_allowed")
            status, _, _ = await post(s, gw.url, tokens["acme"])
            assert status == 200

    run(body)


def test_rate_limit_under_concurrent_load(tmp_path: Path) -> None:
    """Of 12 concurrent requests on a 5-per-minute key exactly 5 pass; the rest get 429."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(keys, acme=KeySpec(name="acme", max_requests_per_min=5))

    async def body() -> None:
        async with serving(keys, FakeUpstream(ttft_s=0.05)) as (_up, gw, s):
            results = await asyncio.gather(*(post(s, gw.url, tokens["acme"]) for _ in range(12)))
            statuses = sorted(r[0] for r in results)
            assert statuses == [200] * 5 + [429] * 7
            refused = [r for r in results if r[0] == 429]
            assert all(r[1]["error"]["code"] == "requests_per_minute_exceeded" for r in refused)
            assert all(1 <= int(r[2]["Retry-After"]) <= 61 for r in refused)

    run(body)


def test_tokens_per_minute_limit(tmp_path: Path) -> None:
    """A tokens-per-minute limit counts prompt + max_tokens; an impossible request says so."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(keys, acme=KeySpec(name="acme", max_tokens_per_min=40))

    async def body() -> None:
        async with serving(keys, FakeUpstream()) as (_up, gw, s):
            status, answer, headers = await post(
                s, gw.url, tokens["acme"], {**BODY, "max_tokens": 60}
            )
            assert (status, answer["error"]["code"]) == (429, "tokens_per_minute_exceeded")
            assert "Retry-After" not in headers and "lower max_tokens" in answer["error"]["message"]
            codes = [(await post(s, gw.url, tokens["acme"]))[0] for _ in range(12)]
            assert codes[0] == 200 and codes[-1] == 429

    run(body)


def test_budget_never_overspent_under_load_and_persists(tmp_path: Path) -> None:
    """40 racing requests on a 10-USD budget: spend stays within budget; then 429
    insufficient_quota (as OpenAI) with no quick retry; the spend persists."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(
        keys, acme=KeySpec(name="acme", budget_usd=10.0), ops=KeySpec(kind="admin", name="ops")
    )
    # each request reserves 2 generated tokens at 1 USD, and the upstream makes 2 tokens

    async def body() -> None:
        async with serving(keys, FakeUpstream(num_tokens=2, ttft_s=0.02)) as (_up, gw, s):
            small = {**BODY, "max_tokens": 2}
            results = await asyncio.gather(
                *(post(s, gw.url, tokens["acme"], small) for _ in range(40))
            )
            served = [r for r in results if r[0] == 200]
            refused = [r for r in results if r[0] != 200]
            assert len(served) == 5  # 10 USD / 2 USD worst case: never a sixth
            assert {r[0] for r in refused} == {429}
            assert all(r[1]["error"]["code"] == "insufficient_quota" for r in refused)
            assert all(r[1]["error"]["type"] == "insufficient_quota" for r in refused)
            status, _, headers = await post(s, gw.url, tokens["acme"], small)
            assert status == 429 and float(headers[BUDGET_HEADER]) == 0.0
            assert headers["x-should-retry"] == "false" and int(headers["Retry-After"]) >= 10
            as_admin = bearer(tokens["ops"])
            metrics = await (await s.get(gw.url + "/metrics", headers=as_admin)).text()
            assert 'sincere_tenant_requests_total{outcome="allowed",tenant="acme"} 5.0' in metrics
            assert 'sincere_tenant_spend_usd_total{tenant="acme"} 10.0' in metrics
            assert (
                'sincere_tenant_requests_total{outcome="budget_exhausted",tenant="acme"}' in metrics
            )

    run(body)
    store = KeyStore.open(keys)  # after a restart: the settled spend was written
    try:
        record = next(r for r in store.records() if r.name == "acme")
        totals = store.totals(record.key_id)
        assert (totals.spent_usd, totals.num_requests) == (10.0, 5)
        assert totals.num_completion_tokens == 10
        assert store.remaining_usd(record.key_id) == 0.0
    finally:
        store.close()


def test_key_tier_sets_the_requests_tier(tmp_path: Path) -> None:
    """A key whose tier is 'interactive' is served in that tier, not the default one."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(
        keys,
        fast=KeySpec(name="fast", tier="interactive"),
        slow=KeySpec(name="slow"),
        ops=KeySpec(kind="admin", name="ops"),
    )

    async def body() -> None:
        async with serving(keys, FakeUpstream(), default_tier="default") as (_up, gw, s):
            assert (await post(s, gw.url, tokens["fast"]))[0] == 200
            assert (await post(s, gw.url, tokens["slow"]))[0] == 200
            slow_asks_fast = {**BODY, "sincere": {"tier": "interactive"}}
            status, answer, _ = await post(s, gw.url, tokens["slow"], slow_asks_fast)
            assert status == 403 and answer["error"]["param"] == "sincere.tier"
            as_admin = bearer(tokens["ops"])
            metrics = await (await s.get(gw.url + "/metrics", headers=as_admin)).text()
        served = [line for line in metrics.splitlines() if 'outcome="ok"' in line]
        assert any('tier="interactive"' in line and line.endswith(" 1") for line in served), served
        assert any('tier="default"' in line and line.endswith(" 1") for line in served), served

    run(body)


def test_expired_and_revoked_keys_get_401(tmp_path: Path) -> None:
    """A key past its expiry, or revoked while the gateway runs, gets 401 naming why."""
    keys = tmp_path / "keys.json"
    tokens = make_keys(
        keys,
        old=KeySpec(name="old", expires_at=time.time() + 3600),
        live=KeySpec(name="live"),
    )
    doc = json.loads(keys.read_text())
    doc["keys"][0]["expires_at"] = time.time() - 1  # as if the hour had passed
    keys.write_text(json.dumps(doc))

    async def body() -> None:
        async with FakeUpstream() as up:
            cfg = gateway_config(up.url, keys, security={"refresh_interval_s": 0.05})
            async with compose(cfg) as gw, aiohttp.ClientSession() as s:
                status, answer, _ = await post(s, gw.url, tokens["old"])
                assert (status, answer["error"]["code"]) == (401, "key_expired")
                assert (await post(s, gw.url, tokens["live"]))[0] == 200
                other = KeyStore.open(keys)  # `sincere keys revoke` in another process
                other.revoke(other.records()[1].key_id, actor="cli:test", now=time.time())
                other.close()
                for _ in range(100):
                    status, answer, _ = await post(s, gw.url, tokens["live"])
                    if status == 401:
                        break
                    await asyncio.sleep(0.02)
                assert (status, answer["error"]["code"]) == (401, "key_revoked")

    run(body)


def test_admin_api_needs_an_admin_key_and_audits_changes(tmp_path: Path) -> None:
    """/admin refuses no key (401) and client keys (403); an admin's change is audited by name."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(keys, acme=KeySpec(name="acme"), ops=KeySpec(kind="admin", name="ops"))

    async def body() -> None:
        async with serving(keys, FakeUpstream()) as (_up, gw, s):
            url = gw.url + "/admin/models"
            change = {"name": "extra"}
            async with s.get(url) as r:
                assert r.status == 401
            async with s.post(url, json=change, headers=bearer(tokens["acme"])) as r:
                answer = await r.json()
                assert (r.status, answer["error"]["code"]) == (403, "client_key_not_allowed")
            async with s.get(gw.url + "/admin/instances", headers=bearer(tokens["ops"])) as r:
                assert r.status == 200
            async with s.post(url, json=change, headers=bearer(tokens["ops"])) as r:
                assert r.status == 200
            async with s.get(url, headers=bearer(tokens["ops"])) as r:
                names = [m["name"] for m in (await r.json())["models"]]
                assert "extra" in names

    run(body)
    audit = [
        json.loads(line) for line in (tmp_path / "keys.db.audit.jsonl").read_text().splitlines()
    ]
    changes = [a for a in audit if a["action"] == "model.register"]
    assert len(changes) == 1  # the refused attempt changed nothing and is not a change
    assert changes[0]["actor"].startswith("admin:ops/") and changes[0]["target"] == "extra"
    assert all(tokens["ops"] not in json.dumps(a) for a in audit)


def test_non_loopback_without_keys_is_refused() -> None:
    """Binding a non-loopback address without keys fails before binding, naming the flag."""
    cfg = gateway_config("http://127.0.0.1:9", None, host="0.0.0.0")

    async def body() -> None:
        with pytest.raises(ConfigError, match="--insecure-no-auth"):
            await compose(cfg).start()

    run(body)


def test_edge_limits_with_auth_on_keep_the_gateway_responsive(tmp_path: Path) -> None:
    """Oversize, malformed and slow requests (with a valid key) get 4xx; a good one still passes."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(keys, acme=KeySpec(name="acme"))
    limits = {"max_body_bytes": 2048, "header_timeout_s": 0.3, "body_timeout_s": 0.3}

    async def body() -> None:
        async with serving(keys, FakeUpstream(), limits=limits) as (_up, gw, s):
            auth = bearer(tokens["acme"])
            big = {**BODY, "prompt": "x" * 5000}
            async with s.post(gw.url + "/v1/completions", json=big, headers=auth) as r:
                assert r.status == 413
            bad = b'{"model": "m", "prompt": '
            headers = {**auth, "Content-Type": "application/json"}
            async with s.post(gw.url + "/v1/completions", data=bad, headers=headers) as r:
                assert r.status == 400
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")  # never finishes
            answer = await asyncio.wait_for(reader.read(), 5)
            assert answer.startswith(b"HTTP/1.1 408")
            writer.close()
            assert (await post(s, gw.url, tokens["acme"]))[0] == 200

    run(body)


def test_a_request_without_max_tokens_is_capped_in_its_own_bytes() -> None:
    """With keys on, a body without max_tokens gets the default cap appended, else re-encoded."""
    from sincere.serve.gateway.requests import with_cap
    from sincere.serve.protocol import parse_request

    raw = b'{"model": "m", "prompt": "hi"}\n'
    capped = with_cap(parse_request(raw, "completion"), 7)
    assert json.loads(capped.raw) == {"model": "m", "prompt": "hi", "max_tokens": 7}
    assert capped.max_tokens == 7 and capped.body["max_tokens"] == 7
    nulled = with_cap(
        parse_request(b'{"model": "m", "prompt": "hi", "max_tokens": null}', "completion"), 7
    )
    assert nulled.raw == b"" and nulled.body["max_tokens"] == 7  # re-encoded upstream
    given = parse_request(b'{"model": "m", "prompt": "hi", "max_tokens": 3}', "completion")
    assert with_cap(given, 7) is given
