"""The gateway takes what vLLM's OpenAI server takes and answers errors as its clients expect."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tests.serve.gateway.test_billing import settled
from tests.serve.security.test_gateway import PRICE_OUT_PER_1M, bearer, gateway_config, make_keys

from sincere.serve.backends.fake_upstream import FakeUpstream
from sincere.serve.backends.ollama_api import ollama_body
from sincere.serve.gateway.dispatch import RefusalError
from sincere.serve.gateway.server import Gateway
from sincere.serve.protocol import parse_request
from sincere.serve.security.keys import KeySpec

BODY = {"model": "m", "prompt": "hello there", "max_tokens": 4}


def run(factory: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(factory(), 40))


def two_backends(ups: list[FakeUpstream], keys: Path | None = None, **extra: Any) -> Any:
    """A gateway config over ``ups`` (backends b0, b1, ... of model m)."""
    cfg = gateway_config(ups[0].url, keys, **extra)
    backends = [
        cfg.backends[0].model_copy(update={"name": f"b{i}", "url": u.url})
        for i, u in enumerate(ups)
    ]
    return cfg.model_copy(update={"backends": backends})


async def post(
    s: aiohttp.ClientSession,
    url: str,
    body: Any,
    headers: dict[str, str] | None = None,
    path: str = "/v1/completions",
) -> tuple[int, dict[str, Any], dict[str, str]]:
    async with s.post(url + path, json=body, headers=headers or {}) as r:
        return r.status, await r.json(content_type=None), dict(r.headers)


def test_n_choices_are_relayed_and_charged_for_every_choice(tmp_path: Path) -> None:
    """n = 3 is served with 3 choices (as vLLM answers) and charged 3 answers' tokens."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(keys, acme=KeySpec(name="acme", budget_usd=1000.0))

    async def body() -> None:
        async with (
            FakeUpstream(num_tokens=4) as up,
            Gateway(gateway_config(up.url, keys)) as gw,
            aiohttp.ClientSession() as s,
        ):
            status, out, _ = await post(s, gw.url, {**BODY, "n": 3}, bearer(tokens["acme"]))
            assert status == 200 and [c["index"] for c in out["choices"]] == [0, 1, 2]
            assert up.bodies[0]["n"] == 3
            used = await settled(gw, 1)
            assert used.num_completion_tokens == 12  # 3 choices x 4 tokens, none dropped
            assert used.spent_usd == pytest.approx(12 * PRICE_OUT_PER_1M / 1e6)

    run(body)


def test_streamed_n_choices_are_charged_for_every_choice(tmp_path: Path) -> None:
    """A stream of 2 choices is charged both choices' tokens (the cap is per choice)."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(keys, acme=KeySpec(name="acme", budget_usd=1000.0))

    async def body() -> None:
        async with (
            FakeUpstream(num_tokens=4) as up,
            Gateway(gateway_config(up.url, keys)) as gw,
            aiohttp.ClientSession() as s,
        ):
            req = {**BODY, "n": 2, "stream": True}
            async with s.post(
                gw.url + "/v1/completions", json=req, headers=bearer(tokens["acme"])
            ) as r:
                assert r.status == 200
                await r.read()
            assert (await settled(gw, 1)).num_completion_tokens == 8

    run(body)


def test_batched_prompts_are_relayed_whole_and_counted(tmp_path: Path) -> None:
    """A list of prompts (as lm-eval-harness sends) is served: one choice per prompt."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(keys, acme=KeySpec(name="acme", budget_usd=1000.0))

    async def body() -> None:
        async with (
            FakeUpstream(num_tokens=2) as up,
            Gateway(gateway_config(up.url, keys)) as gw,
            aiohttp.ClientSession() as s,
        ):
            for prompt in (["a b", "c d", "e f"], [[1, 2], [3, 4], [5, 6]]):
                req = {**BODY, "prompt": prompt}
                status, out, _ = await post(s, gw.url, req, bearer(tokens["acme"]))
                assert status == 200 and len(out["choices"]) == 3
            assert (await settled(gw, 2)).num_completion_tokens == 12

    run(body)


