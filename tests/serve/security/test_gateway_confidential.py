"""Confidential mode through the gateway: client -> gateway -> seal proxy -> emulator, and back.

The gateway routes sealed requests on their declared headers and relays the ciphertext
untouched, with client keys and budgets on. A canary in the prompt must never appear in
the gateway's request objects (a ``gc`` dump taken while a stream is in flight), its
logs, ``/metrics`` or the error bodies it answers; the spend is settled from the usage
counts the proxy reports in the clear.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tests.outsider._gateway import free_port
from tests.serve.security.test_confidential import CANARY, PAIR, _chat
from tests.serve.security.test_gateway import gateway_config, make_keys, run

from sincere.core.request import Request
from sincere.serve.gateway.dispatch import Pending
from sincere.serve.gateway.sealed import UsageScanner, usage_of_header
from sincere.serve.gateway.server import Gateway
from sincere.serve.protocol import CompletionRequest, parse_body
from sincere.serve.security.confidential_client import ConfidentialClient, ConfidentialError
from sincere.serve.security.envelope import usage_event, write_keypair
from sincere.serve.security.keys import KeySpec
from sincere.serve.security.keystore import KeyStore

MODEL = "llama-3-8b"
ROOT = Path(__file__).resolve().parents[3]
ENTRY = "import sys; sys.argv[0] = 'sincere'; from sincere.cli import main; main()"


@contextlib.contextmanager
def engine_side(tmp_path: Path) -> Iterator[str]:
    """`sincere emulate` and `sincere seal serve` in front of it, in child processes.

    Out of this process, so that a dump of its request objects holds the gateway's
    alone; the proxy's URL is yielded. Both are stopped by their PIDs.
    """
    key = tmp_path / "seal.key"
    write_keypair(PAIR, key)
    engine_port, proxy_port = free_port(), free_port()
    commands = [
        ["emulate", "--port", str(engine_port)],
        ["seal", "serve", "--key", str(key), "--port", str(proxy_port),
         "--upstream", f"http://127.0.0.1:{engine_port}"],
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), *sys.path])}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", ENTRY, *args],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / f"child{i}.txt").open("w"),
        )
        for i, args in enumerate(commands)
    ]
    try:
        url = f"http://127.0.0.1:{proxy_port}"
        _wait_healthy(url + "/health", children, tmp_path)  # through the proxy: both are up
        yield url
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.wait(timeout=10)


def _wait_healthy(url: str, children: list[subprocess.Popen[bytes]], tmp_path: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(c.poll() is not None for c in children):
            break
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as answer:
            if answer.status == 200:
                return
        time.sleep(0.1)
    logs = " | ".join(p.read_text()[-300:] for p in sorted(tmp_path.glob("child*.txt")))
    pytest.fail(f"engine side did not start: {logs}")


@contextlib.asynccontextmanager
async def chain(keys: Path, proxy_url: str) -> AsyncIterator[tuple[Gateway, aiohttp.ClientSession]]:
    """The gateway routing sealed requests to the seal proxy at ``proxy_url``."""
    cfg = gateway_config(proxy_url, keys, security={"sealed_backends": ["b0"]})
    backend = cfg.backends[0].model_copy(update={"models": {MODEL: MODEL}})
    cfg = cfg.model_copy(update={"backends": [backend]})
    async with Gateway(cfg) as gw, aiohttp.ClientSession() as http:
        yield gw, http


REQUEST_TYPES = (Request, CompletionRequest, Pending)


def live_requests() -> list[object]:
    """The request objects alive in this process now (after a collection)."""
    gc.collect()
    return [obj for obj in gc.get_objects() if isinstance(obj, REQUEST_TYPES)]


def dump_requests(before: set[int]) -> bytes:
    """Everything the request objects made since ``before`` (ids) hold: fields and repr.

    Objects older than the gateway (other tests' plaintext requests still alive in
    this process) are left out; every one made since is the gateway's, as the engine
    side runs in child processes.
    """
    out = bytearray()
    for obj in gc.get_objects():
        if isinstance(obj, REQUEST_TYPES) and id(obj) not in before:
            out += repr(obj).encode()
            if is_dataclass(obj):
                for f in fields(obj):
                    value = getattr(obj, f.name)
                    out += value if isinstance(value, bytes) else repr(value).encode()
    return bytes(out)


def test_confidential_round_trip_through_the_gateway(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Sealed requests stream back correctly through the gateway, which never sees the canary."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(
        keys,
        acme=KeySpec(name="acme", models=frozenset({MODEL}), budget_usd=1000.0),
        other=KeySpec(name="other", models=frozenset({"another-model"})),
        ops=KeySpec(kind="admin", name="ops"),
    )
    caplog.set_level(logging.DEBUG)
    seen: dict[str, bytes] = {}

    older = live_requests()  # held, so that no id of theirs is reused by a new object
    before = {id(obj) for obj in older}

    async def body() -> None:
        async with chain(keys, proxy_url) as (gw, http):
            client = ConfidentialClient(gw.url, PAIR.pinned, http, api_key=tokens["acme"])
            answer = await client.create("chat", _chat())
            assert answer["choices"][0]["message"]["content"] == " tok" * 5
            chunks: list[dict[str, Any]] = []
            async for chunk in client.stream("chat", _chat(stream=True)):
                if not chunks:
                    seen["objects"] = dump_requests(before)  # while the stream is in flight
                chunks.append(chunk)
            text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
            assert text == " tok" * 5 and chunks[-1]["choices"][0]["finish_reason"] == "stop"
            assert client.last_usage is not None
            seen["usage"] = str(client.last_usage["completion_tokens"]).encode()
            refused = ConfidentialClient(gw.url, PAIR.pinned, http, api_key=tokens["other"])
            with pytest.raises(ConfidentialError) as info:
                await refused.create("chat", _chat())
            assert info.value.status == 403
            seen["error"] = info.value.message.encode()
            as_admin = {"Authorization": f"Bearer {tokens['ops']}"}
            async with http.get(gw.url + "/metrics", headers=as_admin) as r:
                seen["metrics"] = await r.read()
            assert (
                b'sincere_tenant_requests_total{outcome="allowed",tenant="acme"} 2.0'
                in (seen["metrics"])
            )

    with engine_side(tmp_path) as proxy_url:
        run(body)
    seen["logs"] = caplog.text.encode()
    assert b"Pending(" in seen["objects"] and b"CompletionRequest(" in seen["objects"]
    control = parse_body(_chat(), "chat")  # a plaintext request object: the dump finds it
    assert CANARY.encode() in dump_requests(before)
    del control
    leaks = [where for where, data in seen.items() if CANARY.encode() in data]
    assert leaks == []
    store = KeyStore.open(keys)  # the settled spend counts what the proxy reported
    try:
        acme = next(r for r in store.records() if r.name == "acme")
        totals = store.totals(acme.key_id)
        assert totals.num_requests == 2
        assert totals.num_completion_tokens == 5 + int(seen["usage"])
    finally:
        store.close()


def test_plain_request_never_goes_to_a_seal_proxy(tmp_path: Path) -> None:
    """With the only instance a seal proxy, a plain JSON request is refused 503 by the gateway."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(keys, acme=KeySpec(name="acme", expires_at=time.time() + 60))

    async def body() -> None:
        async with chain(keys, proxy_url) as (gw, http):
            headers = {"Authorization": f"Bearer {tokens['acme']}"}
            async with http.post(
                gw.url + "/v1/chat/completions", json=_chat(), headers=headers
            ) as r:
                answer = await r.json()
            assert (r.status, answer["error"]["code"]) == (503, "no_instance")
            assert CANARY not in answer["error"]["message"]

    with engine_side(tmp_path) as proxy_url:
        run(body)


