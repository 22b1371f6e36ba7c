"""Confidential mode: the HPKE envelope, sealed frames, and a round trip through the seal proxy.

The end-to-end tests put recording TCP relays on both sides of the seal proxy, in front of
the project's emulator on 127.0.0.1: a canary in the prompt must never cross the client
side, and must cross the engine side (so the search could find it).
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
from sincere.serve.emulator.config import EmulatorConfig
from sincere.serve.emulator.server import EmulatorServer
from sincere.serve.protocol import ProtocolError, dumps
from sincere.serve.security.confidential_client import (
    ConfidentialClient,
    ConfidentialError,
    seal_for,
)
from sincere.serve.security.connections import AcceptErrorLog
from sincere.serve.security.credentials import Secret
from sincere.serve.security.envelope import (
    CONTENT_TYPE,
    MAX_TOKENS_HEADER,
    MODEL_HEADER,
    Declared,
    FrameOpener,
    FrameSealer,
    SealKeyPair,
    declared_from_headers,
    load_keypair,
    load_public_key,
    open_request,
    seal_request,
    write_keypair,
    write_public_key,
)
from sincere.serve.security.seal_proxy import SealProxy

CANARY = "CANARY-a4f19c0e77d2"
FAST = {"kind": "inferno", "params": {"alpha_ms": 1, "beta_ms": 0, "gamma_ms": 2, "delta_ms": 0}}
PAIR = SealKeyPair.generate()


def _declared(**kw: Any) -> Declared:
    base: dict[str, Any] = {
        "kind": "chat", "key_id": PAIR.key_id, "model": "m", "prompt_tokens": 5,
        "max_tokens": 8, "stream": False, "sealed_at": int(time.time()),
    }  # fmt: skip
    base.update(kw)
    return Declared(**base)


# -------------------------------------------------------------------- envelope
def test_request_round_trip_and_response_frames() -> None:
    """A sealed body opens with the pair's key; response frames open in order on the client."""
    declared = _declared()
    sealed = seal_request(PAIR.pinned, declared, CANARY.encode())
    assert CANARY.encode() not in sealed.body
    plaintext, sealer = open_request(PAIR, declared, sealed.body)
    assert plaintext == CANARY.encode()
    opener = sealed.opener()
    for i in range(3):
        assert opener.open(sealer.seal(f"chunk {i}".encode())) == f"chunk {i}".encode()
    assert opener.open(sealer.seal(b"", final=True)) == b"" and opener.finished


def test_declared_headers_are_bound_to_the_ciphertext() -> None:
    """Changing any routed field on the way makes the body fail to open (400)."""
    declared = _declared()
    sealed = seal_request(PAIR.pinned, declared, b"{}")
    for changed in (
        _declared(model="other"),
        _declared(max_tokens=9),
        _declared(prompt_tokens=4),
        _declared(stream=True),
        _declared(kind="completion"),
    ):
        with pytest.raises(ProtocolError, match="does not open") as info:
            open_request(PAIR, changed, sealed.body)
        assert info.value.status == 400
    tampered = sealed.body[:-1] + bytes([sealed.body[-1] ^ 1])
    with pytest.raises(ProtocolError, match="does not open"):
        open_request(PAIR, declared, tampered)


def test_wrong_key_is_421_naming_both_ids() -> None:
    """A body sealed to another key is refused before any decryption attempt."""
    other = SealKeyPair.generate()
    declared = _declared(key_id=other.key_id)
    sealed = seal_request(other.pinned, declared, b"{}")
    with pytest.raises(ProtocolError, match=f"{other.key_id}.*holds key {PAIR.key_id}") as info:
        open_request(PAIR, declared, sealed.body)
    assert info.value.status == 421


def _frames(n: int) -> tuple[list[bytes], Callable[[], FrameOpener]]:
    key, nonce = b"k" * 16, b"n" * 12
    sealer = FrameSealer(key, nonce)
    frames = [sealer.seal(f"{i}".encode(), final=(i == n - 1)) for i in range(n)]
    return frames, lambda: FrameOpener(key, nonce)


