"""The composition root of ``sincere serve``: the data plane, the control plane and ``/admin``.

:func:`compose` builds the gateway (the data plane, :mod:`sincere.serve.gateway`) and, with
``admin`` on (the default), the controller (the control plane, :mod:`sincere.serve.control`)
over it -- the gateway handed over as a :class:`~sincere.serve.control.fleet.Fleet`, the only
face the controller sees -- and mounts the controller's ``/admin`` routes on the gateway's app
behind the admin-key check and the audit log (:func:`admin_only`). This module is the only one
that imports both planes. :func:`run_gateway` and :func:`serve_gateway` serve what
:func:`compose` built, in one process or several sharing the port.

Admin routes: with a key store (``security.keys``) every route needs an admin key (401
without a valid key, 403 for a client key), and every state change that succeeded is
appended to the audit log with the admin key's actor (``admin:<name>/<key id>``); without
one, the actor is ``anonymous@<client address>``. A change that failed, or failed half-way
(an error status or an exception), is audited too, with its status. A change is not made
when the audit log cannot be written (503 ``audit_unavailable``).

The control plane (and the planner it imports) is loaded only when ``admin`` is on: a
gateway without ``/admin`` keeps no planning code in memory.

Usage::

    async with compose(load_config("gateway.yaml")) as gw:
        print(gw.url)           # http://127.0.0.1:PORT, /v1 and /admin
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import json
import multiprocessing
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from sincere.core.errors import ConfigError
from sincere.policy.decision_log import DecisionLog, open_log
from sincere.serve.gateway.auth import GatewayAuth, refusal_response
from sincere.serve.gateway.config import GatewayConfig
from sincere.serve.gateway.edge import expect_handler as expect
from sincere.serve.gateway.edge import read_body
from sincere.serve.gateway.server import (
    Gateway,
    die_with_parent,
    exit_process,
    freeze_startup_heap,
    run_on_fast_loop,
    stop_on_sigterm,
)
from sincere.serve.protocol import error_body
from sincere.serve.security.policy import Refusal

if TYPE_CHECKING:
    from sincere.serve.control.autoscaler import LiveAutoscaler
    from sincere.serve.control.controller import Controller
    from sincere.serve.control.pool import LivePool

Handler = Callable[[web.Request], Awaitable[web.Response]]

__all__ = [
    "AUTOSCALER",
    "CONTROLLER",
    "POOL",
    "admin_only",
    "compose",
    "mount_control",
    "run_gateway",
    "serve_gateway",
]

CONTROLLER: web.AppKey[Controller] = web.AppKey("controller")
"""Where a composed gateway's app keeps its controller (``gw.app[CONTROLLER]``)."""

AUTOSCALER: web.AppKey[LiveAutoscaler] = web.AppKey("autoscaler")
"""Where a composed gateway's app keeps its live autoscaler, when one is configured."""

POOL: web.AppKey[LivePool] = web.AppKey("pool")
"""Where a composed gateway's app keeps its live pool of several models, when configured."""

MAX_AUDITED_BYTES = 4096  # a larger answer (a plan) is audited by its size only


def compose(
    config: GatewayConfig,
    *,
    reuse_port: bool = False,
    decisions: DecisionLog | None = None,
) -> Gateway:
    """The gateway of ``config`` with, when ``config.admin``, the controller's ``/admin``."""
    for key in ("autoscaling", "actuation"):
        if not config.admin and getattr(config.controller, key) is not None:
            raise ConfigError(
                f"controller.{key} runs in the control plane, which admin: false leaves out",
                where="admin", value=False, allowed=f"true (or no controller.{key})",
            )  # fmt: skip
    gateway = Gateway(config, reuse_port=reuse_port, decisions=decisions)
    if config.admin:
        mount_control(gateway)
    return gateway


def mount_control(gateway: Gateway) -> Controller:
    """A controller over ``gateway`` (as its fleet), its routes mounted behind admin keys."""
    from sincere.serve.control.api import ControllerApi
    from sincere.serve.control.controller import Controller
    from sincere.serve.control.fleet import Fleet

    config = gateway.config
    fleet: Fleet = gateway
    controller = Controller(fleet, config.controller, config.planning, config.default_tier)
    limits, edge = config.limits, gateway.edge

    async def body_of(request: web.Request) -> bytes:
        return await read_body(request, limits, edge)

    autoscaler = _autoscaler(gateway, controller)
    pool = _pool(gateway, controller)
    for route in ControllerApi(controller, body_of, autoscaler, pool).routes():
        handler = admin_only(gateway.auth, route.handler, route.action)
        gateway.app.router.add_route(route.method, route.path, handler, expect_handler=expect)
    gateway.app[CONTROLLER] = controller
    gateway.on_stop.append(controller.close)  # its emulated engines stop with the gateway
    return controller


def _autoscaler(gateway: Gateway, controller: Controller) -> LiveAutoscaler | None:
    """The live autoscaler of ``controller.autoscaling``, started with the gateway and
    stopped before the controller's engines are."""
    section = gateway.config.controller
    if section.autoscaling is None:
        return None
    from sincere.serve.control.autoscaler import LiveAutoscaler
    from sincere.serve.control.sim_scaling import live_autoscaling

    config = live_autoscaling(section.autoscaling, section.max_instances)
    autoscaler = LiveAutoscaler(controller, config, lambda: gateway.loop.time())
    _run_with(gateway, autoscaler)
    gateway.app[AUTOSCALER] = autoscaler
    return autoscaler


