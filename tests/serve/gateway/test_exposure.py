"""What the gateway shows and to whom, and malformed headers answered 4xx, through HTTP."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tests.serve.security.test_gateway import bearer, gateway_config, make_keys, serving

from sincere.serve.app import compose
from sincere.serve.backends.fake_upstream import FakeUpstream
from sincere.serve.gateway.server import Gateway
from sincere.serve.security.keys import KeySpec

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


def _raw_request(method: bytes, path: bytes, head: bytes, body: bytes = b"") -> bytes:
    return (
        method + b" " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    )  # fmt: skip


async def _exchange(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(4000), 5)
    finally:
        writer.close()


def test_a_bad_expect_header_is_a_4xx_on_every_method_and_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``Expect:`` with bytes that are not UTF-8, on routed paths, admin routes, unknown paths
    and methods no route takes: a 417 (never a 500, no traceback logged)."""
    keys = tmp_path / "keys.db"
    make_keys(keys, ops=KeySpec(kind="admin", name="ops"))
    paths = (b"/v1/completions", b"/health", b"/admin/models", b"/admin/instances/x", b"/nope",
             b"/v1/nope/deeper")  # fmt: skip
    methods = (b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS")

    async def main() -> list[tuple[bytes, bytes, bytes]]:
        async with serving(keys, FakeUpstream()) as (_up, gw, _s):
            return [
                (m, p, await _exchange(gw.port, _raw_request(m, p, b"Expect: \xff\xfe1\r\n")))
                for m in methods
                for p in paths
            ]

    caplog.set_level(logging.INFO)
    answers = asyncio.run(asyncio.wait_for(main(), 30))
    for method, path, answer in answers:
        assert answer.startswith(b"HTTP/1.1 417 "), (method, path, answer[:200])
        assert b'"code":"expectation_failed"' in answer
    assert "Traceback" not in caplog.text and "Error handling request" not in caplog.text


def test_unrouted_paths_and_methods_answer_404_and_405_as_before() -> None:
    """The route that carries the Expect check for unknown paths keeps aiohttp's answers:
    404 for an unknown path, 405 naming the allowed methods for a known one."""

    async def main() -> list[tuple[int, str]]:
        async with (
            FakeUpstream() as up,
            Gateway(gateway_config(up.url, None)) as gw,
            aiohttp.ClientSession() as s,
        ):
            got = []
            for method, path in (("GET", "/nope"), ("POST", "/health"), ("GET", "/v1/models")):
                async with s.request(method, gw.url + path) as r:
                    allow = r.headers.get("Allow", "").replace(" ", "")
                    got.append((r.status, ",".join(sorted(allow.split(",")))))
            return got

    assert asyncio.run(asyncio.wait_for(main(), 30)) == [(404, ""), (405, "GET,HEAD"), (200, "")]


def _surrogate_bodies(rng: random.Random, num: int) -> list[bytes]:
    """Admin bodies with a lone surrogate in a key, at the top or nested (a seeded corpus)."""
    fields = ["name", "model", "emulator", "url", "loads", "sizing", "apply", "join"]
    bodies = []
    for _ in range(num):
        surrogate = rng.choice([0xD800, 0xDBFF, 0xDC00, 0xDFFF, 0xDABC])
        bad = f"\\u{surrogate:04x}"
        key = rng.choice(["", "x", "name"])
        bad_key = f'"{key[: rng.randint(0, len(key))]}{bad}{key}"'
        value = rng.choice(["1", '"v"', "null", "[1]", "{}"])
        inner = f"{{{bad_key}: {value}}}"
        where = rng.randint(0, 3)
        good = f'"{rng.choice(fields)}": "m"'
        text = (
            f"{{{bad_key}: 1, {good}}}" if where == 0
            else f'{{{good}, "emulator": {inner}}}' if where == 1
            else f'{{"loads": [{inner}], {good}}}' if where == 2
            else f'{{{good}, "x": [[{inner}]]}}'
        )  # fmt: skip
        bodies.append(text.encode())
    return bodies


def test_admin_bodies_with_lone_surrogates_in_keys_are_400(tmp_path: Path) -> None:
    """A seeded corpus of 60 admin bodies with a lone surrogate in a JSON key, over every
    admin POST route with an admin key (so each answer is audited): 400 each, never 500."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(keys, ops=KeySpec(kind="admin", name="ops"))
    bodies = _surrogate_bodies(random.Random(7), 20)
    auth = f"Authorization: Bearer {tokens['ops']}\r\n".encode()

    async def main() -> list[tuple[bytes, bytes, bytes]]:
        async with serving(keys, FakeUpstream()) as (_up, gw, _s):
            return [
                (path, body, await _exchange(gw.port, _raw_request(b"POST", path, auth, body)))
                for path in (b"/admin/models", b"/admin/instances", b"/admin/plan")
                for body in bodies
            ]

    answers = asyncio.run(asyncio.wait_for(main(), 60))
    assert len(answers) == 60
    for path, body, answer in answers:
        assert answer.startswith(b"HTTP/1.1 400 "), (path, body, answer[:300])