@pytest.mark.parametrize(
    ("order", "match"),
    [
        ([1, 0, 2], "frame 0 does not open"),  # reordered
        ([0, 2], "frame 1 does not open"),  # one dropped
        ([0, 0, 1], "frame 1 does not open"),  # replayed
        ([0, 1, 2, 2], "after the final frame"),  # extra after the end
    ],
)
def test_frames_detect_reorder_drop_replay(order: list[int], match: str) -> None:
    """Out-of-sequence frames fail to open with a message saying which."""
    frames, opener_of = _frames(3)
    opener = opener_of()
    with pytest.raises(ValueError, match=match):
        for i in order:
            opener.open(frames[i])


def test_flipping_the_final_flag_is_detected() -> None:
    """Marking a middle frame final (to hide truncation) breaks its authentication."""
    frames, opener_of = _frames(3)
    opener = opener_of()
    opener.open(frames[0])
    with pytest.raises(ValueError, match="frame 1 does not open"):
        opener.open(b"\x01" + frames[1][1:])


def test_declared_header_errors_name_the_header() -> None:
    """Missing or bad declared headers are 400s naming the header and what is allowed."""
    good = _declared().headers()
    assert declared_from_headers(good, "chat") == _declared()
    with pytest.raises(ProtocolError, match=f"header {MODEL_HEADER}: got ''"):
        declared_from_headers({**good, MODEL_HEADER: ""}, "chat")
    with pytest.raises(ProtocolError, match=f"header {MAX_TOKENS_HEADER}: got '0'.*1, 10000000"):
        declared_from_headers({**good, MAX_TOKENS_HEADER: "0"}, "chat")
    with pytest.raises(ProtocolError, match=f"{MAX_TOKENS_HEADER}: got 'ten'; allowed: an integer"):
        declared_from_headers({**good, MAX_TOKENS_HEADER: "ten"}, "chat")


def test_key_files_round_trip_and_errors(tmp_path: Path) -> None:
    """Key pair and pinned key files load back; bad files name the problem; no overwrite."""
    write_keypair(PAIR, tmp_path / "seal.key")
    write_public_key(PAIR.pinned, tmp_path / "seal.pub")
    assert load_keypair(tmp_path / "seal.key") == PAIR
    assert load_public_key(tmp_path / "seal.pub") == PAIR.pinned
    assert (tmp_path / "seal.key").stat().st_mode & 0o777 == 0o600
    assert PAIR.private_bytes.hex() not in repr(PAIR)
    with pytest.raises(ConfigError, match="file exists"):
        write_keypair(PAIR, tmp_path / "seal.key")
    with pytest.raises(ConfigError, match="not a sincere seal key file"):
        load_keypair(tmp_path / "seal.pub")
    (tmp_path / "bad.pub").write_text('{"format": "sincere-seal-public-key", "suite": "x"}')
    with pytest.raises(ConfigError, match="unsupported suite"):
        load_public_key(tmp_path / "bad.pub")
    with pytest.raises(ConfigError, match="cannot read key file"):
        load_public_key(tmp_path / "missing.pub")


# -------------------------------------------------------------- end to end
class Relay:
    """A TCP relay on 127.0.0.1 recording every byte both ways (and able to meddle)."""

    def __init__(self, port: int, meddle: Callable[[bytes], bytes] | None = None) -> None:
        self.target_port = port
        self.meddle = meddle  # rewrites server -> client bytes, when given
        self.seen = bytearray()
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Relay:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        await asyncio.gather(
            self._pump(reader, up_writer, None), self._pump(up_reader, writer, self.meddle)
        )

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        meddle: Callable[[bytes], bytes] | None,
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                self.seen += data
                writer.write(meddle(data) if meddle else data)
                await writer.drain()
        writer.close()


