"""The controller's HTTP face: the ``/admin`` routes, JSON in and out.

Each route reads its JSON body with the reader it is given (the gateway's, within its body
limits), checks it for lone surrogates, runs the
:class:`~sincere.serve.control.controller.Controller` operation and
answers JSON: ``400`` for bad input (the message names the field), ``404`` for an
unknown name, ``409`` for a conflict with the gateway's state (with its ``code``, and
for a plan that needs confirmation the plan itself), ``500`` without details for a
bug (logged). The routes and what they accept are listed in docs/gateway.md.

:meth:`ControllerApi.routes` lists them with the audit action of each state change; the
composition root (:mod:`sincere.serve.app`) mounts each behind the admin-key check and the
audit log.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from sincere.core.errors import ConfigError, SincereError
from sincere.optimize.scaling import LoadSummary
from sincere.serve.control.controller import ConflictError, Controller
from sincere.serve.control.inputs import check_name, parse_load
from sincere.serve.protocol import ProtocolError, check_text, error_body
from sincere.serve.security.credentials import redact_url

if TYPE_CHECKING:
    from sincere.serve.control.autoscaler import LiveAutoscaler
    from sincere.serve.control.pool import LivePool

log = logging.getLogger("sincere.serve.gateway.controller")
Handler = Callable[[web.Request], Awaitable[web.Response]]
BodyReader = Callable[[web.Request], Awaitable[bytes]]


@dataclass(frozen=True, slots=True)
class Route:
    """One ``/admin`` route; ``action`` names a state change in the audit log (None: a read)."""

    method: str
    path: str
    handler: Handler
    action: str | None


class ControllerApi:
    """The ``/admin`` routes over one :class:`Controller`."""

    def __init__(
        self,
        controller: Controller,
        read_body: BodyReader,
        autoscaler: LiveAutoscaler | None = None,
        pool: LivePool | None = None,
    ) -> None:
        self.c = controller
        self.read_body = read_body  # a request's body, within the server's limits
        self.autoscaler = autoscaler  # None: controller.autoscaling is not configured
        self.pool = pool  # None: controller.actuation is not configured

    def routes(self) -> list[Route]:
        """The ``/admin`` routes (to be mounted behind the admin key check)."""
        return [
            Route("GET", "/admin/models", self._list_models, None),
            Route("POST", "/admin/models", self._register, "model.register"),
            Route("DELETE", "/admin/models/{name}", self._remove_model, "model.remove"),
            Route("GET", "/admin/instances", self._list_instances, None),
            Route("POST", "/admin/instances", self._deploy, "instance.add"),
            Route("DELETE", "/admin/instances/{name}", self._remove_instance, "instance.remove"),
            Route("GET", "/admin/load", self._load, None),
            Route("POST", "/admin/plan", self._plan, "plan"),
            Route("GET", "/admin/autoscaling", self._autoscaling, None),
            Route("GET", "/admin/actuation", self._actuation, None),
        ]

    async def _actuation(self, request: web.Request) -> web.Response:
        if self.pool is None or self.pool.started_at is None:
            return _error(404, "no pool runs: configure controller.actuation")
        return web.json_response(self.pool.to_json())

    async def _autoscaling(self, request: web.Request) -> web.Response:
        if self.autoscaler is None or self.autoscaler.started_at is None:
            return _error(404, "no autoscaler runs: configure controller.autoscaling")
        return web.json_response(self.autoscaler.to_json())

    async def _list_models(self, request: web.Request) -> web.Response:
        fleet = self.c.fleet
        served = {m for s in fleet.instances_of() for m in s.models}
        names = sorted(set(self.c.models) | served)
        return web.json_response(
            {
                "models": [
                    {
                        "name": m,
                        "instances": [s.name for s in fleet.instances_of(m)],
                        "registered": m in self.c.models,
                    }
                    for m in names
                ]
            }
        )

    async def _register(self, request: web.Request) -> web.Response:
        return await self._guard(request, self._do_register)

    async def _do_register(self, body: dict[str, Any]) -> dict[str, Any]:
        entry = self.c.register(check_name(body.get("name"), "name"), _mapping(body, "emulator"))
        return {"name": entry.name, "emulator": entry.emulator}

    async def _remove_model(self, request: web.Request) -> web.Response:
        try:
            removed = await self.c.remove_model(request.match_info["name"])
        except ConfigError as exc:
            return _error(404, str(exc))
        return web.json_response({"removed": removed})

    async def _list_instances(self, request: web.Request) -> web.Response:
        fleet = self.c.fleet
        health = fleet.instance_health()
        return web.json_response(
            {
                "instances": [
                    {
                        "name": s.name,
                        "url": redact_url(s.url),
                        "models": sorted(s.models),
                        "kind": s.kind,
                        "emulated": s.emulated,
                        "in_flight": s.num_in_flight,
                        "breaker": health[s.name],
                    }
                    for s in fleet.instances_of()
                ]
            }
        )

    async def _deploy(self, request: web.Request) -> web.Response:
        return await self._guard(request, self._do_deploy)

    async def _do_deploy(self, body: dict[str, Any]) -> dict[str, Any]:
        model = check_name(body.get("model"), "model")
        rest = {k: v for k, v in body.items() if k not in ("model", "url", "join")}
        url = body.get("url")
        if url is not None and not isinstance(url, str):
            raise ConfigError("url must be a string", value=url)
        state = await self.c.deploy(model, url, join=_flag(body, "join", False), **rest)
        return {
            "name": state.name,
            "url": redact_url(state.url),
            "model": model,
            "emulated": state.emulated,
        }

    async def _remove_instance(self, request: web.Request) -> web.Response:
        try:
            await self.c.remove(request.match_info["name"])
        except ConfigError as exc:
            return _error(404, str(exc))
        return web.json_response({"removed": request.match_info["name"]})

    async def _load(self, request: web.Request) -> web.Response:
        return web.json_response({"load": [_load_json(s) for s in self.c.loads()]})

    async def _plan(self, request: web.Request) -> web.Response:
        return await self._guard(request, self._do_plan)

    async def _do_plan(self, body: dict[str, Any]) -> dict[str, Any]:
        apply = _flag(body, "apply", True)
        confirm = _flag(body, "confirm", False)
        given = body.get("loads")
        sizing = body.get("sizing", "analyzer")
        if not isinstance(sizing, str):
            raise ConfigError("sizing must be a string", value=sizing)
        if given is None:
            return await self.c.plan(apply, None, confirm=confirm, sizing=sizing)
        base = self.c.planning_data()
        models, tiers = {m for m, _ in base.models}, set(base.classes)
        loads = [parse_load(x, i, models, tiers) for i, x in enumerate(_list(given))]
        return await self.c.plan(apply, loads, confirm=confirm, base=base, sizing=sizing)

    async def _guard(self, request: web.Request, action: Any) -> web.Response:
        """Run an admin action on the JSON body: 400 bad input, 409 conflict, 500 a bug."""
        try:
            body = json.loads(await self.read_body(request))
            if not isinstance(body, dict):
                raise ValueError("not an object")
            check_text(body)
        except ProtocolError as exc:
            return _error(exc.status, exc.message)
        except (ValueError, RecursionError):
            return _error(400, "body must be a JSON object")
        try:
            return web.json_response(await action(body))
        except ConflictError as exc:
            return _error(409, str(exc), code=exc.code, extra=exc.extra)
        except SincereError as exc:
            return _error(400, str(exc))
        except Exception:  # a bug: no internals to the caller
            log.exception("controller: %s %s failed", request.method, request.path)
            return _error(500, "internal error (logged by the gateway)")


def _load_json(s: LoadSummary) -> dict[str, Any]:
    return {
        "model": s.model,
        "tier": s.tier,
        "rate_per_min": s.rate_per_min,
        "avg_in_tokens": s.avg_in_tokens,
        "avg_out_tokens": s.avg_out_tokens,
        "num_requests": s.num_requests,
    }


def _flag(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false", value=value)
    return value


def _mapping(body: dict[str, Any], key: str) -> dict[str, Any]:
    value = body.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{key} must be an object", value=value)
    return value


def _list(value: object) -> list[object]:
    if not isinstance(value, list):
        raise ConfigError("loads must be a list", value=value)
    return value


def _error(
    status: int, message: str, *, code: str | None = None, extra: dict[str, Any] | None = None
) -> web.Response:
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return web.json_response(
        {**error_body(message, type=kind, code=code), **(extra or {})}, status=status
    )
