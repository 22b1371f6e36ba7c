"""The simulation config (YAML), validated once at load and frozen.

Shape (units in the names; docs/simulator.md has every key)::

    seed: 0
    workload: {...}                       # sincere.workload.WorkloadConfig
    router: {name: round-robin, params: {}}
    instances:
      - name: llama-a100                  # optional; default <model>-<position>
        model: llama-3-8b                 # catalog model (or models: [...] for request-level)
        accelerator: A100-80GB
        count: 1
        precision: bf16
        kv_precision: fp16
        tp: 1
        pp: 1
        cc: false                         # confidential-computing mode
        step_model: {kind: roofline}      # sincere.perf StepModelConfig
        engine: {kind: continuous, scheduler: sarathi, scheduler_params: {chunk_size: 512},
                 max_num_seqs: 128, max_num_batched_tokens: 512}

Every problem becomes one line of a :class:`~sincere.core.errors.ConfigError` naming
the field path, the value and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from sincere.core.config import read_yaml, validate_config
from sincere.core.errors import ConfigError
from sincere.engine.request_level import RequestLevelConfig
from sincere.perf.factory import StepModelConfig
from sincere.policy.schedulers import SCHEDULERS, check_scheduler_params
from sincere.workload.config import WorkloadConfig

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class ContinuousConfig(BaseModel):
    """An iteration-level engine (vLLM / Sarathi-Serve) and its limits."""

    model_config = _FROZEN
    kind: Literal["continuous"] = "continuous"
    scheduler: str = "fcfs"  # an engine scheduler name (see sincere.policy.schedulers)
    scheduler_params: dict[str, Any] = {}  # that scheduler's parameters
    max_num_seqs: int = Field(256, ge=1)  # sequences per iteration
    max_num_batched_tokens: int = Field(8192, ge=1)  # tokens per iteration
    block_size: int = Field(16, ge=1)  # tokens per KV block
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)  # share of device memory used
    num_kv_blocks: int | None = Field(None, ge=1)  # override the memory plan's KV blocks
    watermark: float = Field(0.01, ge=0, lt=1)  # share of blocks admissions leave free
    max_model_len: int | None = Field(None, ge=2)  # longest prompt + output, tokens

    @field_validator("scheduler")
    @classmethod
    def _known_scheduler(cls, value: str) -> str:
        if value not in SCHEDULERS:
            raise ValueError(f"unknown engine scheduler {value!r}; allowed: {SCHEDULERS.names()}")
        return value

    @model_validator(mode="after")
    def _known_params(self) -> ContinuousConfig:
        try:
            check_scheduler_params(self.scheduler, self.scheduler_params)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return self


def _engine_kind(value: Any) -> str:
    """The ``kind`` of an engine block; ``continuous`` when left out."""
    if isinstance(value, dict):
        return str(value.get("kind", "continuous"))
    return str(getattr(value, "kind", "continuous"))


EngineConfig = Annotated[
    Annotated[ContinuousConfig, Tag("continuous")]
    | Annotated[RequestLevelConfig, Tag("request-level")],
    Discriminator(_engine_kind),
]


class InstanceConfig(BaseModel):
    """A group of ``count`` identical serving instances."""

    model_config = _FROZEN
    name: str | None = None  # instance id prefix; default <model>-<position>
    model: str | None = None  # catalog model (a name or alias, also what requests ask for)
    models: list[str] | None = None  # several models (request-level engines only)
    accelerator: str = "H100-SXM"  # catalog accelerator
    count: int = Field(1, ge=1)  # replicas
    precision: str = "bf16"  # weight precision
    kv_precision: str = "fp16"  # KV-cache precision
    tp: int = Field(1, ge=1)  # tensor-parallel degree
    pp: int = Field(1, ge=1)  # pipeline-parallel degree
    cc: bool = False  # confidential-computing mode (wraps the step-time model)
    step_model: StepModelConfig = StepModelConfig()
    engine: EngineConfig = ContinuousConfig()
    price_in_per_mtok_usd: float = Field(0.0, ge=0)  # price charged per 1M prompt tokens
    price_out_per_mtok_usd: float = Field(0.0, ge=0)  # price charged per 1M output tokens
    quality: float = Field(1.0, ge=0)  # relative quality for quality-aware routers

    @model_validator(mode="after")
    def _one_model_field(self) -> InstanceConfig:
        if (self.model is None) == (self.models is None):
            raise ValueError("give exactly one of model (one model) or models (a list)")
        if self.models is not None and not self.models:
            raise ValueError("models is empty; list at least one catalog model")
        if self.models is not None and len(self.models) > 1 and self.engine.kind != "request-level":
            raise ValueError("several models need engine.kind: request-level")
        return self

    @property
    def model_names(self) -> list[str]:
        """The models this instance serves, as written."""
        return list(self.models) if self.models is not None else [str(self.model)]


class RouterConfig(BaseModel):
    """The router in front of the instances (used when a model has several)."""

    model_config = _FROZEN
    name: str = "round-robin"  # a router name (see sincere.policy.routers)
    params: dict[str, Any] = {}  # that router's parameters


class SimulationConfig(BaseModel):
    """A whole simulation: workload, instances, router, seed."""

    model_config = _FROZEN
    seed: int = 0  # seed of every random draw (workload, router, swap times)
    workload: WorkloadConfig
    instances: list[InstanceConfig] = Field(min_length=1)
    router: RouterConfig = RouterConfig()
    base_dir: str | None = None  # where relative paths resolve; default the file's folder

    def with_seed(self, seed: int | None) -> SimulationConfig:
        """This config with ``seed`` (unchanged when ``None``)."""
        return self if seed is None else self.model_copy(update={"seed": seed})

    def to_yaml(self) -> str:
        """The resolved config as YAML (what ``config.yaml`` holds)."""
        data = self.model_dump(mode="json", exclude_none=True)
        return yaml.safe_dump(data, sort_keys=False)


def load_config(source: str | Path | dict[str, Any]) -> SimulationConfig:
    """Validate a YAML file path or a mapping as a :class:`SimulationConfig`."""
    where: str | Path | None = None
    data: Any = source
    if isinstance(source, str | Path):
        path = Path(source)
        where = path
        data = read_yaml(path)
        if isinstance(data, dict) and "base_dir" not in data:
            data = {**data, "base_dir": str(path.resolve().parent)}
    if not isinstance(data, dict):
        raise ConfigError("a simulation config must be a mapping", where=where, value=type(data))
    return validate_config(SimulationConfig, data, where)
