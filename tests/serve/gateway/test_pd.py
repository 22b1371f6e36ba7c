"""The gateway serves a disaggregated model in two phases over real HTTP on 127.0.0.1:
a prefill on a prefill emulator, then the decode on a decode emulator with its KV."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tests.serve.security.test_gateway import bearer, make_keys

from sincere.core.errors import ConfigError
from sincere.serve.emulator.config import EmulatorConfig, load_emulator_configs
from sincere.serve.emulator.server import EmulatorServer, start_emulators, stop_emulators
from sincere.serve.gateway.config import load_config, parse_config
from sincere.serve.gateway.pd_relay import PREFILL_INSTANCE_HEADER, PREFILL_S_HEADER
from sincere.serve.gateway.server import Gateway
from sincere.serve.security.keys import KeySpec

# 2 ms decode steps; a prefill costs 3 ms plus 0.2 ms a prompt token
STEP = {"kind": "inferno", "params": {"alpha_ms": 2, "beta_ms": 0, "gamma_ms": 3,
                                      "delta_ms": 0.2}}  # fmt: skip
WIRE_S = 0.1  # the emulated link carries a 500-token prompt's KV in about this
PROMPT = [1] * 500


def run(factory: Callable[[], Awaitable[None]]) -> None:
    """One async test body with a hard time bound."""
    asyncio.run(asyncio.wait_for(factory(), 40))


def _emulators() -> list[EmulatorConfig]:
    kv = 500 * 131072.0  # llama-3-8b fp16: 128 KiB of KV a token
    link = {"kind": "rdma", "bandwidth_gbps": kv / WIRE_S / 1e9, "latency_s": 0.0}
    return [
        EmulatorConfig.model_validate({"name": "p0", "step_model": STEP, "role": "prefill",
                                       "kv_link": link}),
        EmulatorConfig.model_validate({"name": "d0", "step_model": STEP, "role": "decode"}),
        EmulatorConfig.model_validate({"name": "d1", "step_model": STEP, "role": "decode"}),
    ]  # fmt: skip


def _gateway_raw(servers: list[EmulatorServer], **extra: Any) -> dict[str, Any]:
    backends = [
        {"name": s.name, "url": s.url, "models": ["llama-3-8b"], "role": s.config.role,
         "load_path": "/sincere/load", "price_in_per_1m_usd": 1e6 if s.name == "p0" else 0.0,
         "price_out_per_1m_usd": 1e6}
        for s in servers
    ]  # fmt: skip
    return {"port": 0, "backends": backends, "scrape": {"enabled": False},
            "admission": {"enabled": False}, **extra}  # fmt: skip


@asynccontextmanager
async def serving(**extra: Any) -> AsyncIterator[tuple[list[EmulatorServer], Gateway]]:
    servers = await start_emulators(_emulators())
    try:
        async with Gateway(parse_config(_gateway_raw(servers, **extra))) as gw:
            yield servers, gw
    finally:
        await stop_emulators(servers)


async def _stream(
    s: aiohttp.ClientSession, url: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], int, float]:
    """Status, headers, token events and seconds to the first event of a streamed answer."""
    start = time.perf_counter()
    first = None
    events = 0
    async with s.post(url + "/v1/completions", json=body, headers=headers or {}) as r:
        async for line in r.content:
            compact = line.replace(b" ", b"")
            token = b'"text":"' in compact and b'"text":""' not in compact
            if compact.startswith(b"data:{") and token:
                events += 1
                first = first or time.perf_counter() - start
        return r.status, dict(r.headers), events, first or 0.0


def test_a_request_is_prefilled_then_decoded_elsewhere() -> None:
    """Streamed: the prefill instance and the decode instance are named, the decode stream
    carries every token, and it starts after the emulated transfer; TTFT is recorded at
    the prefill."""

    async def body() -> None:
        async with serving() as (_, gw), aiohttp.ClientSession() as s:
            req = {"model": "llama-3-8b", "prompt": PROMPT, "max_tokens": 8, "stream": True}
            status, headers, events, first_s = await _stream(s, gw.url, req)
            assert status == 200, headers
            assert headers[PREFILL_INSTANCE_HEADER] == "p0"
            assert headers["x-sincere-instance"] in ("d0", "d1")
            assert events == 8
            prefill_s = float(headers[PREFILL_S_HEADER])
            assert 0.1 <= prefill_s < 0.5  # 0.1 s of prompt compute on the prefill
            assert float(headers["x-sincere-kv-transfer-s"]) == pytest.approx(WIRE_S, abs=0.05)
            assert first_s >= prefill_s + WIRE_S - 0.02  # the decode waited for the KV

    run(body)


def test_decode_router_spreads_and_answers_whole() -> None:
    """Non-streamed answers come whole from the decode side; least-outstanding decode
    routing spreads concurrent requests over both decode instances."""

    async def body() -> None:
        async with serving() as (_, gw), aiohttp.ClientSession() as s:
            req = {"model": "llama-3-8b", "prompt": PROMPT, "max_tokens": 20}

            async def one() -> tuple[int, dict[str, Any], str]:
                async with s.post(gw.url + "/v1/completions", json=req) as r:
                    return r.status, await r.json(), r.headers["x-sincere-instance"]

            got = await asyncio.gather(one(), one())
            assert [g[0] for g in got] == [200, 200]
            assert all(g[1]["usage"]["completion_tokens"] == 20 for g in got)
            assert "kv_transfer_params" not in got[0][1]
            assert {g[2] for g in got} == {"d0", "d1"}

    run(body)


def test_a_request_kept_colocated_goes_to_a_decode_instance() -> None:
    """With the decider 'never', the request is served whole by a decode instance."""

    async def body() -> None:
        extra = {"disaggregation": {"decider": {"name": "never"}}}
        async with serving(**extra) as (_, gw), aiohttp.ClientSession() as s:
            req = {"model": "llama-3-8b", "prompt": PROMPT, "max_tokens": 4, "stream": True}
            status, headers, events, _ = await _stream(s, gw.url, req)
            assert status == 200 and events == 4
            assert PREFILL_INSTANCE_HEADER not in headers
            assert headers["x-sincere-instance"] in ("d0", "d1")

    run(body)


def test_the_client_is_charged_once(tmp_path: Path) -> None:
    """With keys, a disaggregated request is charged its prompt and completion once, at the
    decode instance's prices (the prefill's one token and its prompt price are not)."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(keys, acme=KeySpec(name="acme", budget_usd=1e9))

    async def body() -> None:
        security = {"keys": str(keys), "flush_interval_s": 0.05}
        async with serving(security=security) as (_, gw), aiohttp.ClientSession() as s:
            req = {"model": "llama-3-8b", "prompt": PROMPT, "max_tokens": 6, "stream": True}
            status, _, events, _ = await _stream(s, gw.url, req, bearer(tokens["acme"]))
            assert status == 200 and events == 6
            store = gw.auth.store
            assert store is not None
            for _ in range(400):
                (record,) = [r for r in store.records() if r.kind == "client"]
                totals = store.totals(record.key_id)
                if totals.num_requests:
                    break
                await asyncio.sleep(0.01)
            assert totals.num_requests == 1
            assert (totals.num_prompt_tokens, totals.num_completion_tokens) == (500, 6)
            assert totals.spent_usd == pytest.approx(6.0)  # 1 USD a token out, decode's prices

    run(body)


