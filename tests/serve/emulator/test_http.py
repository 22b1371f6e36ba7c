"""The emulator end to end over HTTP: completions, chat, streaming, models, metrics."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from sincere.serve.emulator.config import EmulatorConfig, load_emulator_configs
from sincere.serve.emulator.server import EmulatorServer, start_emulators, stop_emulators
from sincere.serve.protocol import parse_sse_data

# 2 ms decode steps, 3 ms prefills: quick tests with real batching
FAST = {"kind": "inferno", "params": {"alpha_ms": 2, "beta_ms": 0, "gamma_ms": 3, "delta_ms": 0}}


def _config(**kw: Any) -> EmulatorConfig:
    base: dict[str, Any] = {"step_model": FAST, "engine": {"num_kv_blocks": 4096}}
    base.update(kw)
    return EmulatorConfig.model_validate(base)


Check = Callable[[EmulatorServer, aiohttp.ClientSession], Awaitable[None]]


def _run(check: Check, **kw: Any) -> None:
    async def main() -> None:
        async with EmulatorServer(_config(**kw)) as server:
            timeout = aiohttp.ClientTimeout(total=20)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                await asyncio.wait_for(check(server, session), 30)

    asyncio.run(main())


async def _stream(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> list[Any]:
    """Every SSE data payload of one streamed call (None for [DONE])."""
    events: list[Any] = []
    async with session.post(url, json=body) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        async for line in resp.content:
            if line.strip():
                events.append(parse_sse_data(line))
    return events


def _metric(text: str, name: str) -> float:
    """Sum of every sample of ``name`` in Prometheus text."""
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$", re.M)
    return sum(float(v) for v in pattern.findall(text))


def test_completion_non_streamed_until_ground_truth_length() -> None:
    """A plain completion returns output_tokens filler tokens and finish_reason stop."""

    async def check(server: EmulatorServer, session: aiohttp.ClientSession) -> None:
        body = {"model": "llama-3-8b", "prompt": "hello", "max_tokens": 8}
        body["sincere"] = {"output_tokens": 5}
        async with session.post(server.url + "/v1/completions", json=body) as resp:
            data = await resp.json()
        assert resp.status == 200
        assert data["object"] == "text_completion"
        assert data["choices"][0]["text"] == " tok" * 5
        assert data["choices"][0]["finish_reason"] == "stop"
        assert data["usage"]["completion_tokens"] == 5

    _run(check)


def test_chat_non_streamed_hits_max_tokens() -> None:
    """Without output_tokens a chat answer runs to max_tokens with finish_reason length."""

    async def check(server: EmulatorServer, session: aiohttp.ClientSession) -> None:
        body = {"model": "llama-3-8b", "messages": [{"role": "user", "content": "hi"}]}
        body["max_completion_tokens"] = 6
        async with session.post(server.url + "/v1/chat/completions", json=body) as resp:
            data = await resp.json()
        assert data["object"] == "chat.completion"
        assert data["choices"][0]["message"]["content"] == " tok" * 6
        assert data["choices"][0]["finish_reason"] == "length"

    _run(check)


def test_streamed_chat_with_usage() -> None:
    """A streamed chat yields the role chunk, one chunk per token (the last one finishing),
    usage, then [DONE], as vLLM streams it."""

    async def check(server: EmulatorServer, session: aiohttp.ClientSession) -> None:
        body = {
            "model": "llama-3-8b",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 4,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        events = await _stream(session, server.url + "/v1/chat/completions", body)
        assert events[-1] is None
        tokens = [e for e in events[:-1] if e["choices"] and e["choices"][0]["delta"]["content"]]
        assert len(tokens) == 4
        assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        assert events[1:5] == tokens
        assert [e["choices"][0]["finish_reason"] for e in tokens] == [None] * 3 + ["length"]
        assert events[-2]["usage"]["completion_tokens"] == 4
        assert events[-2]["system_fingerprint"].startswith("sincere-emulator-vllm-0.32.0-")

    _run(check)


def test_streamed_completion_stops_at_output_tokens() -> None:
    """A streamed completion ends after the ground-truth length; its last token's chunk
    says finish_reason stop."""

    async def check(server: EmulatorServer, session: aiohttp.ClientSession) -> None:
        body = {"model": "llama-3-8b", "prompt": "x", "max_tokens": 9, "stream": True}
        body["sincere"] = {"output_tokens": 3}
        events = await _stream(session, server.url + "/v1/completions", body)
        texts = [e["choices"][0]["text"] for e in events if e is not None]
        assert texts == [" tok", " tok", " tok"]
        assert [e["choices"][0]["finish_reason"] for e in events[:-1]] == [None, None, "stop"]

    _run(check)


def test_errors_are_http_statuses_with_openai_body() -> None:
    """Unknown models are 404 and absurd max_tokens 400 (as vLLM), with vLLM's error JSON."""

    async def check(server: EmulatorServer, session: aiohttp.ClientSession) -> None:
        url = server.url + "/v1/completions"
        async with session.post(url, json={"model": "nope", "prompt": "a"}) as resp:
            assert resp.status == 404
            error = (await resp.json())["error"]
            assert (error["type"], error["code"], error["param"]) == ("NotFoundError", 404, "model")
        body = {"model": "llama-3-8b", "prompt": "a", "max_tokens": 10**7}
        async with session.post(url, json=body) as resp:
            assert resp.status == 400
            assert "max_tokens" in (await resp.json())["error"]["message"]
        async with session.post(url, data=b"{oops") as resp:
            assert resp.status == 400

    _run(check)


