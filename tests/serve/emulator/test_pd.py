"""Emulated engines in prefill / decode roles speak vLLM's KV-transfer protocol over HTTP."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sincere.bench.prompts import BlockTexts, block_prompt
from sincere.catalog import get_model
from sincere.serve.emulator.config import EmulatorConfig
from sincere.serve.emulator.pd import KV_TRANSFER_HEADER, KV_WAIT_HEADER, phase_of, remote_kv
from sincere.serve.emulator.server import EmulatorServer
from sincere.serve.protocol import ProtocolError

# 2 ms decode steps; a prefill costs 3 ms plus 0.5 ms a prompt token (1000 tokens: 0.5 s)
STEP = {"kind": "inferno", "params": {"alpha_ms": 2, "beta_ms": 0, "gamma_ms": 3,
                                      "delta_ms": 0.5}}  # fmt: skip
KV_PER_TOKEN = get_model("llama-3-8b").kv_bytes_per_token("fp16")


def _config(role: str, **extra: Any) -> EmulatorConfig:
    return EmulatorConfig.model_validate({"step_model": STEP, "role": role, **extra})


async def _post(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any]
) -> tuple[int, dict[str, Any], dict[str, str], float]:
    start = time.perf_counter()
    async with session.post(url + "/v1/completions", json=body) as resp:
        data = await resp.json()
        return resp.status, data, dict(resp.headers), time.perf_counter() - start


def _prefill_body(model: str, prompt_tokens: int) -> dict[str, Any]:
    return {"model": model, "prompt": [1] * prompt_tokens, "max_tokens": 1,
            "kv_transfer_params": {"do_remote_decode": True, "do_remote_prefill": False,
                                   "remote_engine_id": None, "remote_block_ids": None,
                                   "remote_host": None, "remote_port": None}}  # fmt: skip


def test_prefill_answer_carries_vllm_kv_transfer_params() -> None:
    """A prefill returns one token and where its KV is, with the emulated KV size and link."""
    got: dict[str, Any] = {}

    async def main() -> None:
        config = _config("prefill", kv_link={"kind": "rdma", "bandwidth_gbps": 2.0})
        async with EmulatorServer(config) as p, aiohttp.ClientSession() as session:
            got["name"], got["port"] = p.name, p.port
            got["answer"] = await _post(session, p.url, _prefill_body(p.model_name, 100))

    asyncio.run(asyncio.wait_for(main(), 30))
    status, data, _, _ = got["answer"]
    assert status == 200 and data["usage"]["completion_tokens"] == 1
    params = data["kv_transfer_params"]
    assert params["do_remote_prefill"] is True and params["do_remote_decode"] is False
    assert params["remote_engine_id"] == got["name"] and params["remote_port"] == got["port"]
    assert params["remote_block_ids"] == list(range(7))  # 100 tokens in blocks of 16
    assert params["sincere"]["kv_bytes"] == pytest.approx(100 * KV_PER_TOKEN)
    assert params["sincere"]["bandwidth_gbps"] == 2.0


def test_decode_waits_the_transfer_and_skips_the_prompt() -> None:
    """A decode request's first token comes after the link time, without the 0.5 s prefill,
    and two transfers from one prefill engine share its link (both take twice as long)."""
    wire_s = 0.2
    figures = {"kv_bytes": wire_s * 1e9, "bandwidth_gbps": 1.0, "latency_s": 0.0}
    link = {"remote_engine_id": "p0", "do_remote_prefill": True, "sincere": figures}
    got: list[Any] = []

    async def main() -> None:
        async with EmulatorServer(_config("decode")) as d, aiohttp.ClientSession() as session:
            body = {"model": d.model_name, "prompt": [1] * 1000, "max_tokens": 5,
                    "kv_transfer_params": link}  # fmt: skip
            got.extend(await asyncio.gather(*(_post(session, d.url, body) for _ in range(2))))

    asyncio.run(asyncio.wait_for(main(), 30))
    (s1, d1, h1, t1), (s2, d2, h2, _) = sorted(got, key=lambda g: g[3])
    assert s1 == s2 == 200
    assert d1["usage"]["completion_tokens"] == 5 == d2["usage"]["completion_tokens"]
    assert float(h1[KV_TRANSFER_HEADER]) == pytest.approx(2 * wire_s, abs=0.05)
    assert float(h2[KV_TRANSFER_HEADER]) == pytest.approx(2 * wire_s, abs=0.05)
    assert float(h1[KV_WAIT_HEADER]) < 0.05
    assert t1 < 2 * wire_s + 0.3  # no 0.5 s prefill of the 1000-token prompt


def test_decode_admission_waits_for_free_blocks() -> None:
    """KV that does not fit next to a running decode waits until its blocks are freed."""
    link = {"remote_engine_id": "p0", "do_remote_prefill": True,
            "sincere": {"kv_bytes": 0.0, "bandwidth_gbps": 1.0, "latency_s": 0.0}}  # fmt: skip
    got: list[Any] = []

    async def main() -> None:
        config = _config("decode", engine={"num_kv_blocks": 40})
        async with EmulatorServer(config) as d, aiohttp.ClientSession() as session:
            body = {"model": d.model_name, "prompt": [1] * 400, "max_tokens": 50,
                    "kv_transfer_params": link}  # fmt: skip
            got.extend(await asyncio.gather(*(_post(session, d.url, body) for _ in range(2))))

    asyncio.run(asyncio.wait_for(main(), 30))
    waits = sorted(float(h[KV_WAIT_HEADER]) for s, _, h, _ in got if s == 200)
    assert len(waits) == 2
    assert waits[0] < 0.02 and waits[1] > 0.05  # the second waited for ~49 decode steps


def test_roles_refuse_the_other_phase_and_bad_params() -> None:
    """A prefill instance refuses decode requests (400), malformed parameters are named."""
    got: dict[str, Any] = {}

    async def main() -> None:
        async with EmulatorServer(_config("prefill")) as p, aiohttp.ClientSession() as session:
            base = {"model": p.model_name, "prompt": "hi", "max_tokens": 3}
            decode = {**base, "kv_transfer_params": {"do_remote_prefill": True}}
            got["role"] = await _post(session, p.url, decode)
            got["type"] = await _post(session, p.url, {**base, "kv_transfer_params": [1]})
        async with EmulatorServer(_config("decode")) as d, aiohttp.ClientSession() as session:
            bad = {"do_remote_prefill": True, "remote_engine_id": "p",
                   "sincere": {"bandwidth_gbps": -1}}  # fmt: skip
            base = {"model": d.model_name, "prompt": "hi", "max_tokens": 3}
            got["figure"] = await _post(session, d.url, {**base, "kv_transfer_params": bad})
            got["plain"] = await _post(session, d.url, base)

    asyncio.run(asyncio.wait_for(main(), 30))
    assert got["role"][0] == 400 and "role" in got["role"][1]["error"]["message"]
    assert got["type"][0] == 400 and got["type"][1]["error"]["param"] == "kv_transfer_params"
    assert got["figure"][0] == 400
    assert got["figure"][1]["error"]["param"] == "kv_transfer_params.sincere.bandwidth_gbps"
    assert got["plain"][0] == 200  # a request without KV parameters is served whole


@pytest.mark.parametrize("caching", [True, False])
def test_usage_reports_cached_prompt_tokens(caching: bool) -> None:
    """With prefix caching on, usage.prompt_tokens_details.cached_tokens says the hit."""
    texts = BlockTexts(16)
    first = block_prompt(list(range(64)), 1024, texts)
    second = block_prompt([*range(60), 100, 101, 102, 103], 1024, texts)
    usages: list[dict[str, Any]] = []

    async def main() -> None:
        config = EmulatorConfig.model_validate(
            {"step_model": STEP, "engine": {"num_kv_blocks": 4096,
                                            "enable_prefix_caching": caching}}
        )  # fmt: skip
        async with EmulatorServer(config) as server, aiohttp.ClientSession() as session:
            for prompt in (first, second):
                body = {"model": server.model_name, "prompt": prompt, "max_tokens": 2,
                        "sincere": {"output_tokens": 2, "prompt_tokens": 1024}}  # fmt: skip
                usages.append((await _post(session, server.url, body))[1]["usage"])
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
            async with session.post(server.url + "/v1/completions", json=body) as resp:
                text = await resp.text()
            usages.append({"stream": text})

    asyncio.run(asyncio.wait_for(main(), 30))
    if caching:
        assert usages[0]["prompt_tokens_details"] == {"cached_tokens": 0}
        assert usages[1]["prompt_tokens_details"] == {"cached_tokens": 960}
        # the same prompt again: all but its last block (one token must be computed)
        stream = usages[2]["stream"].replace(" ", "")
        assert '"prompt_tokens_details":{"cached_tokens":1008}' in stream
    else:
        assert usages[1].get("prompt_tokens_details") is None  # vLLM writes null
        assert "prompt_tokens_details" not in usages[2]["stream"]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
KEYS = st.sampled_from(["do_remote_prefill", "do_remote_decode", "remote_engine_id", "sincere"])


@given(
    st.one_of(JSON, st.dictionaries(KEYS, JSON | st.dictionaries(
        st.sampled_from(["kv_bytes", "bandwidth_gbps", "latency_s"]), JSON), max_size=4)),
    st.sampled_from(["prefill", "decode", "both"]),
)  # fmt: skip
def test_any_kv_transfer_params_parse_or_get_a_400(params: Any, role: str) -> None:
    """Whatever kv_transfer_params a client sends, the emulator reads it or answers a 400
    naming the field -- never another error."""
    body = {"kv_transfer_params": params}
    try:
        phase = phase_of(body, role)
        if phase == "decode":
            remote = remote_kv(body)
            assert remote.engine_id
            assert remote.bandwidth_gbps is None or remote.bandwidth_gbps > 0
    except ProtocolError as exc:
        assert exc.status == 400 and (exc.param or "").startswith("kv_transfer_params")