def test_roles_must_pair_and_disaggregation_needs_roles() -> None:
    """A model with prefill backends but no decode backend, disaggregation without any
    role, or an unknown phase router, is a config error naming the problem."""
    one = {"name": "p", "url": "http://127.0.0.1:1", "models": ["m"], "role": "prefill"}
    with pytest.raises(ConfigError, match="no decode backend"):
        parse_config({"backends": [one]})
    plain = {**one, "role": "both"}
    with pytest.raises(ConfigError, match="no backend has role"):
        parse_config({"backends": [plain], "disaggregation": {}})
    pair = [one, {**one, "name": "d", "role": "decode"}]
    with pytest.raises(ConfigError, match=r"disaggregation.prefill_router.name: unknown router"):
        parse_config({"backends": pair, "disaggregation": {"prefill_router": {"name": "nope"}}})
    json.dumps(plain)  # the config stays plain data


def test_shipped_example_pairs_roles() -> None:
    """The shipped P/D example: the gateway's roles match the emulators' on the same ports."""
    root = Path(__file__).resolve().parents[3] / "examples" / "serve"
    emulators = {c.port: c.role for c in load_emulator_configs(root / "emulators-pd.yaml")}
    gateway = load_config(root / "gateway-pd.yaml")
    assert gateway.disaggregation is not None
    roles = {int(b.url.rsplit(":", 1)[1]): b.role for b in gateway.backends}
    assert roles == emulators == {8111: "prefill", 8112: "decode", 8113: "decode"}