def test_ollama_backends_refuse_several_sequences_clearly() -> None:
    """A model served by Ollama gets a 400 naming n (and the batch), not a wrong answer."""

    async def body() -> None:
        async with FakeUpstream() as up, aiohttp.ClientSession() as s:
            cfg = gateway_config(up.url, None)
            ollama = cfg.backends[0].model_copy(update={"kind": "ollama"})
            async with Gateway(cfg.model_copy(update={"backends": [ollama]})) as gw:
                status, out, _ = await post(s, gw.url, {**BODY, "n": 2})
                assert status == 400 and out["error"]["code"] == "unsupported_by_backend"
                assert out["error"]["param"] == "n" and "Ollama" in out["error"]["message"]
                status, out, _ = await post(s, gw.url, {**BODY, "prompt": ["a", "b"]})
                assert status == 400 and out["error"]["param"] == "prompt"
                assert not up.bodies  # nothing reached the engine

    run(body)


def test_over_context_is_400_before_any_rate_limit(tmp_path: Path) -> None:
    """An over-context prompt is a 400 context_length_exceeded naming the token counts, and
    takes nothing from the key's request window (checked before limits)."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(keys, acme=KeySpec(name="acme", budget_usd=1000.0, max_requests_per_min=1))

    async def body() -> None:
        async with FakeUpstream() as up, aiohttp.ClientSession() as s:
            cfg = gateway_config(up.url, keys)
            small = cfg.backends[0].model_copy(update={"max_model_len": 64})
            async with Gateway(cfg.model_copy(update={"backends": [small]})) as gw:
                long = {**BODY, "prompt": list(range(60)), "max_tokens": 10}
                for _ in range(3):
                    status, out, _ = await post(s, gw.url, long, bearer(tokens["acme"]))
                    assert status == 400 and out["error"]["code"] == "context_length_exceeded"
                message = out["error"]["message"]
                assert "maximum context length is 64 tokens" in message
                assert "(60 in the prompt, 10 in the completion)" in message
                assert "max_tokens at most 4 fits" in message
                status, _, _ = await post(s, gw.url, BODY, bearer(tokens["acme"]))
                assert status == 200  # the one request a minute was still there

    run(body)


def test_keyed_answer_without_max_tokens_says_its_cap(tmp_path: Path) -> None:
    """Keys on and no max_tokens: a chat is capped at the context's room (not 256), sent
    upstream and named in a header; a completion at vLLM's 16."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(keys, acme=KeySpec(name="acme", budget_usd=1e5))

    async def body() -> None:
        async with FakeUpstream(num_tokens=3) as up, aiohttp.ClientSession() as s:
            cfg = gateway_config(up.url, keys)
            ctx = cfg.backends[0].model_copy(update={"max_model_len": 2048})
            async with Gateway(cfg.model_copy(update={"backends": [ctx]})) as gw:
                req = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
                who = bearer(tokens["acme"])
                status, _, headers = await post(s, gw.url, req, who, "/v1/chat/completions")
                completion = {"model": "m", "prompt": [1, 2, 3, 4]}
                _, _, plain = await post(s, gw.url, completion, who)
        cap = int(headers["x-sincere-max-tokens"])
        assert status == 200 and 2000 < cap < 2048 and up.bodies[0]["max_tokens"] == cap
        assert plain["x-sincere-max-tokens"] == "16" and up.bodies[1]["max_tokens"] == 16

    run(body)


def test_validation_errors_are_400_with_a_code() -> None:
    """Bad values are 400 (vLLM's status, not 422) with a non-null code; lenient scalars pass."""

    async def body() -> None:
        async with (
            FakeUpstream() as up,
            Gateway(gateway_config(up.url, None)) as gw,
            aiohttp.ClientSession() as s,
        ):
            for bad in ({**BODY, "max_tokens": 0}, {**BODY, "temperature": "hot"}):
                status, out, _ = await post(s, gw.url, bad)
                assert status == 400 and out["error"]["code"]
            status, _, _ = await post(s, gw.url, {**BODY, "seed": "42", "max_tokens": 2.0})
            assert status == 200 and up.bodies[-1]["max_tokens"] == 2

    run(body)


