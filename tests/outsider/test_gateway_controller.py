"""The controller API attacked from outside: hijack, SSRF, ghosts, exhaustion, files, plans."""

from __future__ import annotations

import asyncio
import gc
import json
import re
import weakref
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tests.outsider._gateway import BODY, ROOT, call, free_port, gateway_config, run

from sincere.serve.app import CONTROLLER, compose
from sincere.serve.backends.fake_upstream import FakeUpstream
from sincere.serve.gateway.config import load_config, parse_config

ALLOW_LOCAL = {"controller": {"allowed_upstreams": ["127.0.0.1:*"]}}


def test_urls_with_path_query_fragment_or_credentials_are_refused() -> None:
    """A deploy URL must be a bare origin: a path, query, fragment or user info is a 400."""

    async def body() -> None:
        async with (
            FakeUpstream(models=("x",)) as up,
            compose(gateway_config([], **ALLOW_LOCAL)) as gw,
            aiohttp.ClientSession() as s,
        ):
            port = up.port
            bad = [
                f"{up.url}/internal/x?q=",
                f"{up.url}/admin",
                f"{up.url}/?q=1",
                f"{up.url}#frag",
                f"http://user:pw@127.0.0.1:{port}",
            ]
            for k, url in enumerate(bad):
                got = await call(
                    s, "POST", gw.url + "/admin/instances", {"model": f"x{k}", "url": url}
                )
                assert got[0] == 400, (url, got)
                assert "url" in got[1]["error"]["message"]
            assert not gw.dispatcher.instances and up.bodies == []

    run(body)


def test_upstreams_off_the_allow_list_are_refused() -> None:
    """Without an allow-list entry for it, no URL can be registered over the API."""

    async def body() -> None:
        async with (
            FakeUpstream(models=("x",)) as up,
            compose(gateway_config([])) as gw,
            aiohttp.ClientSession() as s,
        ):
            got = await call(s, "POST", gw.url + "/admin/instances", {"model": "x", "url": up.url})
            assert got[0] == 400 and "allowed_upstreams" in got[1]["error"]["message"]
            assert not gw.dispatcher.instances

    run(body)


def test_joining_a_served_model_needs_the_join_flag() -> None:
    """Another server for a public model's pool is 409 unless the caller says join: true."""

    async def body() -> None:
        async with (
            FakeUpstream() as public,
            FakeUpstream() as attacker,
            compose(gateway_config([public.url], **ALLOW_LOCAL)) as gw,
            aiohttp.ClientSession() as s,
        ):
            hijack = {"model": "m", "url": attacker.url, "metrics_path": None}
            refused = await call(s, "POST", gw.url + "/admin/instances", hijack)
            for _ in range(4):
                assert (await call(s, "POST", gw.url + "/v1/completions", BODY))[0] == 200
            joined = await call(s, "POST", gw.url + "/admin/instances", {**hijack, "join": True})
        assert refused[0] == 409 and refused[1]["error"]["code"] == "join_required"
        assert attacker.bodies == [] and len(public.bodies) == 4
        assert joined[0] == 200

    run(body)


def test_api_metrics_path_is_only_the_metrics_page() -> None:
    """``metrics_path`` over the API is /metrics or null: no blind GET to any other path."""

    async def body() -> None:
        async with (
            FakeUpstream(models=("x",)) as up,
            compose(gateway_config([], **ALLOW_LOCAL)) as gw,
            aiohttp.ClientSession() as s,
        ):
            probe = {"model": "x", "url": up.url, "metrics_path": "/internal/probe"}
            got = await call(s, "POST", gw.url + "/admin/instances", probe)
        assert got[0] == 400 and "metrics_path" in got[1]["error"]["message"]

    run(body)


def test_client_errors_never_name_upstream_addresses() -> None:
    """A dead upstream gives the client a 502 that names the instance, not its host or port."""
    port = free_port()

    async def body() -> None:
        cfg = gateway_config([f"http://127.0.0.1:{port}"])
        async with compose(cfg) as gw, aiohttp.ClientSession() as s:
            status, out = await call(s, "POST", gw.url + "/v1/completions", BODY)
        message = json.dumps(out)
        assert status == 502 and "b0" in message
        assert "127.0.0.1" not in message and str(port) not in message

    run(body)


