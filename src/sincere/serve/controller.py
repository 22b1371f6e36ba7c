"""The controller API: register models, deploy / remove instances, plan and apply.

MaverIQ's controller operations (register a model, deploy it, remove it) and
Inferno's control loop (observed load -> optimizer -> new allocation) over the live
gateway. Routes, all JSON:

* ``GET /admin/models``; ``POST /admin/models`` ``{name, emulator: {...}}`` registers a
  model, ``emulator`` being the :class:`~sincere.serve.emulator_config.EmulatorConfig`
  fields used when the controller starts emulated instances of it;
  ``DELETE /admin/models/{name}`` removes it and every instance serving it;
* ``GET /admin/instances``; ``POST /admin/instances`` ``{model, url?, name?, kind?,
  ...}`` deploys an instance: with ``url`` an existing server (any
  :class:`~sincere.serve.config.BackendConfig` field may be given), without one an
  emulated engine started in-process; ``DELETE /admin/instances/{name}`` removes one
  (its requests in flight finish; an emulated one is then stopped);
* ``GET /admin/load`` -- observed load per (model, tier);
* ``POST /admin/plan`` ``{apply: true, loads?: [...]}`` -- runs
  :func:`sincere.optimize.solve` (Inferno) on a problem made of the configured
  ``planning.problem_dir`` (accelerators, model performance, service classes) and
  one server per (tier, model) with its observed load (or the given ``loads``), then,
  with ``apply``, starts / stops emulated instances so that each model runs the
  planned number of replicas (at least ``planning.min_replicas``). Instances given by
  URL are never stopped by a plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import ValidationError

from sincere.core.errors import ConfigError, SincereError
from sincere.optimize import CurrentAlloc, Load, Problem, Server, Solution, solve
from sincere.optimize.data import load_fleet
from sincere.serve.config import BackendConfig
from sincere.serve.gateway_load import LoadSummary
from sincere.serve.gateway_state import InstanceState

if TYPE_CHECKING:
    from sincere.serve.emulator import EmulatorServer
    from sincere.serve.gateway import Gateway


@dataclass(slots=True)
class ModelEntry:
    """A registered model: how to start emulated instances of it."""

    name: str  # public model name
    emulator: dict[str, Any] = field(default_factory=dict)  # EmulatorConfig fields


class Controller:
    """Registers models and manages the gateway's instances (and emulated engines)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        self.models: dict[str, ModelEntry] = {}
        self.emulators: dict[str, EmulatorServer] = {}
        self._num_started = 0

    def add_routes(self, app: web.Application) -> None:
        """Mount the ``/admin`` routes."""
        r = app.router
        r.add_get("/admin/models", self._list_models)
        r.add_post("/admin/models", self._register)
        r.add_delete("/admin/models/{name}", self._remove_model)
        r.add_get("/admin/instances", self._list_instances)
        r.add_post("/admin/instances", self._deploy)
        r.add_delete("/admin/instances/{name}", self._remove_instance)
        r.add_get("/admin/load", self._load)
        r.add_post("/admin/plan", self._plan)

    # ------------------------------------------------------------ operations

    def register(self, name: str, emulator: dict[str, Any] | None = None) -> ModelEntry:
        """Register (or update) model ``name``."""
        if not name:
            raise ConfigError("model name must be non-empty", value=name)
        entry = ModelEntry(name, dict(emulator or {}))
        self.models[name] = entry
        return entry

    async def deploy(self, model: str, url: str | None = None, **backend: Any) -> InstanceState:
        """An instance of ``model``: the server at ``url``, or a new emulated engine."""
        if url is not None:
            name = backend.pop("name", None) or f"{model}-{self._next()}"
            cfg = _backend_config({"name": name, "url": url, "models": {model: model}, **backend})
            return self.gw.add_backend(cfg)
        return await self._start_emulated(model, backend.pop("name", None), backend)

    async def _start_emulated(
        self, model: str, name: str | None, overrides: dict[str, Any]
    ) -> InstanceState:
        from sincere.serve.emulator import EmulatorServer
        from sincere.serve.emulator_config import EmulatorConfig

        entry = self.models.get(model) or self.register(model)
        name = name or f"{model}-emu-{self._next()}"
        fields = {**self.gw.config.planning.emulator, **entry.emulator}
        fields.update(name=name, served_model_name=model, port=0, host="127.0.0.1")
        backend_fields = {k: overrides.pop(k) for k in list(overrides) if k in _BACKEND_FIELDS}
        try:
            emu_cfg = EmulatorConfig.model_validate({**fields, **overrides})
        except ValidationError as exc:
            raise ConfigError(
                f"emulator config of {model!r}: {exc.errors()[0]['msg']}",
                value=exc.errors()[0].get("loc"),
            ) from None
        server = EmulatorServer(emu_cfg)
        await server.start()
        self.emulators[name] = server
        cfg = _backend_config(
            {
                "name": name,
                "url": server.url,
                "models": {model: model},
                "accelerator": emu_cfg.accelerator,
                **backend_fields,
            }
        )
        return self.gw.add_backend(cfg, emulated=True)

    async def remove(self, name: str) -> None:
        """Remove instance ``name`` (and stop it when the controller started it)."""
        if name not in self.gw.dispatcher.instances:
            raise ConfigError(
                "unknown instance", value=name, allowed=sorted(self.gw.dispatcher.instances)
            )
        await self.gw.remove_backend(name)
        server = self.emulators.pop(name, None)
        if server is not None:
            await server.close()

    async def remove_model(self, model: str) -> list[str]:
        """Unregister ``model`` and remove every instance serving it."""
        names = [s.name for s in self.gw.dispatcher.by_model.get(model, [])]
        if model not in self.models and not names:
            raise ConfigError("unknown model", value=model, allowed=sorted(self.models))
        for name in names:
            await self.remove(name)
        self.models.pop(model, None)
        return names

    async def close(self) -> None:
        """Stop every emulated engine the controller started."""
        for server in list(self.emulators.values()):
            await server.close()
        self.emulators.clear()

    def _next(self) -> int:
        self._num_started += 1
        return self._num_started

    # -------------------------------------------------------------- planning

    def problem(self, loads: list[LoadSummary]) -> Problem:
        """Inferno's problem: configured data plus one server per observed (tier, model)."""
        base = _read_problem_dir(self.gw.config.planning.problem_dir)
        planned_models = {m for m, _ in base.models}
        servers = []
        for ld in loads:
            if ld.tier not in base.classes or ld.model not in planned_models:
                continue
            load = Load(ld.rate_per_min, ld.avg_in_tokens, max(ld.avg_out_tokens, 1.0))
            servers.append(Server(f"{ld.tier}/{ld.model}", ld.tier, ld.model, CurrentAlloc(load)))
        return Problem(
            base.accelerators,
            base.models,
            base.classes,
            tuple(servers),
            base.capacity,
            base.optimizer,
        )

    def loads(self, now: float) -> list[LoadSummary]:
        """Observed load, with a zero-load entry for registered models never seen."""
        seen = self.gw.load.summary(now)
        names = {s.model for s in seen}
        tier = self.gw.config.default_tier
        extra = [LoadSummary(m, tier, 0.0, 0.0, 1.0, 0) for m in self.models if m not in names]
        return seen + extra

    async def plan(self, apply: bool, loads: list[LoadSummary] | None = None) -> dict[str, Any]:
        """Solve on observed (or given) load; with ``apply``, match emulated replicas to it."""
        solution = solve(
            self.problem(loads or self.loads(self.gw.loop.time())),
            solver=self.gw.config.planning.solver,
        )
        targets = replica_targets(solution, self.gw.config.planning.min_replicas)
        actions = await self.apply(targets) if apply else []
        return {"solution": solution.to_json(), "replicas": targets, "actions": actions}

    async def apply(self, targets: dict[str, int]) -> list[str]:
        """Start or stop emulated instances so each model has its target replica count."""
        actions = []
        for model, target in sorted(targets.items()):
            have = [s for s in self.gw.dispatcher.by_model.get(model, []) if s.emulated]
            for _ in range(target - len(have)):
                state = await self._start_emulated(model, None, {})
                actions.append(f"started {state.name}")
            for state in reversed(have[target:] if target < len(have) else []):
                await self.remove(state.name)
                actions.append(f"stopped {state.name}")
        return actions

    # ------------------------------------------------------------- handlers

    async def _list_models(self, request: web.Request) -> web.Response:
        d = self.gw.dispatcher
        names = sorted(set(self.models) | d.served)
        return web.json_response(
            {
                "models": [
                    {
                        "name": m,
                        "instances": [s.name for s in d.by_model.get(m, [])],
                        "registered": m in self.models,
                    }
                    for m in names
                ]
            }
        )

    async def _register(self, request: web.Request) -> web.Response:
        return await _guard(request, self._do_register)

    async def _do_register(self, body: dict[str, Any]) -> dict[str, Any]:
        entry = self.register(_text(body, "name"), _mapping(body, "emulator"))
        return {"name": entry.name, "emulator": entry.emulator}

    async def _remove_model(self, request: web.Request) -> web.Response:
        try:
            removed = await self.remove_model(request.match_info["name"])
        except ConfigError as exc:
            return _error(404, str(exc))
        return web.json_response({"removed": removed})

    async def _list_instances(self, request: web.Request) -> web.Response:
        now = self.gw.loop.time()
        return web.json_response(
            {
                "instances": [
                    {
                        "name": s.name,
                        "url": s.backend.url,
                        "models": sorted(s.backend.models),
                        "kind": s.backend.config.kind,
                        "emulated": s.emulated,
                        "in_flight": s.num_in_flight,
                        "breaker": s.breaker.state(now).value,
                    }
                    for s in self.gw.dispatcher.instances.values()
                ]
            }
        )

    async def _deploy(self, request: web.Request) -> web.Response:
        return await _guard(request, self._do_deploy)

    async def _do_deploy(self, body: dict[str, Any]) -> dict[str, Any]:
        model = _text(body, "model")
        rest = {k: v for k, v in body.items() if k not in ("model", "url")}
        url = body.get("url")
        if url is not None and not isinstance(url, str):
            raise ConfigError("url must be a string", value=url)
        state = await self.deploy(model, url, **rest)
        return {
            "name": state.name,
            "url": state.backend.url,
            "model": model,
            "emulated": state.emulated,
        }

    async def _remove_instance(self, request: web.Request) -> web.Response:
        try:
            await self.remove(request.match_info["name"])
        except ConfigError as exc:
            return _error(404, str(exc))
        return web.json_response({"removed": request.match_info["name"]})

    async def _load(self, request: web.Request) -> web.Response:
        return web.json_response({"load": [_load_json(s) for s in self.loads(self.gw.loop.time())]})

    async def _plan(self, request: web.Request) -> web.Response:
        return await _guard(request, self._do_plan)

    async def _do_plan(self, body: dict[str, Any]) -> dict[str, Any]:
        apply = body.get("apply", True)
        if not isinstance(apply, bool):
            raise ConfigError("apply must be true or false", value=apply)
        given = body.get("loads")
        loads = None if given is None else [_parse_load(x, i) for i, x in enumerate(_list(given))]
        return await self.plan(apply, loads)


