"""Build step-time models by name: the registry and the config the simulator embeds.

``make_step_model(kind, deployment, params, cc=...)`` looks ``kind`` up in
:data:`STEP_MODELS` and builds it from a parameter mapping; ``cc=True`` wraps the
result in :class:`~sincere.perf.cc.Confidential` (except kinds built from CC
measurements, which use them directly). :class:`StepModelConfig` is the pydantic
block a simulator / experiment YAML carries per instance; its ``params_file`` points
at a YAML or JSON file (as ``sincere fit`` writes) holding the parameters, either
as a plain mapping or under a ``params`` key (with an optional ``kind`` that must
match). Explicit ``params`` override the file's.

Kinds: ``roofline`` (:class:`RooflineParams` fields over the accelerator's defaults,
:mod:`sincere.perf.calibration`), ``profiled`` (``profiles``: a folder of operator
profiles, optional ``all_reduce`` topology, ``cpu``, ``scale_attention``;
:mod:`sincere.perf.profiled`), ``inferno`` (alpha_ms,
beta_ms, gamma_ms, delta_ms), ``inferno-chunked`` (alpha_ms, beta_ms, gamma_ms),
``niyama-binned`` (bin_edges, coeffs), ``sincere-table`` (model: a SINCERE model
name, default the deployment's), ``iteration-table`` (token_grid, seq_grid,
times_s). Add one with ``STEP_MODELS.register("name")(StepModelKind(builder))``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict

from sincere.core.errors import ConfigError
from sincere.core.registry import Registry
from sincere.perf.base import Deployment, StepTimeModel, SwapTime
from sincere.perf.calibration import roofline_defaults
from sincere.perf.cc import CCParams, Confidential
from sincere.perf.linear import BinnedLinear, InfernoChunked, InfernoLinear
from sincere.perf.profiled import ProfiledStep, profiles_for
from sincere.perf.roofline import Roofline, RooflineParams
from sincere.perf.table import IterationTable, sincere_profile

Params = Mapping[str, Any]
D = TypeVar("D")


@dataclass(frozen=True, slots=True)
class StepModelKind:
    """How to build one kind of step-time model."""

    build: Callable[[Deployment, Params, bool], StepTimeModel]  # (deployment, params, cc)
    measured_cc: bool = False  # True: ``build`` honours cc itself, no wrapper needed


STEP_MODELS: Registry[StepModelKind] = Registry("step-time model")


def make_step_model(
    kind: str,
    deployment: Deployment,
    params: Params | None = None,
    *,
    cc: bool = False,
    cc_params: CCParams | None = None,
) -> StepTimeModel:
    """Build the ``kind`` step-time model for ``deployment``; see the module docstring."""
    entry = STEP_MODELS.get(kind)
    model = entry.build(deployment, dict(params or {}), cc)
    if cc and not entry.measured_cc:
        return Confidential(model, cc_params)
    return model


def dataclass_from(cls: type[D], params: Params, where: str) -> D:
    """Build frozen dataclass ``cls`` from ``params``, coercing to the defaults' types."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(params) - set(fields)
    if unknown:
        raise ConfigError("unknown parameter", where=where, value=sorted(unknown), allowed=fields)
    values: dict[str, Any] = {}
    for name, value in params.items():
        default = fields[name].default
        kind = type(default) if default is not None and default is not dataclasses.MISSING else None
        try:
            values[name] = kind(value) if kind in (int, float, bool, str) else value
        except (TypeError, ValueError):
            raise ConfigError(f"bad value for {name}", where=where, value=value) from None
    return cls(**values)


def _require(params: Params, names: tuple[str, ...], where: str) -> dict[str, Any]:
    """``params`` must hold exactly ``names`` (plus optional load / unload)."""
    extra = set(params) - set(names) - {"load", "unload"}
    missing = [n for n in names if n not in params]
    if extra or missing:
        raise ConfigError(
            "parameters do not match", where=where, value=sorted(params), allowed=names
        )
    return {n: params[n] for n in names}


def _swap(params: Params, key: str) -> SwapTime | None:
    """Optional ``load`` / ``unload``: a number of seconds or {mean_s, std_s}."""
    value = params.get(key)
    if value is None:
        return None
    if isinstance(value, Mapping):
        return SwapTime(float(value["mean_s"]), float(value.get("std_s", 0.0)))
    return SwapTime(float(value))


def _build_roofline(dep: Deployment, params: Params, cc: bool) -> StepTimeModel:
    merged = {**roofline_defaults(dep.accelerator).params, **params}
    return Roofline(dep, dataclass_from(RooflineParams, merged, "roofline params"))


_PROFILED_PARAMS = ("profiles", "all_reduce", "cpu", "scale_attention", "load", "unload")


