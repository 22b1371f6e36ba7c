"""Configuration of the gateway (``sincere serve CONFIG``): pydantic, from YAML, then frozen.

One YAML file says where to listen, which router (by name, with params) picks
instances, which backends exist (URL, API kind, model name mapping, prices, quality,
accelerator, in-flight limit, timeouts), the SLA tiers by name, the gateway queue,
the circuit breaker, metric scraping, admission, request limits and the planner.
Units: seconds (``*_s``), milliseconds (``*_ms``), USD per 1M tokens for prices.
Every defect raises :class:`~sincere.core.errors.ConfigError` naming the field, the
bad value and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sincere.core.errors import ConfigError
from sincere.core.request import Tier


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TierConfig(_Strict):
    """An SLA tier: latency targets (seconds; null = not checked) and a default priority."""

    ttft_s: float | None = Field(None, gt=0)
    ttlt_s: float | None = Field(None, gt=0)
    tbt_s: float | None = Field(None, gt=0)
    priority: int = 0


class RouterConfig(_Strict):
    """The router: a name from ``sincere.policy.routers`` and its parameters."""

    name: str = "least-outstanding"
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0


class BackendConfig(_Strict):
    """One serving instance behind the gateway."""

    name: str = Field(min_length=1)
    url: str = Field(pattern=r"^https?://")
    kind: Literal["openai", "ollama"] = "openai"
    models: dict[str, str] = Field(min_length=1)  # public model name -> backend's name
    price_in_per_1m_usd: float = Field(0.0, ge=0)
    price_out_per_1m_usd: float = Field(0.0, ge=0)
    quality: float = Field(1.0, ge=0)
    accelerator: str = "unknown"
    max_in_flight: int = Field(64, ge=1)
    connect_timeout_s: float = Field(2.0, gt=0)
    read_timeout_s: float = Field(60.0, gt=0)  # longest wait for the next byte
    max_num_seqs: int = Field(256, ge=1)
    metrics_path: str | None = "/metrics"  # scraped when scrape.enabled; null = never

    @model_validator(mode="before")
    @classmethod
    def _models_list(cls, data: Any) -> Any:
        # ``models: [a, b]`` is short for ``{a: a, b: b}``.
        if isinstance(data, dict) and isinstance(data.get("models"), list):
            data = {**data, "models": {str(m): str(m) for m in data["models"]}}
        return data


class QueueConfig(_Strict):
    """Gateway-side queue used while every instance of a model is full."""

    max_len: int = Field(1024, ge=0)  # per model; beyond it: 503
    timeout_s: float = Field(30.0, gt=0)  # longest wait in the queue; then 504
    head_priority: int | None = None  # priority <= this is inserted at the head


class BreakerConfig(_Strict):
    """Circuit breaker per instance."""

    failure_threshold: int = Field(5, ge=1)  # consecutive failures that open it
    cooldown_s: float = Field(5.0, ge=0)  # open time before a half-open probe


class ScrapeConfig(_Strict):
    """Scraping of engines' Prometheus ``/metrics`` (vLLM gauge names)."""

    enabled: bool = True
    interval_ms: float = Field(500.0, gt=0)
    max_age_s: float = Field(2.0, gt=0)  # older samples are ignored
    timeout_s: float = Field(1.0, gt=0)


class AdmissionConfig(_Strict):
    """Early rejection (429) of requests that cannot meet their deadline or budget."""

    enabled: bool = True
    shed_factor: float = Field(1.0, gt=0)  # reject when predicted > factor x time left
    priority_bands: list[tuple[float, int]] = Field(default_factory=list)


class LimitsConfig(_Strict):
    """Bounds on client input."""

    max_body_bytes: int = Field(1 << 20, ge=1024)
    max_tokens: int = Field(32768, ge=1)  # largest max_tokens accepted
    default_max_tokens: int = Field(256, ge=1)  # assumed when a request sets none


class PlanningConfig(_Strict):
    """The controller's planner (Inferno) over observed load."""

    problem_dir: str | None = None  # Inferno files: accelerators, models, service classes
    window_s: float = Field(60.0, gt=0)  # observed load is averaged over this window
    solver: Literal["greedy", "milp"] = "greedy"
    min_replicas: int = Field(1, ge=0)  # per model, whatever the plan says
    emulator: dict[str, Any] = Field(default_factory=dict)  # template for emulated instances


class GatewayConfig(_Strict):
    """The whole gateway."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    router: RouterConfig = RouterConfig()
    backends: list[BackendConfig] = Field(default_factory=list)
    tiers: dict[str, TierConfig] = Field(default_factory=lambda: {"default": TierConfig()})
    default_tier: str = "default"
    queue: QueueConfig = QueueConfig()
    breaker: BreakerConfig = BreakerConfig()
    scrape: ScrapeConfig = ScrapeConfig()
    admission: AdmissionConfig = AdmissionConfig()
    limits: LimitsConfig = LimitsConfig()
    planning: PlanningConfig = PlanningConfig()
    admin: bool = True  # serve the controller API under /admin

    @model_validator(mode="after")
    def _cross_check(self) -> GatewayConfig:
        if self.default_tier not in self.tiers:
            raise ValueError(
                f"default_tier {self.default_tier!r} is not a tier; "
                f"allowed: {', '.join(sorted(self.tiers))}"
            )
        names = [b.name for b in self.backends]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"backend names must be unique; repeated: {', '.join(dupes)}")
        return self

    def tier_objects(self) -> dict[str, Tier]:
        """The tiers as core :class:`Tier` objects, by name."""
        return {
            name: Tier(name, t.ttft_s, t.ttlt_s, t.tbt_s, t.priority)
            for name, t in self.tiers.items()
        }


def parse_config(raw: object, where: str = "config") -> GatewayConfig:
    """Validate a mapping into a :class:`GatewayConfig`; errors name field and value."""
    if not isinstance(raw, dict):
        raise ConfigError("expected a mapping at the top level", where=where, value=raw)
    try:
        return GatewayConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        value = err.get("input")
        raise ConfigError(
            f"{field}: {err['msg']}",
            where=where,
            value=value if not isinstance(value, dict) else None,
        ) from None


def load_config(path: str | Path) -> GatewayConfig:
    """Read a YAML (or JSON) gateway config file."""
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise ConfigError("config file not found", where=p) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", where=p) from None
    return parse_config(raw, str(p))
