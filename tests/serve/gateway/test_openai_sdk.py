"""The official OpenAI Python SDK against the gateway, with vLLM's documented behaviour as the
expectation: over emulated engines for errors, limits, streams, ``n`` and batched prompts;
over a vLLM-shaped upstream (:class:`FakeUpstream`) for a backend without a model."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from tests.serve.security.test_gateway import make_keys

from sincere.serve.backends.fake_upstream import FakeUpstream
from sincere.serve.emulator.config import EmulatorConfig
from sincere.serve.emulator.server import EmulatorServer
from sincere.serve.gateway.config import parse_config
from sincere.serve.gateway.server import Gateway
from sincere.serve.security.keys import KeySpec

openai = pytest.importorskip("openai", reason="the openai SDK (extra 'dev') is not installed")

MODEL = "llama-3-8b"
FAST = {"kind": "inferno", "params": {"alpha_ms": 2, "beta_ms": 0, "gamma_ms": 3, "delta_ms": 0}}


def run(factory: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(factory(), 60))


@contextlib.asynccontextmanager
async def over_emulator(keys: Path | None = None, **backend: Any) -> AsyncIterator[Gateway]:
    """A gateway over one emulated llama-3-8b engine (context 8192, as the catalog says)."""
    emu = EmulatorConfig.model_validate({"step_model": FAST, "engine": {"num_kv_blocks": 4096}})
    async with EmulatorServer(emu) as server:
        raw = {
            "port": 0,
            "scrape": {"enabled": False},
            "backends": [
                {"name": "e0", "url": server.url, "models": [MODEL], "metrics_path": None,
                 "price_out_per_1m_usd": 1e6, "max_model_len": 8192, **backend}
            ],
            "security": {"keys": None if keys is None else str(keys), "flush_interval_s": 0.05},
        }  # fmt: skip
        async with Gateway(parse_config(raw)) as gw:
            yield gw


def client(gw: Gateway, key: str = "none", max_retries: int = 2) -> Any:
    return openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=max_retries)


def test_sdk_completion_and_chat_with_stream_usage() -> None:
    """A completion, a chat, and a stream with include_usage (its last chunk: usage only)."""

    async def body() -> None:
        async with over_emulator() as gw, client(gw) as c:
            done = await c.completions.create(model=MODEL, prompt="hello", max_tokens=5)
            assert done.usage is not None and done.usage.completion_tokens == 5
            chat = await c.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=3
            )
            assert chat.choices[0].message.role == "assistant"
            stream = await c.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4,
                stream=True, stream_options={"include_usage": True},
            )  # fmt: skip
            chunks = [chunk async for chunk in stream]
            assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4
            assert all(chunk.usage is None for chunk in chunks[:-1])

    run(body)


def test_sdk_sees_bad_request_not_unprocessable() -> None:
    """Validation and context errors raise BadRequestError (400) with a code, as with vLLM."""

    async def body() -> None:
        async with over_emulator() as gw, client(gw) as c:
            with pytest.raises(openai.BadRequestError) as bad:
                await c.completions.create(model=MODEL, prompt="hi", max_tokens=0)
            assert bad.value.code == "invalid_value"
            with pytest.raises(openai.BadRequestError) as long:
                await c.completions.create(model=MODEL, prompt=[1] * 8000, max_tokens=500)
            assert long.value.code == "context_length_exceeded"
            assert "maximum context length is 8192 tokens" in long.value.message
            with pytest.raises(openai.NotFoundError):
                await c.completions.create(model="nope", prompt="hi", max_tokens=1)
            lenient = await c.completions.create(
                model=MODEL, prompt="hi", max_tokens=2, extra_body={"seed": "42"}
            )
            assert lenient.usage is not None and lenient.usage.completion_tokens == 2

    run(body)


def test_sdk_spent_budget_is_rate_limit_insufficient_quota_not_retried(tmp_path: Path) -> None:
    """A spent budget raises RateLimitError with code insufficient_quota, and the SDK does
    not retry it (the gateway says x-should-retry: false)."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(keys, acme=KeySpec(name="acme", budget_usd=3.0))

    async def body() -> None:
        async with over_emulator(keys) as gw, client(gw, tokens["acme"]) as c:
            with pytest.raises(openai.RateLimitError) as spent:
                await c.completions.create(model=MODEL, prompt="hi", max_tokens=10)
            assert spent.value.code == "insufficient_quota"
            assert spent.value.response.headers["x-should-retry"] == "false"
            refused = sum(v for k, v in gw.metrics.requests.items() if k[2] == "budget_exhausted")
            assert refused == 1  # one request: the SDK's 2 retries were not spent on it

    run(body)


def test_sdk_n_choices_and_batched_prompts() -> None:
    """n = 2 gives 2 choices; a batch of 3 prompts gives 3 choices (vLLM's answers)."""

    async def body() -> None:
        async with FakeUpstream(num_tokens=3) as up:
            raw = {
                "port": 0, "scrape": {"enabled": False},
                "backends": [{"name": "v0", "url": up.url, "models": [MODEL],
                              "metrics_path": None}],
            }  # fmt: skip
            async with Gateway(parse_config(raw)) as gw, client(gw) as c:
                two = await c.completions.create(model=MODEL, prompt="hi", max_tokens=3, n=2)
                assert [ch.index for ch in two.choices] == [0, 1]
                batch = await c.completions.create(
                    model=MODEL, prompt=["a", "b", "c"], max_tokens=3
                )
                assert len(batch.choices) == 3
                chat = await c.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "hi"}], n=3, max_tokens=3
                )
                assert len(chat.choices) == 3

    run(body)