def _build_profiled(dep: Deployment, params: Params, cc: bool) -> StepTimeModel:
    unknown = set(params) - set(_PROFILED_PARAMS)
    if unknown or "profiles" not in params:
        raise ConfigError(
            "profiled params need 'profiles' (a folder of operator profiles)",
            where="profiled params",
            value=sorted(params),
            allowed=_PROFILED_PARAMS,
        )
    all_reduce = params.get("all_reduce")
    return ProfiledStep(
        profiles_for(str(params["profiles"]), dep.accelerator.name),
        dep,
        all_reduce=None if all_reduce is None else str(all_reduce),
        cpu=bool(params.get("cpu", True)),
        scale_attention=bool(params.get("scale_attention", False)),
        load=_swap(params, "load"),
        unload=_swap(params, "unload"),
    )


def _build_inferno(dep: Deployment, params: Params, cc: bool) -> StepTimeModel:
    names = ("alpha_ms", "beta_ms", "gamma_ms", "delta_ms")
    a, b, g, d = (float(v) for v in _require(params, names, "inferno params").values())
    return InfernoLinear(a, b, g, d, load=_swap(params, "load"), unload=_swap(params, "unload"))


def _build_inferno_chunked(dep: Deployment, params: Params, cc: bool) -> StepTimeModel:
    names = ("alpha_ms", "beta_ms", "gamma_ms")
    a, b, g = (float(v) for v in _require(params, names, "inferno-chunked params").values())
    return InfernoChunked(a, b, g, load=_swap(params, "load"), unload=_swap(params, "unload"))


def _build_binned(dep: Deployment, params: Params, cc: bool) -> StepTimeModel:
    vals = _require(params, ("bin_edges", "coeffs"), "niyama-binned params")
    return BinnedLinear(
        vals["bin_edges"],
        vals["coeffs"],
        load=_swap(params, "load"),
        unload=_swap(params, "unload"),
    )


def _build_iteration_table(dep: Deployment, params: Params, cc: bool) -> StepTimeModel:
    vals = _require(params, ("token_grid", "seq_grid", "times_s"), "iteration-table params")
    return IterationTable(
        vals["token_grid"],
        vals["seq_grid"],
        vals["times_s"],
        load=_swap(params, "load"),
        unload=_swap(params, "unload"),
    )


def _build_sincere_table(dep: Deployment, params: Params, cc: bool) -> StepTimeModel:
    extra = set(params) - {"model"}
    if extra:
        raise ConfigError("unknown parameter", where="sincere-table params", value=sorted(extra))
    return sincere_profile(str(params.get("model", dep.model.name)), cc=cc)


STEP_MODELS.register("roofline")(StepModelKind(_build_roofline))
STEP_MODELS.register("inferno")(StepModelKind(_build_inferno))
STEP_MODELS.register("inferno-chunked")(StepModelKind(_build_inferno_chunked))
STEP_MODELS.register("niyama-binned")(StepModelKind(_build_binned))
STEP_MODELS.register("iteration-table")(StepModelKind(_build_iteration_table))
STEP_MODELS.register("sincere-table")(StepModelKind(_build_sincere_table, measured_cc=True))
STEP_MODELS.register("profiled")(StepModelKind(_build_profiled))


def load_params_file(path: str | Path, kind: str | None = None) -> dict[str, Any]:
    """Parameters from a YAML / JSON file: a mapping, or one under a ``params`` key."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError("cannot read params_file", where=path, value=str(exc)) from None
    data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    if not isinstance(data, Mapping):
        raise ConfigError("params_file must hold a mapping", where=path, value=type(data).__name__)
    if "params" in data:
        if kind is not None and data.get("kind", kind) != kind:
            raise ConfigError("params_file is for another kind", where=path, value=data["kind"])
        data = data["params"]
    return dict(data)


class StepModelConfig(BaseModel):
    """Per-instance step-time model block of a simulator / experiment config."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str = "roofline"  # a STEP_MODELS name
    params: dict[str, Any] = {}  # the kind's parameters (override params_file)
    params_file: Path | None = None  # YAML / JSON parameter file, e.g. from `sincere fit`
    cc: bool = False  # run in confidential-computing mode
    cc_params: dict[str, float] = {}  # CCParams fields (defaults: SINCERE calibration)

    def build(self, deployment: Deployment) -> StepTimeModel:
        """The configured model for ``deployment``."""
        params: dict[str, Any] = {}
        if self.params_file is not None:
            params.update(load_params_file(self.params_file, self.kind))
        params.update(self.params)
        cc_params = dataclass_from(CCParams, self.cc_params, "cc_params")
        return make_step_model(self.kind, deployment, params, cc=self.cc, cc_params=cc_params)
