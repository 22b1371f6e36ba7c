"""The emulator serves the new catalog models (MoE, MLA, sliding windows) through the
roofline unchanged: one short completion each, on 127.0.0.1."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from tests.conftest import NEW_MODELS

from sincere.catalog import get_model
from sincere.serve.emulator.config import EmulatorConfig
from sincere.serve.emulator.server import EmulatorServer


@pytest.mark.parametrize("model", NEW_MODELS)
def test_every_new_model_is_emulated(model: str) -> None:
    """A 3-token completion comes back from an emulated 8 x H200 deployment of the model."""
    config = EmulatorConfig.model_validate(
        {
            "model": model,
            "accelerator": "H200",
            "tp": 8,
            "precision": get_model(model).native_precision,
            "port": 0,
        }
    )

    async def main() -> dict[str, object]:
        async with EmulatorServer(config) as server, aiohttp.ClientSession() as session:
            body = {"model": model, "prompt": "hello there", "max_tokens": 3}
            async with session.post(server.url + "/v1/completions", json=body) as resp:
                assert resp.status == 200
                out: dict[str, object] = await resp.json()
                return out

    out = asyncio.run(asyncio.wait_for(main(), 20))
    assert out["usage"]["completion_tokens"] == 3  # type: ignore[index]