def test_duplicate_instance_names_are_409_and_leave_no_ghost() -> None:
    """A name in use is 409; the first instance keeps serving, and once removed nothing is left."""

    async def body() -> None:
        async with (
            FakeUpstream() as a,
            FakeUpstream() as b,
            compose(gateway_config([], **ALLOW_LOCAL)) as gw,
            aiohttp.ClientSession() as s,
        ):
            adm = gw.url + "/admin/instances"
            first = {"model": "m", "url": a.url, "name": "emu-1", "metrics_path": None}
            assert (await call(s, "POST", adm, first))[0] == 200
            again = {**first, "url": b.url, "join": True}
            dup = await call(s, "POST", adm, again)
            emulated_dup = await call(s, "POST", adm, {"model": "m", "name": "emu-1", "join": True})
            served = [(await call(s, "POST", gw.url + "/v1/completions", BODY))[0] for _ in "abc"]
            removed = await call(s, "DELETE", adm + "/emu-1")
            after = await call(s, "POST", gw.url + "/v1/completions", BODY)
            listed = await call(s, "GET", adm)
        assert dup[0] == 409 and dup[1]["error"]["code"] == "name_taken"
        assert emulated_dup[0] == 409
        assert served == [200, 200, 200] and len(a.bodies) == 3 and b.bodies == []
        assert removed[0] == 200 and after[0] == 404 and listed[1]["instances"] == []

    run(body)


def test_memory_numbers_are_bounded_and_instances_capped() -> None:
    """Huge sizes are 400 before anything is allocated; the 17th instance is 409; removal frees."""

    async def body() -> None:
        async with compose(gateway_config([])) as gw, aiohttp.ClientSession() as s:
            adm = gw.url + "/admin/instances"
            huge = await call(s, "POST", adm, {"model": "x", "max_num_requests": 10_000_000})
            blocks = await call(s, "POST", adm, {"model": "x", "engine": {"block_size": 10**9}})
            text = await call(s, "POST", adm, {"model": "x", "token_text": "y" * 10_000})
            answers = [await call(s, "POST", adm, {"model": f"x{k}", "seed": k}) for k in range(18)]
            statuses = [status for status, _ in answers]
            first = answers[0][1]["name"]
            server = gw.app[CONTROLLER].emulators[first]
            assert server is not None and server.live is not None
            live = weakref.ref(server.live)
            del server
            assert (await call(s, "DELETE", adm + "/" + first))[0] == 200
        gc.collect()
        assert huge[0] == 400 and "max_num_requests" in huge[1]["error"]["message"]
        assert blocks[0] == 400 and "block_size" in blocks[1]["error"]["message"]
        assert text[0] == 400 and "token_text" in text[1]["error"]["message"]
        assert statuses == [200] * 16 + [409, 409]
        assert live() is None, "a removed emulated engine is still referenced"

    run(body)


def test_plan_loads_must_be_finite_and_in_range(tmp_path: Path) -> None:
    """NaN, infinite, negative or absurd plan loads are 400 naming the field."""

    async def body() -> None:
        cfg = parse_config(
            {"port": 0, "planning": {"problem_dir": str(ROOT / "examples/plan/unlimited")}}
        )
        async with compose(cfg) as gw, aiohttp.ClientSession() as s:
            out = []
            for rate in ("NaN", "Infinity", "-5", "1e400", "6e12"):
                raw = (
                    '{"apply": false, "loads": [{"model": "granite_13b", "tier": "Premium", '
                    f'"rate_per_min": {rate}}}]}}'
                )
                async with s.post(gw.url + "/admin/plan", data=raw) as r:
                    out.append((r.status, await r.json()))
            tier = await call(
                s,
                "POST",
                gw.url + "/admin/plan",
                {
                    "apply": False,
                    "loads": [{"model": "granite_13b", "tier": "Gold", "rate_per_min": 5}],
                },
            )
        for status, answer in out:
            assert status == 400 and "loads[0].rate_per_min" in answer["error"]["message"]
        assert tier[0] == 400 and "loads[0].tier" in tier[1]["error"]["message"]

    run(body)


