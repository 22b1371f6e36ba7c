"""Check every policy a config names, all at once, before anything is built.

A config names policies in several places: the router, each instance's engine scheduler
or batching strategy and its step-time model, and predictors inside router parameters.
A config edge (the simulation, gateway, experiment or emulator config) lists them as
:class:`PolicySpec` s -- what kind of policy, the name and the parameters as written,
and where each sits in the file -- and :func:`check_policies` raises one
:class:`~sincere.core.params.ParamsError` listing every problem with its config path
(``instances[2].engine.scheduler_params.h_s_per_token: engine scheduler 'niyama'
parameter h_s_per_token should be >= 0; got -1.0; allowed: a number >= 0``).
Nothing is built: no step-time model, no predictor file is read; a step model's
``params_file`` is read, so its parameters are checked as inline ones are (each problem
naming the file). The same checks run
again when the policy is built (``REGISTRY.build``), so a config that skips this step
still fails with the same messages, only later and one block at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import sincere.perf.sincere_runs  # noqa: F401 (registers the sincere-runs step model)
from sincere.core.errors import ConfigError
from sincere.core.params import Problem, raise_problems
from sincere.core.registry import Registry
from sincere.perf.factory import STEP_MODELS, from_params_file, merge_params_file
from sincere.policy.batching.composed import strategy_problems
from sincere.policy.router_base import ROUTERS
from sincere.policy.routers import make_router  # noqa: F401 (registers the routers)
from sincere.policy.schedulers import SCHEDULERS
from sincere.predict.latency import LATENCY_PREDICTORS
from sincere.predict.length import LENGTH_PREDICTORS

PolicyKind = Literal[
    "router", "scheduler", "strategy", "step-model", "length-predictor", "latency-predictor"
]

REGISTRIES: Mapping[str, Registry[Any]] = {
    "router": ROUTERS,
    "scheduler": SCHEDULERS,
    "step-model": STEP_MODELS,
    "length-predictor": LENGTH_PREDICTORS,
    "latency-predictor": LATENCY_PREDICTORS,
}
"""The registry of each policy kind (a ``strategy`` is ``+``-joined batching rules)."""


@dataclass(frozen=True, slots=True)
class PolicySpec:
    """One policy a config names, as written, with where it sits in the config."""

    kind: PolicyKind  # which registry the name belongs to
    name: object  # the name as written (checked to be a string)
    params: object = None  # its parameters as written: a mapping, or None for none
    name_at: str = ""  # config path of the name, e.g. "instances[2].engine.scheduler"
    params_at: str = ""  # config path of the parameters, e.g. "...engine.scheduler_params"
    params_file: object = None  # step models: a file of parameters under ``params``, as written
    params_file_at: str = ""  # config path of the file's name, e.g. "...step_model.params_file"


def spec_problems(spec: PolicySpec) -> list[Problem]:
    """Every problem with one spec (an unknown name, unknown parameters, bad values)."""
    if spec.kind == "strategy":
        params = spec.params if isinstance(spec.params, Mapping) else None
        return strategy_problems(spec.name, params, name_at=spec.name_at, params_at=spec.params_at)
    registry = REGISTRIES[spec.kind]
    if not isinstance(spec.name, str):
        return [Problem(spec.name_at, f"a {registry.kind} must be a name", spec.name)]
    if spec.params_file is not None:
        return _params_file_problems(spec, spec.name)
    return registry.problems(spec.name, spec.params, name_at=spec.name_at, params_at=spec.params_at)


def _params_file_problems(spec: PolicySpec, name: str) -> list[Problem]:
    """Problems of a step model whose parameters come from a file (and inline ``params``):
    the file's parameters are checked as inline ones are, each problem naming the file."""
    if name not in STEP_MODELS:
        return STEP_MODELS.problems(name, None, name_at=spec.name_at)
    if not isinstance(spec.params_file, str | Path):
        return [Problem(spec.params_file_at, "params_file must be a path", spec.params_file)]
    if spec.params is not None and not isinstance(spec.params, Mapping):
        return STEP_MODELS.problems(name, spec.params, params_at=spec.params_at)
    try:
        merged = merge_params_file(name, spec.params, spec.params_file)
    except ConfigError as exc:
        return [Problem(spec.params_file_at, str(exc))]
    found = STEP_MODELS.problems(name, merged, params_at=spec.params_at)
    return from_params_file(found, spec.params_file)


