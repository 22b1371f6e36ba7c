"""Gateway queue order, admission, budgets, the breaker state machine and bad input."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sincere.core.errors import ConfigError
from sincere.serve.backends.fake_upstream import FakeUpstream
from sincere.serve.gateway.breaker import BreakerState, CircuitBreaker
from sincere.serve.gateway.config import GatewayConfig, parse_config
from sincere.serve.gateway.server import Gateway
from sincere.serve.gateway.wait_queue import RequestQueue

BODY = {"model": "m", "prompt": "hello", "max_tokens": 4}


def run(factory: Callable[[], Awaitable[None]]) -> None:
    """Run one async test body with a hard time bound."""
    asyncio.run(asyncio.wait_for(factory(), 20.0))


def config(up: FakeUpstream, backend: dict[str, Any] | None = None, **extra: Any) -> GatewayConfig:
    b = {"name": "b0", "url": up.url, "models": ["m"], "metrics_path": None, **(backend or {})}
    return parse_config({"port": 0, "backends": [b], "scrape": {"enabled": False}, **extra})


async def post(s: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with s.post(url + "/v1/completions", json=body) as r:
        return r.status, await r.json()


def test_queue_orders_by_priority_then_deadline_then_arrival() -> None:
    """Pop order: smaller priority first, then earlier deadline (none last), then arrival."""
    q: RequestQueue[str] = RequestQueue(10)
    q.push("p1-late", priority=1, deadline_at=9.0)
    q.push("p0-none", priority=0)
    q.push("p1-early", priority=1, deadline_at=2.0)
    q.push("p0-soon", priority=0, deadline_at=5.0)
    q.push("p1-none", priority=1)
    assert q.order() == ["p0-soon", "p0-none", "p1-early", "p1-late", "p1-none"]
    assert [q.pop().payload for _ in range(5)] == q.order() or len(q) == 0  # type: ignore[union-attr]


def test_head_insertion_goes_first_newest_first() -> None:
    """MaverIQ's prior inference: head insertions precede everything, the newest first."""
    q: RequestQueue[str] = RequestQueue(10)
    q.push("a", priority=0, deadline_at=1.0)
    q.push("h1", priority=5, head=True)
    q.push("b", priority=0)
    q.push("h2", priority=9, head=True)
    assert q.order() == ["h2", "h1", "a", "b"]


def test_queue_cancel_and_bound() -> None:
    """Cancelled tickets are skipped, a full queue refuses, and cancel is idempotent."""
    q: RequestQueue[int] = RequestQueue(2)
    t0 = q.push(0)
    q.push(1)
    assert not q.can_push()
    with pytest.raises(OverflowError, match="queue full"):
        q.push(2)
    assert q.cancel(t0) and not q.cancel(t0)
    assert len(q) == 1 and q.pop().payload == 1  # type: ignore[union-attr]
    assert q.pop() is None


def test_breaker_state_machine() -> None:
    """closed -> open at K failures -> half-open after cool-down (one probe) -> closed."""
    b = CircuitBreaker(failure_threshold=3, cooldown_s=10.0)
    b.record_failure(0.0)
    b.record_failure(1.0)
    b.record_success(1.5)  # resets the count
    for t in (2.0, 3.0, 4.0):
        b.record_failure(t)
    assert b.state(5.0) is BreakerState.OPEN and not b.can_send(5.0)
    assert b.state(14.0) is BreakerState.HALF_OPEN and b.can_send(14.0)
    b.send(14.0)
    assert not b.can_send(14.1)  # one probe at a time
    b.record_failure(15.0)  # failed probe: another cool-down
    assert b.state(20.0) is BreakerState.OPEN and b.can_send(25.0)
    b.send(25.0)
    b.record_success(25.5)
    assert b.state(25.6) is BreakerState.CLOSED


def test_breaker_rejects_bad_params() -> None:
    """A zero failure threshold is refused with the allowed range."""
    with pytest.raises(ConfigError, match="failure_threshold must be >= 1"):
        CircuitBreaker(failure_threshold=0)


def test_gateway_queues_when_full_in_priority_order_with_head_insertion() -> None:
    """With the only slot busy, queued requests are served by priority, head inserts first."""

    async def body() -> None:
        async with FakeUpstream() as up:
            up.hold = asyncio.Event()
            cfg = config(
                up,
                {"max_in_flight": 1},
                queue={"head_priority": 0},
                tiers={"default": {"priority": 0}},  # clients may only lower priority
            )
            async with Gateway(cfg) as gw, aiohttp.ClientSession() as s:
                first = asyncio.create_task(post(s, gw.url, {**BODY, "prompt": "first"}))
                while up.num_active < 1:
                    await asyncio.sleep(0.005)
                tasks = []
                for name, prio in [("p3", 3), ("p1", 1), ("head", 0), ("p2", 2)]:
                    req = {**BODY, "prompt": name, "sincere": {"priority": prio}}
                    tasks.append(asyncio.create_task(post(s, gw.url, req)))
                    while len(gw.dispatcher.queues["m"]) < len(tasks):
                        await asyncio.sleep(0.005)
                up.hold.set()
                results = await asyncio.gather(first, *tasks)
        assert all(status == 200 for status, _ in results)
        assert [b["prompt"] for b in up.bodies] == ["first", "head", "p1", "p2", "p3"]

    run(body)