@contextlib.asynccontextmanager
async def _chain(
    meddle: Callable[[bytes], bytes] | None = None, upstream_key: Secret | None = None
) -> AsyncIterator[tuple[ConfidentialClient, Relay, Relay]]:
    config = EmulatorConfig.model_validate({"step_model": FAST, "engine": {"num_kv_blocks": 4096}})
    async with (
        EmulatorServer(config) as engine,
        Relay(engine.port) as engine_side,
        SealProxy(PAIR, f"http://127.0.0.1:{engine_side.port}", upstream_key=upstream_key) as proxy,
        Relay(proxy.port, meddle) as client_side,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http,
    ):
        url = f"http://127.0.0.1:{client_side.port}"
        yield ConfidentialClient(url, PAIR.pinned, http), client_side, engine_side


def _run(check: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(check(), 30))


def _chat(stream: bool = False) -> dict[str, Any]:
    message = {"role": "user", "content": f"the secret word is {CANARY}, keep it"}
    body = {"model": "llama-3-8b", "messages": [message], "max_tokens": 6}
    return body | {"sincere": {"output_tokens": 5}, "stream": stream}


def test_confidential_round_trip_non_streamed() -> None:
    """A sealed chat completion comes back opened; the client side never carries plaintext."""

    async def check() -> None:
        async with _chain() as (client, client_side, engine_side):
            answer = await client.create("chat", _chat())
        assert answer["choices"][0]["message"]["content"] == " tok" * 5
        assert answer["usage"]["completion_tokens"] == 5
        assert CANARY.encode() in engine_side.seen  # the search can find it...
        assert CANARY.encode() not in client_side.seen  # ...and it is not there
        assert b" tok tok" in engine_side.seen and b" tok tok" not in client_side.seen
        assert b"x-sincere-usage: prompt_tokens=" in client_side.seen.lower()

    _run(check)


def test_confidential_round_trip_streamed() -> None:
    """A sealed stream yields every chunk in order and ends cleanly; no plaintext crosses."""

    async def check() -> None:
        async with _chain() as (client, client_side, engine_side):
            chunks = [c async for c in client.stream("chat", _chat(stream=True))]
            usage = client.last_usage
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
        assert text == " tok" * 5
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
        assert usage is not None and usage["completion_tokens"] >= 5
        assert CANARY.encode() in engine_side.seen
        assert CANARY.encode() not in client_side.seen
        assert b"chat.completion.chunk" in engine_side.seen
        assert b"chat.completion.chunk" not in client_side.seen

    _run(check)


def test_completion_endpoint_round_trip() -> None:
    """The completions endpoint works sealed too, max_tokens filled from the declaration."""

    async def check() -> None:
        async with _chain() as (client, client_side, _):
            body = {"model": "llama-3-8b", "prompt": f"say {CANARY}"}
            answer = await client.create("completion", body, default_max_tokens=3)
        assert answer["choices"][0]["text"] == " tok" * 3
        assert CANARY.encode() not in client_side.seen

    _run(check)


def test_tampered_stream_is_detected() -> None:
    """A relay that alters one byte of the first sealed frame makes the client raise."""
    state = {"done": False}

    def flip(data: bytes) -> bytes:
        if state["done"] or b"data: " not in data:
            return data
        state["done"] = True
        i = data.index(b"data: ") + 10
        return data[:i] + (b"A" if data[i : i + 1] != b"A" else b"B") + data[i + 1 :]

    async def check() -> None:
        async with _chain(flip) as (client, _, _):
            with pytest.raises(ConfidentialError, match="frame 0 does not open"):
                async for _ in client.stream("chat", _chat(stream=True)):
                    pass
        assert state["done"]

    _run(check)


def test_declared_mismatch_answers_sealed_400() -> None:
    """A plaintext that exceeds its declared max_tokens is refused, and the error is sealed."""

    async def check() -> None:
        # the client declares max_tokens 6 but seals a body asking for 50
        sealed = seal_for(PAIR.pinned, "chat", _chat())
        body = dict(_chat(), max_tokens=50)
        lying = seal_request(
            PAIR.pinned, declared_from_headers(sealed.headers, "chat"), dumps(body)
        )
        async with _chain() as (client, client_side, _):
            url = client.base_url + "/v1/chat/completions"
            async with client.session.post(url, data=lying.body, headers=lying.headers) as resp:
                payload = await resp.read()
        assert resp.status == 400 and resp.headers["Content-Type"] == CONTENT_TYPE
        error = json.loads(lying.opener().open(payload))["error"]
        assert error["message"] == "max_tokens: the sealed body has 50, the headers declared 6"
        assert b"the sealed body" not in client_side.seen

    _run(check)


