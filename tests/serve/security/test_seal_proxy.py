"""The seal proxy in front of an emulated engine: what it forwards, and what it stops.

A client's engine-only fields never reach the engine; a request the gateway gave up on
(its deadline passed) is aborted in the engine, not run to its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from tests.serve.security.test_confidential import FAST, PAIR, Relay
from tests.serve.security.test_gateway import gateway_config, run

from sincere.core.errors import ConfigError
from sincere.serve.emulator.config import EmulatorConfig
from sincere.serve.emulator.server import EmulatorServer
from sincere.serve.gateway.server import Gateway
from sincere.serve.security.confidential_client import seal_for
from sincere.serve.security.seal_proxy import SealProxy

SLOW = {"kind": "inferno", "params": {"alpha_ms": 20, "beta_ms": 0, "gamma_ms": 2, "delta_ms": 0}}


def _prompt(**extra: Any) -> dict[str, Any]:
    body = {"model": "llama-3-8b", "prompt": "hello there", "max_tokens": 4}
    return body | {"sincere": {"output_tokens": 4}} | extra


def test_a_clients_kv_transfer_params_never_reach_the_engine() -> None:
    """Sealed ``kv_transfer_params`` (a forged remote prefill) are dropped after opening: the
    engine never sees them and serves the prompt itself (a prefill-role engine would refuse
    them with 400 ``wrong_role``)."""
    config = EmulatorConfig.model_validate(
        {"step_model": FAST, "role": "prefill", "engine": {"num_kv_blocks": 4096}}
    )
    forged = {"do_remote_prefill": True, "remote_engine_id": "x", "remote_host": "10.9.9.9",
              "remote_port": 1, "remote_block_ids": [1], "sincere": {"kv_bytes": 0}}  # fmt: skip

    async def main() -> None:
        async with (
            EmulatorServer(config) as engine,
            Relay(engine.port) as engine_side,
            SealProxy(PAIR, f"http://127.0.0.1:{engine_side.port}") as proxy,
            aiohttp.ClientSession() as http,
        ):
            for kind, body in (
                ("completion", _prompt(kv_transfer_params=forged)),
                ("completion", {**_prompt(kv_transfer_params=forged), "max_tokens": None}),
            ):
                sealed = seal_for(PAIR.pinned, kind, body)
                url = proxy.url + "/v1/completions"
                async with http.post(url, data=sealed.body, headers=sealed.headers) as r:
                    status, raw = r.status, await r.read()
                answer = sealed.opener().open(raw)
                assert status == 200, answer
                assert b'"completion_tokens":4' in answer.replace(b" ", b"")
        assert b"kv_transfer_params" not in engine_side.seen
        assert b"10.9.9.9" not in engine_side.seen

    run(main)


@contextlib.asynccontextmanager
async def _sealed_chain() -> AsyncIterator[tuple[EmulatorServer, Gateway]]:
    """An emulated engine at 20 ms a token, its seal proxy, a gateway routing sealed bodies."""
    config = EmulatorConfig.model_validate({"step_model": SLOW, "engine": {"num_kv_blocks": 4096}})
    async with EmulatorServer(config) as engine, SealProxy(PAIR, engine.url) as proxy:
        cfg = gateway_config(proxy.url, None, security={"sealed_backends": ["b0"]})
        backend = cfg.backends[0].model_copy(update={"models": {"llama-3-8b": "llama-3-8b"}})
        async with Gateway(cfg.model_copy(update={"backends": [backend]})) as gw:
            yield engine, gw


async def _aborted_within(engine: EmulatorServer, limit_s: float) -> float:
    """Seconds until the engine holds no request and counts one abort (fails past the limit)."""
    live = engine.live
    assert live is not None
    start = time.monotonic()
    while live.num_in_flight or engine.metrics.aborted._value.get() < 1:
        assert time.monotonic() - start < limit_s, "the engine still runs the abandoned request"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


@pytest.mark.parametrize("stream", [False, True])
def test_a_sealed_request_past_its_deadline_is_aborted_in_the_engine(stream: bool) -> None:
    """The gateway answers 504 at the 0.5 s deadline of a 400-token (8 s) sealed request; the
    seal proxy closes the engine's request, which the engine aborts within a second."""
    body = _prompt(max_tokens=400, stream=stream, sincere={"output_tokens": 400})

    async def main() -> None:
        async with _sealed_chain() as (engine, gw), aiohttp.ClientSession() as http:
            sealed = seal_for(PAIR.pinned, "completion", body, deadline_s=0.5)
            url = gw.url + "/v1/completions"
            async with http.post(url, data=sealed.body, headers=sealed.headers) as r:
                status, raw = r.status, await r.read()
            if stream:  # cut mid-stream: the gateway says why in a plain event
                assert status == 200 and b"deadline_exceeded" in raw
            else:
                assert status == 504, raw
            await _aborted_within(engine, 1.0)

    run(main)


