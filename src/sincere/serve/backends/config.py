"""One serving instance behind the gateway, as the operator (or the controller) declares it.

Where it is (``url``), which API it speaks (``kind``), which public model names it
serves and under which names upstream (``models``), what it charges (USD per 1M
tokens) and how good it is (``quality``, relative), how many requests the gateway may
send it at once (``max_in_flight``), its batch limit (``max_num_seqs``), timeouts
(``read_timeout_s`` between bytes; a non-streamed answer, which comes whole, may take
``read_timeout_s + read_timeout_per_token_s * max_tokens``), how long an idle
connection is kept (``idle_keepalive_s``, below the upstream's own keep-alive),
where its load is read (``load_path``: sincere's JSON engine load; else
``metrics_path``: vLLM's Prometheus gauges), and, when known, the deployment behind it
(``deployment``: a :class:`~sincere.engine.spec.DeploymentSpec`, whose engine's
``max_num_seqs`` then wins), from which routers get its step-time model, and its
``role`` in prefill/decode disaggregation (``prefill``, ``decode`` or ``both``; see
:mod:`sincere.serve.gateway.pd_relay`), and its context window (``max_model_len``; else
the deployment's, see :mod:`sincere.serve.gateway.model_limits`). Units: seconds
(``*_s``), USD per 1M tokens for prices.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sincere.core.config import MAX_SECONDS
from sincere.engine.spec import DeploymentSpec
from sincere.policy.pd import Role


class BackendConfig(BaseModel):
    """One serving instance behind the gateway."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str = Field(min_length=1, max_length=128)
    url: str = Field(pattern=r"^https?://", max_length=2048)
    kind: Literal["openai", "ollama"] = "openai"
    models: dict[str, str] = Field(min_length=1, max_length=64)  # public name -> backend's
    price_in_per_1m_usd: float = Field(0.0, ge=0, le=1e6)
    price_out_per_1m_usd: float = Field(0.0, ge=0, le=1e6)
    quality: float = Field(1.0, ge=0, le=1e6)
    accelerator: str = Field("unknown", max_length=128)
    max_in_flight: int = Field(64, ge=1, le=1 << 20)
    connect_timeout_s: float = Field(2.0, gt=0, le=MAX_SECONDS)
    read_timeout_s: float = Field(60.0, gt=0, le=MAX_SECONDS)  # longest wait for the next byte
    # a whole (non-streamed) answer comes at once: its wait grows by this per token asked for
    read_timeout_per_token_s: float = Field(0.05, ge=0, le=60.0)
    # an idle pooled connection is dropped after this; keep it below the upstream's own
    # keep-alive (vLLM and uvicorn close at 5 s) so a request never reuses one it closed
    idle_keepalive_s: float = Field(4.0, gt=0, le=MAX_SECONDS)
    max_num_seqs: int = Field(256, ge=1, le=65_536)
    metrics_path: str | None = Field("/metrics", max_length=256)  # scraped; null = never
    # sincere's JSON engine load (``/sincere/load`` on an emulator), read instead of metrics
    load_path: str | None = Field(None, max_length=256)
    # the deployment behind it, when known: gives routers its step-time model and limits
    deployment: DeploymentSpec | None = None
    # prefill/decode disaggregation: prefill, decode, or both (serves whole requests)
    role: Role = "both"
    # its context window (prompt + answer), tokens, as vLLM's --max-model-len; None: the
    # deployment's, else the catalog's for its model, else unknown (the engine checks)
    max_model_len: int | None = Field(None, ge=2, le=1 << 24)

    @field_validator("name")
    @classmethod
    def _printable(cls, value: str) -> str:
        # the name goes into a response header and metric labels
        if not value.isprintable():
            raise ValueError("must be printable text (no control characters)")
        return value

    @model_validator(mode="before")
    @classmethod
    def _models_list(cls, data: Any) -> Any:
        # ``models: [a, b]`` is short for ``{a: a, b: b}``.
        if isinstance(data, dict) and isinstance(data.get("models"), list):
            data = {**data, "models": {str(m): str(m) for m in data["models"]}}
        return data
