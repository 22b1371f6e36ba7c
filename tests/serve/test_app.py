"""The composition root: /admin is mounted by compose() alone, and only when admin is on."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from tests.serve.security.test_gateway import gateway_config

from sincere.serve.app import CONTROLLER, compose
from sincere.serve.gateway.server import Gateway

UPSTREAM = "http://127.0.0.1:9"  # never contacted: nothing is served here


def _paths(gw: Gateway) -> set[str]:
    return {resource.canonical for resource in gw.app.router.resources()}


def test_compose_mounts_the_controller_when_admin_is_on() -> None:
    """compose() adds /admin over the gateway as its fleet; the gateway alone has none."""

    async def body() -> None:
        cfg = gateway_config(UPSTREAM, None)
        built = [
            (Gateway(cfg), False),
            (compose(cfg), True),
            (compose(cfg.model_copy(update={"admin": False})), False),
        ]
        for gw, has_admin in built:
            paths = _paths(gw)
            assert ("/admin/instances" in paths) == has_admin
            assert {"/v1/completions", "/metrics", "/health"} <= paths
            assert (CONTROLLER in gw.app) == has_admin
            await gw.stop()
        gw = compose(cfg)
        controller = gw.app[CONTROLLER]
        assert controller.fleet is gw and [s.name for s in controller.fleet.instances_of()] == [
            "b0"
        ]
        assert gw.on_stop == [controller.close]  # its emulated engines stop with the gateway
        await gw.stop()

    asyncio.run(asyncio.wait_for(body(), 30))


def test_the_data_plane_loads_no_planner() -> None:
    """Importing the composition root loads no controller and nothing of optimize/ (scipy)."""
    heavy = ("sincere.optimize", "sincere.serve.control.controller", "scipy")
    code = (
        "import sys, sincere.serve.app\n"
        f"print(sorted(m for m in sys.modules if m.startswith({heavy!r})))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