def test_usage_event_is_found_however_the_stream_is_cut() -> None:
    """The proxy's usage event is read whether it arrives whole or byte by byte."""
    stream = b"data: AAAA\n\n" * 3 + usage_event(7, 11, "engine") + b"data: BBBB\n\n"
    for size in (1, 5, 64, len(stream)):
        scanner = UsageScanner()
        for at in range(0, len(stream), size):
            scanner.feed(stream[at : at + size])
        assert scanner.usage == (7, 11), size


def test_usage_header_is_parsed_or_ignored() -> None:
    """``x-sincere-usage`` gives (prompt, completion); a malformed one gives nothing."""
    assert usage_of_header("prompt_tokens=3, completion_tokens=9") == (3, 9)
    assert usage_of_header("prompt_tokens=3") is None
    assert usage_of_header("prompt_tokens=x, completion_tokens=9") is None
    assert usage_of_header(None) is None


def test_deadline_cuts_a_sealed_stream_mid_way(tmp_path: Path) -> None:
    """``x-sincere-deadline-s`` 0.4 on a sealed 100-token stream at 20 ms a token: the gateway
    ends it with a ``sincere-error`` event the client raises as 504 ``deadline_exceeded``,
    counts a timeout, and charges the events relayed (fewer than 100)."""
    from sincere.serve.backends.fake_upstream import FakeUpstream
    from sincere.serve.security.seal_proxy import SealProxy

    keys = tmp_path / "keys.db"
    tokens = make_keys(keys, acme=KeySpec(name="acme", budget_usd=1e9))

    async def body() -> None:
        engine = FakeUpstream(num_tokens=100, token_delay_s=0.02, models=(MODEL,))
        async with engine, SealProxy(PAIR, engine.url) as proxy, chain(keys, proxy.url) as (gw, s):
            client = ConfidentialClient(gw.url, PAIR.pinned, s, api_key=tokens["acme"])
            request = dict(_chat(stream=True), max_tokens=100)
            started, seen = time.monotonic(), 0
            with pytest.raises(ConfidentialError) as caught:
                async for _ in client.stream("chat", request, deadline_s=0.4):
                    seen += 1
            took = time.monotonic() - started
            assert caught.value.status == 504 and "deadline_s" in caught.value.message
            assert 1 <= seen < 100 and took < 2.0
            page = gw.metrics.render({}, {}, {})
            assert 'outcome="timeout"' in page
            store = gw.auth.store
            assert store is not None and store.metrics is not None
            for _ in range(50):  # the settlement runs as the handler ends
                if store.metrics.tokens.get(("acme", "completion")):
                    break
                await asyncio.sleep(0.02)
            charged = store.metrics.tokens[("acme", "completion")]
            assert seen <= charged < 100

    run(body)
