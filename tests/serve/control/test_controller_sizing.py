"""`/admin/plan` sizing: analyzer, simulate or auto, and the answer says which and why."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sincere.serve.app import compose
from sincere.serve.gateway.config import parse_config

PROBLEM = {
    "accelerator-data.json": {"accelerators": [{"name": "A100", "cost": 40.0}]},
    "model-data.json": {
        "models": [
            {
                "name": "m",
                "acc": "A100",
                "maxBatchSize": 32,
                "decodeParms": {"alpha": 20.58, "beta": 0.41},
                "prefillParms": {"gamma": 164.64, "delta": 0.0128},
            }
        ]
    },
    "serviceclass-data.json": {
        "serviceClasses": [
            {
                "name": "default",
                "priority": 1,
                "modelTargets": [{"model": "m", "slo-ttft": 1000, "slo-itl": 80}],
            }
        ]
    },
}


def write_problem(root: Path) -> Path:
    """A one-model, one-accelerator, one-class Inferno problem directory."""
    for name, data in PROBLEM.items():
        (root / name).write_text(json.dumps(data))
    return root


async def call(s: aiohttp.ClientSession, method: str, url: str, body: Any = None) -> Any:
    async with s.request(method, url, json=body) as r:
        return r.status, await r.json()


LOADS = [
    {
        "model": "m",
        "tier": "default",
        "rate_per_min": 600,
        "avg_in_tokens": 256,
        "avg_out_tokens": 128,
    }
]


def test_plan_sizing_is_chosen_and_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`sizing` analyzer / simulate / auto each plan; the answer and the log name the
    sizing used and why; an unknown sizing is a 400 naming the allowed ones."""
    monkeypatch.setenv("SINCERE_CACHE", str(tmp_path / "cache"))
    caplog.set_level("INFO", logger="sincere.serve.gateway.controller")

    async def body() -> None:
        cfg = parse_config(
            {
                "port": 0,
                "scrape": {"enabled": False},
                "planning": {"problem_dir": str(write_problem(tmp_path))},
            }
        )
        async with compose(cfg) as gw, aiohttp.ClientSession() as s:
            url = gw.url + "/admin/plan"
            got = {}
            for sizing in ("analyzer", "simulate", "auto"):
                req = {"loads": LOADS, "apply": False, "sizing": sizing}
                st, plan = await call(s, "POST", url, req)
                assert st == 200, plan
                got[sizing] = plan
            bad = await call(s, "POST", url, {"loads": LOADS, "apply": False, "sizing": "x"})
        assert got["analyzer"]["sizing"] == {
            "asked": "analyzer",
            "used": "analyzer",
            "why": "requested",
        }
        assert got["simulate"]["sizing"]["used"] == "simulate"
        auto = got["auto"]["sizing"]
        assert auto["used"] in ("analyzer", "simulate") and auto["why"]
        if auto["used"] == "simulate":
            assert "disagree" in auto["why"]
            assert got["auto"]["replicas"] == got["simulate"]["replicas"]
        assert bad[0] == 400 and "simulate" in bad[1]["error"]["message"]

    asyncio.run(asyncio.wait_for(body(), 120.0))
    assert any("plan: simulate sizing" in r.getMessage() for r in caplog.records)
