"""The experiment spec (YAML): a base simulation config, axes to sweep, seeds, report roles.

Shape (docs/experiments.md has every key)::

    name: my-study
    base: {...}                 # a simulation config (sincere.sim.config), or a YAML path
    seeds: [1, 2, 3]            # every cell runs once per seed
    axes:                       # crossed with each other, in this order
      strategy: {path: instances.0.engine.strategy, values: [fcfs, best-batch+timer]}
      env: {path: instances.0.cc, values: {non-cc: false, cc: true}}   # label: value
      rate: {values: [4, 8]}    # no path: a variable used as "${rate}" in base or values
      sla:                      # zipped: one axis setting several fields together
        paths: [instances.0.engine.sla_s, workload.tiers]
        values: {40: [40, {preset: sincere-40}], 60: [60, {preset: sincere-60}]}
    report: {strategy: strategy, traffic: traffic, load: rate, env: env, baseline: non-cc}
    quick: {seeds: [1], set: {workload.duration_s: 300}, only: {sla: [60]}}
    capacity: {policies: [fcfs, edf], rate_path: workload.arrival.rate}

An axis either sets config fields (``path`` / ``paths``) or only defines a variable for
``${name}`` placeholders (see :mod:`sincere.experiment.paths`). Values are a list (labels
are the values themselves, scalars only) or a mapping ``label: value``. Everything is
checked when the spec loads; :mod:`sincere.experiment.grid` expands it into cells.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sincere.core.config import read_yaml, validate_config
from sincere.core.errors import ConfigError
from sincere.experiment.paths import format_value, split_path

Label = str | int | float | bool
_FROZEN = ConfigDict(frozen=True, extra="forbid")
_SCALARS = (str, int, float, bool)


class AxisSpec(BaseModel):
    """One swept dimension: which fields it sets and the values it takes."""

    model_config = _FROZEN
    path: str | None = None  # one config field set to each value
    paths: list[str] | None = None  # several fields set together (each value a list)
    values: list[Any] | dict[Label, Any]  # the values, optionally labelled

    @model_validator(mode="after")
    def _check(self) -> AxisSpec:
        if self.path is not None and self.paths is not None:
            raise ValueError("give path (one field) or paths (zipped fields), not both")
        for p in self.targets:
            split_path(p)
        if not self.values:
            raise ValueError("values is empty; give at least one value")
        if self.paths is not None:
            for label, value in self.items():
                if not isinstance(value, list) or len(value) != len(self.paths):
                    raise ValueError(
                        f"value {label!r}: a zipped axis needs a list of {len(self.paths)} "
                        f"values (one per path), got {value!r}"
                    )
        labels = [str(label) for label, _ in self.items()]
        if len(set(labels)) != len(labels):
            raise ValueError(f"labels must be distinct, got {labels}")
        return self

    @property
    def targets(self) -> list[str]:
        """The config paths this axis sets (empty for a placeholder-only variable)."""
        if self.paths is not None:
            return list(self.paths)
        return [self.path] if self.path is not None else []

    def items(self) -> list[tuple[Label, Any]]:
        """``(label, value)`` pairs in order."""
        if isinstance(self.values, dict):
            return list(self.values.items())
        return [(_label_of(v), v) for v in self.values]


def _label_of(value: Any) -> Label:
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, list) and all(isinstance(v, _SCALARS) for v in value):
        return "/".join(format_value(v) for v in value)
    raise ValueError(
        f"value {value!r} has no label; give values as a mapping label: value for "
        "mappings and nested lists"
    )


class ReportSpec(BaseModel):
    """Which axis plays which role in the report (names of axes; None = none)."""

    model_config = _FROZEN
    strategy: str | None = None  # the policies compared (lines / rows)
    traffic: str | None = None  # traffic patterns (one panel each)
    load: str | None = None  # numeric offered load, x of the load plots
    env: str | None = None  # environment (e.g. CC vs non-CC), for the delta table
    baseline: Label | None = None  # the env label deltas are measured against
    reference: dict[str, Label] = {}  # the slice of other axes single-slice plots use


class QuickSpec(BaseModel):
    """A reduced version of the study for ``--quick``."""

    model_config = _FROZEN
    seeds: list[int] | None = None  # replaces the spec's seeds
    set: dict[str, Any] = {}  # config path -> value, applied to the base
    only: dict[str, list[Label]] = {}  # axis -> the labels kept


class CapacitySpec(BaseModel):
    """Defaults of ``sincere capacity`` when given this spec."""

    model_config = _FROZEN
    policies: list[str] = []  # values of the policy field compared
    policy_path: str | None = None  # default: every instance's scheduler / strategy
    rate_path: str = "workload.arrival.rate"  # the field holding the arrival rate, req/s
    start_rate: float = Field(1.0, gt=0)  # first rate tried, req/s
    seeds: list[int] = [0, 1, 2]  # seeds per rate
    rel_tol: float = Field(0.05, gt=0, lt=1)  # stop when the bracket is this narrow
    max_violation: float = Field(0.01, gt=0, lt=1)  # Niyama's 1 %


class ExperimentSpec(BaseModel):
    """A whole experiment: base config × axes × seeds."""

    model_config = _FROZEN
    name: str = "experiment"
    description: str = ""
    base: dict[str, Any]  # a simulation config mapping (may hold ${axis} placeholders)
    base_dir: str | None = None  # where relative paths in the base resolve
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    axes: dict[str, AxisSpec] = {}
    report: ReportSpec = ReportSpec()
    quick: QuickSpec | None = None
    capacity: CapacitySpec = CapacitySpec()

    @field_validator("axes")
    @classmethod
    def _axis_names(cls, axes: dict[str, AxisSpec]) -> dict[str, AxisSpec]:
        reserved = {"seed", "cell_id", "status", "error", "wall_s"}
        for name in axes:
            if name in reserved or "." in name:
                raise ValueError(f"axis name {name!r} is reserved or has a dot")
        return axes

    @model_validator(mode="after")
    def _roles(self) -> ExperimentSpec:
        roles = self.report.model_dump(include={"strategy", "traffic", "load", "env"})
        for role, axis in roles.items():
            if axis is not None and axis not in self.axes:
                raise ValueError(f"report.{role}: no axis {axis!r}; axes: {list(self.axes)}")
        for axis in [*self.report.reference, *(self.quick.only if self.quick else {})]:
            if axis not in self.axes:
                raise ValueError(f"unknown axis {axis!r}; axes: {list(self.axes)}")
        return self

    def roles(self) -> ReportSpec:
        """The report roles, guessed from axis names where the spec leaves them out."""
        guesses = {
            "strategy": ("strategy", "scheduler", "policy", "router"),
            "traffic": ("traffic", "arrival", "pattern"),
            "load": ("rate", "load", "qps"),
            "env": ("env", "cc", "environment"),
        }
        update: dict[str, Any] = {}
        for role, names in guesses.items():
            if getattr(self.report, role) is None:
                update[role] = next((n for n in names if n in self.axes), None)
        return self.report.model_copy(update=update)


def load_spec(
    source: str | Path | dict[str, Any], where: str | Path | None = None
) -> ExperimentSpec:
    """Validate a spec file (or mapping); its ``base`` may be a path relative to the file."""
    data: Any = source
    folder: Path | None = None
    if isinstance(source, str | Path):
        path = Path(source)
        where, folder = path, path.resolve().parent
        data = read_yaml(path, "experiment spec")
    if not isinstance(data, dict):
        raise ConfigError("an experiment spec must be a mapping", where=where, value=type(data))
    data = dict(data)
    if isinstance(data.get("base"), str):
        data["base"], base_folder = _read_base(data["base"], folder, where)
        data.setdefault("base_dir", str(base_folder))
    elif folder is not None:
        data.setdefault("base_dir", str(folder))
    return validate_config(ExperimentSpec, data, where)


def _read_base(text: str, folder: Path | None, where: str | Path | None) -> tuple[Any, Path]:
    path = Path(text).expanduser()
    if not path.is_absolute() and folder is not None:
        path = folder / path
    try:
        return read_yaml(path, "base config"), path.resolve().parent
    except ConfigError as exc:
        raise ConfigError(f"cannot read the base config: {exc}", where=where) from None