def test_a_full_prefill_pool_holds_then_serves() -> None:
    """With the prefill backend capped at one request in flight, a second concurrent request
    waits for the slot (asked again every 10 ms) and is served, not refused."""

    async def body() -> None:
        servers = await start_emulators(_emulators())
        try:
            raw = _gateway_raw(servers)
            raw["backends"][0]["max_in_flight"] = 1
            async with Gateway(parse_config(raw)) as gw, aiohttp.ClientSession() as s:
                reqs = [  # other prompts: the second finds nothing in the prefix cache
                    {"model": "llama-3-8b", "prompt": [k] * 500, "max_tokens": 3, "stream": True}
                    for k in (1, 2)
                ]
                got = await asyncio.gather(*(_stream(s, gw.url, req) for req in reqs))
                assert [g[0] for g in got] == [200, 200]
                prefill_s = sorted(float(g[1][PREFILL_S_HEADER]) for g in got)
                assert prefill_s[1] >= prefill_s[0] + 0.08  # the second waited for the first
        finally:
            await stop_emulators(servers)

    run(body)


def _with_dead(servers: list[EmulatorServer], name: str, role: str) -> dict[str, Any]:
    """The gateway over ``servers`` plus a backend ``name`` in ``role`` that refuses
    connections (port 9), priced as p0."""
    raw = _gateway_raw(servers)
    dead = {**_gateway_raw(servers)["backends"][0], "name": name, "role": role,
            "url": "http://127.0.0.1:9",
            "price_in_per_1m_usd": 1e6 if role == "prefill" else 0.0}  # fmt: skip
    raw["backends"].append(dead)
    raw["queue"] = {"timeout_s": 5}
    return raw


def test_a_dead_prefill_pool_serves_long_prompts_on_the_decode_instances() -> None:
    """The only prefill backend refuses connections: each request is served whole by a
    decode instance at once (no 502, no wait for the queue timeout); the prefill's breaker
    counts the failures, and once it is open the prefill is not tried at all."""

    async def body() -> None:
        servers = await start_emulators(_emulators()[1:])
        try:
            raw = _with_dead(servers, "p0", "prefill")
            async with Gateway(parse_config(raw)) as gw, aiohttp.ClientSession() as s:
                started = time.perf_counter()
                for k in range(8):  # the breaker opens after 5 failures
                    req = {"model": "llama-3-8b", "prompt": [k + 1] * 500, "max_tokens": 3}
                    async with s.post(gw.url + "/v1/completions", json=req) as r:
                        assert r.status == 200, await r.text()
                        assert PREFILL_INSTANCE_HEADER not in r.headers
                        assert r.headers["x-sincere-instance"] in ("d0", "d1")
                        assert (await r.json())["usage"]["completion_tokens"] == 3
                assert time.perf_counter() - started < 4.0  # well under the queue timeout
                assert gw.metrics.upstream_errors[("p0", "prefill")] == 5
                assert not gw.dispatcher.instances["p0"].breaker.can_send(gw.loop.time())
        finally:
            await stop_emulators(servers)

    run(body)