def test_api_cannot_name_server_files(tmp_path: Path) -> None:
    """A params_file outside controller.files_dir is refused unread, existing or not."""
    secret = tmp_path / "secret.yaml"
    secret.write_text("overhead_s: sk-live-0123456789\n")
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "fast.yaml").write_text("mfu_efficiency: 0.4\n")
    (allowed / "broken.yaml").write_text("mfu_efficiency: [unclosed\n")

    paths = {
        "secret": str(secret),
        "missing": str(tmp_path / "nope.yaml"),
        "escape": "../secret.yaml",
        "ok": "fast.yaml",
        "broken": "broken.yaml",
    }

    async def body() -> dict[str, Any]:
        cfg = gateway_config([], controller={"files_dir": str(allowed)})
        async with compose(cfg) as gw, aiohttp.ClientSession() as s:
            adm = gw.url + "/admin"
            got: dict[str, Any] = {}
            for key, path in paths.items():
                step = {"kind": "roofline", "params_file": path}
                got[key] = await call(
                    s, "POST", adm + "/instances", {"model": key, "step_model": step}
                )
            step = {"kind": "roofline", "params_file": str(secret)}
            register = {"name": "r", "emulator": {"step_model": step}}
            got["register"] = await call(s, "POST", adm + "/models", register)
            table = {"kind": "sincere-table", "params": {"model": str(secret)}}
            got["param_path"] = await call(
                s, "POST", adm + "/instances", {"model": "p", "step_model": table}
            )
            return got

    got = run(body)
    for key in ("secret", "missing", "escape", "register", "param_path", "broken"):
        status, out = got[key]
        assert status == 400, (key, got[key])
        assert "sk-live" not in json.dumps(out)
    # the same words whether the file exists or not
    said = {
        k: got[k][1]["error"]["message"].replace(paths[k], "PATH") for k in ("secret", "missing")
    }
    assert said["secret"] == said["missing"]
    assert got["ok"][0] == 200


def _documented_body(path: Path, endpoint: str) -> dict[str, Any]:
    """The JSON body of the ``curl ... <endpoint> -d '...'`` line in a config's comments."""
    found = re.search(re.escape(endpoint) + r" -d '(\{.*\})'", path.read_text())
    assert found, f"{path} documents no call of {endpoint}"
    body: dict[str, Any] = json.loads(found.group(1))
    return body


def test_planned_example_applies_as_documented(monkeypatch: pytest.MonkeyPatch) -> None:
    """gateway-planned.yaml as documented: register as its comment says, then plan and apply."""
    monkeypatch.chdir(ROOT)
    path = ROOT / "examples" / "serve" / "gateway-planned.yaml"
    registration = _documented_body(path, "/admin/models")
    apply = _documented_body(path, "/admin/plan")

    async def body() -> None:
        cfg = load_config(path).model_copy(update={"port": 0})
        async with compose(cfg) as gw, aiohttp.ClientSession() as s:
            reg = await call(s, "POST", gw.url + "/admin/models", registration)
            plan = await call(s, "POST", gw.url + "/admin/plan", apply)
            req = {**BODY, "model": registration["name"]}
            served = await call(s, "POST", gw.url + "/v1/completions", req)
        assert reg[0] == 200 and plan[0] == 200, plan
        assert plan[1]["replicas"][registration["name"]] >= 1 and plan[1]["actions"]
        assert served[0] == 200

    run(body)


def test_a_plan_above_the_start_cap_needs_confirmation(monkeypatch: pytest.MonkeyPatch) -> None:
    """A made-up load that would start many instances is 409 until confirmed; then capped."""
    monkeypatch.chdir(ROOT)
    path = ROOT / "examples" / "serve" / "gateway-planned.yaml"
    registration = _documented_body(path, "/admin/models")
    load = {"model": registration["name"], "tier": "Premium", "rate_per_min": 6000}

    async def body() -> None:
        cfg = load_config(path).model_copy(update={"port": 0})
        async with compose(cfg) as gw, aiohttp.ClientSession() as s:
            await call(s, "POST", gw.url + "/admin/models", registration)
            asked = await call(s, "POST", gw.url + "/admin/plan", {"apply": True, "loads": [load]})
            started_unconfirmed = len(gw.dispatcher.instances)
            big = {"apply": True, "confirm": True, "loads": [{**load, "rate_per_min": 600_000}]}
            capped = await call(s, "POST", gw.url + "/admin/plan", big)
            started_over_cap = len(gw.dispatcher.instances)
            confirmed = await call(s, "POST", gw.url + "/admin/plan", {**big, "loads": [load]})
            await asyncio.sleep(0)
        assert asked[0] == 409 and asked[1]["error"]["code"] == "confirmation_required"
        assert asked[1]["num_starts"] > 4 and started_unconfirmed == 0
        assert capped[0] == 409 and capped[1]["error"]["code"] == "instance_cap"
        assert started_over_cap == 0
        assert confirmed[0] == 200 and len(confirmed[1]["actions"]) == asked[1]["num_starts"]

    run(body)
