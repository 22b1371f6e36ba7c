"""What the gateway says and logs when things go wrong: no secrets, no 5xx from input, no floods."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tests.outsider._gateway import (
    BODY,
    SecretUpstream,
    call,
    gateway_config,
    metric,
    run,
)

from sincere.cli.app import main
from sincere.serve.app import compose
from sincere.serve.backends.fake_upstream import FakeUpstream


def test_listed_instances_hide_upstream_credentials() -> None:
    """``GET /admin/instances`` shows a backend URL without its user and password."""

    async def body() -> str:
        async with FakeUpstream() as up:
            url = up.url.replace("http://", "http://app:hunter2@")
            async with compose(gateway_config([url])) as gw, aiohttp.ClientSession() as s:
                return json.dumps(await call(s, "GET", gw.url + "/admin/instances"))

    listed = run(body)
    assert "hunter2" not in listed and "127.0.0.1" in listed


def test_upstream_5xx_bodies_do_not_reach_the_client() -> None:
    """A backend's 500 body (quoting its environment) is not copied into the client's error."""

    async def body() -> tuple[int, str]:
        async with (
            SecretUpstream() as up,
            compose(gateway_config([up.url])) as gw,
            aiohttp.ClientSession() as s,
        ):
            status, out = await call(s, "POST", gw.url + "/v1/completions", BODY)
            return status, json.dumps(out)

    status, text = run(body)
    assert status == 502 and "hunter2" not in text and "DATABASE_URL" not in text
    assert "upstream status 500" in text


BAD_INPUT = [
    ({"sincere": {"budget_usd": 1e308}}, {}, "sincere.budget_usd"),
    ({}, {"x-sincere-budget-usd": "1e308"}, "sincere.budget_usd"),
    ({"sincere": {"priority": 10**400}}, {}, "sincere.priority"),
    ({}, {"x-sincere-priority": "9" * 400}, "sincere.priority"),
    ({"temperature": 10**400}, {}, "temperature"),
    ({"top_p": -(10**309)}, {}, "top_p"),
    ({"frequency_penalty": 10**309}, {}, "frequency_penalty"),
    ({"seed": 10**30}, {}, "seed"),
    ({"prompt": [1, 2, 10**20]}, {}, "prompt"),
    ({"prompt": "\ud800 lone"}, {}, "prompt"),
    ({"stop": ["ok", "\udfff"]}, {}, "stop[1]"),
    ({"user": "\udc80", "sincere": {"tier": "default"}}, {}, "user"),
]


@pytest.mark.parametrize(("extra", "headers", "field"), BAD_INPUT)
def test_absurd_numbers_and_lone_surrogates_are_400_naming_the_field(
    extra: dict[str, Any], headers: dict[str, str], field: str
) -> None:
    """Integers beyond 64 bits, overflowing budgets and lone surrogates get 400, not 500."""
    prices = {"price_in_per_1m_usd": 0.1, "price_out_per_1m_usd": 0.2}

    async def body() -> tuple[int, dict[str, Any]]:
        async with (
            FakeUpstream() as up,
            compose(gateway_config([up.url], prices)) as gw,
            aiohttp.ClientSession() as s,
        ):
            raw = json.dumps({**BODY, **extra}).encode()  # ASCII: surrogates as \\u escapes
            async with s.post(gw.url + "/v1/completions", data=raw, headers=headers) as r:
                return r.status, await r.json()

    status, out = run(body)
    assert status == 400, out
    assert out["error"]["message"].startswith(field), out


async def _open_stream(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    payload = json.dumps({**BODY, "max_tokens": 50, "stream": True}).encode()
    writer.write(
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload)
    )
    await writer.drain()
    return reader, writer


def test_a_client_leaving_mid_stream_is_one_line_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Disconnecting clients leave one log line each (no traceback) and count as cancelled."""

    async def body() -> str:
        async with (
            FakeUpstream(num_tokens=50, token_delay_s=0.01) as up,
            compose(gateway_config([up.url])) as gw,
            aiohttp.ClientSession() as s,
        ):
            for _ in range(3):
                reader, writer = await _open_stream(gw.port)
                await reader.readuntil(b"data: ")  # the stream has begun
                writer.transport.abort()  # the client vanishes
            await asyncio.sleep(0.3)
            return str((await call(s, "GET", gw.url + "/metrics"))[1])

    with caplog.at_level(logging.DEBUG):
        text = run(body)
    assert metric(text, "sincere_gateway_requests_total", outcome="cancelled") == 3
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    lines = [r for r in caplog.records if r.levelno >= logging.INFO and "sincere" in r.name]
    assert len(lines) == 3


def test_non_streamed_cancellations_are_counted() -> None:
    """A client that gives up on a non-streamed request is counted as cancelled."""

    async def body() -> str:
        async with (
            FakeUpstream(ttft_s=0.5) as up,
            compose(gateway_config([up.url])) as gw,
            aiohttp.ClientSession() as s,
        ):
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(call(s, "POST", gw.url + "/v1/completions", BODY), 0.1)
            await asyncio.sleep(0.2)
            return str((await call(s, "GET", gw.url + "/metrics"))[1])

    text = run(body)
    assert metric(text, "sincere_gateway_requests_total", outcome="cancelled") == 1


def test_an_internal_error_is_a_counted_500_without_details(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An unexpected exception answers a bare 500 and counts as internal_error in the metrics."""

    def broken(*args: Any) -> None:
        raise RuntimeError("secret internals")

    async def body() -> tuple[int, str, str]:
        async with (
            FakeUpstream() as up,
            compose(gateway_config([up.url])) as gw,
            aiohttp.ClientSession() as s,
        ):
            monkeypatch.setattr(gw.dispatcher, "admit", broken)
            async with s.post(gw.url + "/v1/completions", json=BODY) as r:
                status, text = r.status, await r.text()
            return status, text, str((await call(s, "GET", gw.url + "/metrics"))[1])

    status, text, metrics = run(body)
    assert status == 500 and "secret" not in text and json.loads(text)["error"]
    assert metric(metrics, "sincere_gateway_requests_total", outcome="internal_error") == 1


@pytest.mark.parametrize("verb", ["emulate", "serve"])
def test_a_port_in_use_is_one_clear_line_and_a_failure(
    verb: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``sincere emulate`` / ``serve`` on a taken port exit non-zero with one line, no traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        if verb == "emulate":
            args = ["emulate", "--port", str(port)]
        else:
            config = tmp_path / "gateway.yaml"
            config.write_text("port: 0\nscrape: {enabled: false}\n")
            args = ["serve", str(config), "--port", str(port)]
        monkeypatch.setattr(sys, "argv", ["sincere", *args])
        with pytest.raises(SystemExit) as done:
            main()  # anything but sincere's own one-line errors would propagate here
    assert done.value.code not in (0, None)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "in use" in lines[0] and str(port) in lines[0], lines
