"""The controller's HTTP face: the ``/admin`` routes, JSON in and out.

Each route reads its JSON body within the gateway's body limits, checks it for lone
surrogates, runs the :class:`~sincere.serve.gateway.controller.Controller` operation and
answers JSON: ``400`` for bad input (the message names the field), ``404`` for an
unknown name, ``409`` for a conflict with the gateway's state (with its ``code``, and
for a plan that needs confirmation the plan itself), ``500`` without details for a
bug (logged). The routes and what they accept are listed in docs/gateway.md.

With a key store (``security.keys``) every route needs an admin key (401 without a
valid key, 403 for a client key), and every state change that succeeded is appended
to the audit log with the admin key's actor (``admin:<name>/<key id>``); without one,
the actor is ``anonymous@<client address>``. A change that failed, or failed half-way
(an error status or an exception), is audited too, with its status. A change is not
made when the audit log cannot be written (503 ``audit_unavailable``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from sincere.core.errors import ConfigError, SincereError
from sincere.serve.gateway.auth import refusal_response
from sincere.serve.gateway.controller import ConflictError, Controller
from sincere.serve.gateway.controller_input import check_name, parse_load
from sincere.serve.gateway.edge import read_body
from sincere.serve.gateway.observed_load import LoadSummary
from sincere.serve.protocol import ProtocolError, check_text, error_body
from sincere.serve.security.credentials import redact_url
from sincere.serve.security.policy import Refusal

log = logging.getLogger("sincere.serve.gateway.controller")
Handler = Callable[[web.Request], Awaitable[web.Response]]
MAX_AUDITED_BYTES = 4096  # a larger answer (a plan) is audited by its size only


class ControllerApi:
    """The ``/admin`` routes over one :class:`Controller`."""

    def __init__(self, controller: Controller) -> None:
        self.c = controller

    def add_routes(self, app: web.Application) -> None:
        """Mount the ``/admin`` routes, each behind the admin key check."""
        routes: list[tuple[str, str, Handler, str | None]] = [
            ("GET", "/admin/models", self._list_models, None),
            ("POST", "/admin/models", self._register, "model.register"),
            ("DELETE", "/admin/models/{name}", self._remove_model, "model.remove"),
            ("GET", "/admin/instances", self._list_instances, None),
            ("POST", "/admin/instances", self._deploy, "instance.add"),
            ("DELETE", "/admin/instances/{name}", self._remove_instance, "instance.remove"),
            ("GET", "/admin/load", self._load, None),
            ("POST", "/admin/plan", self._plan, "plan"),
        ]
        for method, path, handler, action in routes:
            app.router.add_route(method, path, self._admin(handler, action))

    def _admin(self, handler: Handler, action: str | None) -> Handler:
        """``handler`` for admin keys only (401/403 else); a state change is audited."""
        auth = self.c.gw.auth

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

    async def _list_models(self, request: web.Request) -> web.Response:
        d = self.c.gw.dispatcher
        names = sorted(set(self.c.models) | d.served)
        return web.json_response(
            {
                "models": [
                    {
                        "name": m,
                        "instances": [s.name for s in d.by_model.get(m, [])],
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
        now = self.c.gw.loop.time()
        return web.json_response(
            {
                "instances": [
                    {
                        "name": s.name,
                        "url": redact_url(s.backend.url),
                        "models": sorted(s.backend.models),
                        "kind": s.backend.config.kind,
                        "emulated": s.emulated,
                        "in_flight": s.num_in_flight,
                        "breaker": s.breaker.state(now).value,
                    }
                    for s in self.c.gw.dispatcher.instances.values()
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
            "url": redact_url(state.backend.url),
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
        return web.json_response(
            {"load": [_load_json(s) for s in self.c.loads(self.c.gw.loop.time())]}
        )

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
        base = self.c.fleet()
        models, tiers = {m for m, _ in base.models}, set(base.classes)
        loads = [parse_load(x, i, models, tiers) for i, x in enumerate(_list(given))]
        return await self.c.plan(apply, loads, confirm=confirm, base=base, sizing=sizing)

    async def _guard(self, request: web.Request, action: Any) -> web.Response:
        """Run an admin action on the JSON body: 400 bad input, 409 conflict, 500 a bug."""
        try:
            gw = self.c.gw
            body = json.loads(await read_body(request, gw.config.limits, gw.edge))
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