def test_a_failed_decode_is_retried_on_the_other_decode_instance() -> None:
    """One decode backend refuses connections: every request (concurrent, so the decode
    router sends some to it) is decoded on the live one after the prefill, and answered."""

    async def body() -> None:
        servers = await start_emulators(_emulators()[:2])  # p0 and d0
        try:
            raw = _with_dead(servers, "d1", "decode")
            async with Gateway(parse_config(raw)) as gw, aiohttp.ClientSession() as s:
                reqs = [
                    {"model": "llama-3-8b", "prompt": [k + 1] * 500, "max_tokens": 3,
                     "stream": True}
                    for k in range(4)
                ]  # fmt: skip
                got = await asyncio.gather(*(_stream(s, gw.url, req) for req in reqs))
                assert [g[0] for g in got] == [200] * 4
                assert [g[2] for g in got] == [3] * 4
                assert {g[1][PREFILL_INSTANCE_HEADER] for g in got} == {"p0"}
                assert {g[1]["x-sincere-instance"] for g in got} == {"d0"}
                assert gw.metrics.upstream_errors[("d1", "decode")] >= 1
        finally:
            await stop_emulators(servers)

    run(body)


def test_a_request_whose_decode_failed_everywhere_is_charged_its_prefill(
    tmp_path: Path,
) -> None:
    """Both decode backends refuse connections: the client gets 502 after its prompt was
    prefilled, and is charged that prompt at the prefill instance's prices, no output."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(keys, acme=KeySpec(name="acme", budget_usd=1e9))

    async def body() -> None:
        servers = await start_emulators(_emulators()[:1])  # p0 alone
        try:
            raw = _with_dead(servers, "d0", "decode")
            raw["backends"].append({**raw["backends"][-1], "name": "d1"})
            raw["security"] = {"keys": str(keys), "flush_interval_s": 0.05}
            async with Gateway(parse_config(raw)) as gw, aiohttp.ClientSession() as s:
                req = {"model": "llama-3-8b", "prompt": PROMPT, "max_tokens": 3}
                headers = bearer(tokens["acme"])
                async with s.post(gw.url + "/v1/completions", json=req, headers=headers) as r:
                    assert r.status == 502
                    assert "decode failed" in (await r.json())["error"]["message"]
                assert gw.metrics.upstream_errors[("d0", "decode")] == 1
                assert gw.metrics.upstream_errors[("d1", "decode")] == 1
                store = gw.auth.store
                assert store is not None
                for _ in range(400):
                    (record,) = [r for r in store.records() if r.kind == "client"]
                    totals = store.totals(record.key_id)
                    if totals.num_requests:
                        break
                    await asyncio.sleep(0.01)
                assert (totals.num_prompt_tokens, totals.num_completion_tokens) == (500, 0)
                assert totals.spent_usd == pytest.approx(500.0)  # 1 USD a prompt token on p0
        finally:
            await stop_emulators(servers)

    run(body)


def test_a_clients_own_kv_transfer_params_are_dropped() -> None:
    """A client cannot make an engine skip its prompt: kv_transfer_params it sends are
    removed (a prefill-role engine would refuse them with 400 wrong_role)."""

    async def body() -> None:
        servers = await start_emulators(_emulators()[:1])  # the prefill engine alone
        try:
            raw = _gateway_raw(servers)
            raw["backends"][0]["role"] = "both"  # served whole by the gateway
            async with Gateway(parse_config(raw)) as gw, aiohttp.ClientSession() as s:
                forged = {"do_remote_prefill": True, "remote_engine_id": "x",
                          "sincere": {"kv_bytes": 0}}  # fmt: skip
                req = {"model": "llama-3-8b", "prompt": PROMPT, "max_tokens": 2,
                       "kv_transfer_params": forged}  # fmt: skip
                async with s.post(gw.url + "/v1/completions", json=req) as r:
                    assert r.status == 200, await r.text()
                    assert (await r.json())["usage"]["completion_tokens"] == 2
        finally:
            await stop_emulators(servers)

    run(body)


def test_a_prompt_beyond_the_prefill_kv_names_its_token_counts() -> None:
    """A prompt the prefill engine's KV can never hold: the client's 400 ``kv_capacity``
    names the prompt's tokens and the engine's capacity in tokens."""

    async def body() -> None:
        configs = _emulators()
        configs[0] = configs[0].model_copy(
            update={"engine": configs[0].engine.model_copy(update={"num_kv_blocks": 64})}
        )
        servers = await start_emulators(configs)
        try:
            config = parse_config(_gateway_raw(servers))
            async with Gateway(config) as gw, aiohttp.ClientSession() as s:
                req = {"model": "llama-3-8b", "prompt": [7] * 2000, "max_tokens": 8}
                async with s.post(gw.url + "/v1/completions", json=req) as r:
                    status, error = r.status, (await r.json())["error"]
        finally:
            await stop_emulators(servers)
        # the engine's own error, passed through (vLLM's body: the code is the HTTP status)
        assert status == 400 and error["code"] == 400
        message = error["message"]
        # the prefill runs one output token: the prompt alone cannot fit
        assert "2000 prompt tokens and 1 output token needs up to 2000 tokens" in message
        assert "at most 1024 tokens for one request (64 blocks of 16 tokens" in message

    run(body)


@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_an_instances_4xx_in_either_phase_is_counted_as_a_plain_one_is(phase: str) -> None:
    """An engine's 4xx to a prefill or a decode reaches the client and is counted
    ``client_error`` against that instance, as the plain path counts one."""

    async def body() -> None:
        configs = _emulators()
        small = [0] if phase == "prefill" else [1, 2]  # whose KV cannot hold the prompt
        for i in small:
            engine = configs[i].engine.model_copy(update={"num_kv_blocks": 64})
            configs[i] = configs[i].model_copy(update={"engine": engine})
        servers = await start_emulators(configs)
        try:
            async with Gateway(parse_config(_gateway_raw(servers))) as gw:
                async with aiohttp.ClientSession() as s:
                    req = {"model": "llama-3-8b", "prompt": [7] * 2000, "max_tokens": 8}
                    async with s.post(gw.url + "/v1/completions", json=req) as r:
                        status, instance = r.status, r.headers["x-sincere-instance"]
                counts = dict(gw.metrics.requests)
                tier = gw.config.default_tier
        finally:
            await stop_emulators(servers)
        assert status == 400
        assert (instance == "p0") == (phase == "prefill")
        assert {k: n for k, n in counts.items() if n} == {(instance, tier, "client_error"): 1}

    run(body)


def _docs_curl() -> str:
    """The curl command of docs/disaggregation.md's live example (its continued lines)."""
    text = (Path(__file__).resolve().parents[3] / "docs" / "disaggregation.md").read_text()
    lines = text[text.index("curl -s http://127.0.0.1:8080/v1/completions") :].splitlines()
    end = next(k for k, line in enumerate(lines) if not line.endswith("\\"))
    return "\n".join(lines[: end + 1])


