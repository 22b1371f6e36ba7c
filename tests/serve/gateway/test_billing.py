"""Billing exactness through HTTP: dropped streams, sealed labels, usage capped by the cap sent.

Keys on, a fake upstream priced at 1 USD per generated token (budgets in whole tokens),
real HTTP on 127.0.0.1. Each test is a way a tenant could take tokens without paying.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from tests.serve.security.test_gateway import bearer, gateway_config, make_keys

from sincere.serve.backends.fake_upstream import FakeUpstream
from sincere.serve.gateway.server import Gateway
from sincere.serve.security.envelope import CONTENT_TYPE
from sincere.serve.security.keys import KeySpec
from sincere.serve.security.storage import Totals
from sincere.workload.tabular import tokenizer_name

ANSWER = 100  # tokens of a whole answer


def run(factory: Callable[[], Awaitable[None]]) -> None:
    """One async test body with a hard time bound."""
    asyncio.run(asyncio.wait_for(factory(), 40))


def totals(gw: Gateway) -> Totals:
    """The only key's lifetime usage in the gateway's store."""
    store = gw.auth.store
    assert store is not None
    (record,) = [r for r in store.records() if r.kind == "client"]
    return store.totals(record.key_id)


async def settled(gw: Gateway, num_requests: int) -> Totals:
    """The key's totals once ``num_requests`` requests have been settled (bounded wait)."""
    for _ in range(400):
        got = totals(gw)
        if got.num_requests >= num_requests:
            return got
        await asyncio.sleep(0.01)
    return totals(gw)


async def read_and_drop(
    s: aiohttp.ClientSession, url: str, headers: dict[str, str], body: Any, num_events: int
) -> int:
    """Open a stream, read ``num_events`` data events, close the connection: the status."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with s.post(url + "/v1/completions", data=data, headers=headers) as r:
        if r.status != 200:
            await r.read()
            return r.status
        seen = 0
        async for line in r.content:
            if line.startswith(b"data: {"):
                seen += 1
                if seen >= num_events:
                    break
        r.close()  # the client leaves mid-stream
        return r.status


def sealed_headers(token: str, max_tokens: int, stream: bool) -> dict[str, str]:
    """Headers of a body labelled sealed, declaring ``max_tokens`` (the body is plain JSON)."""
    return {
        **bearer(token),
        "Content-Type": CONTENT_TYPE,
        "x-sincere-sealed-key": "0" * 16,
        "x-sincere-model": "m",
        "x-sincere-prompt-tokens": "3",
        "x-sincere-max-tokens": str(max_tokens),
        "x-sincere-stream": "1" if stream else "0",
    }


def test_dropped_plain_streams_are_charged_what_was_relayed(tmp_path: Path) -> None:
    """Five streams dropped after 90 of 100 events are charged >= 90 tokens each: the
    budget for 1.5 answers stops the second one, instead of 450 tokens served for free."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(keys, acme=KeySpec(name="acme", budget_usd=1.5 * ANSWER))
    body = {"model": "m", "prompt": "hi", "max_tokens": ANSWER, "stream": True}

    async def main() -> None:
        up = FakeUpstream(num_tokens=ANSWER, token_delay_s=0.002)
        async with up, Gateway(gateway_config(up.url, keys)) as gw, aiohttp.ClientSession() as s:
            headers = {**bearer(tokens["acme"]), "Content-Type": "application/json"}
            statuses = [await read_and_drop(s, gw.url, headers, body, 90) for _ in range(5)]
            used = await settled(gw, 1)
        assert statuses[0] == 200 and statuses[1:] == [429] * 4
        assert 90 <= used.num_completion_tokens <= ANSWER
        assert used.spent_usd >= 90.0

    run(main)


def test_dropped_sealed_stream_is_charged_the_events_relayed(tmp_path: Path) -> None:
    """A sealed stream dropped after 90 events is charged >= 90 tokens (not 0), within the cap."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(keys, acme=KeySpec(name="acme", budget_usd=10 * ANSWER))
    body = json.dumps({"model": "m", "prompt": "hi", "max_tokens": ANSWER, "stream": True})

    async def main() -> None:
        up = FakeUpstream(num_tokens=ANSWER, token_delay_s=0.002)
        sealed = {"sealed_backends": ["b0"]}
        async with (
            up,
            Gateway(gateway_config(up.url, keys, security=sealed)) as gw,
            aiohttp.ClientSession() as s,
        ):
            headers = sealed_headers(tokens["acme"], ANSWER, stream=True)
            status = await read_and_drop(s, gw.url, headers, body.encode(), 90)
            used = await settled(gw, 1)
        assert status == 200
        assert 90 <= used.num_completion_tokens <= ANSWER

    run(main)


def test_sealed_label_never_reaches_a_plain_engine(tmp_path: Path) -> None:
    """A plain JSON body labelled sealed, with no seal proxy configured, is refused (415)
    before any engine sees it; nothing is served, nothing charged."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(keys, acme=KeySpec(name="acme", budget_usd=10 * ANSWER))
    body = json.dumps({"model": "m", "prompt": "hi", "max_tokens": 3000}).encode()

    async def main() -> None:
        up = FakeUpstream(num_tokens=3000)
        async with up, Gateway(gateway_config(up.url, keys)) as gw, aiohttp.ClientSession() as s:
            headers = sealed_headers(tokens["acme"], 1, stream=False)
            async with s.post(gw.url + "/v1/completions", data=body, headers=headers) as r:
                status, answer = r.status, await r.json()
        assert status == 415 and answer["error"]["code"] == "sealed_not_served"
        assert up.bodies == []

    run(main)


