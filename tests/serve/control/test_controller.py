"""The controller API (register / deploy / remove / plan-apply), the config loader and the CLI."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from typer.testing import CliRunner

from sincere.cli.app import _register, app
from sincere.core.errors import ConfigError
from sincere.serve.app import compose
from sincere.serve.backends.fake_upstream import FakeUpstream
from sincere.serve.emulator.config import load_emulator_configs
from sincere.serve.gateway.config import load_config, parse_config

ROOT = Path(__file__).resolve().parents[3]


def run(factory: Callable[[], Awaitable[None]]) -> None:
    """Run one async test body with a hard time bound."""
    asyncio.run(asyncio.wait_for(factory(), 30.0))


def write_problem(root: Path) -> Path:
    """A one-model, one-accelerator, one-class Inferno problem directory."""
    files = {
        "accelerator-data.json": {"accelerators": [{"name": "A100", "cost": 40.0}]},
        "model-data.json": {
            "models": [
                {
                    "name": "m",
                    "acc": "A100",
                    "accCount": 1,
                    "maxBatchSize": 32,
                    "atTokens": 512,
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
    for name, data in files.items():
        (root / name).write_text(json.dumps(data))
    return root


async def call(s: aiohttp.ClientSession, method: str, url: str, body: Any = None) -> Any:
    async with s.request(method, url, json=body) as r:
        return r.status, await r.json()


def test_register_deploy_by_url_list_and_remove() -> None:
    """A model is registered, deployed at a URL, served, listed, then removed (404 after)."""

    async def body() -> None:
        cfg = parse_config(
            {
                "port": 0,
                "scrape": {"enabled": False},
                "controller": {"allowed_upstreams": ["127.0.0.1:*"]},
            }
        )
        async with (
            FakeUpstream(models=("m",)) as up,
            compose(cfg) as gw,
            aiohttp.ClientSession() as s,
        ):
            a = gw.url + "/admin"
            assert (await call(s, "POST", a + "/models", {"name": "m"}))[0] == 200
            st, dep = await call(
                s,
                "POST",
                a + "/instances",
                {"model": "m", "url": up.url, "name": "u1", "metrics_path": None},
            )
            assert st == 200 and dep["name"] == "u1"
            req = {"model": "m", "prompt": "x", "max_tokens": 2}
            assert (await call(s, "POST", gw.url + "/v1/completions", req))[0] == 200
            _, listed = await call(s, "GET", a + "/instances")
            assert [i["name"] for i in listed["instances"]] == ["u1"]
            _, models = await call(s, "GET", gw.url + "/v1/models")
            assert [m["id"] for m in models["data"]] == ["m"]
            assert (await call(s, "DELETE", a + "/instances/u1"))[0] == 200
            assert (await call(s, "DELETE", a + "/instances/u1"))[0] == 404
            gone = await call(s, "POST", gw.url + "/v1/completions", req)
        assert gone[0] == 404

    run(body)


def test_deploy_emulated_and_plan_apply_start_stop(tmp_path: Path) -> None:
    """The planner's replica count is applied by starting, then stopping, emulated engines."""

    async def body() -> None:
        cfg = parse_config(
            {
                "port": 0,
                "scrape": {"enabled": False},
                "planning": {"problem_dir": str(write_problem(tmp_path))},
            }
        )
        async with compose(cfg) as gw, aiohttp.ClientSession() as s:
            a = gw.url + "/admin"
            await call(s, "POST", a + "/models", {"name": "m", "emulator": {"seed": 1}})
            high = [
                {
                    "model": "m",
                    "tier": "default",
                    "rate_per_min": 3000,
                    "avg_in_tokens": 256,
                    "avg_out_tokens": 128,
                }
            ]
            st, plan = await call(s, "POST", a + "/plan", {"loads": high, "confirm": True})
            assert st == 200, plan
            n_high = plan["replicas"]["m"]
            assert n_high >= 2 and len(plan["actions"]) == n_high
            assert len(gw.dispatcher.by_model["m"]) == n_high
            req = {"model": "m", "prompt": "x", "max_tokens": 2}
            assert (await call(s, "POST", gw.url + "/v1/completions", req))[0] == 200
            low = [{**high[0], "rate_per_min": 1}]
            _, plan = await call(s, "POST", a + "/plan", {"loads": low})
            assert plan["replicas"]["m"] == 1
            assert sum(x.startswith("stopped") for x in plan["actions"]) == n_high - 1
            assert len(gw.dispatcher.by_model["m"]) == 1
            bad = await call(s, "POST", a + "/plan", {"loads": [{"tier": "default"}]})
        assert bad[0] == 400 and "loads[0].model" in bad[1]["error"]["message"]

    run(body)


def test_config_errors_name_field_and_value(tmp_path: Path) -> None:
    """Bad config values raise ConfigError naming the field and the value."""
    with pytest.raises(ConfigError, match=r"backends\[0\]\.kind.*'grpc'"):
        parse_config(
            {"backends": [{"name": "a", "url": "http://x", "models": ["m"], "kind": "grpc"}]}
        )
    with pytest.raises(ConfigError, match="default_tier 'gold' is not a tier"):
        parse_config({"default_tier": "gold"})
    with pytest.raises(ConfigError, match=r"queue\.timeout_s"):
        parse_config({"queue": {"timeout_s": -1}})
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_example_configs_load() -> None:
    """Every example under examples/serve/ is a valid gateway config."""
    paths = sorted((ROOT / "examples" / "serve").glob("*.yaml"))
    assert len(paths) >= 2
    for path in paths:
        if path.name.startswith("emulators"):
            assert len(load_emulator_configs(path)) == 3
            continue
        cfg = load_config(path)
        assert cfg.backends or cfg.planning.problem_dir


def test_cli_serve_help_documents_units() -> None:
    """``sincere serve --help`` is registered and states the units."""
    _register()
    result = CliRunner().invoke(app, ["serve", "--help"])
    assert result.exit_code == 0
    assert "USD per" in result.output and "seconds" in result.output