def test_the_docs_curl_example_is_served_disaggregated() -> None:
    """docs/disaggregation.md's curl, run by bash against the shipped example configs (the
    emulators and the gateway on free ports): its headers name both phases' instances."""
    root = Path(__file__).resolve().parents[3] / "examples" / "serve"
    command = _docs_curl()

    async def body() -> str:
        configs = load_emulator_configs(root / "emulators-pd.yaml")
        servers = await start_emulators([c.model_copy(update={"port": 0}) for c in configs])
        try:
            by_port = {c.port: s.url for c, s in zip(configs, servers, strict=True)}
            config = load_config(root / "gateway-pd.yaml")
            backends = [
                b.model_copy(update={"url": by_port[int(b.url.rsplit(":", 1)[1])]})
                for b in config.backends
            ]
            config = config.model_copy(update={"port": 0, "backends": backends})
            async with Gateway(config) as gw:
                shell = await asyncio.create_subprocess_exec(
                    "bash", "-c", command.replace("http://127.0.0.1:8080", gw.url),
                    stdout=asyncio.subprocess.PIPE,
                )  # fmt: skip
                out, _ = await asyncio.wait_for(shell.communicate(), 20)
                return out.decode()
        finally:
            await stop_emulators(servers)

    out = asyncio.run(asyncio.wait_for(body(), 40))
    pairs = (line.split(":", 1) for line in out.strip().splitlines())
    found = {name.strip().lower(): value.strip() for name, value in pairs}
    assert found.get(PREFILL_INSTANCE_HEADER) == "prefill", out
    assert found["x-sincere-instance"] in ("decode-0", "decode-1")
    assert float(found[PREFILL_S_HEADER]) > 0
