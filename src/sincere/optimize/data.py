"""Inferno's data files: accelerators, models, service classes, servers, capacity, optimizer.

A planning problem is a directory of JSON files in Inferno's layout
(``accelerator-data.json``, ``model-data.json``, ``serviceclass-data.json``,
``server-data.json``, optional ``capacity-data.json`` and ``optimizer-data.json``).
Keys are matched case-insensitively and ignoring ``-`` and ``_`` because Inferno's own
samples spell them inconsistently (``slo-itl``, ``sloItl``). Units as Inferno's:
accelerator cost in cents/h, ``memSize`` GB, arrival rates req/min, SLOs and model
parameters ms. Every defect raises :class:`~sincere.core.errors.DataError` naming the
file, the entry and the field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sincere.core.errors import ConfigError, DataError
from sincere.optimize.queueing import DecodePrefillParams, ModelParams, PerfParams
from sincere.optimize.sizing import Targets

FILES = {
    "accelerators": "accelerator-data.json",
    "models": "model-data.json",
    "classes": "serviceclass-data.json",
    "servers": "server-data.json",
    "capacity": "capacity-data.json",
    "optimizer": "optimizer-data.json",
}
"""File name of each part of a problem directory."""


@dataclass(frozen=True, slots=True)
class AcceleratorSpec:
    """One accelerator entry of ``accelerator-data``."""

    name: str  # e.g. "A100" or "2xA100"
    type: str  # physical unit counted by capacity-data, e.g. "A100"
    multiplicity: int  # units of ``type`` in one accelerator
    mem_gb: float  # memory, GB
    cost: float  # cents per hour of one accelerator


@dataclass(frozen=True, slots=True)
class ModelPerf:
    """Performance of one model on one accelerator (an entry of ``model-data``)."""

    model: str
    acc: str  # accelerator name
    acc_count: int  # accelerators one replica uses
    max_batch: int  # batch that fits in memory at ``at_tokens`` tokens per request
    at_tokens: int  # request length (in + out) at which max_batch was measured
    params: ModelParams


@dataclass(frozen=True, slots=True)
class ServiceClass:
    """A service class: its priority (1 = most important) and SLOs per model."""

    name: str
    priority: int
    targets: Mapping[str, Targets]  # model name -> SLOs


@dataclass(frozen=True, slots=True)
class Load:
    """Offered load of a server."""

    arrival_rate: float  # requests per minute
    avg_in_tokens: float
    avg_out_tokens: float
    prefix_hit_rate: float = 0.0  # expected share of prompt tokens served from a prefix cache

    def __post_init__(self) -> None:
        if not 0.0 <= self.prefix_hit_rate < 1.0:
            raise ConfigError(
                "load prefix_hit_rate must be a fraction of prompt tokens",
                value=self.prefix_hit_rate,
                allowed="0 <= prefix_hit_rate < 1",
            )

    @property
    def uncached_in_tokens(self) -> float:
        """Prompt tokens a replica computes per request (the rest come from its prefix cache)."""
        return self.avg_in_tokens * (1.0 - self.prefix_hit_rate)

    def to_json(self) -> dict[str, float]:
        """Inferno's ``load`` object (plus ``prefixHitRate`` when set)."""
        out = {
            "arrivalRate": self.arrival_rate,
            "avgInTokens": self.avg_in_tokens,
            "avgOutTokens": self.avg_out_tokens,
        }
        if self.prefix_hit_rate:
            out["prefixHitRate"] = self.prefix_hit_rate
        return out


@dataclass(frozen=True, slots=True)
class CurrentAlloc:
    """What a server runs now; its accelerator triggers transition penalties."""

    load: Load
    accelerator: str | None = None  # None: not placed yet
    num_replicas: int = 0
    max_batch: int = 0
    cost: float | None = None  # cents/h; None: computed from the accelerator's cost


@dataclass(frozen=True, slots=True)
class Server:
    """One (service class, model) server to allocate."""

    name: str
    service_class: str
    model: str
    current: CurrentAlloc
    keep_accelerator: bool = False  # only the current accelerator is allowed
    min_replicas: int = 0
    max_batch: int = 0  # cap on the batch size; 0 = the model data's