async def _post_to(http: aiohttp.ClientSession, url: str, sealed: Any) -> tuple[int, bytes]:
    async with http.post(url + "/v1/completions", data=sealed.body, headers=sealed.headers) as r:
        return r.status, await r.read()


def test_proxies_sharing_a_redis_accept_sealed_bytes_once_in_all(redis_url: str) -> None:
    """Two proxies of one key pair: without a shared store each serves the same sealed bytes
    once (per process, as documented); with the same Redis (a real redis-server) the second
    proxy refuses them, 409 ``replayed``."""
    config = EmulatorConfig.model_validate({"step_model": FAST, "engine": {"num_kv_blocks": 4096}})

    async def main() -> list[int]:
        statuses = []
        async with EmulatorServer(config) as engine, aiohttp.ClientSession() as http:
            for shared in (None, redis_url):
                sealed = seal_for(PAIR.pinned, "completion", _prompt())
                async with (
                    SealProxy(PAIR, engine.url, replay_redis=shared) as a,
                    SealProxy(PAIR, engine.url, replay_redis=shared) as b,
                ):
                    for proxy in (a, b, a):
                        statuses.append((await _post_to(http, proxy.url, sealed))[0])
        return statuses

    assert asyncio.run(asyncio.wait_for(main(), 30)) == [200, 200, 409, 200, 409, 409]


def test_an_unreachable_replay_store_refuses_rather_than_serves() -> None:
    """A shared replay store that cannot be reached: 503 ``replay_store_unavailable`` (the
    request is not served unchecked), in about the store's 1 s limit; a bad URL is a
    ConfigError that does not echo it."""
    config = EmulatorConfig.model_validate({"step_model": FAST, "engine": {"num_kv_blocks": 4096}})

    async def main() -> tuple[int, bytes]:
        async with (
            EmulatorServer(config) as engine,
            SealProxy(PAIR, engine.url, replay_redis="redis://127.0.0.1:9/0") as proxy,
            aiohttp.ClientSession() as http,
        ):
            return await _post_to(http, proxy.url, seal_for(PAIR.pinned, "completion", _prompt()))

    status, body = asyncio.run(asyncio.wait_for(main(), 30))
    assert status == 503 and b'"replay_store_unavailable"' in body
    with pytest.raises(ConfigError, match="replay_redis") as caught:
        SealProxy(PAIR, "http://127.0.0.1:1", replay_redis="htp://user:pw@host")
    assert "pw" not in str(caught.value)


def test_a_sealed_request_whose_client_left_is_aborted_in_the_engine() -> None:
    """The client of a 400-token (8 s) sealed non-streamed request disconnects after 0.3 s:
    the gateway drops its upstream call, the seal proxy its engine call, and the engine
    aborts the request within a second."""
    body = _prompt(max_tokens=400, sincere={"output_tokens": 400})

    async def main() -> None:
        async with _sealed_chain() as (engine, gw), aiohttp.ClientSession() as http:
            sealed = seal_for(PAIR.pinned, "completion", body)
            call = http.post(gw.url + "/v1/completions", data=sealed.body, headers=sealed.headers)
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3), call as r:
                    await r.read()
            await _aborted_within(engine, 1.0)

    run(main)


def test_a_bad_expect_header_is_a_417_at_the_seal_proxy() -> None:
    """``Expect:`` with bytes that are not UTF-8 on the proxy's routes and elsewhere: a JSON
    417, never a 500."""

    async def main() -> list[bytes]:
        answers = []
        async with SealProxy(PAIR, "http://127.0.0.1:9") as proxy:
            for method, path in ((b"POST", b"/v1/completions"), (b"GET", b"/health"),
                                 (b"PUT", b"/health"), (b"GET", b"/nope")):  # fmt: skip
                reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
                writer.write(method + b" " + path + b" HTTP/1.1\r\nHost: x\r\n"
                             b"Expect: \xff\xfe\r\nContent-Length: 0\r\n\r\n")  # fmt: skip
                answers.append(await asyncio.wait_for(reader.read(2000), 5))
                writer.close()
        return answers

    for answer in asyncio.run(asyncio.wait_for(main(), 30)):
        assert answer.startswith(b"HTTP/1.1 417 ") and b"expectation_failed" in answer, answer
