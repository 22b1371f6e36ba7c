"""Interactive lockout: does one tenant's traffic close another tier to other tenants?

A fake engine whose first token takes time in proportion to the prompt (a prefill),
behind sincere's gateway (tiers ``interactive``: TTFT 1 s, and ``batch``). An attacker
sends ``--rate`` req/s of ~7,500-token prompts, ``max_tokens: 1``, streamed, in the
batch tier; a victim sends ``--victim-rate`` req/s of short interactive streams. Run twice, with
admission on and off, for ``--duration-s`` each; printed per run: the victim's requests,
refusals (429), and those served but later than the 1 s target. The goal: with
admission on, the victim's refusals are no more than its misses with admission off
(the requests that truly could not meet the target).

    python benchmarks/gateway_lockout.py        # attacker 5 req/s, victim 1 req/s, 15 s a run

Everything runs in this process on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import aiohttp

from sincere.serve.backends.fake_upstream import FakeUpstream
from sincere.serve.gateway.config import parse_config
from sincere.serve.gateway.server import Gateway

LONG_PROMPT = "x" * 30_000  # ~7,500 tokens at the gateway's estimate
LONG_TTFT_S = 1.6  # the fake engine's "prefill" of the long prompt: beyond the 1 s target
TARGET_S = 1.0


def config(url: str, admission: bool) -> Any:
    return parse_config(
        {
            "port": 0,
            "backends": [{"name": "b0", "url": url, "models": ["m"], "metrics_path": None}],
            "scrape": {"enabled": False},
            "tiers": {
                "interactive": {"ttft_s": TARGET_S, "priority": 0},
                "batch": {"ttlt_s": 600, "priority": 2},
            },
            "default_tier": "interactive",
            "admission": {"enabled": admission},
        }
    )


async def one(s: aiohttp.ClientSession, url: str, prompt: str, tier: str) -> tuple[int, float]:
    """A ``max_tokens: 1`` stream: its status and time to the first event."""
    body = {"model": "m", "prompt": prompt, "max_tokens": 1, "stream": True}
    body["sincere"] = {"tier": tier}
    started = time.monotonic()
    async with s.post(url + "/v1/completions", json=body) as r:
        first = None
        async for _ in r.content:
            first = first or time.monotonic()
        return r.status, (first or time.monotonic()) - started


async def run(
    admission: bool, rate: float, victim_rate: float, duration_s: float
) -> dict[str, Any]:
    up = FakeUpstream(num_tokens=1, ttft_per_prompt_char_s=LONG_TTFT_S / len(LONG_PROMPT))
    async with up, Gateway(config(up.url, admission)) as gw, aiohttp.ClientSession() as s:
        victim: list[asyncio.Task[tuple[int, float]]] = []
        attack: list[asyncio.Task[tuple[int, float]]] = []
        every = max(1, round(rate / victim_rate))  # a victim request every this many
        for k in range(int(rate * duration_s)):
            attack.append(asyncio.create_task(one(s, gw.url, LONG_PROMPT, "batch")))
            if k % every == 0:
                victim.append(asyncio.create_task(one(s, gw.url, f"hi {k}", "interactive")))
            await asyncio.sleep(1.0 / rate)
        got = await asyncio.gather(*victim)
        await asyncio.gather(*attack)
    refused = sum(1 for status, _ in got if status == 429)
    late = sum(1 for status, ttft in got if status == 200 and ttft > TARGET_S)
    return {"admission": admission, "victim": len(got), "refused": refused, "late": late}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=5.0)
    parser.add_argument("--victim-rate", type=float, default=1.0)
    parser.add_argument("--duration-s", type=float, default=15.0)
    args = parser.parse_args()
    print("| admission | victim requests | refused (429) | served late (> 1 s) |")
    print("|---|---|---|---|")
    for admission in (False, True):
        r = asyncio.run(run(admission, args.rate, args.victim_rate, args.duration_s))
        on = "on" if r["admission"] else "off"
        print(f"| {on} | {r['victim']} | {r['refused']} | {r['late']} |")


if __name__ == "__main__":
    main()
