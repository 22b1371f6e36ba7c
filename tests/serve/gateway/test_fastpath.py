"""The gateway's fast path: raw-byte forwarding, the SSE scanner, cached views, workers."""

from __future__ import annotations

import asyncio
import json
from itertools import pairwise
from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sincere.core.errors import ConfigError
from sincere.serve.app import serve_gateway
from sincere.serve.backends.fake_upstream import FakeUpstream
from sincere.serve.backends.openai_api import Backend, SseScanner
from sincere.serve.gateway.breaker import CircuitBreaker
from sincere.serve.gateway.config import parse_config
from sincere.serve.gateway.instances import InstanceState
from sincere.serve.gateway.metrics import GatewayMetrics
from sincere.serve.gateway.server import Gateway
from sincere.serve.protocol import SSE_DONE, count_prompt_tokens, loads, parse_request
from sincere.workload.tabular import count_tokens


def backend(**extra: Any) -> Backend:
    raw = {"name": "b0", "url": "http://127.0.0.1:1", "models": ["m"], **extra}
    cfg = parse_config({"backends": [raw]})
    return Backend(cfg.backends[0])


def chat(body: dict[str, Any]) -> Any:
    return parse_request(json.dumps(body).encode(), "chat")


MSG = [{"role": "user", "content": "hi"}]


def test_unchanged_body_is_forwarded_as_the_clients_bytes() -> None:
    """With nothing to patch the upstream gets the very bytes the client sent."""
    req = chat({"model": "m", "messages": MSG, "max_tokens": 7, "x_unknown": [1, 2]})
    assert backend().upstream_payload(req, 7) is req.raw
    assert backend().upstream_payload(req, None) is req.raw


@pytest.mark.parametrize(
    ("body", "cap", "models", "expect"),
    [
        ({"max_tokens": 7}, 3, ["m"], {"model": "m", "max_tokens": 3}),
        ({"max_completion_tokens": 7}, 7, ["m"], {"model": "m", "max_tokens": 7}),
        ({"sincere": {"tier": "t"}}, None, ["m"], {"model": "m"}),
        ({}, None, {"m": "up-m"}, {"model": "up-m"}),
    ],
)
def test_patched_body_changes_only_what_the_gateway_must(
    body: dict[str, Any], cap: int | None, models: Any, expect: dict[str, Any]
) -> None:
    """A lower cap, max_completion_tokens, the extension or a mapped model re-encode the body."""
    req = chat({"model": "m", "messages": MSG, "temperature": 0.5, **body})
    sent = json.loads(backend(models=models).upstream_payload(req, cap))
    assert sent == {"messages": MSG, "temperature": 0.5, **expect}


def test_loads_reads_what_the_standard_library_reads() -> None:
    """NaN, Infinity and huge integers decode as json.loads does, whichever decoder runs."""
    for text in ('{"a": NaN}', '{"a": Infinity}', '{"a": 123456789012345678901234567890}'):
        got, want = loads(text), json.loads(text)
        assert repr(got) == repr(want)
    with pytest.raises(ValueError, match=r".+"):
        loads(b"{not json")


@given(st.text(max_size=300))
def test_scalar_token_count_equals_the_workload_counter(text: str) -> None:
    """The per-request token count equals sincere.workload's vectorised count."""
    assert count_prompt_tokens(text) == int(count_tokens([text])[0])


EVENT = st.builds(
    lambda text, empty: (
        b'data: {"choices":[]' + b',"usage":{}}' if empty else b'data: {"t":' + text + b"}"
    ),
    st.sampled_from([b'"a"', b'"data: x"', b'"\\\\n"', b"1"]),
    st.booleans(),
)


