"""Admission, budgets, priority, overload and stalls, as an outside tester drove them."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from tests.outsider._gateway import BODY, call, gateway_config, run

from sincere.serve.backends.fake_upstream import FakeUpstream
from sincere.serve.gateway.server import Gateway


async def _stream(s: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[int, str]:
    async with s.post(url + "/v1/completions", json={**body, "stream": True}) as r:
        return r.status, r.headers.get("x-sincere-instance", "")


def test_long_non_streamed_answers_do_not_lock_a_tier_out() -> None:
    """Non-streamed answers slower than the tier's TTFT target do not make later requests 429."""

    async def body() -> None:
        tiers = {"default": {"ttft_s": 0.1}}
        async with (
            FakeUpstream(ttft_s=0.25) as up,
            Gateway(gateway_config([up.url], tiers=tiers)) as gw,
            aiohttp.ClientSession() as s,
        ):
            burst = await asyncio.gather(
                *(call(s, "POST", gw.url + "/v1/completions", BODY) for _ in range(3))
            )
            after = [(await call(s, "POST", gw.url + "/v1/completions", BODY))[0] for _ in "ab"]
        assert [status for status, _ in burst] == [200, 200, 200]
        assert after == [200, 200], "the tier locked itself out after a burst"

    run(body)


def test_a_shed_tier_recovers_once_its_estimates_expire() -> None:
    """After measured slow streams the tier is shed, then admitted again and measured anew."""

    async def body() -> None:
        tiers = {"default": {"ttft_s": 0.1}}
        admission = {"max_estimate_age_s": 0.4}
        async with (
            FakeUpstream(ttft_s=0.25) as up,
            Gateway(gateway_config([up.url], tiers=tiers, admission=admission)) as gw,
            aiohttp.ClientSession() as s,
        ):
            slow = await _stream(s, gw.url, BODY)
            shed = await call(s, "POST", gw.url + "/v1/completions", BODY)
            up.ttft_s = 0.0  # the engine is fast again
            await asyncio.sleep(0.5)
            probe = await _stream(s, gw.url, BODY)
            after = await _stream(s, gw.url, BODY)
        assert slow[0] == 200 and shed[0] == 429
        assert shed[1]["error"]["code"] == "deadline_unreachable"
        assert probe[0] == 200 and after[0] == 200

    run(body)


def test_a_budget_only_ever_lowers_max_tokens() -> None:
    """A budget paying thousands of tokens keeps the default cap; a tiny one lowers it."""

    async def body() -> None:
        prices = {"price_in_per_1m_usd": 0.0, "price_out_per_1m_usd": 0.25}  # 2.5e-7 USD a token
        async with (
            FakeUpstream(num_tokens=2) as up,
            Gateway(gateway_config([up.url], prices)) as gw,
            aiohttp.ClientSession() as s,
        ):
            plain = {"model": "m", "prompt": "hello"}
            for budget in (0.002, 1e5, 2.5e-7):
                got = await call(
                    s,
                    "POST",
                    gw.url + "/v1/completions",
                    {**plain, "sincere": {"budget_usd": budget}},
                )
                assert got[0] == 200, (budget, got)
            capped = await call(
                s,
                "POST",
                gw.url + "/v1/completions",
                {**plain, "max_tokens": 100, "sincere": {"budget_usd": 0.002}},
            )
        sent = [b.get("max_tokens") for b in up.bodies]
        assert sent[0] == 256 and sent[1] in (None, 256), sent  # never above the default
        assert sent[2] == 1 and capped[0] == 200 and sent[3] == 100

    run(body)


def test_a_client_may_only_lower_its_priority_or_tier() -> None:
    """A more important priority or tier than the server gives is 403; a lower one is served."""

    async def body() -> None:
        tiers = {"standard": {"priority": 5}, "premium": {"priority": 0}, "batch": {"priority": 9}}
        async with FakeUpstream() as up:
            cfg = gateway_config([up.url], tiers=tiers, default_tier="standard")
            async with Gateway(cfg) as gw, aiohttp.ClientSession() as s:
                url = gw.url + "/v1/completions"
                jump = await call(s, "POST", url, BODY, {"x-sincere-priority": "-1000000"})
                premium = await call(s, "POST", url, {**BODY, "sincere": {"tier": "premium"}})
                lower = await call(s, "POST", url, BODY, {"x-sincere-priority": "7"})
                batch = await call(s, "POST", url, BODY, {"x-sincere-tier": "batch"})
                batch_up = await call(
                    s, "POST", url, {**BODY, "sincere": {"tier": "batch", "priority": 6}}
                )
        assert jump[0] == 403 and "sincere.priority" in jump[1]["error"]["message"]
        assert premium[0] == 403 and "sincere.tier" in premium[1]["error"]["message"]
        assert lower[0] == 200 and batch[0] == 200 and batch_up[0] == 403

    run(body)


def test_overload_without_a_ttft_target_is_shed_early() -> None:
    """At many times capacity, requests the queue cannot serve in time get 429 at once, not 504."""

    async def body() -> None:
        async with FakeUpstream(ttft_s=0.1) as up:
            cfg = gateway_config(
                [up.url],
                {"max_in_flight": 1},
                tiers={"batch": {"ttlt_s": 600}},
                default_tier="batch",
                queue={"timeout_s": 0.6},
            )
            async with Gateway(cfg) as gw, aiohttp.ClientSession() as s:
                for _ in range(2):  # learn how long a request holds the slot (~0.1 s)
                    assert (await call(s, "POST", gw.url + "/v1/completions", BODY))[0] == 200
                out = await asyncio.gather(
                    *(call(s, "POST", gw.url + "/v1/completions", BODY) for _ in range(30))
                )
        statuses = [status for status, _ in out]
        shed = [answer for status, answer in out if status == 429]
        # without early shedding every one of the 30 past the first few waits out 0.6 s (504);
        # a few 504s remain where a slow machine stretches the slot's hold time
        assert len(shed) >= 15 and statuses.count(504) <= 5, statuses
        assert all(a["error"]["code"] == "queue_overloaded" for a in shed)

    run(body)


@pytest.mark.timing
def test_a_stalled_backend_is_left_after_the_first_byte_timeout() -> None:
    """Requests stuck on an engine that accepts but never answers are retried elsewhere fast."""

    async def body() -> None:
        async with FakeUpstream() as stalled, FakeUpstream() as healthy:
            stalled.hold = asyncio.Event()  # never set: accepts, never answers
            cfg = gateway_config(
                [stalled.url, healthy.url],
                router={"name": "round-robin"},
                tiers={"default": {"first_byte_timeout_s": 0.3}},
            )
            async with Gateway(cfg) as gw, aiohttp.ClientSession() as s:
                began = time.perf_counter()
                plain = [call(s, "POST", gw.url + "/v1/completions", BODY) for _ in range(3)]
                streams = [_stream(s, gw.url, BODY) for _ in range(3)]
                out = await asyncio.gather(*plain, *streams)
                took = time.perf_counter() - began
                stalled.hold.set()
        assert [status for status, _ in out] == [200] * 6
        assert all(instance == "b1" for _, instance in out[3:])
        assert took < 3.0, f"stalled requests waited {took:.1f}s"

    run(body)
