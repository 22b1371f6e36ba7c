"""The emulated front end: intake before the engine, output delay after it, in order."""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time

import aiohttp
import pytest

from sincere.core.errors import ConfigError
from sincere.perf.execution import FrontEnd
from sincere.serve.emulator.config import EmulatorConfig
from sincere.serve.emulator.frontend import Intake, Output
from sincere.serve.emulator.server import EmulatorServer


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


def test_intake_takes_requests_in_the_order_received() -> None:
    """A long prompt received first holds back a short one after it (one API process)."""
    intake = Intake(FrontEnd(request_s=0.01, prompt_token_s=0.001))
    long_at = intake.due_at(100, now=5.0)
    assert long_at == pytest.approx(5.11)
    assert intake.due_at(1, now=5.001) == long_at  # its own 11 ms would have let it overtake
    assert intake.due_at(1, now=6.0) == pytest.approx(6.011)  # idle again: its own time


def test_intake_through_one_api_process_takes_requests_in_turn() -> None:
    """With one API process, requests received together are worked one after another, as
    the simulator's front end does (``intake_servers``)."""
    intake = Intake(FrontEnd(request_s=0.01, prompt_token_s=0.001, intake_servers=1))
    assert intake.due_at(100, now=5.0) == pytest.approx(5.11)
    assert intake.due_at(1, now=5.001) == pytest.approx(5.121)  # after the first's 110 ms
    assert intake.due_at(1, now=6.0) == pytest.approx(6.011)  # idle again: its own time


def test_output_runs_each_call_late_and_in_order_and_close_flushes() -> None:
    """Calls run ``delay_s`` after they were made, in order; closing runs the rest now."""

    async def main() -> tuple[list[tuple[str, float]], list[str]]:
        loop = asyncio.get_running_loop()
        out = Output(0.05, loop)
        seen: list[tuple[str, float]] = []
        start = loop.time()
        for name in ("a", "b"):
            out.call(lambda n=name: seen.append((n, loop.time() - start)))
        await asyncio.sleep(0.02)
        out.call(lambda: seen.append(("c", loop.time() - start)))
        await asyncio.sleep(0.04)  # a and b ran (50 ms); c is due at 70 ms
        out.call(lambda: seen.append(("d", loop.time() - start)))
        out.close()
        out.call(lambda: seen.append(("e", loop.time() - start)))
        return seen, [n for n, _ in seen]

    seen, order = asyncio.run(main())
    assert order == ["a", "b", "c", "d", "e"]
    assert all(at >= 0.05 for _, at in seen[:2])
    assert seen[2][1] < 0.07  # flushed by close, before its time


def _config(frontend: dict[str, float]) -> EmulatorConfig:
    """The default emulator (its roofline step model), eager, with ``frontend``'s times."""
    engine = {"num_kv_blocks": 512, "preset": "eager", "execution": {"frontend": frontend}}
    return EmulatorConfig.model_validate({"engine": engine})


def test_a_front_end_delays_the_first_token_and_leaves_the_gaps_alone() -> None:
    """An intake of 60 ms and an output delay of 40 ms: the first token ~100 ms later than
    without a front end, the gaps between tokens unchanged."""

    async def ttft_and_gaps(config: EmulatorConfig) -> tuple[float, list[float]]:
        async with EmulatorServer(config) as server:
            await asyncio.wait_for(_token_times(server.url, 1), 10)  # one-time costs
            return await asyncio.wait_for(_token_times(server.url, 10), 10)

    bare, bare_gaps = asyncio.run(ttft_and_gaps(_config({})))
    ttft, gaps = asyncio.run(ttft_and_gaps(_config({"request_s": 0.06, "output_s": 0.04})))
    assert 0.08 <= ttft - bare <= 0.14, (ttft, bare)
    assert statistics.median(gaps) == pytest.approx(statistics.median(bare_gaps), abs=0.004)


def test_a_whole_answer_waits_for_its_intake_and_its_end() -> None:
    """Not streamed: the answer leaves the intake (50 ms) and the output delay (50 ms)
    later than without a front end."""
    body = {"model": "llama-3-8b", "prompt": "hi", "max_tokens": 5}

    async def answer_s(config: EmulatorConfig) -> float:
        async with EmulatorServer(config) as server, aiohttp.ClientSession() as s:
            await (await s.post(server.url + "/v1/completions", json=body)).read()
            start = time.perf_counter()
            async with s.post(server.url + "/v1/completions", json=body) as resp:
                assert resp.status == 200
                await resp.read()
            return time.perf_counter() - start

    bare = asyncio.run(answer_s(_config({})))
    late = asyncio.run(answer_s(_config({"request_s": 0.05, "output_s": 0.05})))
    assert 0.08 <= late - bare <= 0.14, (late, bare)


def test_a_first_chunk_of_several_tokens_is_refused_live() -> None:
    """SGLang's first chunk of ``k`` tokens (``first_chunk_tokens``) is simulated only: the
    emulated engine says so rather than stream every token as made."""
    config = _config({"first_chunk_tokens": 30})
    with pytest.raises(ConfigError, match="simulated only") as err:
        EmulatorServer(config)
    assert "30" in str(err.value)
