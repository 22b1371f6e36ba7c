"""One serving instance as routers see it: static facts plus its engine's load.

:class:`InstanceInfo` holds what does not change while an instance serves: what it
serves and on which hardware, its batch and in-flight limits, its prices and quality,
and its step-time model (when its deployment is known). An engine reports its load as
one :class:`~sincere.engine.base.EngineLoad` record. :func:`instance_view` joins the two
(plus the driver's own count of requests routed and not finished, and health) into the
:class:`~sincere.policy.router_base.InstanceView` a router reads -- the same function on
the simulator's path and on the gateway's, so both views mean the same.

Unknown is not zero: a live backend that cannot report a load field (no engine load
endpoint, a stale sample, vLLM's metrics carrying no token counts) leaves it ``None``
in its load record, and the view shows ``None``; routers fall back explicitly and say
so in their reasons. Static facts a live backend does not declare (precision, GPUs,
step model) are ``None`` too.
"""

from __future__ import annotations

from dataclasses import dataclass

from sincere.core.types import InstanceId, ModelName
from sincere.engine.base import DecodeProgress, EngineLoad
from sincere.engine.build import canonical_model
from sincere.engine.spec import ContinuousConfig, DeploymentSpec
from sincere.perf.base import Deployment, StepTimeModel
from sincere.policy.router_base import InstanceView

DEFAULT_MAX_NUM_SEQS = 256
"""Batch limit assumed for engines whose config sets none (vLLM's default)."""


@dataclass(frozen=True, slots=True)
class InstanceInfo:
    """Static facts about one serving instance (what routers and the cost summary read)."""

    id: InstanceId
    models: tuple[ModelName, ...]  # the names it serves; its view shows the requested one
    accelerator: str  # catalog name ("unknown" when not declared)
    precision: str | None = None  # weight precision; None: not declared
    num_gpus: int | None = None  # accelerators one replica occupies; None: not declared
    gpu_price_per_hour_usd: float | None = None  # of one accelerator; None: not declared
    max_num_seqs: int = DEFAULT_MAX_NUM_SEQS  # the engine's batch limit
    max_in_flight: int | None = None  # requests a driver may send at once; None: no cap
    price_in_per_token_usd: float = 0.0  # charged per prompt token
    price_out_per_token_usd: float = 0.0  # charged per output token
    quality: float = 1.0  # relative quality of model + precision (1.0 = reference)
    step_model: StepTimeModel | None = None  # its timing, when the deployment is known

    @property
    def cost_per_hour_usd(self) -> float | None:
        """What one replica costs per hour (``None`` when the hardware is not declared)."""
        if self.num_gpus is None or self.gpu_price_per_hour_usd is None:
            return None
        return self.num_gpus * self.gpu_price_per_hour_usd


def spec_max_num_seqs(spec: DeploymentSpec) -> int:
    """The batch limit of an instance deployed as ``spec`` (its continuous engine's
    ``max_num_seqs``, every rank's of a lockstep group; :data:`DEFAULT_MAX_NUM_SEQS` for
    an engine that sets none)."""
    engine = spec.engine
    if not isinstance(engine, ContinuousConfig):
        return DEFAULT_MAX_NUM_SEQS
    return engine.max_num_seqs * spec.lockstep_ranks  # a lockstep group: every rank's


def spec_info(
    spec: DeploymentSpec,
    ident: InstanceId,
    deployment: Deployment,
    step_model: StepTimeModel,
    *,
    price_in_per_mtok_usd: float = 0.0,
    price_out_per_mtok_usd: float = 0.0,
    quality: float = 1.0,
    max_in_flight: int | None = None,
) -> InstanceInfo:
    """The facts of an instance deployed as ``spec`` (prices per 1M tokens, in USD)."""
    return InstanceInfo(
        id=ident,
        models=tuple(canonical_model(m) for m in spec.model_names),
        accelerator=deployment.accelerator.name,
        precision=spec.precision,
        num_gpus=deployment.num_gpus * spec.lockstep_ranks,
        gpu_price_per_hour_usd=deployment.accelerator.price_per_hour_usd,
        max_num_seqs=spec_max_num_seqs(spec),
        max_in_flight=max_in_flight,
        price_in_per_token_usd=price_in_per_mtok_usd / 1e6,
        price_out_per_token_usd=price_out_per_mtok_usd / 1e6,
        quality=quality,
        step_model=step_model,
    )


UNKNOWN_LOAD = EngineLoad(None, None, None, None, None, None, None)
"""The load of an instance whose engine reported nothing (every field unknown)."""


def instance_view(
    info: InstanceInfo,
    load: EngineLoad | None,
    num_outstanding: int,
    *,
    healthy: bool = True,
    model: ModelName | None = None,
) -> InstanceView:
    """The router's view of ``info``'s instance under ``load`` (``None``: load unknown).

    ``num_outstanding`` is the driver's count of requests routed there and not finished;
    ``model`` the name the view shows (default the first model the instance serves).
    """
    shown = info.models[0] if model is None else model
    if load is None:
        load = UNKNOWN_LOAD
    return InstanceView(  # positional, in the field order: this runs at every arrival
        info.id, shown, info.accelerator, info.precision,
        load.num_running, load.num_waiting, num_outstanding, load.waiting_prefill_tokens,
        load.running_remaining_tokens, load.running_ctx_tokens, load.kv_usage,
        info.max_num_seqs, info.price_in_per_token_usd, info.price_out_per_token_usd,
        info.quality, healthy, info.step_model, info.max_in_flight,
    )  # fmt: skip


def advanced_view(view: InstanceView, progress: DecodeProgress) -> InstanceView:
    """``view`` moved on by decode iterations ended since its engine's last event."""
    tokens = progress.steps * progress.num_decode
    remaining = view.running_remaining_tokens
    ctx = view.running_ctx_tokens
    return InstanceView(
        view.id, view.model, view.accelerator, view.precision,
        view.num_running, view.num_waiting, view.num_outstanding, view.waiting_prefill_tokens,
        None if remaining is None else remaining - tokens, None if ctx is None else ctx + tokens,
        progress.kv_usage, view.max_num_seqs, view.price_in_per_token_usd,
        view.price_out_per_token_usd, view.quality, view.healthy, view.step_model,
        view.max_in_flight,
    )  # fmt: skip