def _pool(gateway: Gateway, controller: Controller) -> LivePool | None:
    """The live pool of ``controller.actuation``, started with the gateway and stopped
    before the controller's engines are."""
    section = gateway.config.controller
    if section.actuation is None:
        return None
    from sincere.serve.control.pool import LivePool
    from sincere.serve.control.sim_scaling import live_actuation

    config = live_actuation(section.actuation, section.max_instances)
    pool = LivePool(controller, config, lambda: gateway.loop.time())
    _run_with(gateway, pool)
    gateway.app[POOL] = pool
    return pool


def _run_with(gateway: Gateway, part: LiveAutoscaler | LivePool) -> None:
    """Start a control-plane ``part`` with the gateway, stop it before the controller's
    engines, and add its state to the gateway's /metrics."""

    async def start(_: web.Application) -> None:
        await part.start()

    gateway.app.on_startup.append(start)
    gateway.on_stop.append(part.stop)
    gateway.status.extra_metrics.append(part.metrics_text)


def admin_only(auth: GatewayAuth, handler: Handler, action: str | None) -> Handler:
    """``handler`` for admin keys only (401/403 else); a state change (``action``) is audited."""

    async def guarded(request: web.Request) -> web.Response:
        grant = auth.admin(request.headers, request.remote or "")
        if isinstance(grant, Refusal):
            return refusal_response(grant)
        if action is None:
            return await handler(request)
        unwritable = auth.audit_log.unwritable()
        if unwritable is not None:  # no change that could not be audited
            body = error_body(
                f"the audit log cannot be written ({unwritable}); the change was not made",
                type="server_error", code="audit_unavailable",
            )  # fmt: skip
            return web.json_response(body, status=503)
        name = request.match_info.get("name")
        try:
            response = await handler(request)
        except Exception as exc:  # a change that failed half-way is audited too
            details = {"status": getattr(exc, "status", 500), "error": type(exc).__name__}
            auth.audit(grant.actor, action, name or "", details)
            raise
        details = {"result": _summary(response)}
        if response.status >= 300:
            details["status"] = response.status
        auth.audit(grant.actor, action, name or _target(response), details)
        return response

    return guarded


def _target(response: web.Response) -> str:
    """What a state change acted on: the ``name`` (or ``model``) of its JSON answer."""
    result = _summary(response)
    if isinstance(result, dict):
        return str(result.get("name") or result.get("model") or "")
    return ""


def _summary(response: web.Response) -> Any:
    """The JSON answer of a state change, for the audit log (cut when large)."""
    raw = response.body if isinstance(response.body, bytes) else b""
    if len(raw) > MAX_AUDITED_BYTES:
        return {"truncated_bytes": len(raw)}
    try:
        return json.loads(raw)
    except ValueError:
        return None


async def run_gateway(
    config: GatewayConfig,
    ready: Any = None,
    *,
    reuse_port: bool = False,
    decisions: Path | None = None,
) -> None:
    """Serve until cancelled (``sincere serve``); ``ready(gateway)`` is called once bound.

    ``decisions``: a file every front-door call and outcome is appended to (JSON lines).
    """
    async with contextlib.AsyncExitStack() as stack:
        log = None if decisions is None else stack.enter_context(open_log(decisions, append=True))
        gw = await stack.enter_async_context(compose(config, reuse_port=reuse_port, decisions=log))
        if ready is not None:
            ready(gw)
        await asyncio.Event().wait()


def serve_gateway(
    config: GatewayConfig,
    *,
    workers: int = 1,
    ready: Callable[[Gateway], None] | None = None,
    decisions: Path | None = None,
) -> None:
    """Serve until interrupted, on uvloop when importable, in ``workers`` processes.

    With ``workers > 1`` this process binds first (with ``SO_REUSEPORT``; port 0 is
    resolved here), calls ``ready`` and starts ``workers - 1`` more processes on the
    same port; they stop when this one does: on SIGINT or SIGTERM it stops them (and on
    Linux the kernel stops them should it be killed outright). Linux and the BSDs only. With
    ``decisions`` every process appends its decisions to that file, line by line.
    """
    if workers < 1:
        raise ConfigError("serve: workers must be >= 1", value=workers, allowed="an integer >= 1")
    for key in ("autoscaling", "actuation"):
        if workers > 1 and config.admin and getattr(config.controller, key) is not None:
            raise ConfigError(
                f"controller.{key} runs in one process (each worker would scale on its "
                "share of the load)", where="serve: workers", value=workers, allowed="1",
            )  # fmt: skip
    children: list[multiprocessing.process.BaseProcess] = []

    def on_ready(gw: Gateway) -> None:
        freeze_startup_heap()
        if workers > 1:
            bound = config.model_copy(update={"port": gw.port})
            ctx = multiprocessing.get_context("spawn")
            for _ in range(workers - 1):
                child = ctx.Process(target=_worker, args=(bound, decisions), daemon=True)
                child.start()
                children.append(child)
        if ready is not None:
            ready(gw)

    stop_on_sigterm()
    try:
        with contextlib.suppress(KeyboardInterrupt):
            run_on_fast_loop(
                run_gateway(config, on_ready, reuse_port=workers > 1, decisions=decisions)
            )
    finally:
        for child in children:  # all told first: they stop side by side
            child.terminate()
        for child in children:
            child.join(timeout=5)
            if child.is_alive():
                child.kill()
                child.join(timeout=5)
        faulthandler.cancel_dump_traceback_later()  # stopped: no report due


def _worker(config: GatewayConfig, decisions: Path | None) -> None:
    """One extra worker process of :func:`serve_gateway`; it stops with the first one and,
    once its gateway has stopped (keys and decisions flushed), exits at once."""
    die_with_parent()
    stop_on_sigterm()
    with contextlib.suppress(KeyboardInterrupt):
        run_on_fast_loop(
            run_gateway(
                config, lambda _: freeze_startup_heap(), reuse_port=True, decisions=decisions
            )
        )
    exit_process(0)