def test_sdk_n_and_batches_over_emulators_are_served_and_billed(tmp_path: Path) -> None:
    """Over an emulated engine n = 3, a batch of 2 prompts with n = 2 and a streamed chat
    with n = 2 are answered whole (3, 4, 2 choices, vLLM's indexes), and the key is
    billed every choice's tokens: 3x3 + 4x2 + 2x4 completion tokens at $1 a token."""
    from tests.serve.gateway.test_billing import settled

    keys = tmp_path / "keys.db"
    tokens = make_keys(keys, acme=KeySpec(name="acme", budget_usd=1e6))
    exact = {"extra_body": {"sincere": {"output_tokens": 100}}}  # answers run to max_tokens

    async def body() -> None:
        async with over_emulator(keys) as gw, client(gw, tokens["acme"]) as c:
            three = await c.completions.create(model=MODEL, prompt="hi", max_tokens=3, n=3, **exact)
            assert [ch.index for ch in three.choices] == [0, 1, 2]
            batch = await c.completions.create(
                model=MODEL, prompt=[[1, 2, 3], [4, 5]], max_tokens=2, n=2, **exact
            )
            assert [ch.index for ch in batch.choices] == [0, 1, 2, 3]
            assert batch.usage is not None and batch.usage.prompt_tokens == 5
            assert batch.usage.completion_tokens == 8
            stream = await c.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}], n=2, max_tokens=4,
                stream=True, stream_options={"include_usage": True}, **exact,
            )  # fmt: skip
            seen: dict[int, str] = {}
            async for chunk in stream:
                if chunk.usage is not None:
                    chat_usage = chunk.usage
                for ch in chunk.choices:
                    seen[ch.index] = seen.get(ch.index, "") + (ch.delta.content or "")
            assert seen == {0: " tok" * 4, 1: " tok" * 4}
            used = await settled(gw, 3)
            assert used.num_completion_tokens == 9 + 8 + 8
            assert three.usage is not None and chat_usage.completion_tokens == 8
            prompts = three.usage.prompt_tokens + 5 + chat_usage.prompt_tokens
            assert used.num_prompt_tokens == prompts  # each prompt once, as vLLM's usage
            assert used.spent_usd == pytest.approx(25.0)

    run(body)


def test_sdk_unknown_path_is_not_found() -> None:
    """The Responses API is not served: the SDK gets NotFoundError naming what is."""

    async def body() -> None:
        async with over_emulator() as gw, client(gw) as c:
            with pytest.raises(openai.NotFoundError) as missing:
                await c.responses.create(model=MODEL, input="hi")
            assert "/v1/chat/completions" in missing.value.message

    run(body)


def test_sdk_waits_as_retry_after_says_then_retries_a_failed_instance() -> None:
    """Every instance failing is a 502 with Retry-After: 1, which the SDK honours: it
    retries once after about a second (max_retries=1), and gets InternalServerError."""

    async def body() -> None:
        raw = {
            "port": 0, "scrape": {"enabled": False},
            "backends": [{"name": "dead", "url": "http://127.0.0.1:9", "models": [MODEL],
                          "metrics_path": None}],
        }  # fmt: skip
        async with Gateway(parse_config(raw)) as gw, client(gw, max_retries=1) as c:
            started = asyncio.get_running_loop().time()
            with pytest.raises(openai.InternalServerError) as failed:
                await c.completions.create(model=MODEL, prompt="hi", max_tokens=1)
            waited = asyncio.get_running_loop().time() - started
            assert failed.value.status_code == 502 and failed.value.code == "upstream_error"
            attempts = sum(v for k, v in gw.metrics.requests.items() if k[2] == "error")
            assert attempts == 2 and waited >= 0.9  # one retry, after Retry-After

    run(body)


def test_sdk_does_not_resend_a_hopeless_deadline() -> None:
    """A deadline admission knows cannot be met (deadline_unreachable) is refused once: the
    SDK, told x-should-retry: false, does not send it again (it used to, 3 times in 2 s)."""

    async def body() -> None:
        async with FakeUpstream(ttft_s=0.05) as up:
            raw = {
                "port": 0, "scrape": {"enabled": False},
                "backends": [{"name": "v0", "url": up.url, "models": [MODEL],
                              "metrics_path": None}],
            }  # fmt: skip
            async with Gateway(parse_config(raw)) as gw, client(gw, max_retries=3) as c:
                warm = await c.completions.create(
                    model=MODEL, prompt="hi", max_tokens=3, stream=True
                )
                _ = [chunk async for chunk in warm]  # the instance is measured: ~50 ms
                with pytest.raises(openai.RateLimitError) as hopeless:
                    await c.completions.create(
                        model=MODEL, prompt="hi", max_tokens=3,
                        extra_body={"sincere": {"deadline_s": 0.01}},
                    )  # fmt: skip
                assert hopeless.value.code == "deadline_unreachable"
                refused = sum(v for k, v in gw.metrics.requests.items() if k[2] == "rejected")
                assert refused == 1 and len(up.bodies) == 1

    run(body)
