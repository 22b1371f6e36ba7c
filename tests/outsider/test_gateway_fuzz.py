"""Generated bodies and headers against the live gateway: every answer is 2xx-4xx, none 5xx.

3,000 requests a run (hypothesis, derandomised so a run is repeatable), sent as raw
bytes over fresh connections so that anything can be sent -- numbers far beyond 64
bits, NaN and infinities, lone UTF-16 surrogates, wrong types at every field,
truncated JSON, Latin-1 and UTF-8 bytes in the ``x-sincere-*`` headers.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.outsider._gateway import ROOT, http_request, raw_exchange, status_of, threaded_gateway

NUM_REQUESTS = 3000
BATCH = 50  # requests per hypothesis example (its per-example overhead is large)

TEXTS = [
    "",
    "hello",
    "\ud800",
    "a\udfffb",
    "\udc80\ud800",
    "😀",
    "\x00",
    "\\ud800",
    "é" * 3,
    "m",
    "default",
    "batch",
    "gold",
    " ",
    "\n",
]
NUMBERS = [
    0,
    1,
    -1,
    7,
    2**31,
    2**63 - 1,
    2**63,
    -(2**63) - 1,
    2**64,
    10**30,
    10**400,
    -(10**309),
    0.5,
    -0.0,
    1e-320,
    1e308,
    -1e308,
    1e300,
    float("nan"),
    float("inf"),
    float("-inf"),
]
SHAPES = [
    None,
    True,
    False,
    [],
    {},
    [1, "a"],
    {"a": 1},
    [[[[]]]],
    {"include_usage": "yes"},
    [{"role": "user"}],
    [{"role": "user", "content": [{"type": "text", "text": 5}]}],
    [{"role": 1, "content": "x"}],
    {"tier": "default", "priority": 10**400},
]
ANYTHING = TEXTS + NUMBERS + SHAPES
"""Values any field may be set to: valid, of the wrong type, or beyond every range."""

FIELDS = [
    "model",
    "prompt",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "stream",
    "stream_options",
    "temperature",
    "top_p",
    "frequency_penalty",
    "seed",
    "n",
    "stop",
    "logprobs",
    "user",
    "sincere",
]
SINCERE_KEYS = ["tier", "priority", "deadline_s", "budget_usd", "output_tokens"]
VALID = {
    "max_tokens": st.integers(1, 8),
    "stream": st.booleans(),
    "temperature": st.floats(0, 2),
    "seed": st.integers(0, 2**31),
    "stop": st.sampled_from(["\n", ["a", "b"]]),
    "sincere": st.fixed_dictionaries(
        {},
        optional={"tier": st.sampled_from(["default", "batch"]), "budget_usd": st.floats(0.001, 1)},
    ),
}
MUTATION = st.tuples(st.sampled_from(FIELDS), st.sampled_from(ANYTHING))
SINCERE_MUTATION = st.tuples(st.sampled_from(SINCERE_KEYS), st.sampled_from(ANYTHING))
HEADER_VALUE = st.sampled_from(
    [
        b"1e308",
        b"nan",
        b"-inf",
        b"9" * 40,
        b"-1000000",
        b"batch",
        b"0x10",
        b" 3 ",
        b"\xff\xfe",
        b"\xc3\xa9",
        b"\x01",
        b"",
    ]
)
HEADER_NAMES = [f"x-sincere-{k.replace('_', '-')}".encode() for k in SINCERE_KEYS]
HEADER = st.tuples(st.sampled_from(HEADER_NAMES), HEADER_VALUE | st.binary(max_size=8))


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, dict[str, Any], int | None, list[Any]]:
    """A valid request for a path, with a few valid extras, then a few fields set to anything.

    Returns (path, body, where to cut its JSON or None, ``x-sincere-*`` headers).
    """
    chat = draw(st.booleans())
    body: dict[str, Any] = {"model": "m"}
    if chat:
        body["messages"] = [{"role": "user", "content": "hello"}]
    else:
        body["prompt"] = "hello"
    for name in draw(st.lists(st.sampled_from(sorted(VALID)), max_size=2, unique=True)):
        body[name] = draw(VALID[name])
    for name, value in draw(st.lists(MUTATION, max_size=3)):
        body[name] = value
    if draw(st.booleans()):
        sincere = dict(body["sincere"]) if isinstance(body.get("sincere"), dict) else {}
        sincere.update(draw(st.lists(SINCERE_MUTATION, max_size=2)))
        body["sincere"] = sincere
    cut = draw(st.none() | st.none() | st.none() | st.integers(0, 40))
    path = "/v1/chat/completions" if chat else "/v1/completions"
    return path, body, cut, draw(st.lists(HEADER, max_size=2))


def _encode(body: dict[str, Any], cut: int | None) -> bytes:
    raw = json.dumps(body, allow_nan=True).encode()  # ASCII: surrogates travel as \\u escapes
    return raw if cut is None else raw[:cut]


def test_generated_bodies_and_headers_never_get_a_5xx(caplog: pytest.LogCaptureFixture) -> None:
    """3,000 generated requests: 2xx-4xx answers only, and no traceback logged at INFO or above."""
    caplog.set_level(logging.DEBUG)
    statuses: Counter[int] = Counter()
    prices = {"price_in_per_1m_usd": 0.1, "price_out_per_1m_usd": 0.2}
    tiers = {"default": {"priority": 1, "ttlt_s": 60}, "batch": {"priority": 5}}
    with threaded_gateway(prices, tiers=tiers) as port:

        @settings(
            max_examples=NUM_REQUESTS // BATCH,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(st.lists(requests(), min_size=BATCH, max_size=BATCH))
        def check(batch: list[tuple[str, dict[str, Any], int | None, list[Any]]]) -> None:
            for path, body, cut, headers in batch:
                answer = raw_exchange(port, http_request(path, _encode(body, cut), headers))
                status = status_of(answer)
                statuses[status] += 1
                assert 200 <= status < 500, (status, path, body, headers, answer[:300])

        check()
    assert sum(statuses.values()) >= NUM_REQUESTS, statuses
    assert statuses[200] > 300 and sum(n for s, n in statuses.items() if 400 <= s < 500) > 300
    tracebacks = [r for r in caplog.records if r.exc_info and r.levelno >= logging.INFO]
    assert not tracebacks, tracebacks[0].getMessage()


ADMIN_FIELDS = [
    "name",
    "model",
    "url",
    "join",
    "emulator",
    "seed",
    "max_num_requests",
    "engine",
    "step_model",
    "tp",
    "token_text",
    "max_in_flight",
    "metrics_path",
    "apply",
    "confirm",
    "loads",
]
ADMIN_VALUES = [
    *ANYTHING,
    "http://127.0.0.1:1",
    {"block_size": 10**9},
    {"kind": "roofline", "params_file": "/etc/hostname"},
    [{"model": "granite_13b", "tier": "Premium", "rate_per_min": 10**400}],
]
ADMIN = st.tuples(
    st.sampled_from(["/admin/models", "/admin/instances", "/admin/plan"]),
    st.dictionaries(st.sampled_from(ADMIN_FIELDS), st.sampled_from(ADMIN_VALUES), max_size=4),
)


def test_generated_controller_calls_never_get_a_5xx() -> None:
    """300 generated controller calls: 2xx-4xx only (a started engine counts against the cap)."""
    statuses: Counter[int] = Counter()
    planning = {"problem_dir": str(ROOT / "examples" / "plan" / "unlimited")}
    with threaded_gateway(planning=planning, tiers={"Premium": {}}, default_tier="Premium") as port:

        @settings(
            max_examples=6,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(st.lists(ADMIN, min_size=50, max_size=50))
        def check(batch: list[tuple[str, dict[str, Any]]]) -> None:
            for path, body in batch:
                raw = json.dumps({"model": "granite_13b", **body}, allow_nan=True).encode()
                answer = raw_exchange(port, http_request(path, raw, []))
                statuses[status_of(answer)] += 1
                assert 200 <= status_of(answer) < 500, (path, body, answer[:300])

        check()
    assert sum(statuses.values()) >= 300 and statuses[200] > 0, statuses
