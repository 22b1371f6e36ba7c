"""The controller API: register models, deploy / remove instances, plan and apply.

MaverIQ's controller operations (register a model, deploy it, remove it) and
Inferno's control loop (observed load -> optimizer -> new allocation) over the live
gateway, reached only through its :class:`~sincere.serve.control.fleet.Fleet` face. Routes,
all JSON:

* ``GET /admin/models``; ``POST /admin/models`` ``{name, emulator: {...}}`` registers a
  model, ``emulator`` being the :class:`~sincere.serve.emulator.config.EmulatorConfig`
  fields used when the controller starts emulated instances of it;
  ``DELETE /admin/models/{name}`` removes it and every instance serving it;
* ``GET /admin/instances``; ``POST /admin/instances`` ``{model, url?, name?, join?,
  kind?, ...}`` deploys an instance: with ``url`` an existing server (any
  :class:`~sincere.serve.backends.config.BackendConfig` field may be given), without one an
  emulated engine started in-process; ``DELETE /admin/instances/{name}`` removes one
  (its requests in flight finish; an emulated one is then stopped);
* ``GET /admin/load`` -- observed load per (model, tier);
* ``POST /admin/plan`` ``{apply: true, confirm?: false, loads?: [...], sizing?:
  "analyzer"}`` -- runs :func:`sincere.optimize.solve` (Inferno; ``sizing``
  ``simulate`` or ``auto`` sizes by, or checks against, the simulator, and the answer's
  ``sizing`` says which was used and why) on a problem made of the configured
  ``planning.problem_dir`` (accelerators, model performance, service classes) and
  one server per (tier, model) with its observed load (or the given ``loads``), then,
  with ``apply``, stops and starts emulated instances so that each model runs the
  planned number of replicas (at least ``planning.min_replicas``). Instances given by
  URL are never stopped by a plan. The observed load, the problem, the replica targets
  and the starts and stops are :mod:`sincere.optimize.scaling`'s pure functions.

The API is reachable by whoever reaches the port, so it is bounded
(:class:`~sincere.serve.control.config.ControllerConfig`): a URL must be a bare origin on the
allow-list ``controller.allowed_upstreams`` (:mod:`~sincere.serve.control.upstream_policy`);
joining a model that already has instances needs ``join: true``; a name already in
use is ``409``; the gateway holds at most ``controller.max_instances`` instances; a
plan that would start more than ``controller.max_plan_starts`` needs ``confirm: true``
(``409`` with the plan otherwise, nothing started); emulator fields and loads are
checked by :mod:`~sincere.serve.control.inputs` (no server files, bounded numbers).
The HTTP routes (JSON in and out, listed URLs without user info) are
:mod:`~sincere.serve.control.api`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sincere.core.config import validate_config
from sincere.core.errors import ConfigError, SincereError
from sincere.optimize import Problem, solve
from sincere.optimize.data import load_fleet
from sincere.optimize.scaling import LoadSummary, Scaling, problem_for, replica_targets, scale
from sincere.optimize.simsize import SIZING_CHOICES, SimSettings, SizedPlan, plan_with_sizing
from sincere.serve.backends.config import BackendConfig
from sincere.serve.control.config import ControllerConfig, PlanningConfig
from sincere.serve.control.fleet import Fleet, Instance
from sincere.serve.control.inputs import check_emulator_fields, check_name
from sincere.serve.control.upstream_policy import check_upstream, parse_rules

if TYPE_CHECKING:
    from sincere.serve.emulator.config import EmulatorConfig
    from sincere.serve.emulator.server import EmulatorServer

# the log's name predates the control package; kept so logging configs keep working
log = logging.getLogger("sincere.serve.gateway.controller")

PLAN_SIM_REQUESTS = 150
"""Requests per simulated replica when ``/admin/plan`` sizes or checks by simulation."""

UNSEEN_TOKENS = 128.0
"""Mean prompt / output tokens assumed for a model with no traffic yet (its plan is for
zero load; only the batch size the plan reports depends on them)."""


class ConflictError(ConfigError):
    """The request conflicts with the gateway's state (``409``); ``extra`` joins the body."""

    def __init__(
        self, message: str, *, code: str, extra: dict[str, Any] | None = None, **kw: Any
    ) -> None:
        super().__init__(message, **kw)
        self.code = code
        self.extra = extra or {}