def test_sealed_backend_answer_is_charged_at_most_the_cap_sent(tmp_path: Path) -> None:
    """A sealed backend that ignores the declared cap of 1 and answers 3,000 tokens
    (streamed or whole, no usage reported) is charged the cap, not 0."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(keys, acme=KeySpec(name="acme", budget_usd=10 * ANSWER))
    body = json.dumps({"model": "m", "prompt": "hi", "max_tokens": 3000}).encode()

    async def main() -> None:
        up = FakeUpstream(num_tokens=3000)
        sealed = {"sealed_backends": ["b0"]}
        async with (
            up,
            Gateway(gateway_config(up.url, keys, security=sealed)) as gw,
            aiohttp.ClientSession() as s,
        ):
            for stream in (False, True):
                headers = sealed_headers(tokens["acme"], 1, stream=stream)
                streamed = json.dumps({**json.loads(body), "stream": stream}).encode()
                async with s.post(gw.url + "/v1/completions", data=streamed, headers=headers) as r:
                    assert r.status == 200, await r.text()
                    await r.read()
            used = await settled(gw, 2)
        assert used.num_completion_tokens == 2  # one token (the cap) per answer

    run(main)


def test_stream_is_billed_its_tokens_not_one_more(tmp_path: Path) -> None:
    """A streamed answer of 5 tokens whose last chunk only carries finish_reason is charged 5."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(keys, acme=KeySpec(name="acme", budget_usd=10 * ANSWER))

    async def main() -> None:
        up = FakeUpstream(num_tokens=5, finish_chunk=True)
        async with up, Gateway(gateway_config(up.url, keys)) as gw, aiohttp.ClientSession() as s:
            body = {"model": "m", "prompt": "hi", "max_tokens": 5, "stream": True}
            async with s.post(
                gw.url + "/v1/completions", json=body, headers=bearer(tokens["acme"])
            ) as r:
                assert r.status == 200
                text = await r.read()
            used = await settled(gw, 1)
        assert text.count(b'"finish_reason"') == 1
        assert used.num_completion_tokens == 5

    run(main)


def test_answers_name_the_token_counter_of_their_prompt(tmp_path: Path) -> None:
    """``x-sincere-token-counter``: the counter the prompt text was counted with (the same
    :func:`tokenizer_name` picks), ``token ids`` for ids, ``declared`` for a sealed body;
    on whole answers and streams, with keys on and off."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(keys, acme=KeySpec(name="acme", budget_usd=10 * ANSWER))
    text_counter = tokenizer_name("m")

    async def main() -> None:
        up = FakeUpstream(num_tokens=3)
        seen: list[str | None] = []
        async with up, Gateway(gateway_config(up.url, keys)) as gw, aiohttp.ClientSession() as s:
            url, auth = gw.url + "/v1/completions", bearer(tokens["acme"])
            for body in (
                {"model": "m", "prompt": "hello there", "max_tokens": 3},
                {"model": "m", "prompt": "hello there", "max_tokens": 3, "stream": True},
                {"model": "m", "prompt": [1, 2, 3], "max_tokens": 3},
            ):
                async with s.post(url, json=body, headers=auth) as r:
                    await r.read()
                    seen.append(r.headers.get("x-sincere-token-counter"))
        sealed = {"sealed_backends": ["b0"]}
        async with (
            FakeUpstream() as up1,
            Gateway(gateway_config(up1.url, keys, security=sealed)) as gw1,
            aiohttp.ClientSession() as s,
        ):
            data = json.dumps({"model": "m", "prompt": "hi", "max_tokens": 1}).encode()
            headers = sealed_headers(tokens["acme"], 1, stream=False)
            async with s.post(gw1.url + "/v1/completions", data=data, headers=headers) as r:
                await r.read()
                seen.append(r.headers.get("x-sincere-token-counter"))
        assert seen == [text_counter, text_counter, "token ids", "declared"]
        async with (
            FakeUpstream() as up2,
            Gateway(gateway_config(up2.url, None)) as gw2,
            aiohttp.ClientSession() as s,
        ):
            body = {"model": "m", "prompt": "hello", "max_tokens": 2}
            async with s.post(gw2.url + "/v1/completions", json=body) as r:
                assert r.headers.get("x-sincere-token-counter") == text_counter

    run(main)
