"""What the gateway shows and to whom, and malformed headers answered 4xx, through HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from sincere.serve.app import compose
from sincere.serve.backends.fake_upstream import FakeUpstream
from sincere.serve.gateway.server import Gateway
from sincere.serve.security.keys import KeySpec

from .test_security_gateway import bearer, gateway_config, make_keys

EXPECT_REQUEST = (
    b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Expect: \xff\xfe100-continue\r\nContent-Length: 2\r\n\r\n{}"
)


def run(factory: Callable[[], Awaitable[None]]) -> None:
    """One async test body with a hard time bound."""
    asyncio.run(asyncio.wait_for(factory(), 30))


def test_expect_header_with_bytes_that_are_not_utf8_is_a_417() -> None:
    """``Expect:`` with invalid UTF-8 gets a JSON 417 naming the header, not a 500."""

    async def main() -> None:
        async with FakeUpstream() as up, Gateway(gateway_config(up.url, None)) as gw:
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            writer.write(EXPECT_REQUEST)
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(2000), 5)
            writer.close()
        assert answer.startswith(b"HTTP/1.1 417 ")
        assert b'"code":"expectation_failed"' in answer and b'"param":"Expect"' in answer

    run(main)


async def get(s: aiohttp.ClientSession, url: str, token: str | None) -> tuple[int, str]:
    headers = {} if token is None else bearer(token)
    async with s.get(url, headers=headers) as r:
        return r.status, await r.text()


def test_with_keys_metrics_health_and_models_show_only_what_the_caller_may_see(
    tmp_path: Path,
) -> None:
    """/metrics: 401 keyless, 403 for a client key, tenants for an admin key; /health:
    instance names to admins only; /v1/models: 401 keyless, a key's allowed models only."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(
        keys,
        acme=KeySpec(name="acme", models=frozenset({"m"})),
        ops=KeySpec(kind="admin", name="ops"),
    )

    async def main() -> None:
        async with (
            FakeUpstream(models=("m", "n")) as up,
            Gateway(gateway_config(up.url, keys)) as gw,
            aiohttp.ClientSession() as s,
        ):
            url = gw.url
            seen: dict[str, Any] = {
                "metrics": [await get(s, url + "/metrics", t) for t in (None, tokens["acme"])],
                "admin_metrics": await get(s, url + "/metrics", tokens["ops"]),
                "health": await get(s, url + "/health", None),
                "admin_health": await get(s, url + "/health", tokens["ops"]),
                "models": await get(s, url + "/v1/models", None),
                "acme_models": await get(s, url + "/v1/models", tokens["acme"]),
            }
        assert [status for status, _ in seen["metrics"]] == [401, 403]
        assert "acme" not in "".join(text for _, text in seen["metrics"])
        assert seen["admin_metrics"][0] == 200 and 'tenant="acme"' in seen["admin_metrics"][1]
        assert seen["health"][0] == 200 and "b0" not in seen["health"][1]
        assert '"b0"' in seen["admin_health"][1]
        assert seen["models"][0] == 401
        assert seen["acme_models"][0] == 200
        assert '"m"' in seen["acme_models"][1] and '"n"' not in seen["acme_models"][1]

    run(main)


def test_aggregate_metrics_are_open_without_tenant_labels(tmp_path: Path) -> None:
    """``metrics_access: aggregate``: a keyless scrape gets the gateway's figures, no tenant."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(keys, acme=KeySpec(name="acme"))

    async def main() -> None:
        security = {"metrics_access": "aggregate"}
        async with (
            FakeUpstream() as up,
            Gateway(gateway_config(up.url, keys, security=security)) as gw,
            aiohttp.ClientSession() as s,
        ):
            async with s.post(
                gw.url + "/v1/completions",
                json={"model": "m", "prompt": "hi", "max_tokens": 2},
                headers=bearer(tokens["acme"]),
            ) as r:
                assert r.status == 200
            status, text = await get(s, gw.url + "/metrics", None)
        assert status == 200 and "sincere_gateway_requests_total" in text
        assert "acme" not in text and "sincere_tenant" not in text

    run(main)


def test_a_metrics_key_reads_metrics_and_nothing_else(tmp_path: Path) -> None:
    """A metrics key (``sk-snc-metrics-``) gets /metrics with tenants; it is refused (403) the
    inference and admin APIs, and a client key is still refused /metrics."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(
        keys,
        acme=KeySpec(name="acme"),
        scraper=KeySpec(kind="metrics", name="prometheus"),
    )
    assert tokens["scraper"].startswith("sk-snc-metrics-")

    async def main() -> None:
        async with (
            FakeUpstream() as up,
            compose(gateway_config(up.url, keys)) as gw,
            aiohttp.ClientSession() as s,
        ):
            body = {"model": "m", "prompt": "hi", "max_tokens": 2}
            async with s.post(
                gw.url + "/v1/completions", json=body, headers=bearer(tokens["acme"])
            ) as r:
                assert r.status == 200
            status, text = await get(s, gw.url + "/metrics", tokens["scraper"])
            assert status == 200 and 'tenant="acme"' in text
            assert (await get(s, gw.url + "/metrics", tokens["acme"]))[0] == 403
            async with s.post(
                gw.url + "/v1/completions", json=body, headers=bearer(tokens["scraper"])
            ) as r:
                answer = await r.json()
                assert (r.status, answer["error"]["code"]) == (403, "metrics_key_not_allowed")
            status, text = await get(s, gw.url + "/admin/instances", tokens["scraper"])
            assert status == 403 and "metrics_key_not_allowed" in text

    run(main)


def test_metrics_show_per_tenant_series_for_the_top_tenants_only(tmp_path: Path) -> None:
    """``metrics_max_tenants: 2`` with 4 tenants: a scrape shows 2 tenants and ``(other)``;
    an admin key's ``?tenants=all`` shows all 4, a metrics key's stays capped."""
    keys = tmp_path / "keys.db"
    tenants = {f"t{k}": KeySpec(name=f"t{k}") for k in range(4)}
    tokens = make_keys(
        keys,
        ops=KeySpec(kind="admin", name="ops"),
        scraper=KeySpec(kind="metrics", name="prometheus"),
        **tenants,
    )

    async def main() -> None:
        security = {"metrics_max_tenants": 2}
        async with (
            FakeUpstream() as up,
            Gateway(gateway_config(up.url, keys, security=security)) as gw,
            aiohttp.ClientSession() as s,
        ):
            for k in range(4):
                for _ in range(k + 1):  # t3 spends most
                    async with s.post(
                        gw.url + "/v1/completions",
                        json={"model": "m", "prompt": "hi", "max_tokens": 2},
                        headers=bearer(tokens[f"t{k}"]),
                    ) as r:
                        assert r.status == 200
            capped = (await get(s, gw.url + "/metrics", tokens["scraper"]))[1]
            still = (await get(s, gw.url + "/metrics?tenants=all", tokens["scraper"]))[1]
            every = (await get(s, gw.url + "/metrics?tenants=all", tokens["ops"]))[1]
        for page in (capped, still):
            assert 'tenant="t3"' in page and 'tenant="t2"' in page and 'tenant="(other)"' in page
            assert 'tenant="t0"' not in page and "sincere_tenant_series_omitted 2" in page
        assert all(f'tenant="t{k}"' in every for k in range(4)) and 'tenant="(other)"' not in every

    run(main)