def test_unknown_paths_and_methods_are_json() -> None:
    """404 and 405 are OpenAI error JSON; /v1/responses names the paths served."""

    async def body() -> None:
        async with (
            FakeUpstream() as up,
            Gateway(gateway_config(up.url, None)) as gw,
            aiohttp.ClientSession() as s,
        ):
            status, out, headers = await post(s, gw.url, {"model": "m"}, path="/v1/responses")
            assert status == 404 and headers["Content-Type"].startswith("application/json")
            assert "POST /v1/chat/completions" in out["error"]["message"]
            assert out["error"]["code"] == "not_found"
            async with s.get(gw.url + "/v1/completions") as r:
                assert r.status == 405 and (await r.json())["error"]["code"]

    run(body)


def test_cors_allowed_origins() -> None:
    """allowed_origins answers preflights and marks answers (streams too); others get 403."""

    async def body() -> None:
        async with FakeUpstream() as up, aiohttp.ClientSession() as s:
            cfg = gateway_config(up.url, None, allowed_origins=["https://app.example"])
            async with Gateway(cfg) as gw:
                pre = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
                async with s.options(gw.url + "/v1/completions", headers=pre) as r:
                    assert r.status == 204
                    assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
                evil = {**pre, "Origin": "https://evil.example"}
                async with s.options(gw.url + "/v1/completions", headers=evil) as r:
                    assert r.status == 403
                origin = {"Origin": "https://app.example"}
                req = {**BODY, "stream": True}
                async with s.post(gw.url + "/v1/completions", json=req, headers=origin) as r:
                    assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
                    await r.read()

    run(body)


def test_tokenize_and_detokenize_pass_through() -> None:
    """/tokenize and /detokenize reach an instance (model renamed) and come back as they are."""

    async def body() -> None:
        async with FakeUpstream() as up, aiohttp.ClientSession() as s:
            cfg = gateway_config(up.url, None)
            mapped = cfg.backends[0].model_copy(update={"models": {"m": "m-upstream"}})
            async with Gateway(cfg.model_copy(update={"backends": [mapped]})) as gw:
                req = {"model": "m", "prompt": "one two three"}
                status, out, _ = await post(s, gw.url, req, path="/tokenize")
                assert status == 200 and out["count"] == 3 and out["tokens"] == [0, 1, 2]
                assert up.bodies[-1]["model"] == "m-upstream"
                detok = {"model": "m", "tokens": [1, 2]}
                status, out, _ = await post(s, gw.url, detok, path="/detokenize")
                assert status == 200 and out["prompt"] == "t1 t2"
                status, out, _ = await post(s, gw.url, {"model": "x"}, path="/tokenize")
                assert status == 404 and out["error"]["code"] == "model_not_found"

    run(body)


def test_a_request_fault_is_not_an_instance_fault() -> None:
    """The same 500 from two healthy instances is the request's: passed on with the engine's
    body, not retried further, breakers left closed, counted as status errors."""

    async def body() -> None:
        ups = [FakeUpstream(), FakeUpstream(), FakeUpstream()]
        async with ups[0], ups[1], ups[2], aiohttp.ClientSession() as s:
            for up in ups:
                up.fail_status = 500
            cfg = two_backends(ups, breaker={"failure_threshold": 1, "cooldown_s": 60})
            async with Gateway(cfg) as gw:
                status, out, _ = await post(s, gw.url, BODY)
                assert status == 500 and out == {"error": {"message": "injected"}}
                assert sum(len(up.bodies) for up in ups) == 2  # the third was never asked
                assert set(gw.instance_health().values()) == {"closed"}
                kinds = {kind for (_, kind) in gw.metrics.upstream_errors}
                assert kinds == {"status"}

    run(body)


