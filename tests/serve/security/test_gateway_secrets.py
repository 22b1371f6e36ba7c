"""Upstream credentials reach the upstream and nothing else; the gateway over real TLS.

A canary upstream key is read from an environment variable; it must arrive upstream as
``Authorization: Bearer`` and never show in the gateway's answers (an upstream error body
that echoes it included), ``/metrics``, ``/admin`` listings, the config echo or its logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from tests.serve.security.test_gateway import BODY, bearer, gateway_config, make_keys, post, run
from tests.serve.security.test_tls import _self_signed

from sincere.serve.app import compose
from sincere.serve.security.keys import KeySpec

CANARY_KEY = "sk-upstream-CANARY-7d41e09b2a6c5f38"


class RecordingUpstream:
    """An OpenAI-like upstream that records Authorization headers; prompt 'echo' -> 400."""

    def __init__(self) -> None:
        self.auth: list[str] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def _complete(self, request: web.Request) -> web.Response:
        self.auth.append(request.headers.get("Authorization", ""))
        body = await request.json()
        if body.get("prompt") == "echo":  # a careless upstream quoting the request's headers
            text = f"bad request; you sent Authorization: {request.headers['Authorization']}"
            return web.json_response({"error": {"message": text}}, status=400)
        usage = {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}
        return web.json_response({"choices": [{"index": 0, "text": " ok"}], "usage": usage})

    async def __aenter__(self) -> RecordingUpstream:
        app = web.Application()
        app.router.add_post("/v1/completions", self._complete)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


def test_upstream_key_is_sent_and_never_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The upstream gets the key; answers, error bodies, metrics, admin, config, logs do not."""
    monkeypatch.setenv("UPSTREAM_KEY_B0", CANARY_KEY)
    keys = tmp_path / "keys.db"
    tokens = make_keys(keys, acme=KeySpec(name="acme"), ops=KeySpec(kind="admin", name="ops"))
    seen: list[str] = []
    caplog.set_level(logging.DEBUG)

    async def body() -> None:
        async with RecordingUpstream() as up:
            url = f"http://127.0.0.1:{up.port}"
            security = {"upstream_keys": {"b0": {"env": "UPSTREAM_KEY_B0"}}}
            cfg = gateway_config(url, keys, security=security)
            seen.append(cfg.model_dump_json())
            async with compose(cfg) as gw, aiohttp.ClientSession() as s:
                status, answer, _ = await post(s, gw.url, tokens["acme"])
                assert status == 200
                status, answer, _ = await post(
                    s, gw.url, tokens["acme"], {**BODY, "prompt": "echo"}
                )
                assert status == 400 and "***" in answer["error"]["message"]
                seen.append(str(answer))
                for path in ("/metrics", "/admin/instances", "/health", "/v1/models"):
                    async with s.get(gw.url + path, headers=bearer(tokens["ops"])) as r:
                        seen.append(await r.text())
                gw.log.warning("upstream said: Authorization: Bearer %s", CANARY_KEY)
                logging.getLogger("sincere.serve.gateway.server").info("key=%s", CANARY_KEY)
                seen.append(repr(gw.auth.secrets))
            assert up.auth == [f"Bearer {CANARY_KEY}"] * 2

    run(body)
    seen.append(caplog.text)
    assert "UPSTREAM_KEY_B0" in seen[0]  # the config echo names where the key comes from
    leaks = [text[:80] for text in seen if CANARY_KEY in text]
    assert leaks == []


def test_missing_upstream_key_variable_fails_at_start(tmp_path: Path) -> None:
    """An upstream key from an unset variable is a start-up error naming the variable."""
    from sincere.core.errors import ConfigError

    security = {"upstream_keys": {"b0": {"env": "SINCERE_TEST_UNSET_VARIABLE"}}}
    with pytest.raises(ConfigError, match="env:SINCERE_TEST_UNSET_VARIABLE"):
        compose(gateway_config("http://127.0.0.1:9", None, security=security))


def test_gateway_over_real_tls(tmp_path: Path) -> None:
    """With tls_cert/tls_key the gateway speaks HTTPS: a trusting client is served, keys on."""
    cert, key = _self_signed(tmp_path)
    keys = tmp_path / "keys.db"
    tokens = make_keys(keys, acme=KeySpec(name="acme", expires_at=time.time() + 60))

    async def body() -> None:
        async with RecordingUpstream() as up:
            security = {"tls_cert": str(cert), "tls_key": str(key)}
            cfg = gateway_config(f"http://127.0.0.1:{up.port}", keys, security=security)
            async with compose(cfg) as gw, aiohttp.ClientSession() as s:
                assert gw.url.startswith("https://127.0.0.1:")
                trusting = ssl.create_default_context(cafile=str(cert))
                url = gw.url + "/v1/completions"
                async with s.post(
                    url, json=BODY, headers=bearer(tokens["acme"]), ssl=trusting
                ) as r:
                    answer: dict[str, Any] = await r.json()
                    assert r.status == 200 and answer["choices"][0]["text"] == " ok"
                with pytest.raises(aiohttp.ClientConnectorCertificateError):
                    await s.post(url, json=BODY, ssl=ssl.create_default_context())
                plain = url.replace("https://", "http://")
                with pytest.raises(aiohttp.ClientError):
                    await s.post(plain, json=BODY)  # the TLS port drops plain HTTP

    run(body)


def test_silent_tls_connections_hold_slots_and_are_closed_at_the_handshake_timeout(
    tmp_path: Path,
) -> None:
    """8 TCP clients that never send a ClientHello to a TLS gateway limited to 5: 3 refused, 5
    closed at the handshake timeout; a real client is served again once they are gone."""
    cert, key = _self_signed(tmp_path)
    keys = tmp_path / "keys.db"
    tokens = make_keys(keys, acme=KeySpec(name="acme", expires_at=time.time() + 60))
    limits = {"max_connections": 5, "tls_handshake_timeout_s": 1.0}

    async def closed_after(reader: asyncio.StreamReader) -> float:
        started = time.monotonic()
        with contextlib.suppress(ConnectionError):
            assert await asyncio.wait_for(reader.read(), 10) == b""
        return time.monotonic() - started

    async def body() -> None:
        async with RecordingUpstream() as up:
            security = {"tls_cert": str(cert), "tls_key": str(key)}
            cfg = gateway_config(
                f"http://127.0.0.1:{up.port}", keys, security=security, limits=limits
            )
            async with compose(cfg) as gw, aiohttp.ClientSession() as s:
                silent = [await asyncio.open_connection("127.0.0.1", gw.port) for _ in range(8)]
                await asyncio.sleep(0.3)
                assert gw.edge.num_open == 5  # counted before any handshake
                times = await asyncio.gather(*(closed_after(r) for r, _ in silent))
                refused = [t for t in times if t < 0.5]
                timed_out = [t for t in times if 0.6 <= t < 3.0]
                assert (len(refused), len(timed_out)) == (3, 5), times
                assert gw.edge.refused["max_connections"] == 3
                assert gw.edge.refused["tls_handshake_timeout"] == 5
                for _, writer in silent:
                    writer.close()
                await asyncio.sleep(0.1)
                assert gw.edge.num_open == 0
                trusting = ssl.create_default_context(cafile=str(cert))
                url = gw.url + "/v1/completions"
                async with s.post(
                    url, json=BODY, headers=bearer(tokens["acme"]), ssl=trusting
                ) as r:
                    assert r.status == 200

    run(body)
