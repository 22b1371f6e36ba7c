"""The emulator serves n choices and batched prompts as vLLM 0.32.0: one engine request
each, every choice in the answer, usage summed, metrics per request."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp
import pytest

from sincere.serve.emulator.config import EmulatorConfig
from sincere.serve.emulator.server import EmulatorServer
from sincere.serve.protocol import parse_sse_data

# 2 ms decode steps, 3 ms prefills
FAST = {"kind": "inferno", "params": {"alpha_ms": 2, "beta_ms": 0, "gamma_ms": 3, "delta_ms": 0}}
MODEL = "llama-3-8b"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 8}
# 64 words (62 tokens): three full 16-token blocks the n copies of the prompt share
LONG = " ".join(f"w{k}" for k in range(64))
COMPLETION = {"model": MODEL, "prompt": LONG, "max_tokens": 8}


def _run(check: Any, **kw: Any) -> None:
    config: dict[str, Any] = {"step_model": FAST, "engine": {"num_kv_blocks": 4096}, "port": 0}
    config.update(kw)

    async def main() -> None:
        async with (
            EmulatorServer(EmulatorConfig.model_validate(config)) as server,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session,
        ):
            await asyncio.wait_for(check(server, session), 30)

    asyncio.run(main())


async def _post(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> Any:
    async with session.post(url, json=body) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def _events(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> list[Any]:
    async with session.post(url, json={**body, "stream": True}) as resp:
        assert resp.status == 200, await resp.text()
        lines = [line async for line in resp.content if line.strip()]
    assert lines[-1].strip() == b"data: [DONE]"
    return [parse_sse_data(line) for line in lines[:-1]]


async def _metrics(server: EmulatorServer, session: aiohttp.ClientSession) -> str:
    async with session.get(server.url + "/metrics") as resp:
        return await resp.text()


def _sample(text: str, name: str) -> float:
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$", re.M)
    return sum(float(v) for v in pattern.findall(text))


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_n_choices_are_engine_requests_in_one_answer(path: str) -> None:
    """n = 3 answers 3 choices (index 0..2); usage counts the prompt once and every
    choice's tokens; the engine finished 3 requests and recorded n = 3 once; the copies
    after the first found the prompt in the prefix cache."""
    body = {**(CHAT if "chat" in path else COMPLETION), "n": 3,
            "sincere": {"output_tokens": 5}}  # fmt: skip

    async def check(server: EmulatorServer, session: aiohttp.ClientSession) -> None:
        out = await _post(session, server.url + path, body)
        assert [c["index"] for c in out["choices"]] == [0, 1, 2]
        assert {c["finish_reason"] for c in out["choices"]} == {"stop"}
        text = [c["text"] if "text" in c else c["message"]["content"] for c in out["choices"]]
        assert text == [" tok" * 5] * 3
        usage = out["usage"]
        assert usage["completion_tokens"] == 15
        assert usage["total_tokens"] == usage["prompt_tokens"] + 15
        metrics = await _metrics(server, session)
        assert _sample(metrics, "vllm:request_success_total") == 3
        assert _sample(metrics, "vllm:generation_tokens_total") == 15
        assert _sample(metrics, "vllm:request_prompt_tokens_count") == 3
        assert _sample(metrics, "vllm:request_params_n_count") == 1
        assert _sample(metrics, "vllm:request_params_n_sum") == 3
        if "chat" not in path:  # 3 full blocks of 16 tokens, cached for the 2nd and 3rd copy
            assert usage["prompt_tokens"] // 16 == 3
            assert _sample(metrics, "vllm:prefix_cache_hits_total") == 2 * 48

    _run(check)


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_streamed_n_choices_carry_their_index(path: str) -> None:
    """A stream of n = 3 gives each choice its tokens' chunks under its index, each ending
    with its finish reason, and one usage chunk summing them."""
    body = {**(CHAT if "chat" in path else COMPLETION), "n": 3,
            "stream_options": {"include_usage": True}, "sincere": {"output_tokens": 4}}  # fmt: skip

    async def check(server: EmulatorServer, session: aiohttp.ClientSession) -> None:
        events = await _events(session, server.url + path, body)
        usage = events[-1]["usage"]
        assert events[-1]["choices"] == [] and usage["completion_tokens"] == 12
        chunks = [c for e in events[:-1] for c in e["choices"]]
        for index in range(3):
            mine = [c for c in chunks if c["index"] == index]
            texts = [c["text"] if "text" in c else c["delta"]["content"] for c in mine]
            assert "".join(texts) == " tok" * 4
            assert mine[-1]["finish_reason"] == "stop"
            if "chat" in path:
                assert mine[0]["delta"] == {"role": "assistant", "content": ""}
        assert {c["index"] for c in chunks} == {0, 1, 2}

    _run(check)


def test_prompt_list_with_n_numbers_choices_by_prompt() -> None:
    """Two text prompts with n = 2 give 4 choices: index = prompt * n + choice (echo shows
    whose prompt each is); prompt tokens count each prompt once; 4 engine requests."""
    body = {"model": MODEL, "prompt": ["alpha", "beta gamma"], "n": 2, "echo": True,
            "max_tokens": 3, "sincere": {"output_tokens": 2}}  # fmt: skip

    async def check(server: EmulatorServer, session: aiohttp.ClientSession) -> None:
        out = await _post(session, server.url + "/v1/completions", body)
        assert [c["index"] for c in out["choices"]] == [0, 1, 2, 3]
        assert [c["text"] for c in out["choices"]] == [
            "alpha tok tok", "alpha tok tok", "beta gamma tok tok", "beta gamma tok tok"
        ]  # fmt: skip
        usage = out["usage"]
        assert usage["completion_tokens"] == 8
        alone = await _post(session, server.url + "/v1/completions",
                            {**body, "prompt": "alpha", "n": 1})  # fmt: skip
        other = await _post(session, server.url + "/v1/completions",
                            {**body, "prompt": "beta gamma", "n": 1})  # fmt: skip
        both = alone["usage"]["prompt_tokens"] + other["usage"]["prompt_tokens"]
        assert usage["prompt_tokens"] == both
        metrics = await _metrics(server, session)
        assert _sample(metrics, "vllm:request_success_total") == 6
        assert _sample(metrics, "vllm:request_params_n_count") == 4  # 2 prompts + 2 single
        assert _sample(metrics, "vllm:request_params_n_sum") == 6

    _run(check)


def test_token_id_prompts_with_n_stream_four_choices() -> None:
    """Two token-id prompts (3 and 5 ids) with n = 2, streamed: 4 indexes, each with its
    tokens, and usage of 8 prompt tokens and every generated token."""
    body = {"model": MODEL, "prompt": [[1, 2, 3], [4, 5, 6, 7, 8]], "n": 2, "max_tokens": 3,
            "stream_options": {"include_usage": True}}  # fmt: skip

    async def check(server: EmulatorServer, session: aiohttp.ClientSession) -> None:
        events = await _events(session, server.url + "/v1/completions", body)
        chunks = [c for e in events[:-1] for c in e["choices"]]
        for index in range(4):
            mine = [c for c in chunks if c["index"] == index]
            assert "".join(c["text"] for c in mine) == " tok" * 3
            assert mine[-1]["finish_reason"] == "length"
        usage = events[-1]["usage"]
        assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (
            8, 12, 20
        )  # fmt: skip
        metrics = await _metrics(server, session)
        assert _sample(metrics, "vllm:request_prompt_tokens_sum") == 2 * 3 + 2 * 5

    _run(check)


def test_greedy_sampling_refuses_n_above_one() -> None:
    """temperature 0 with n = 2 is vLLM's 400 naming n; nothing reaches the engine."""

    async def check(server: EmulatorServer, session: aiohttp.ClientSession) -> None:
        body = {**COMPLETION, "n": 2, "temperature": 0}
        async with session.post(server.url + "/v1/completions", json=body) as resp:
            assert resp.status == 400
            error = (await resp.json())["error"]
        assert error["param"] == "n"
        assert error["message"] == "n must be 1 when using greedy sampling, got 2."
        assert _sample(await _metrics(server, session), "vllm:request_success_total") == 0

    _run(check)