@dataclass(slots=True)
class ModelEntry:
    """A registered model: how to start emulated instances of it."""

    name: str  # public model name
    emulator: dict[str, Any] = field(default_factory=dict)  # EmulatorConfig fields


class Controller:
    """Registers models and manages the fleet's instances (and emulated engines).

    ``default_tier``: the tier a registered model without traffic is planned in.
    """

    def __init__(
        self,
        fleet: Fleet,
        config: ControllerConfig,
        planning: PlanningConfig,
        default_tier: str,
    ) -> None:
        self.fleet = fleet
        self.config = config
        self.planning = planning
        self.default_tier = default_tier
        self.rules = parse_rules(config.allowed_upstreams)
        self.files_dir = Path(config.files_dir).resolve() if config.files_dir else None
        self.models: dict[str, ModelEntry] = {}
        self.emulators: dict[str, EmulatorServer] = {}
        self._num_started = 0

    # ------------------------------------------------------------ operations

    def register(self, name: str, emulator: dict[str, Any] | None = None) -> ModelEntry:
        """Register (or update) model ``name``; ``emulator`` fields are checked as API input."""
        check_name(name, "name")
        fields = check_emulator_fields(dict(emulator or {}), self.files_dir)
        entry = ModelEntry(name, fields)
        self.models[name] = entry
        return entry

    async def deploy(
        self, model: str, url: str | None = None, *, join: bool = False, **backend: Any
    ) -> Instance:
        """An instance of ``model``: the server at ``url``, or a new emulated engine."""
        check_name(model, "model")
        name = backend.pop("name", None)
        name = self._free_name(f"{model}-" if url else f"{model}-emu-") if name is None else name
        self._check_new(check_name(name, "name"), model, join, num_new=1)
        if url is None:
            return await self._start_emulated(model, name, backend)
        origin = check_upstream(url, self.rules)
        for key, allowed in (("metrics_path", "/metrics"), ("load_path", "/sincere/load")):
            path = backend.get(key, allowed)
            if path not in (allowed, None):
                raise ConfigError(
                    f"{key}: not allowed over the API", value=path, allowed=f"{allowed} or null"
                )
        deployment = backend.get("deployment")
        if isinstance(deployment, dict):  # checked as emulator fields: no server files
            backend["deployment"] = check_emulator_fields(deployment, self.files_dir, "deployment")
        fields = {"name": name, "url": origin, "models": {model: model}, **backend}
        return self.fleet.add_backend(_backend_config(fields))

    def _check_new(self, name: str, model: str, join: bool, num_new: int) -> None:
        """409 for a taken name, an unflagged join of a served model, or too many instances."""
        if name in self._names() or name in self.emulators:
            raise ConflictError(
                "an instance with this name exists",
                code="name_taken",
                value=name,
                allowed="another name, or remove it first",
            )
        serving = len(self.fleet.instances_of(model))
        if serving and not join:
            raise ConflictError(
                f"model {model!r} is already served by {serving} instance(s); adding one to "
                "its pool sends it other clients' requests",
                code="join_required",
                allowed="join: true to add it to the pool",
            )
        self._check_room(num_new)

    def _check_room(self, num_new: int) -> None:
        limit = self.config.max_instances
        have = len(self.fleet.instances_of())
        if have + num_new > limit:
            raise ConflictError(
                f"the gateway would hold {have + num_new} instances, over "
                f"controller.max_instances = {limit}",
                code="instance_cap",
            )

    def _free_name(self, prefix: str) -> str:
        """The next ``<prefix><n>`` not in use."""
        taken = self._names() | set(self.emulators)
        while True:
            self._num_started += 1
            name = f"{prefix}{self._num_started}"
            if name not in taken:
                return name

    async def _start_emulated(
        self, model: str, name: str, overrides: dict[str, Any], *, trusted: bool = False
    ) -> Instance:
        from sincere.serve.emulator.config import parse_emulator_config
        from sincere.serve.emulator.server import EmulatorServer

        entry = self.models.get(model) or ModelEntry(model)
        backend_fields = {k: overrides.pop(k) for k in list(overrides) if k in _BACKEND_FIELDS}
        if not trusted:
            overrides = check_emulator_fields(overrides, self.files_dir)
        fields = {**self.planning.emulator, **entry.emulator, **overrides}
        fields.update(name=name, served_model_name=model, port=0, host="127.0.0.1")
        emu_cfg = parse_emulator_config(fields)
        backend = {
            "name": name,
            "url": "http://127.0.0.1:1",
            "models": {model: model},
            "accelerator": emu_cfg.accelerator,
            "load_path": "/sincere/load",  # the emulator reports its whole engine load
            "deployment": emu_cfg.deployment_fields(),  # routers get its step-time model
            **backend_fields,
        }
        cfg = _backend_config(backend)  # checked before anything starts; the URL comes later
        server = EmulatorServer(emu_cfg)
        try:
            await server.start()
        except SincereError:
            raise
        except Exception as exc:  # e.g. an operator's parameter file that does not parse
            log.warning(
                "emulated instance %s could not start: %s: %s", name, type(exc).__name__, exc
            )
            raise ConfigError(
                "the emulated engine could not be built from these fields "
                "(the gateway's log says why)",
                where=f"instance {name}",
            ) from None
        self.emulators[name] = server
        self.models.setdefault(model, entry)
        return self.fleet.add_backend(cfg.model_copy(update={"url": server.url}), emulated=True)

    def emulator_fields(self, model: str) -> EmulatorConfig:
        """The config an emulated instance of ``model`` starts with (name and port aside)."""
        from sincere.serve.emulator.config import parse_emulator_config

        entry = self.models.get(model) or ModelEntry(model)
        fields = {**self.planning.emulator, **entry.emulator, "served_model_name": model}
        return parse_emulator_config(fields)

    async def remove(self, name: str) -> None:
        """Remove instance ``name`` (and stop it when the controller started it)."""
        names = self._names()
        if name not in names:
            raise ConfigError("unknown instance", value=name, allowed=sorted(names))
        await self.fleet.remove_backend(name)
        server = self.emulators.pop(name, None)
        if server is not None:
            await server.close()

    async def remove_model(self, model: str) -> list[str]:
        """Unregister ``model`` and remove every instance serving it."""
        names = [s.name for s in self.fleet.instances_of(model)]
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

    # -------------------------------------------------------------- planning

    def problem(self, loads: list[LoadSummary], base: Problem | None = None) -> Problem:
        """Inferno's problem: configured data (``base``, else read) plus one server per load."""
        return problem_for(base if base is not None else self.planning_data(), loads)

    def planning_data(self) -> Problem:
        """The configured planning data (no servers)."""
        directory = self.planning.problem_dir
        if directory is None:
            raise ConfigError(
                "planning needs planning.problem_dir (Inferno's accelerator, "
                "model and service-class files)",
                where="planning.problem_dir",
            )
        return load_fleet(directory)

    def loads(self) -> list[LoadSummary]:
        """Observed load, with a zero-load entry for registered models never seen."""
        seen = self.fleet.observed_load()
        names = {s.model for s in seen}
        tier = self.default_tier
        extra = [
            LoadSummary(m, tier, 0.0, UNSEEN_TOKENS, UNSEEN_TOKENS, 0)
            for m in self.models
            if m not in names
        ]
        return seen + extra

    async def plan(
        self,
        apply: bool,
        loads: list[LoadSummary] | None = None,
        *,
        confirm: bool = False,
        base: Problem | None = None,
        sizing: str = "analyzer",
    ) -> dict[str, Any]:
        """Solve on observed (or given) load; with ``apply``, match emulated replicas to it.

        ``base`` is the configured planning data when the caller has already read it.
        ``sizing`` (:data:`~sincere.optimize.simsize.SIZING_CHOICES`): Inferno's analyzer,
        the simulator, or ``auto`` (the simulator's when it disagrees with the analyzer);
        the answer's ``sizing`` and the log say which was used and why.
        """
        if sizing not in SIZING_CHOICES:
            raise ConfigError("unknown sizing", value=sizing, allowed=SIZING_CHOICES)
        problem = self.problem(loads or self.loads(), base)
        solver = self.planning.solver
        if sizing == "analyzer":
            sized = SizedPlan(solve(problem, solver=solver), "analyzer", "requested")
        else:  # the simulator runs off the event loop
            settings = SimSettings(num_requests=PLAN_SIM_REQUESTS)
            sized = await asyncio.get_running_loop().run_in_executor(
                None, lambda: plan_with_sizing(problem, sizing, settings, solver=solver)
            )
        log.info("plan: %s sizing (asked %s): %s", sized.sizing, sizing, sized.why)
        solution = sized.solution
        targets = replica_targets(solution, self.planning.min_replicas)
        out = {
            "solution": solution.to_json(),
            "replicas": targets,
            "sizing": {"asked": sizing, "used": sized.sizing, "why": sized.why},
        }
        if apply:
            self._check_plan(targets, confirm, out)
        actions = await self.apply(targets) if apply else []
        return {**out, "actions": actions}

    def _check_plan(self, targets: dict[str, int], confirm: bool, plan: dict[str, Any]) -> None:
        """409 (nothing started) over the instance cap, or over the start cap unconfirmed."""
        change = self.scaling(targets)
        starts, stops = change.num_starts, change.num_stops
        cap = self.config.max_plan_starts
        if starts > cap and not confirm:
            raise ConflictError(
                f"the plan would start {starts} emulated instances, more than "
                f"controller.max_plan_starts = {cap}; nothing was started",
                code="confirmation_required",
                allowed="the same call with confirm: true",
                extra={"plan": plan, "num_starts": starts},
            )
        self._check_room(starts - stops)

    def scaling(self, targets: dict[str, int]) -> Scaling:
        """The emulated instances ``apply(targets)`` would stop, and how many it would start."""
        running = {
            model: [s.name for s in self.fleet.instances_of(model) if s.emulated]
            for model in targets
        }
        return scale(targets, running)

    async def apply(self, targets: dict[str, int]) -> list[str]:
        """Stop, then start emulated instances so each model has its target replica count."""
        change = self.scaling(targets)
        actions = []
        for name in change.stops:
            await self.remove(name)
            actions.append(f"stopped {name}")
        for model, num in change.starts:
            for _ in range(num):
                state = await self._start_emulated(
                    model, self._free_name(f"{model}-emu-"), {}, trusted=True
                )
                actions.append(f"started {state.name}")
        return actions

    def _names(self) -> set[str]:
        """Every instance's name."""
        return {s.name for s in self.fleet.instances_of()}


_BACKEND_FIELDS = set(BackendConfig.model_fields) - {
    "name",
    "url",
    "models",
    "load_path",  # a path the gateway reads every half second: the operator's to choose
    "deployment",  # may name step-model parameter files: set by the controller itself
}
"""Backend fields an API caller may set."""


def _backend_config(fields: dict[str, Any]) -> BackendConfig:
    return validate_config(BackendConfig, fields, prefix="instance")