def test_plain_request_to_proxy_is_415() -> None:
    """A plaintext JSON request is refused in the clear, naming the content type needed."""

    async def check() -> None:
        async with _chain() as (client, _, _):
            url = client.base_url + "/v1/chat/completions"
            async with client.session.post(url, json=_chat()) as resp:
                body = await resp.json()
        assert resp.status == 415
        assert CONTENT_TYPE in body["error"]["message"]

    _run(check)


def test_proxy_passes_metrics_through_and_shows_its_key() -> None:
    """GET /metrics reaches the engine through the proxy; /sincere/seal/key says not attested."""

    async def check() -> None:
        async with _chain() as (client, _, _):
            async with client.session.get(client.base_url + "/metrics") as resp:
                text = await resp.text()
            async with client.session.get(client.base_url + "/sincere/seal/key") as resp:
                key = await resp.json()
        assert "vllm:" in text
        assert key == {
            "key_id": PAIR.key_id,
            "public_key": PAIR.public_bytes.hex(),
            "attested": False,
        }

    _run(check)


def test_stream_cut_by_the_engine_is_reported_truncated() -> None:
    """An engine dying mid-stream leaves no final frame; the client raises instead of ending."""
    from aiohttp import web

    async def dying(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        chunk = {"choices": [{"index": 0, "delta": {"content": " tok"}, "finish_reason": None}]}
        for _ in range(2):
            await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.close()  # the engine process dies here
        return response

    async def check() -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", dying)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        try:
            async with (
                SealProxy(PAIR, f"http://127.0.0.1:{port}") as proxy,
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http,
            ):
                client = ConfidentialClient(proxy.url, PAIR.pinned, http)
                seen = []
                with pytest.raises(ConfidentialError, match="stream truncated"):
                    async for chunk in client.stream("chat", _chat(stream=True)):
                        seen.append(chunk)
                assert len(seen) == 2
        finally:
            await runner.cleanup()

    _run(check)


def test_upstream_key_reaches_the_engine_only() -> None:
    """The engine's API key goes upstream as a Bearer header and never back to the client."""
    key = Secret("sk-upstream-" + CANARY)

    async def check() -> None:
        async with _chain(upstream_key=key) as (client, client_side, engine_side):
            await client.create("chat", _chat())
            async with client.session.get(client.base_url + "/v1/models") as resp:
                assert resp.status == 200
        assert f"Bearer {key.reveal()}".encode() in engine_side.seen
        assert key.reveal().encode() not in client_side.seen

    _run(check)


def test_a_replayed_sealed_request_is_refused() -> None:
    """The same sealed bytes sent twice: served once, then 409 ``replayed``."""

    async def check() -> None:
        sealed = seal_for(PAIR.pinned, "chat", _chat())
        async with _chain() as (client, _, _):
            url = client.base_url + "/v1/chat/completions"
            statuses = []
            for _ in range(2):
                async with client.session.post(
                    url, data=sealed.body, headers=sealed.headers
                ) as resp:
                    statuses.append((resp.status, await resp.read()))
        assert statuses[0][0] == 200
        assert statuses[1][0] == 409 and b'"replayed"' in statuses[1][1]

    _run(check)


def test_inbound_key_is_required_when_set() -> None:
    """With an inbound key, a call without it is 401; with it, the sealed call is served."""
    config = EmulatorConfig.model_validate({"step_model": FAST, "engine": {"num_kv_blocks": 4096}})

    async def check() -> None:
        async with (
            EmulatorServer(config) as engine,
            SealProxy(PAIR, engine.url, inbound_key=Secret("gateway-to-proxy")) as proxy,
            aiohttp.ClientSession() as http,
        ):
            url = proxy.url + "/v1/chat/completions"
            answers = []
            for auth in ({}, {"Authorization": "Bearer wrong"},
                         {"Authorization": "Bearer gateway-to-proxy"}):  # fmt: skip
                sealed = seal_for(PAIR.pinned, "chat", _chat())
                async with http.post(
                    url, data=sealed.body, headers={**sealed.headers, **auth}
                ) as r:
                    answers.append(r.status)
            async with http.get(proxy.url + "/metrics") as r:
                answers.append(r.status)
        assert answers == [401, 401, 200, 401]

    _run(check)


def test_a_sealed_request_outside_the_window_is_refused_though_never_seen() -> None:
    """Sealed 2 windows ago (or ahead): 409 ``sealed_request_stale`` from a proxy that never saw
    it; no timestamp: 400 ``sealed_at_missing``; a changed timestamp does not open (400)."""
    config = EmulatorConfig.model_validate({"step_model": FAST, "engine": {"num_kv_blocks": 4096}})

    async def check() -> None:
        async with (
            EmulatorServer(config) as engine,
            SealProxy(PAIR, engine.url, replay_window_s=60.0) as proxy,
            aiohttp.ClientSession() as http,
        ):
            url = proxy.url + "/v1/chat/completions"
            now = time.time()
            old = seal_for(PAIR.pinned, "chat", _chat(), now=now - 120)
            ahead = seal_for(PAIR.pinned, "chat", _chat(), now=now + 120)
            fresh = seal_for(PAIR.pinned, "chat", _chat(), now=now - 30)
            unstamped = seal_request(PAIR.pinned, _declared(sealed_at=None), dumps(_chat()))
            moved = seal_for(PAIR.pinned, "chat", _chat(), now=now - 120)
            moved.headers["x-sincere-sealed-at"] = str(int(now))  # made to look fresh
            answers = []
            for sealed in (old, ahead, fresh, unstamped, moved):
                async with http.post(url, data=sealed.body, headers=sealed.headers) as r:
                    plain = r.content_type == "application/json"
                    answers.append((r.status, (await r.json())["error"]["code"] if plain else ""))
            proxy.replays.window_s = 0.0  # off: a stale stamp is served (a benchmark's replays)
            async with http.post(url, data=old.body, headers=old.headers) as r:
                answers.append((r.status, ""))
        assert answers == [
            (409, "sealed_request_stale"),
            (409, "sealed_request_stale"),
            (200, ""),
            (400, "sealed_at_missing"),
            (400, "bad_sealed_body"),
            (200, ""),
        ]

    _run(check)


def test_a_slow_header_client_is_cut_off_by_the_seal_proxy() -> None:
    """A client sending its request head one byte at a time is answered 408 and closed at
    ``header_timeout_s``; the proxy still serves others; accept errors are rate-limited."""
    config = EmulatorConfig.model_validate({"step_model": FAST, "engine": {"num_kv_blocks": 4096}})

    async def check() -> None:
        async with (
            EmulatorServer(config) as engine,
            SealProxy(PAIR, engine.url, header_timeout_s=0.5) as proxy,
            aiohttp.ClientSession() as http,
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            started = time.monotonic()
            head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
            answer = b""
            for byte in head:  # one byte every 50 ms: the head would take 13 s
                if reader.at_eof():
                    break
                with contextlib.suppress(ConnectionError):
                    writer.write(bytes([byte]))
                    await writer.drain()
                with contextlib.suppress(TimeoutError):
                    answer += await asyncio.wait_for(reader.read(1000), 0.05)
                if answer:
                    break
            answer += await asyncio.wait_for(reader.read(), 5)
            assert answer.startswith(b"HTTP/1.1 408") and b"header_timeout" in answer
            assert 0.4 <= time.monotonic() - started < 3.0
            assert proxy.edge.refused == {"header_timeout": 1}
            accept_errors = asyncio.get_running_loop().get_exception_handler()
            assert isinstance(accept_errors, AcceptErrorLog)  # rate-limited, as the gateway's
            writer.close()
            sealed = seal_for(PAIR.pinned, "chat", _chat())
            url = proxy.url + "/v1/chat/completions"
            async with http.post(url, data=sealed.body, headers=sealed.headers) as r:
                assert r.status == 200

    _run(check)
