"""Configuration of emulated engines (``sincere emulate``), validated once and frozen.

One :class:`EmulatorConfig` describes one emulated engine: the deployment it
pretends to be (a :class:`~sincere.engine.spec.DeploymentSpec`, as the simulator's
instances are: ``model``, ``accelerator``, ``precision``, ``kv_precision``, ``tp``,
``pp``, ``cc``, ``step_model``, ``engine``),
where it listens, how long its answers are, and which failures it injects
(:class:`FailureConfig`), how long it takes to wake from sleep mode (``sleep``,
:mod:`.sleep`), and its part in prefill/decode disaggregation (``role``,
``kv_link``: :mod:`.pd`). A YAML file holds a list of them (or ``{instances: [...]}``);
an entry with ``count: k`` becomes ``k`` engines on consecutive ports (all on
OS-chosen ports when ``port`` is 0). Units: seconds, tokens, probabilities in [0, 1].
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sincere.core.config import TierConfig, read_yaml, validate_config
from sincere.core.errors import ConfigError
from sincere.engine.spec import ContinuousConfig, DeploymentSpec
from sincere.perf.kv_link import KvLinkConfig
from sincere.policy.pd import Role
from sincere.policy.specs import config_checks, deployment_specs
from sincere.serve.emulator.sleep import SleepConfig
from sincere.serve.protocol import MAX_BODY_BYTES

MAX_NUM_REQUESTS = 1 << 20
"""Most request slots one emulated engine may hold (its arrays are preallocated)."""

_FROZEN = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class FailureConfig(BaseModel):
    """Failures an emulated engine injects, drawn from its seeded generator."""

    model_config = _FROZEN
    error_rate: float = Field(0.0, ge=0, le=1)  # share of requests answered HTTP 500 at once
    stall_probability: float = Field(0.0, ge=0, le=1)  # chance, after each iteration, to pause
    stall_s: float = Field(0.0, ge=0, le=86_400)  # length of one pause of the engine, seconds
    crash_after: int | None = Field(None, ge=0, le=1 << 40)  # requests served before dying


class EmulatorConfig(DeploymentSpec):
    """One emulated engine (``count`` of them when loaded from a file).

    The deployment it pretends to be is a :class:`~sincere.engine.spec.DeploymentSpec`
    (the simulator's instances are too): one model, an iteration-level engine.
    """

    model_config = _FROZEN
    model: str = "llama-3-8b"  # catalog model (name or alias)
    engine: ContinuousConfig = ContinuousConfig()  # scheduler and limits
    name: str | None = None  # instance id; default <model>-<position>
    served_model_name: str | None = None  # name in /v1/models; default the catalog name
    tiers: list[TierConfig] = Field(default_factory=list)  # tiers requests may name
    host: str = "127.0.0.1"  # address to bind
    port: int = Field(0, ge=0, le=65535)  # 0: the OS chooses (see EmulatorServer.port)
    count: int = Field(1, ge=1, le=1024)  # replicas (files and the CLI only)
    # requests in flight at once; more get 503. Slots are preallocated (~140 bytes each).
    max_num_requests: int = Field(4096, ge=1, le=MAX_NUM_REQUESTS)
    default_max_tokens: int = Field(256, ge=1, le=1 << 24)  # cap when a request gives none
    output_lengths: dict[str, Any] | None = None  # {kind: lognormal, ...}: drawn lengths
    token_text: str = Field(" tok", max_length=64)  # the text of every generated token
    seed: int = Field(0, ge=0, le=(1 << 63) - 1)  # seed of length draws and failure injection
    max_body_bytes: int = Field(MAX_BODY_BYTES, ge=1, le=1 << 30)  # larger bodies get 413
    # tokens per block id of a prompt's content (sincere.core.prefix.text_block_ids): what
    # the engine's prefix cache compares; the gateway's prefix.block_tokens
    prefix_block_tokens: int = Field(16, ge=1, le=1 << 16)
    failures: FailureConfig = FailureConfig()
    # prefill/decode disaggregation (serve/emulator/pd.py): which KV-transfer requests it
    # takes (both: either), and the link its KV leaves by when it prefills for a decoder
    role: Role = "both"
    kv_link: KvLinkConfig = KvLinkConfig()
    sleep: SleepConfig = SleepConfig()  # wake times of sleep mode (serve/emulator/sleep.py)


def expand(config: EmulatorConfig, position: int = 0) -> list[EmulatorConfig]:
    """``count`` single-engine configs: names ``<name>-k``, ports ``port + k`` (0 stays 0)."""
    prefix = config.name or f"{config.model}-{position}"
    if config.count == 1:
        return [config.model_copy(update={"name": prefix})]
    if config.port and config.port + config.count - 1 > 65535:
        raise ConfigError("ports run past 65535", value=config.port, allowed="a lower port")
    return [
        config.model_copy(
            update={
                "name": f"{prefix}-{k}",
                "count": 1,
                "port": config.port + k if config.port else 0,
                "seed": config.seed + k,
            }
        )
        for k in range(config.count)
    ]


def parse_emulator_config(
    data: object, where: str | Path | None = None, *, prefix: str = "emulator"
) -> EmulatorConfig:
    """Validate one instance's mapping, its engine scheduler and step model included: every
    problem in one ``ConfigError``, paths under ``prefix``."""
    checks = config_checks(lambda raw: deployment_specs(raw, prefix))
    return validate_config(EmulatorConfig, data, where, prefix=prefix, checks=checks)


def load_emulator_configs(source: str | Path | list[Any] | dict[str, Any]) -> list[EmulatorConfig]:
    """Single-engine configs from a YAML file (a list, or ``{instances: [...]}``) or data."""
    where: str | Path | None = None
    data: Any = source
    if isinstance(source, str | Path):
        where = Path(source)
        data = read_yaml(where, "emulator config")
    if isinstance(data, dict):
        data = data.get("instances", [data])
    if not isinstance(data, list) or not data:
        raise ConfigError(
            "an emulator config must be a non-empty list of instances",
            where=where,
            value=type(data).__name__,
            allowed="a YAML list, or a mapping with an `instances` list",
        )
    configs: list[EmulatorConfig] = []
    for k, entry in enumerate(data):
        cfg = parse_emulator_config(entry, where, prefix=f"instances[{k}]")
        configs.extend(expand(cfg, k))
    _check_unique(configs, where)
    return configs


def _check_unique(configs: list[EmulatorConfig], where: str | Path | None) -> None:
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise ConfigError("instance names must be unique", where=where, value=names)
    ports = [(c.host, c.port) for c in configs if c.port]
    if len(set(ports)) != len(ports):
        raise ConfigError("two instances share a port", where=where, value=ports)
