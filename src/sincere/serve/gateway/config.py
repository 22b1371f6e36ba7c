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

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sincere.core.config import MAX_PRIORITY, MAX_SECONDS, TierConfig, read_yaml, validate_config
from sincere.core.errors import ConfigError
from sincere.core.request import Tier
from sincere.policy.front_door_config import AdmissionConfig, RouterConfig
from sincere.policy.pd import PHASE_ROLES, missing_phase
from sincere.policy.pd_config import PDRoutingConfig
from sincere.policy.specs import PolicySpec, config_checks, router_specs
from sincere.serve.backends.config import BackendConfig
from sincere.serve.control.config import ControllerConfig, PlanningConfig
from sincere.serve.security.credentials import SecretRef

__all__ = [
    "BackendConfig",
    "GatewayConfig",
    "GatewayTierConfig",
    "ImagesConfig",
    "PrefixConfig",
    "SecurityConfig",
    "load_config",
    "parse_config",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class GatewayTierConfig(TierConfig):
    """A tier the gateway serves (its name is its key under ``tiers``).

    ``first_byte_timeout_s``: longest wait for an instance's first byte (a streamed
    answer's first event; a whole non-streamed answer) before the request is retried
    on another instance; null = the backend's ``read_timeout_s`` alone.
    """

    first_byte_timeout_s: float | None = Field(None, gt=0, le=MAX_SECONDS)


class GatewayAdmissionConfig(AdmissionConfig):
    """Admission as the simulator has it, on unless ``enabled: false``."""

    enabled: bool = True


class QueueConfig(_Strict):
    """Gateway-side queue used while every instance of a model is full.

    ``shed_early``: refuse (429) a request that would join a queue which cannot drain
    before its timeout at the observed service rate (slots / mean time a request holds
    one), instead of letting it wait for a 504.
    """

    max_len: int = Field(1024, ge=0, le=1 << 20)  # per model; beyond it: 503
    timeout_s: float = Field(30.0, gt=0, le=MAX_SECONDS)  # longest wait in the queue; then 504
    head_priority: int | None = Field(None, ge=-MAX_PRIORITY, le=MAX_PRIORITY)  # <=: at head
    shed_early: bool = True


class BreakerConfig(_Strict):
    """Circuit breaker per instance."""

    failure_threshold: int = Field(5, ge=1, le=1_000_000)  # consecutive failures that open it
    cooldown_s: float = Field(5.0, ge=0, le=MAX_SECONDS)  # open time before a half-open probe


class ScrapeConfig(_Strict):
    """Scraping of engines' Prometheus ``/metrics`` (vLLM gauge names)."""

    enabled: bool = True
    interval_ms: float = Field(500.0, ge=10, le=1000 * MAX_SECONDS)
    max_age_s: float = Field(2.0, gt=0, le=MAX_SECONDS)  # older samples are ignored
    timeout_s: float = Field(1.0, gt=0, le=MAX_SECONDS)


class LimitsConfig(_Strict):
    """Bounds on client input and on client connections (the gateway's edge).

    A request head must be complete ``header_timeout_s`` after its first byte and its
    body ``body_timeout_s`` after the head (else 408); a connection without a complete
    request head for ``idle_timeout_s`` (just opened, or since its last response) is
    closed; one client address may hold ``max_connections_per_client`` connections and
    the gateway ``max_connections`` in all (more are answered 429 / 503 and closed).
    With TLS a connection takes its slot before the handshake, which must be done
    ``tls_handshake_timeout_s`` after it connected (else it is closed).
    """

    # a body's bytes (413 above): 20 MiB holds a few base64 images inline (OpenAI's and
    # vLLM's clients send them so)
    max_body_bytes: int = Field(20 << 20, ge=1024, le=1 << 30)
    max_tokens: int = Field(32768, ge=1, le=1 << 24)  # largest max_tokens accepted
    default_max_tokens: int = Field(256, ge=1, le=1 << 24)  # assumed when a request sets none
    header_timeout_s: float = Field(10.0, gt=0, le=MAX_SECONDS)
    body_timeout_s: float = Field(30.0, gt=0, le=MAX_SECONDS)
    idle_timeout_s: float = Field(15.0, gt=0, le=MAX_SECONDS)
    tls_handshake_timeout_s: float = Field(10.0, gt=0, le=MAX_SECONDS)
    max_connections: int = Field(4096, ge=1, le=1 << 20)
    max_connections_per_client: int = Field(1024, ge=1, le=1 << 20)


class PrefixConfig(_Strict):
    """How the gateway describes a prompt's content to prefix-aware and session routers.

    Each request's prompt text (chat messages as the token count renders them) or token ids
    become block ids of ``block_tokens`` tokens with :func:`sincere.core.prefix.text_block_ids`
    (the same mapping as the emulator and the load generator); its session is the
    ``session_header`` header, else (with ``session_from_user``) the OpenAI ``user`` field.
    ``enabled: false`` leaves both unset (routers then see no content).
    """

    enabled: bool = True
    block_tokens: int = Field(16, ge=1, le=1 << 16)  # tokens per block id (vLLM's block: 16)
    session_header: str = Field("x-session-id", min_length=1, max_length=128)
    session_from_user: bool = True  # the body's "user" names the session when no header does


class ImagesConfig(_Strict):
    """How image parts of chat messages count (see :mod:`sincere.serve.content`).

    Each ``image_url`` part counts ``tokens_per_image`` prompt tokens (by public model name
    in ``tokens_by_model``, else the default: 576, a LLaVA-1.5-style encoder's 24 x 24
    patches) in budgets, limits and admission, and is hashed into the prompt's block ids.
    """

    tokens_per_image: int = Field(576, ge=1, le=1 << 20)
    tokens_by_model: dict[str, int] = Field(default_factory=dict, max_length=4096)


class SecurityConfig(_Strict):
    """Who may use the gateway, upstream credentials, TLS (see docs/gateway.md, "Deploying it").

    ``keys``: the key store (SQLite ``.db``/``.sqlite``/``.sqlite3`` or a JSON keys
    file) made with ``sincere keys``; with it every inference request needs a client
    key and every ``/admin`` call an admin key. ``audit``: the audit log (JSON lines;
    default ``KEYS.audit.jsonl``). ``insecure_no_auth``: allow binding a non-loopback
    host without ``keys``. ``flush_interval_s``: how often settled spend is written
    (off the request path); ``refresh_interval_s``: how often keys created or revoked
    by ``sincere keys`` are picked up. ``upstream_keys``: per backend name, where its
    API key comes from (``{env: NAME}`` or ``{file: PATH}``); sent upstream as
    ``Authorization: Bearer``, never echoed. ``tls_cert``/``tls_key``: serve HTTPS.
    ``confidential``: relay sealed (``application/sincere-sealed``) bodies unread;
    ``sealed_backends``: the backends that are seal proxies (``sincere seal serve``):
    sealed bodies go only there and plain ones only elsewhere (empty: a sealed body is
    refused with 415, as no plain engine may receive one). With keys, ``/metrics`` needs
    an admin or a metrics key (``sincere keys create --metrics``; ``metrics_access:
    aggregate``: anyone gets the gateway's figures without tenant labels), ``/health``
    shows instances to admin keys only, and
    ``/v1/models`` needs a client key and lists the models that key may use.
    """

    keys: Path | None = None
    audit: Path | None = None
    insecure_no_auth: bool = False
    flush_interval_s: float = Field(1.0, gt=0, le=MAX_SECONDS)
    refresh_interval_s: float = Field(5.0, gt=0, le=MAX_SECONDS)
    upstream_keys: dict[str, SecretRef] = Field(default_factory=dict, max_length=4096)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    confidential: bool = True
    sealed_backends: list[str] = Field(default_factory=list, max_length=4096)
    # with keys: who reads /metrics -- "admin" (an admin or a metrics key), "aggregate"
    # (anyone the gateway's own figures, without tenant labels; the per-tenant part to
    # admin and metrics keys)
    metrics_access: Literal["admin", "aggregate"] = "admin"
    # per-tenant series on /metrics for this many tenants (most spend first), the others
    # summed under tenant="(other)"; an admin key's ?tenants=all shows every tenant
    metrics_max_tenants: int = Field(50, ge=0, le=1 << 20)
    # the status of a spent budget: 429 insufficient_quota (as OpenAI) or 402 Payment Required
    budget_status: Literal[402, 429] = 429

    @model_validator(mode="after")
    def _tls_pair(self) -> SecurityConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both or neither")
        return self


class StateConfig(_Strict):
    """Where the key store's live accounting lives.

    ``redis``: a Redis (or Valkey) URL (``redis://HOST:PORT/DB``, ``rediss://`` with
    TLS, ``unix:///path``); every limit, reservation and spend is then one atomic
    script there, shared by all workers and gateways on it
    (:mod:`sincere.serve.security.shared`). None: in each process, with the key
    store's SQLite file as the durable record either way. ``prefix``: the Redis keys'
    prefix (gateways sharing budgets use the same one). ``lease_s``: a reservation not
    renewed this long (its gateway was killed) stops holding budget; ``renew_s``: how often
    a gateway renews its leases, checks that Redis still holds the books and retries
    settlements Redis missed (after Redis lost its books, keys wait ``3 * renew_s``).
    ``settle_within_s``: a request's settlement rides the gateway's next admission to Redis
    (one round trip per request), or goes on its own after at most this long.
    ``timeout_s``: a call to Redis not answered this long fails, and the request it was for
    is refused (503: the books fail closed); raise it for a distant or busy Redis.
    """

    redis: str | None = Field(None, pattern=r"^(rediss?|unix)://", max_length=2048)
    prefix: str = Field("sincere", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    lease_s: float = Field(30.0, gt=0, le=MAX_SECONDS)
    renew_s: float = Field(1.0, gt=0, le=MAX_SECONDS)
    settle_within_s: float = Field(0.05, ge=0, le=MAX_SECONDS)
    timeout_s: float = Field(1.0, gt=0, le=60.0)

    @model_validator(mode="after")
    def _renew_within_lease(self) -> StateConfig:
        if self.renew_s * 3 > self.lease_s:
            raise ValueError(
                f"state.renew_s ({self.renew_s}) must be at most a third of state.lease_s "
                f"({self.lease_s}): a live gateway's leases must not expire between renewals"
            )
        if self.settle_within_s > self.renew_s:
            raise ValueError(
                f"state.settle_within_s ({self.settle_within_s}) must be at most state.renew_s "
                f"({self.renew_s}): a deferred settlement must reach Redis before the next "
                "background round"
            )
        return self


class GatewayConfig(_Strict):
    """The whole gateway."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    router: RouterConfig = RouterConfig()
    backends: list[BackendConfig] = Field(default_factory=list)
    tiers: dict[str, GatewayTierConfig] = Field(
        default_factory=lambda: {"default": GatewayTierConfig(name="default")}
    )
    default_tier: str = "default"
    queue: QueueConfig = QueueConfig()
    breaker: BreakerConfig = BreakerConfig()
    scrape: ScrapeConfig = ScrapeConfig()
    admission: GatewayAdmissionConfig = GatewayAdmissionConfig()
    limits: LimitsConfig = LimitsConfig()
    prefix: PrefixConfig = PrefixConfig()
    images: ImagesConfig = ImagesConfig()
    # browser origins allowed to call the API (CORS, as vLLM's --allowed-origins); "*": any
    allowed_origins: list[str] = Field(default_factory=list, max_length=256)
    planning: PlanningConfig = PlanningConfig()
    controller: ControllerConfig = ControllerConfig()
    admin: bool = True  # serve the controller API under /admin (mounted by serve/app.py)
    security: SecurityConfig = SecurityConfig()
    state: StateConfig = StateConfig()
    # P/D routing (decider, router per phase) for models whose backends have roles;
    # None: the defaults when some backend has a prefill or decode role (pd_relay.py)
    disaggregation: PDRoutingConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _tier_names(cls, data: Any) -> Any:
        # a tier's name is its key; ``name`` may repeat it, never differ
        tiers = data.get("tiers") if isinstance(data, dict) else None
        if not isinstance(tiers, dict):
            return data
        named = {}
        for key, tier in tiers.items():
            if isinstance(tier, dict):
                if tier.get("name", key) != key:
                    raise ValueError(f"tiers.{key}.name must be {key!r} (its key) or left out")
                tier = {**tier, "name": key}
            named[key] = tier
        return {**data, "tiers": named}

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
        _check_roles(self.backends, self.disaggregation)
        for field in ("upstream_keys", "sealed_backends"):
            unknown = sorted(set(getattr(self.security, field)) - set(names))
            if unknown:
                raise ValueError(
                    f"security.{field} names no backend: {', '.join(unknown)}; "
                    f"allowed: {', '.join(sorted(names)) or '(no backends)'}"
                )
        return self

    def tier_objects(self) -> dict[str, Tier]:
        """The tiers as core :class:`Tier` objects, by name."""
        return {name: t.to_tier() for name, t in self.tiers.items()}


def _check_roles(backends: list[BackendConfig], pd: PDRoutingConfig | None) -> None:
    """A model with prefill backends has decode ones and the reverse (as the simulator
    asks); ``disaggregation`` only with some role set."""
    roles: dict[str, set[str]] = {}
    for b in backends:
        for model in b.models:
            roles.setdefault(model, set()).add(b.role)
    split = {m: r & PHASE_ROLES for m, r in roles.items()}
    for model, have in split.items():
        missing = missing_phase(have)
        if missing is not None:
            raise ValueError(
                f"model {model!r} has {have.pop()} backends but no {missing} backend; "
                "allowed: at least one of each role for a disaggregated model"
            )
    if pd is not None and not any(split.values()):
        raise ValueError(
            "disaggregation is set but no backend has role prefill or decode; "
            "allowed: backends[].role prefill / decode"
        )


def parse_config(raw: object, where: str | Path = "config") -> GatewayConfig:
    """Validate a mapping into a :class:`GatewayConfig`; every problem is one line of the error."""
    if not isinstance(raw, dict):
        raise ConfigError("expected a mapping at the top level", where=where, value=raw)
    return validate_config(GatewayConfig, raw, where, checks=config_checks(_policies))


def _policies(raw: object) -> list[PolicySpec]:
    """The policies a gateway config names: its router (and the router's predictors), and
    the routers of ``disaggregation`` when set (each phase's default when left out)."""
    data = raw if isinstance(raw, dict) else {}
    specs = router_specs(data.get("router"))
    pd = data.get("disaggregation")
    if isinstance(pd, dict):
        for key, default in (("prefill_router", "prefix-aware"), ("decode_router", None)):
            block = pd.get(key)
            if block is None and default is not None:
                block = {"name": default}
            specs += router_specs(block, f"disaggregation.{key}")
    return specs


def load_config(path: str | Path) -> GatewayConfig:
    """Read a YAML (or JSON) gateway config file."""
    return parse_config(read_yaml(path), Path(path))