BATCH_RULES: tuple[str, ...] = ("inferno", "kv")
"""How a replica's max batch follows from the model data (see
:func:`sincere.optimize.candidates.effective_batch`): ``inferno`` is Inferno's own rule,
``kv`` rescales by the whole request length that the KV cache holds."""


@dataclass(frozen=True, slots=True)
class OptimizerSpec:
    """``optimizer-data``: how to solve."""

    unlimited: bool = True  # ignore capacity-data
    heterogeneous: bool = False  # a server's replicas may mix accelerator types
    milp: bool = False  # exact MILP instead of the greedy
    saturation_policy: str = "None"  # what to do with servers that do not fit
    queue_factor: int = 10  # K = N + queue_factor·N
    batch_rule: str = "inferno"  # one of BATCH_RULES

    def __post_init__(self) -> None:
        if self.batch_rule not in BATCH_RULES:
            raise ConfigError("unknown batch rule", value=self.batch_rule, allowed=BATCH_RULES)


@dataclass(frozen=True, slots=True)
class Problem:
    """Everything one planning run needs."""

    accelerators: Mapping[str, AcceleratorSpec]
    models: Mapping[tuple[str, str], ModelPerf]  # (model, accelerator) -> perf
    classes: Mapping[str, ServiceClass]
    servers: tuple[Server, ...]
    capacity: Mapping[str, int] = field(default_factory=dict)  # type -> units available
    optimizer: OptimizerSpec = OptimizerSpec()


class _Entry:
    """A JSON object whose keys are looked up loosely, with errors naming file and entry."""

    def __init__(self, raw: object, path: Path, where: str) -> None:
        if not isinstance(raw, dict):
            raise DataError(f"{where}: expected an object", path=path, value=raw)
        self.raw = {_norm(k): v for k, v in raw.items()}
        self.path = path
        self.where = where

    def has(self, key: str) -> bool:
        return _norm(key) in self.raw and self.raw[_norm(key)] is not None

    def get(self, key: str) -> Any:
        if not self.has(key):
            raise DataError(f"{self.where}: missing field", path=self.path, column=key)
        return self.raw[_norm(key)]

    def sub(self, key: str) -> _Entry:
        return _Entry(self.get(key), self.path, f"{self.where}.{key}")

    def text(self, key: str, default: str | None = None) -> str:
        if default is not None and not self.has(key):
            return default
        value = self.get(key)
        if not isinstance(value, str) or not value:
            raise DataError(
                f"{self.where}: expected a non-empty string",
                path=self.path,
                column=key,
                value=value,
            )
        return value

    def num(self, key: str, default: float | None = None, *, positive: bool = False) -> float:
        if default is not None and not self.has(key):
            return default
        value = self.get(key)
        ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
        if not ok or (positive and value <= 0):
            need = "a number > 0" if positive else "a number >= 0"
            raise DataError(
                f"{self.where}: expected {need}", path=self.path, column=key, value=value
            )
        return float(value)

    def int_(self, key: str, default: int | None = None, *, positive: bool = False) -> int:
        value = self.num(key, None if default is None else float(default), positive=positive)
        if value != int(value):
            raise DataError(
                f"{self.where}: expected an integer", path=self.path, column=key, value=value
            )
        return int(value)

    def flag(self, key: str, default: bool) -> bool:
        if not self.has(key):
            return default
        value = self.get(key)
        if not isinstance(value, bool):
            raise DataError(
                f"{self.where}: expected true or false", path=self.path, column=key, value=value
            )
        return value

    def items(self, key: str) -> list[_Entry]:
        value = self.get(key)
        if not isinstance(value, list):
            raise DataError(
                f"{self.where}: expected a list",
                path=self.path,
                column=key,
                value=type(value).__name__,
            )
        return [_Entry(v, self.path, f"{key}[{i}]") for i, v in enumerate(value)]


def _norm(key: object) -> str:
    return str(key).lower().replace("-", "").replace("_", "")


