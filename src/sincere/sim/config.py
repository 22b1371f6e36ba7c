"""The simulation config (YAML), validated once at load and frozen.

Shape (units in the names; docs/simulator.md has every key)::

    seed: 0
    workload: {...}                       # sincere.workload.WorkloadConfig
    router: {name: least-outstanding, params: {}}
    admission: {enabled: false, shed_factor: 1.0, priority_bands: []}
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
        role: both                        # prefill, decode or both (docs/disaggregation.md)
    disaggregation:                       # optional; only read when some role is not both
      decider: {name: always}             # always | never | threshold (min_uncached_tokens)
      prefill_router: {name: prefix-aware}
      decode_router: {name: least-outstanding}
      kv_link: {kind: nvlink}             # nvlink | rdma; bandwidth_gbps, latency_s override
    autoscaling:                          # optional; one group scaled in the run
      {policy: threshold, interval_s: 10, min_instances: 1, max_instances: 8, ...}
                                          # docs/autoscaling.md, sim/autoscale_config.py
    actuation:                            # optional; several models sharing GPU slots
      {policy: sleep, max_slots: 8, scaling: {...}, ...}   # sim/actuation_config.py

An instance is a :class:`~sincere.engine.spec.DeploymentSpec` (model, accelerator,
precisions, TP, PP, CC, step model, engine) plus its replica count, prices and quality.
Every problem becomes one line of a :class:`~sincere.core.errors.ConfigError` naming
the field path, the value and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from sincere.core.config import read_yaml, validate_config
from sincere.core.errors import ConfigError
from sincere.engine.spec import DeploymentSpec
from sincere.perf.kv_link import KvLinkConfig as KvLinkConfig
from sincere.policy.front_door_config import AdmissionConfig, RouterConfig
from sincere.policy.pd import Role
from sincere.policy.pd_config import PDRoutingConfig
from sincere.policy.specs import config_checks, simulation_specs
from sincere.sim.actuation_config import ActuationConfig
from sincere.sim.autoscale_config import AutoscalingConfig
from sincere.workload.config import TraceConfig, WorkloadConfig

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class InstanceConfig(DeploymentSpec):
    """A group of ``count`` identical serving instances of one deployment spec."""

    name: str | None = None  # instance id prefix; default <model>-<position>
    count: int = Field(1, ge=1)  # replicas
    price_in_per_mtok_usd: float = Field(0.0, ge=0)  # price charged per 1M prompt tokens
    price_out_per_mtok_usd: float = Field(0.0, ge=0)  # price charged per 1M output tokens
    quality: float = Field(1.0, ge=0)  # relative quality for quality-aware routers
    # prefill, decode, or both (None: both -- colocated, serving whole requests)
    role: Role | None = None

    @model_validator(mode="after")
    def _role_of_one_engine(self) -> InstanceConfig:
        if self.role is not None and self.lockstep_ranks > 1:
            raise ValueError(
                f"role {self.role}: a prefill or decode instance is one engine; ranks "
                "stepping together (engine.dp_ranks: lockstep) serve whole requests"
            )
        return self


class DisaggregationConfig(PDRoutingConfig):
    """Prefill/decode disaggregation: the decider, the routers per phase, the KV link."""

    kv_link: KvLinkConfig = KvLinkConfig()


class SimulationConfig(BaseModel):
    """A whole simulation: workload, instances, router, seed."""

    model_config = _FROZEN
    seed: int = 0  # seed of every random draw (workload, router, swap times)
    workload: WorkloadConfig
    instances: list[InstanceConfig] = Field(min_length=1)
    router: RouterConfig = RouterConfig()
    admission: AdmissionConfig = AdmissionConfig()  # off unless enabled
    # P/D routing and KV link (None: defaults when an instance has a prefill/decode role)
    disaggregation: DisaggregationConfig | None = None
    # one instances group scaled inside the run (None: every group keeps its count)
    autoscaling: AutoscalingConfig | None = None
    # several models sharing a pool of GPU slots, actuated in the run (None: no pool)
    actuation: ActuationConfig | None = None
    base_dir: str | None = None  # where relative paths resolve; default the file's folder

    def with_seed(self, seed: int | None) -> SimulationConfig:
        """This config with ``seed`` (unchanged when ``None``)."""
        return self if seed is None else self.model_copy(update={"seed": seed})

    def with_trace(self, path: str | Path, format: str | None = None) -> SimulationConfig:
        """This cluster serving a recorded trace instead of the workload (``workload.trace``).

        The trace brings arrivals, lengths, block ids and models where it names them; the
        workload's model mix, tiers and ``max_tokens`` fill in the rest.
        """
        old = self.workload
        workload = WorkloadConfig(
            trace=TraceConfig(path=str(Path(path).resolve()), format=format),
            models=old.models,
            tiers=old.tiers,
            max_tokens=old.max_tokens,
        )
        return self.model_copy(update={"workload": workload})

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
    checks = config_checks(simulation_specs)
    return validate_config(SimulationConfig, data, where, checks=checks)
