"""Timing fidelity: on the wall clock the emulator follows its step-time model."""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time

import aiohttp
import numpy as np
import pytest

from sincere.serve.emulator.config import EmulatorConfig
from sincere.serve.emulator.metrics import EmulatorMetrics
from sincere.serve.emulator.server import EmulatorServer, _build_live

pytestmark = pytest.mark.timing  # wall-clock delays of local servers (tests/conftest.py)

# Inferno's linear form: 20 ms per decode step, 40 ms per prefill, context-independent
STEP = {"kind": "inferno", "params": {"alpha_ms": 20, "beta_ms": 0, "gamma_ms": 40, "delta_ms": 0}}


async def _token_times(url: str, num_tokens: int) -> tuple[float, list[float]]:
    """(seconds to the first token, gaps between tokens) of one streamed request."""
    body = {"model": "llama-3-8b", "prompt": "hi", "max_tokens": num_tokens, "stream": True}
    stamps: list[float] = []
    async with aiohttp.ClientSession() as session:
        start = time.perf_counter()
        async with session.post(url + "/v1/completions", json=body) as resp:
            async for line in resp.content:
                if line.startswith(b"data: {") and b'"text":" tok"' in line:
                    stamps.append(time.perf_counter())
    return stamps[0] - start, [b - a for a, b in itertools.pairwise(stamps)]


def test_itl_and_ttft_follow_the_step_model() -> None:
    """20 tokens at 20 ms decode steps: median ITL within 25 %, TTFT near the 40 ms prefill."""
    config = EmulatorConfig.model_validate({"step_model": STEP, "engine": {"num_kv_blocks": 512}})

    async def main() -> tuple[float, list[float], float]:
        async with EmulatorServer(config) as server:
            # one token first: the process's first request pays one-time costs (lazy
            # imports, the first connection) that are not the step model's
            await asyncio.wait_for(_token_times(server.url, 1), 10)
            started = time.perf_counter()
            ttft, gaps = await asyncio.wait_for(_token_times(server.url, 20), 10)
            return ttft, gaps, time.perf_counter() - started

    ttft, gaps, total = asyncio.run(main())
    assert len(gaps) == 19
    assert abs(statistics.median(gaps) - 0.020) <= 0.005, gaps
    assert 0.035 <= ttft <= 0.080, ttft
    # no drift: 40 ms + 19 x 20 ms = 0.42 s of model time, plus little overhead
    assert 0.40 <= total <= 0.55, total


def test_concurrent_requests_batch_together() -> None:
    """Two concurrent streams share decode iterations: both finish in about one's time."""
    config = EmulatorConfig.model_validate({"step_model": STEP, "engine": {"num_kv_blocks": 512}})

    async def main() -> float:
        async with EmulatorServer(config) as server:
            started = time.perf_counter()
            await asyncio.wait_for(
                asyncio.gather(_token_times(server.url, 10), _token_times(server.url, 10)), 10
            )
            return time.perf_counter() - started

    # batched: one prefill (or two) + 9 shared steps ~ 0.22-0.26 s; serial would be ~0.46 s
    assert asyncio.run(main()) < 0.38


def test_an_arrival_never_joins_an_iteration_that_began_before_it() -> None:
    """A late timer (busy loop) must not let a new request into an earlier iteration.

    The first request's 40 ms prefill is due at once, but the loop is blocked for 150 ms
    before the second arrives; the engine must first run what has ended by then, so the
    second is scheduled no earlier than its arrival and its first token comes at least
    one prefill (40 ms) later.
    """
    config = EmulatorConfig.model_validate({"step_model": STEP, "engine": {"num_kv_blocks": 512}})

    async def main() -> tuple[float, float, float, float]:
        metrics = EmulatorMetrics("llama-3-8b")
        live = _build_live(config, "e", "llama-3-8b", metrics, np.random.default_rng(0))
        first = live.submit(8, 20, 20, stream=False)
        time.sleep(0.15)  # blocks the event loop: the timer fires late
        second = live.submit(8, 5, 5, stream=False)
        await asyncio.wait_for(asyncio.gather(first.done, second.done), 5)
        req, rec = live.requests, live.records
        i, j = first.ix, second.ix
        return (
            float(req.arrival_at[j]),
            float(rec.first_scheduled_at[j]),
            float(rec.first_token_at[j]),
            float(rec.first_token_at[i]),
        )

    arrival, scheduled, first_token, other_first_token = asyncio.run(main())
    assert scheduled >= arrival, (arrival, scheduled)
    assert first_token >= arrival + 0.040 - 1e-9, (arrival, first_token)
    assert other_first_token < arrival  # the first request's prefill ran before, alone