def policy_problems(specs: Iterable[PolicySpec]) -> list[Problem]:
    """Every problem with every spec, in the order given."""
    return [problem for spec in specs for problem in spec_problems(spec)]


def check_policies(specs: Iterable[PolicySpec], source: str | Path | None = None) -> None:
    """Raise one ``ParamsError`` listing every problem with ``specs``; nothing if none.

    ``source`` names the config file at the start of the message.
    """
    raise_problems(policy_problems(specs), "invalid policies", source)


# --- the policies a config names, read from the raw data of its file ---------------------
#
# The config edges validate their schema with pydantic and pass these to
# ``validate_config(..., checks=...)``: both sets of problems come out in one error. They
# read the raw mapping defensively: a part of the wrong shape is the schema's to report.


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _items(value: object) -> list[object]:
    return list(value) if isinstance(value, list) else []


def _at(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def router_specs(raw: object, at: str = "router") -> list[PolicySpec]:
    """The router a ``router: {name, params}`` block names (the default when left out)."""
    block = _mapping(raw)
    name = block.get("name", "least-outstanding")
    return [PolicySpec("router", name, block.get("params"), _at(at, "name"), _at(at, "params"))]


def deployment_specs(raw: object, at: str = "") -> list[PolicySpec]:
    """The engine scheduler and the step-time model of one deployment.

    A request-level engine's block is its strategy's parameter model itself
    (:class:`~sincere.engine.request_level.RequestLevelConfig` extends
    :class:`~sincere.policy.batching.ComposedParams`), so the schema checks its strategy.
    """
    spec = _mapping(raw)
    engine = _mapping(spec.get("engine"))
    engine_at = _at(at, "engine")
    found = []
    if engine.get("kind", "continuous") == "continuous":
        found.append(
            PolicySpec(
                "scheduler",
                engine.get("scheduler", "fcfs"),
                engine.get("scheduler_params"),
                _at(engine_at, "scheduler"),
                _at(engine_at, "scheduler_params"),
            )
        )
    step = _mapping(spec.get("step_model"))
    step_at = _at(at, "step_model")
    kind = step.get("kind", "roofline")
    found.append(
        PolicySpec(
            "step-model",
            kind,
            step.get("params"),
            _at(step_at, "kind"),
            _at(step_at, "params"),
            step.get("params_file"),
            _at(step_at, "params_file"),
        )
    )
    return found


def simulation_specs(raw: object) -> list[PolicySpec]:
    """Every policy a simulation config names: the router, each instance's engine policy
    and step-time model, the per-phase routers of ``disaggregation:`` (and the predictors
    the routers' parameters name)."""
    data = _mapping(raw)
    found = router_specs(data.get("router"))
    for k, instance in enumerate(_items(data.get("instances"))):
        found += deployment_specs(instance, f"instances[{k}]")
    return found + disaggregation_specs(data.get("disaggregation"))


def disaggregation_specs(raw: object, at: str = "disaggregation") -> list[PolicySpec]:
    """The per-phase routers a ``disaggregation:`` section names (those written only:
    a phase left out keeps its default router)."""
    block = _mapping(raw)
    return [
        spec
        for phase in ("prefill_router", "decode_router")
        if phase in block
        for spec in router_specs(block[phase], _at(at, phase))
    ]


def config_checks(
    specs_of: Callable[[object], list[PolicySpec]],
) -> Callable[[object], list[Problem]]:
    """A ``checks`` callable for :func:`sincere.core.config.validate_config`."""
    return lambda raw: policy_problems(specs_of(raw))