def test_an_instance_fault_is_still_retried() -> None:
    """A 500 from one instance while another serves: retried there, the first counted."""

    async def body() -> None:
        async with FakeUpstream() as bad, FakeUpstream() as good, aiohttp.ClientSession() as s:
            bad.fail_status = 500
            cfg = two_backends([bad, good], router={"name": "round-robin"})
            async with Gateway(cfg) as gw:
                statuses = [(await post(s, gw.url, BODY))[0] for _ in range(4)]
                assert statuses == [200] * 4
                assert gw.metrics.upstream_errors[("b0", "status")] >= 1

    run(body)


def test_not_implemented_is_the_request_fault_at_once() -> None:
    """A 501 is passed on from the first instance; no other instance is tried."""

    async def body() -> None:
        async with FakeUpstream() as a, FakeUpstream() as b, aiohttp.ClientSession() as s:
            a.fail_status = b.fail_status = 501
            async with Gateway(two_backends([a, b])) as gw:
                status, _, _ = await post(s, gw.url, BODY)
                assert status == 501 and len(a.bodies) + len(b.bodies) == 1

    run(body)


def test_gateway_refusals_carry_retry_hints() -> None:
    """502/503 say Retry-After; a hopeless deadline says x-should-retry: false as well."""

    async def body() -> None:
        cfg = gateway_config("http://127.0.0.1:9", None, breaker={"cooldown_s": 7})
        async with Gateway(cfg) as gw, aiohttp.ClientSession() as s:
            status, _, headers = await post(s, gw.url, BODY)
            assert status == 502 and headers["Retry-After"] == "1"
            hopeless = RefusalError(429, "cannot meet it", "rejected", "deadline_unreachable")
            answer = gw._refusal_answer(hopeless, "default")
            assert answer.headers["x-should-retry"] == "false"
            assert int(answer.headers["Retry-After"]) >= 10
            gone = RefusalError(503, "no instance", "unavailable", "no_instance")
            assert gw._refusal_answer(gone, "default").headers["Retry-After"] == "7"
            body = json.loads(gw._refusal_answer(gone, "default").body)  # type: ignore[arg-type]
            assert body["error"]["code"] == "no_instance"

    run(body)


def test_image_parts_are_counted_and_the_body_limit_says_so(tmp_path: Path) -> None:
    """An image part counts its tokens in a key's token window; an over-size body is a 413
    naming limits.max_body_bytes."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(keys, acme=KeySpec(name="acme", budget_usd=1e5, max_tokens_per_min=500))

    async def body() -> None:
        async with FakeUpstream() as up, aiohttp.ClientSession() as s:
            cfg = gateway_config(up.url, keys, limits={"max_body_bytes": 4096})
            async with Gateway(cfg) as gw:
                who = bearer(tokens["acme"])
                image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}
                text = {"type": "text", "text": "what is it"}
                chat = {"model": "m", "messages": [{"role": "user", "content": [text]}]}
                chat["max_tokens"] = 4
                status, _, _ = await post(s, gw.url, chat, who, "/v1/chat/completions")
                assert status == 200
                chat["messages"] = [{"role": "user", "content": [image, text]}]
                status, out, _ = await post(s, gw.url, chat, who, "/v1/chat/completions")
                assert status == 429  # 576 image tokens do not fit a 500-token window
                assert out["error"]["code"] == "tokens_per_minute_exceeded"
                big = {**chat, "pad": "x" * 5000}
                status, out, _ = await post(s, gw.url, big, who, "/v1/chat/completions")
                assert status == 413 and "limits.max_body_bytes" in out["error"]["message"]

    run(body)


def test_lenient_options_reach_ollama_as_numbers() -> None:
    """seed "42" and temperature "0.5", accepted as vLLM accepts them, reach Ollama typed."""
    raw = json.dumps({**BODY, "seed": "42", "temperature": "0.5", "top_p": 1})
    creq = parse_request(raw, "completion")
    options = ollama_body(creq, "m", 4)["options"]
    assert options == {"seed": 42, "temperature": 0.5, "top_p": 1.0, "num_predict": 4}