def test_client_leaving_aborts_every_choice() -> None:
    """A client leaving a stream of n = 3 aborts all three engine requests."""

    async def check(server: EmulatorServer, session: aiohttp.ClientSession) -> None:
        body = {**COMPLETION, "n": 3, "max_tokens": 2000, "stream": True}
        resp = await session.post(server.url + "/v1/completions", json=body)
        seen = 0
        async for line in resp.content:
            seen += line.startswith(b"data: {")
            if seen == 6:
                break
        assert server.live is not None and server.live.num_in_flight == 3
        resp.close()
        for _ in range(200):
            if server.live.num_in_flight == 0:
                break
            await asyncio.sleep(0.01)
        assert server.live.num_in_flight == 0
        assert server.metrics.aborted._value.get() == 3

    _run(check)


def test_choices_past_capacity_are_refused_before_the_engine() -> None:
    """On an emulator of 2 request slots n = 3 is 400 (each choice takes a slot: 3 never
    fit), n = 2 beside a running request 503; none of their choices reaches the engine."""

    async def check(server: EmulatorServer, session: aiohttp.ClientSession) -> None:
        body = {**COMPLETION, "n": 3}
        async with session.post(server.url + "/v1/completions", json=body) as resp:
            assert resp.status == 400
            assert "got 3 sequences" in (await resp.json())["error"]["message"]
        assert server.live is not None and server.live.num_in_flight == 0
        assert server.metrics.aborted._value.get() == 0  # none was given to the engine
        out = await _post(session, server.url + "/v1/completions", {**body, "n": 2})
        assert [c["index"] for c in out["choices"]] == [0, 1]
        long = {**COMPLETION, "max_tokens": 2000, "stream": True}
        async with session.post(server.url + "/v1/completions", json=long) as held:
            await held.content.readline()  # one slot busy: n = 2 does not fit now
            two = {**body, "n": 2}
            async with session.post(server.url + "/v1/completions", json=two) as resp:
                assert resp.status == 503 and server.live.num_in_flight == 1
        body = {**COMPLETION, "prompt": ["a", "b"], "n": 2}  # 4 sequences: never fit
        async with session.post(server.url + "/v1/completions", json=body) as resp:
            assert resp.status == 400
            message = (await resp.json())["error"]["message"]
        assert (
            message == "n x prompts: got 4 sequences; allowed: at most 2 (the emulator's "
            "max_num_requests)"
        )

    _run(check, max_num_requests=2)