def read_json(path: Path) -> _Entry:
    """Parse one file into a loose-keyed entry; bad JSON names the line."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError("file not found", path=path) from None
    except json.JSONDecodeError as exc:
        raise DataError(f"invalid JSON: {exc.msg}", path=path, line=exc.lineno) from None
    return _Entry(raw, path, "top level")


def parse_accelerators(doc: _Entry) -> dict[str, AcceleratorSpec]:
    """``{"accelerators": [...]}`` -> name -> spec."""
    out: dict[str, AcceleratorSpec] = {}
    for e in doc.items("accelerators"):
        name = e.text("name")
        _unique(out, name, e)
        out[name] = AcceleratorSpec(
            name,
            e.text("type", name),
            e.int_("multiplicity", 1, positive=True),
            e.num("memSize", 0.0),
            e.num("cost"),
        )
    return out


def parse_models(doc: _Entry) -> dict[tuple[str, str], ModelPerf]:
    """``{"models": [...]}`` in either parameter variant -> (model, acc) -> perf."""
    out: dict[tuple[str, str], ModelPerf] = {}
    for e in doc.items("models"):
        key = (e.text("name"), e.text("acc"))
        _unique(out, key, e)
        out[key] = ModelPerf(
            key[0],
            key[1],
            e.int_("accCount", 1, positive=True),
            e.int_("maxBatchSize", positive=True),
            e.int_("atTokens", 0),
            _model_params(e),
        )
    return out


def _model_params(e: _Entry) -> ModelParams:
    if e.has("perfParms"):
        p = e.sub("perfParms")
        perf = PerfParams(p.num("alpha"), p.num("beta"), p.num("gamma"))
        return _growing(e, perf, ("beta", "gamma"), "perfParms.beta")
    if not (e.has("decodeParms") and e.has("prefillParms")):
        raise DataError(
            f"{e.where}: needs perfParms, or decodeParms and prefillParms",
            path=e.path,
            column="decodeParms",
        )
    d, p = e.sub("decodeParms"), e.sub("prefillParms")
    params = DecodePrefillParams(d.num("alpha"), d.num("beta"), p.num("gamma"), p.num("delta"))
    return _growing(e, params, ("beta", "delta"), "decodeParms.beta")


def _growing(e: _Entry, params: ModelParams, slopes: tuple[str, str], column: str) -> ModelParams:
    """``params``, unless both its per-batch terms ``slopes`` are 0 (time would not grow)."""
    first, second = slopes
    if getattr(params, first) == 0 and getattr(params, second) == 0:
        raise DataError(
            f"{e.where}: {first} and {second} are both 0 (time would not grow with the batch)",
            path=e.path,
            column=column,
        )
    return params


def parse_classes(doc: _Entry) -> dict[str, ServiceClass]:
    """``{"serviceClasses": [...]}`` -> name -> class."""
    out: dict[str, ServiceClass] = {}
    for e in doc.items("serviceClasses"):
        name = e.text("name")
        _unique(out, name, e)
        targets: dict[str, Targets] = {}
        for t in e.items("modelTargets"):
            targets[t.text("model")] = Targets(
                _opt(t, "slo-ttft"), _opt(t, "slo-itl"), _opt(t, "slo-tps")
            )
        out[name] = ServiceClass(name, e.int_("priority", 1), targets)
    return out


def _opt(e: _Entry, key: str) -> float | None:
    """An optional SLO; 0 or absent means none."""
    value = e.num(key, 0.0)
    return value if value > 0 else None


def parse_servers(doc: _Entry) -> tuple[Server, ...]:
    """``{"servers": [...]}`` -> servers in file order."""
    seen: dict[str, None] = {}
    out = []
    for e in doc.items("servers"):
        name = e.text("name")
        _unique(seen, name, e)
        seen[name] = None
        out.append(
            Server(
                name,
                e.text("class"),
                e.text("model"),
                _current(e.sub("currentAlloc")),
                e.flag("keepAccelerator", False),
                e.int_("minNumReplicas", 0),
                e.int_("maxBatchSize", 0),
            )
        )
    return tuple(out)


def _current(e: _Entry) -> CurrentAlloc:
    ld = e.sub("load")
    load = Load(
        ld.num("arrivalRate"),
        ld.num("avgInTokens"),
        ld.num("avgOutTokens", positive=True),
        ld.num("prefixHitRate", 0.0),
    )
    acc = e.raw.get(_norm("accelerator")) or None
    if acc is not None and not isinstance(acc, str):
        raise DataError(
            f"{e.where}: expected a string", path=e.path, column="accelerator", value=acc
        )
    cost = e.num("cost") if e.has("cost") else None
    return CurrentAlloc(load, acc, e.int_("numReplicas", 0), e.int_("maxBatch", 0), cost)


def parse_capacity(doc: _Entry) -> dict[str, int]:
    """``{"count": [{"type", "count"}]}`` -> type -> units."""
    out: dict[str, int] = {}
    for e in doc.items("count"):
        kind = e.text("type")
        _unique(out, kind, e)
        out[kind] = e.int_("count")
    return out


def parse_optimizer(doc: _Entry) -> OptimizerSpec:
    """``{"optimizer": {...}}`` -> spec (policy names checked later, by the registry)."""
    e = doc.sub("optimizer")
    rule = e.text("batchRule", "inferno")
    if rule not in BATCH_RULES:
        raise DataError(
            f"{e.where}: unknown batch rule; allowed: {', '.join(BATCH_RULES)}",
            path=e.path,
            column="batchRule",
            value=rule,
        )
    return OptimizerSpec(
        e.flag("unlimited", True),
        e.flag("heterogeneous", False),
        e.flag("milpSolver", False),
        e.text("saturationPolicy", "None"),
        e.int_("queueFactor", 10),
        rule,
    )


def _unique(seen: Mapping[Any, object], key: object, e: _Entry) -> None:
    if key in seen:
        raise DataError(f"{e.where}: duplicate entry", path=e.path, column="name", value=key)


def load_problem(directory: str | Path) -> Problem:
    """Read and cross-check a problem directory (see :data:`FILES`)."""
    root = Path(directory)
    if not root.is_dir():
        raise DataError("not a directory of Inferno data files", path=root)
    base = load_fleet(root)
    if not base.optimizer.unlimited and not (root / FILES["capacity"]).exists():
        raise DataError("limited accelerators need this file", path=root / FILES["capacity"])
    problem = replace(base, servers=parse_servers(read_json(root / FILES["servers"])))
    check_problem(problem, root)
    return problem


def load_fleet(directory: str | Path) -> Problem:
    """Everything but the servers (``servers=()``): accelerators, models, classes,
    capacity and optimizer settings, as read, without cross-checks. For callers that
    supply the servers themselves (the gateway's planner, from observed load)."""
    root = Path(directory)
    optimizer = OptimizerSpec()
    if (root / FILES["optimizer"]).exists():
        optimizer = parse_optimizer(read_json(root / FILES["optimizer"]))
    capacity: dict[str, int] = {}
    if (root / FILES["capacity"]).exists():
        capacity = parse_capacity(read_json(root / FILES["capacity"]))
    return Problem(
        accelerators=parse_accelerators(read_json(root / FILES["accelerators"])),
        models=parse_models(read_json(root / FILES["models"])),
        classes=parse_classes(read_json(root / FILES["classes"])),
        servers=(),
        capacity=capacity,
        optimizer=optimizer,
    )


def check_problem(problem: Problem, root: Path) -> None:
    """Cross-file consistency: every name a file uses is defined where it should be."""
    models_path = root / FILES["models"]
    for i, perf in enumerate(problem.models.values()):
        if perf.acc not in problem.accelerators:
            raise DataError(
                f"models[{i}]: unknown accelerator (not in {FILES['accelerators']})",
                path=models_path,
                column="acc",
                value=perf.acc,
            )
    servers_path = root / FILES["servers"]
    for i, s in enumerate(problem.servers):
        where = f"servers[{i}] ({s.name})"
        cls = problem.classes.get(s.service_class)
        if cls is None:
            raise DataError(
                f"{where}: unknown service class",
                path=servers_path,
                column="class",
                value=s.service_class,
            )
        if s.model not in cls.targets:
            raise DataError(
                f"{where}: class {cls.name!r} has no modelTargets entry for the model",
                path=servers_path,
                column="model",
                value=s.model,
            )
        if not any(m == s.model for m, _ in problem.models):
            raise DataError(
                f"{where}: model has no entry in {FILES['models']}",
                path=servers_path,
                column="model",
                value=s.model,
            )
        acc = s.current.accelerator
        if acc is not None and acc not in problem.accelerators:
            raise DataError(
                f"{where}: unknown current accelerator",
                path=servers_path,
                column="currentAlloc.accelerator",
                value=acc,
            )
    types = {a.type for a in problem.accelerators.values()}
    for kind in problem.capacity:
        if kind not in types:
            raise DataError(
                "count: type matches no accelerator's type",
                path=root / FILES["capacity"],
                column="type",
                value=kind,
            )