@settings(max_examples=150, deadline=None)
@given(
    events=st.lists(EVENT, max_size=12),
    comment=st.booleans(),
    crlf=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=8),
)
def test_scanner_relays_whole_lines_until_done_whatever_the_chunking(
    events: list[bytes], comment: bool, crlf: bool, cuts: list[int]
) -> None:
    """Any split into chunks relays the same bytes up to [DONE] and counts the same events."""
    nl = b"\r\n" if crlf else b"\n"
    head = [b": keep-alive"] if comment else []
    lines = head + events
    before = b"".join(line + nl + nl for line in lines)
    stream = before + b"data: [DONE]" + nl + nl + b"data: after" + nl + nl
    bounds = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    scanner = SseScanner()
    out = b"".join(scanner.feed(stream[a:b]) for a, b in pairwise(bounds))
    assert scanner.done and out == before
    assert scanner.num_data == len(events)
    assert scanner.num_events == sum(b'"choices":[]' not in e for e in events)


def test_scanner_holds_a_partial_line_and_flags_a_half_sent_event() -> None:
    """A chunk ending mid-line keeps the rest back; a line without its blank line is flagged."""
    s = SseScanner()
    assert s.feed(b'data: {"a":1}\n\ndata: {"b"') == b'data: {"a":1}\n\n'
    assert s.ends_event and not s.done
    assert s.feed(b":2}\n") == b'data: {"b":2}\n'
    assert not s.ends_event and s.num_events == 2


def test_view_is_cached_until_what_it_shows_changes() -> None:
    """The router's view is reused while nothing changed and rebuilt when load changes;
    without a load reading the engine-side fields are unknown (None), never 0."""
    state = InstanceState(backend(), CircuitBreaker())
    first = state.view("m", 0.0, 1.0)
    assert state.view("m", 0.5, 1.0) is first
    state.num_in_flight = 3
    busy = state.view("m", 0.5, 1.0)
    assert busy is not first and busy.num_outstanding == 3
    assert (busy.num_running, busy.num_waiting, busy.kv_usage) == (None, None, None)
    assert busy.waiting_prefill_tokens is None and busy.running_ctx_tokens is None


def test_served_counts_ok_and_both_latencies() -> None:
    """One served() call adds an ok count and a TTFT and E2E observation."""
    m = GatewayMetrics()
    m.served("b0", "gold", 0.02, 0.3)
    m.served("b0", "gold", 0.04, 0.5)
    page = m.render({}, {}, {})
    assert 'sincere_gateway_requests_total{instance="b0",tier="gold",outcome="ok"} 2' in page
    assert m.ttft[("b0", "gold")].count == 2 and m.e2e[("b0", "gold")].total == pytest.approx(0.8)


def test_serve_gateway_rejects_zero_workers() -> None:
    """workers must be at least one; the error names the value."""
    cfg = parse_config({"backends": [{"name": "b", "url": "http://x:1", "models": ["m"]}]})
    with pytest.raises(ConfigError, match="workers must be >= 1"):
        serve_gateway(cfg, workers=0)


def test_two_workers_share_one_port_and_both_serve() -> None:
    """Two gateways with reuse_port bind the same port and answer streamed requests."""

    async def body() -> None:
        async with FakeUpstream(num_tokens=3) as up:
            raw = {
                "port": 0,
                "backends": [{"name": "b0", "url": up.url, "models": ["m"], "metrics_path": None}],
                "scrape": {"enabled": False},
            }
            async with Gateway(parse_config(raw), reuse_port=True) as first:
                second_cfg = parse_config({**raw, "port": first.port})
                async with Gateway(second_cfg, reuse_port=True) as second:
                    assert second.port == first.port
                    req = {"model": "m", "prompt": "hi", "max_tokens": 3, "stream": True}
                    async with aiohttp.ClientSession() as s:
                        for _ in range(4):
                            async with s.post(first.url + "/v1/completions", json=req) as r:
                                text = await r.read()
                                assert r.status == 200 and text.endswith(SSE_DONE)
                                assert text.count(b"data: {") == 3

    asyncio.run(asyncio.wait_for(body(), 20))
