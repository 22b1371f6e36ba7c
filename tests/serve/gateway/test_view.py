"""The gateway's view of an instance: declared facts, the engine's load, unknown as None."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from sincere.serve.backends.config import BackendConfig
from sincere.serve.emulator.config import EmulatorConfig
from sincere.serve.emulator.server import EmulatorServer
from sincere.serve.gateway.config import parse_config
from sincere.serve.gateway.instances import backend_info, parse_engine_load
from sincere.serve.gateway.server import Gateway

SPEC = {"model": "llama-3-8b", "accelerator": "A100-80GB", "engine": {"max_num_seqs": 32}}


def test_the_emulators_load_json_becomes_an_engine_load() -> None:
    """Every field the emulator reports is read; absent or malformed ones stay unknown."""
    full = {
        "num_running": 3, "num_waiting": 1, "waiting_prefill_tokens": 900,
        "running_remaining_tokens": 60, "running_ctx_tokens": 4000, "kv_usage": 0.2,
        "busy_s": 1.5, "num_in_flight": 4,
    }  # fmt: skip
    sample = parse_engine_load(json.dumps(full), 7.0)
    assert sample is not None and sample.at == 7.0
    load = sample.load
    assert (load.num_running, load.num_waiting, load.running_ctx_tokens) == (3, 1, 4000)
    assert load.kv_usage == 0.2 and load.busy_s == 1.5
    partial = parse_engine_load(json.dumps({"num_running": -1, "kv_usage": True}), 0.0)
    assert partial is not None
    assert partial.load.num_running is None and partial.load.kv_usage is None
    assert parse_engine_load("not json", 0.0) is None
    assert parse_engine_load("[1, 2]", 0.0) is None


def test_a_declared_deployment_gives_the_view_its_step_model_and_limits() -> None:
    """With a deployment the facts are the engine layer's; without, they are unknown."""
    base = {"name": "a", "url": "http://127.0.0.1:9", "models": ["m"]}
    declared = backend_info(BackendConfig(**base, deployment=SPEC, max_in_flight=8))
    assert declared.step_model is not None and declared.accelerator == "A100-80GB"
    assert declared.max_num_seqs == 32 and declared.max_in_flight == 8
    assert declared.models == ("m",) and declared.precision == "bf16"
    bare = backend_info(BackendConfig(**base))
    assert bare.step_model is None and bare.precision is None and bare.num_gpus is None


def test_an_emulated_backend_shows_its_whole_engine_load() -> None:
    """Read from the emulator's load endpoint, every engine-side field of the view is known."""

    async def body() -> dict[str, Any]:
        emu_cfg = EmulatorConfig(name="e", port=0, **SPEC)
        async with EmulatorServer(emu_cfg) as emu:
            raw = {
                "port": 0,
                "scrape": {"enabled": False},
                "backends": [
                    {"name": "e", "url": emu.url, "models": ["llama-3-8b"],
                     "load_path": "/sincere/load", "deployment": SPEC},
                ],
            }  # fmt: skip
            async with Gateway(parse_config(raw)) as gw, aiohttp.ClientSession() as s:
                req = {"model": "llama-3-8b", "prompt": "x " * 300, "max_tokens": 200}
                task = asyncio.create_task(s.post(gw.url + "/v1/completions", json=req))
                state = gw.dispatcher.instances["e"]
                for _ in range(200):  # until the engine holds the request
                    await gw.scrape(state)
                    view = state.view("llama-3-8b", gw.loop.time(), 1.0)
                    if view.num_running:
                        break
                    await asyncio.sleep(0.01)
                (await task).release()
                return {"view": view}

    view = asyncio.run(asyncio.wait_for(body(), 30.0))["view"]
    assert view.engine_load_known and view.num_running == 1 and view.step_model is not None
    assert view.running_remaining_tokens is not None and view.running_remaining_tokens > 0
    assert view.running_ctx_tokens is not None and view.kv_usage is not None