def test_oversized_body_is_413() -> None:
    """A body over max_body_bytes gets 413."""

    async def check(server: EmulatorServer, session: aiohttp.ClientSession) -> None:
        body = {"model": "llama-3-8b", "prompt": "x" * 5000}
        async with session.post(server.url + "/v1/completions", json=body) as resp:
            assert resp.status == 413

    _run(check, max_body_bytes=1000)


def test_models_and_health() -> None:
    """/v1/models lists the served name; /health answers 200."""

    async def check(server: EmulatorServer, session: aiohttp.ClientSession) -> None:
        async with session.get(server.url + "/v1/models") as resp:
            data = await resp.json()
        assert [m["id"] for m in data["data"]] == ["my-llama"]
        async with session.get(server.url + "/health") as resp:
            assert resp.status == 200
        body = {"model": "my-llama", "prompt": "a", "max_tokens": 1}
        async with session.post(server.url + "/v1/completions", json=body) as resp:
            assert resp.status == 200

    _run(check, served_model_name="my-llama")


def test_metrics_count_what_was_sent() -> None:
    """Counters and histogram counts in /metrics match the requests and tokens sent."""

    async def check(server: EmulatorServer, session: aiohttp.ClientSession) -> None:
        url = server.url + "/v1/completions"
        lengths = [3, 5, 2, 7]

        async def one(n: int) -> None:
            body = {"model": "llama-3-8b", "prompt": [1, 2, 3, 4], "max_tokens": 7, "stream": True}
            body["sincere"] = {"output_tokens": n}
            await _stream(session, url, body)

        await asyncio.gather(*(one(n) for n in lengths))
        async with session.get(server.url + "/metrics") as resp:
            text = await resp.text()
        assert 'model_name="llama-3-8b"' in text
        assert _metric(text, "vllm:request_success_total") == len(lengths)
        assert _metric(text, "vllm:generation_tokens_total") == sum(lengths)
        assert _metric(text, "vllm:prompt_tokens_total") == 4 * len(lengths)
        assert _metric(text, "vllm:time_to_first_token_seconds_count") == len(lengths)
        assert _metric(text, "vllm:inter_token_latency_seconds_count") == sum(lengths) - 4
        assert _metric(text, "vllm:e2e_request_latency_seconds_count") == len(lengths)
        assert _metric(text, "vllm:num_requests_running") == 0

    _run(check)


def test_length_reason_counted_separately() -> None:
    """request_success_total splits finishes at max_tokens (length) from earlier ones (stop)."""

    async def check(server: EmulatorServer, session: aiohttp.ClientSession) -> None:
        url = server.url + "/v1/completions"
        for out in (2, 4):
            body = {"model": "llama-3-8b", "prompt": "a", "max_tokens": 4}
            body["sincere"] = {"output_tokens": out}
            async with session.post(url, json=body) as resp:
                assert resp.status == 200
        async with session.get(server.url + "/metrics") as resp:
            text = await resp.text()
        ok = 'vllm:request_success_total{engine="0",finished_reason="%s",model_name="llama-3-8b"}'
        assert _metric(text, ok % "length") == 1
        assert _metric(text, ok % "stop") == 1

    _run(check)


def test_several_emulators_from_one_call(tmp_path: Any) -> None:
    """start_emulators runs a config file's count of servers, each on its own port."""
    path = tmp_path / "emu.yaml"
    entry = {"model": "llama-3-8b", "count": 3, "step_model": FAST}
    entry["engine"] = {"num_kv_blocks": 1024}
    path.write_text(json.dumps([entry]))
    configs = load_emulator_configs(path)
    assert [c.name for c in configs] == ["llama-3-8b-0-0", "llama-3-8b-0-1", "llama-3-8b-0-2"]

    async def main() -> None:
        servers = await start_emulators(configs)
        try:
            assert len({s.port for s in servers}) == 3
            async with aiohttp.ClientSession() as session:
                for s in servers:
                    body = {"model": "llama-3-8b", "prompt": "a", "max_tokens": 2}
                    async with session.post(s.url + "/v1/completions", json=body) as resp:
                        assert (await resp.json())["usage"]["completion_tokens"] == 2
        finally:
            await stop_emulators(servers)

    asyncio.run(main())


def test_config_rejects_shared_ports() -> None:
    """Two instances on one port are a config error naming the ports."""
    entries = [{"name": "a", "port": 9000}, {"name": "b", "port": 9000}]
    with pytest.raises(ValueError, match="share a port"):
        load_emulator_configs(entries)


def test_configured_length_distribution_sets_output() -> None:
    """With output_lengths configured, answers take the drawn length (capped by max_tokens)."""

    async def check(server: EmulatorServer, session: aiohttp.ClientSession) -> None:
        for cap, expected in ((10, 3), (2, 2)):
            body = {"model": "llama-3-8b", "prompt": "a", "max_tokens": cap}
            async with session.post(server.url + "/v1/completions", json=body) as resp:
                assert (await resp.json())["usage"]["completion_tokens"] == expected

    _run(check, output_lengths={"kind": "fixed", "tokens": 3})