def test_queue_timeout_answers_504_with_reason() -> None:
    """A request that waits past the queue timeout gets 504 naming the queue."""

    async def body() -> None:
        async with FakeUpstream() as up:
            up.hold = asyncio.Event()
            cfg = config(up, {"max_in_flight": 1}, queue={"timeout_s": 0.1})
            async with Gateway(cfg) as gw, aiohttp.ClientSession() as s:
                first = asyncio.create_task(post(s, gw.url, BODY))
                while up.num_active < 1:
                    await asyncio.sleep(0.005)
                status, out = await post(s, gw.url, BODY)
                up.hold.set()
                assert (await first)[0] == 200
        assert status == 504 and "gateway queue" in out["error"]["message"]

    run(body)


def test_admission_rejects_unreachable_deadline_with_429() -> None:
    """Once a streamed answer shows the instance takes ~50 ms, a 10 ms deadline gets 429."""

    async def body() -> None:
        async with (
            FakeUpstream(ttft_s=0.05) as up,
            Gateway(config(up)) as gw,
            aiohttp.ClientSession() as s,
        ):
            async with s.post(gw.url + "/v1/completions", json={**BODY, "stream": True}) as r:
                assert r.status == 200 and (await r.read()).endswith(b"[DONE]\n\n")
            status, out = await post(s, gw.url, {**BODY, "sincere": {"deadline_s": 0.01}})
            ok = await post(s, gw.url, {**BODY, "sincere": {"deadline_s": 5.0}})
        assert status == 429 and "deadline cannot be met" in out["error"]["message"]
        assert out["error"]["code"] == "deadline_unreachable" and ok[0] == 200

    run(body)


def test_budget_caps_max_tokens_and_rejects_unaffordable() -> None:
    """A budget caps max_tokens upstream at floor((budget - p_in·prompt)/p_out); too small: 429."""

    async def body() -> None:
        prices = {"price_in_per_1m_usd": 0.0, "price_out_per_1m_usd": 1e6}  # 1 USD per token
        async with (
            FakeUpstream(num_tokens=50) as up,
            Gateway(config(up, prices)) as gw,
            aiohttp.ClientSession() as s,
        ):
            status, out = await post(
                s, gw.url, {**BODY, "max_tokens": 40, "sincere": {"budget_usd": 7.5}}
            )
            hdr = {"x-sincere-budget-usd": "0.5"}
            async with s.post(gw.url + "/v1/completions", json=BODY, headers=hdr) as r:
                poor = r.status, await r.json()
        assert status == 200 and up.bodies[0]["max_tokens"] == 7
        assert out["usage"]["completion_tokens"] == 7
        assert poor[0] == 429 and "budget" in poor[1]["error"]["message"]

    run(body)


def test_unknown_tier_and_absurd_max_tokens_are_4xx() -> None:
    """An unknown tier is 400 naming the tiers; max_tokens over the limit is 400 (as vLLM)."""

    async def body() -> None:
        async with FakeUpstream() as up, Gateway(config(up)) as gw, aiohttp.ClientSession() as s:
            tier = await post(s, gw.url, {**BODY, "sincere": {"tier": "gold"}})
            big = await post(s, gw.url, {**BODY, "max_tokens": 10**9})
            model = await post(s, gw.url, {**BODY, "model": "nope"})
            async with s.post(gw.url + "/v1/completions", data=b"x" * (21 << 20)) as r:
                huge = r.status
        assert tier[0] == 400 and "allowed: default" in tier[1]["error"]["message"]
        assert big[0] == 400 and model[0] == 404 and huge == 413

    run(body)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
BAD_BODIES = st.one_of(
    st.binary(max_size=64),
    st.fixed_dictionaries(
        {"model": st.one_of(st.just("m"), JSONISH), "prompt": JSONISH},
        optional={"max_tokens": JSONISH, "stream": JSONISH, "sincere": JSONISH},
    ).map(lambda d: __import__("json").dumps(d, allow_nan=True).encode()),
)


def test_fuzzed_bad_requests_get_4xx_or_200_never_5xx_or_hang() -> None:
    """Random bodies are answered within a second each with 200 or a 4xx, never a 5xx."""
    statuses: list[int] = []

    async def body(samples: list[bytes]) -> None:
        async with FakeUpstream() as up, Gateway(config(up)) as gw, aiohttp.ClientSession() as s:
            for raw in samples:
                async with s.post(
                    gw.url + "/v1/completions",
                    data=raw,
                    timeout=aiohttp.ClientTimeout(total=1.0),
                ) as r:
                    await r.read()
                    statuses.append(r.status)

    @settings(max_examples=1, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(BAD_BODIES, min_size=60, max_size=60))
    def check(samples: list[bytes]) -> None:
        run(lambda: body(samples))

    check()
    assert statuses and all(s == 200 or 400 <= s < 500 for s in statuses), statuses