_BACKEND_FIELDS = set(BackendConfig.model_fields) - {"name", "url", "models"}


def replica_targets(solution: Solution, min_replicas: int) -> dict[str, int]:
    """Replicas per model: summed over its (tier, model) servers, at least ``min_replicas``."""
    out: dict[str, int] = {}
    for alloc in solution.allocations:
        model = alloc.server.split("/", 1)[1]
        out[model] = out.get(model, 0) + alloc.num_replicas
    return {m: max(n, min_replicas) for m, n in out.items()}


def _read_problem_dir(directory: str | None) -> Problem:
    if directory is None:
        raise ConfigError(
            "planning needs planning.problem_dir (Inferno's accelerator, "
            "model and service-class files)",
            where="planning.problem_dir",
        )
    return load_fleet(directory)


def _backend_config(fields: dict[str, Any]) -> BackendConfig:
    try:
        return BackendConfig.model_validate(fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"instance {where}: {err['msg']}", value=err.get("input")) from None


def _load_json(s: LoadSummary) -> dict[str, Any]:
    return {
        "model": s.model,
        "tier": s.tier,
        "rate_per_min": s.rate_per_min,
        "avg_in_tokens": s.avg_in_tokens,
        "avg_out_tokens": s.avg_out_tokens,
        "num_requests": s.num_requests,
    }


def _parse_load(raw: object, i: int) -> LoadSummary:
    if not isinstance(raw, dict):
        raise ConfigError(f"loads[{i}] must be an object", value=raw)
    try:
        return LoadSummary(
            str(raw["model"]),
            str(raw["tier"]),
            float(raw["rate_per_min"]),
            float(raw.get("avg_in_tokens", 128)),
            float(raw.get("avg_out_tokens", 128)),
            0,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"loads[{i}]: needs model, tier, rate_per_min ({exc})", value=raw
        ) from None


def _text(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key} must be a non-empty string", value=value)
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


def _error(status: int, message: str) -> web.Response:
    return web.json_response(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        },
        status=status,
    )


async def _guard(request: web.Request, action: Any) -> web.Response:
    """Run an admin action on the JSON body; bad input gives 400 with the reason."""
    try:
        body = await request.json()
    except ValueError:
        return _error(400, "body must be a JSON object")
    if not isinstance(body, dict):
        return _error(400, "body must be a JSON object")
    try:
        return web.json_response(await action(body))
    except SincereError as exc:
        return _error(400, str(exc))
