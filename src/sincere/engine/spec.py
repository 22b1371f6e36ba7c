"""What one serving instance is: a deployment spec, validated once at the config edge.

A :class:`DeploymentSpec` names the model(s), the accelerator, the weight and KV-cache
precisions, the tensor- and pipeline-parallel degrees, confidential-computing mode, the
step-time model and the engine (an iteration-level :class:`ContinuousConfig` or
SINCERE's request-level engine). :func:`sincere.engine.build.build_engine` turns it into a
running engine. The simulator's instance config and the emulator's config extend it (the
first with a replica count, prices and quality, the second with where it listens), so both
build the very same engine from the same fields.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    model_validator,
)

from sincere.catalog.loader import default_catalog
from sincere.catalog.specs import Accelerator
from sincere.engine.defaults import fill_engine
from sincere.engine.kv_offload import KvOffloadConfig
from sincere.engine.request_level import RequestLevelConfig
from sincere.engine.speculation import SpeculationConfig
from sincere.perf.execution import ExecutionParams, FrontEnd, execution_params
from sincere.perf.factory import StepModelConfig

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class ContinuousConfig(BaseModel):
    """An iteration-level engine (vLLM / Sarathi-Serve) and its limits.

    The defaults below are the block's own; a :class:`DeploymentSpec` fills the preset,
    ``max_num_seqs``, ``max_num_batched_tokens`` and ``watermark`` it leaves out with today's
    engine's on its accelerator (:mod:`sincere.engine.defaults`).
    """

    model_config = _FROZEN
    kind: Literal["continuous"] = "continuous"
    scheduler: str = "fcfs"  # an engine scheduler name (see sincere.policy.schedulers)
    scheduler_params: dict[str, Any] = {}  # that scheduler's parameters
    max_num_seqs: int = Field(256, ge=1)  # sequences per iteration
    max_num_batched_tokens: int = Field(8192, ge=1)  # tokens per iteration
    block_size: int = Field(16, ge=1)  # tokens per KV block
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)  # share of device memory used
    # what that share is of: "total", the device's memory (vLLM, SGLang); "free", what the
    # weights, activations and runtime leave (TensorRT-LLM's free_gpu_memory_fraction);
    # None: the preset's (sincere.engine.defaults)
    memory_share_of: Literal["total", "free"] | None = None
    num_kv_blocks: int | None = Field(None, ge=1)  # override the memory plan's KV blocks
    watermark: float = Field(0.01, ge=0, lt=1)  # share of blocks admissions leave free
    # longest prompt + max_tokens, tokens; None: the model's context (catalog), as vLLM
    max_model_len: int | None = Field(None, ge=2)
    enable_prefix_caching: bool = True  # reuse KV blocks of shared prompt prefixes (vLLM V1)
    kv_offload: KvOffloadConfig | None = None  # CPU / disk tiers below the prefix cache; off
    # how iterations run (CUDA graphs, async scheduling, front end): a named preset of
    # sincere.perf.execution.PRESETS (vllm-v1, sglang, trtllm, eager); None: eager (2024)
    # here, and in a deployment today's engine for its step model (sincere.engine.defaults)
    preset: str | None = None
    execution: dict[str, Any] = {}  # the preset's fields overridden (docs/engine.md)
    # speculative decoding (docs/engine.md); None: one token per sequence per iteration
    speculation: SpeculationConfig | None = None
    # under attention DP (docs/engine.md): "symmetric", the instance is one rank of the
    # group and the others carry a batch like its own; "lockstep", the instance is the
    # whole group, its ranks each with its own batch, stepping together
    dp_ranks: Literal["symmetric", "lockstep"] = "symmetric"
    # the GPU's compute clock under load (engine/clock.py): "duty", it follows the
    # recent share of compute-bound work (a lone prompt runs at the burst clock);
    # "sustained", every iteration at the step model's sustained ratio
    gpu_clock: Literal["duty", "sustained"] = "duty"

    @model_validator(mode="after")
    def _known_execution(self) -> ContinuousConfig:
        self.execution_params()  # unknown preset or setting: a ConfigError now
        if self.dp_ranks == "lockstep" and self.kv_offload:
            raise ValueError(
                "engine.dp_ranks: lockstep steps continuous engines without KV tiers "
                "together; drop kv_offload, or simulate one rank (dp_ranks: symmetric)"
            )
        if self.kv_offload is not None and not self.enable_prefix_caching:
            raise ValueError(
                "engine.kv_offload keeps blocks the prefix cache evicts, but "
                "enable_prefix_caching is false; turn caching on or drop kv_offload"
            )
        return self

    def execution_params(self) -> ExecutionParams:
        """The execution model this engine runs its iterations with."""
        return execution_params(self.preset, self.execution)


def _known_accelerator(name: Any) -> Accelerator | None:
    """The catalog's accelerator of that name, if there is one (an unknown name is refused
    when the engine is built, with the names it could be)."""
    catalog = default_catalog()
    if isinstance(name, str) and catalog.has_accelerator(name):
        return catalog.accelerator(name)
    return None


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
"""The ``engine:`` block: ``kind: continuous`` (default) or ``kind: request-level``."""


class DeploymentSpec(BaseModel):
    """A model (or, for request-level engines, several) deployed on one accelerator group."""

    model_config = _FROZEN
    model: str | None = None  # catalog model (a name or alias, also what requests ask for)
    models: list[str] | None = None  # several models (request-level engines only)
    accelerator: str = "H100-SXM"  # catalog accelerator
    precision: str = "bf16"  # weight precision
    kv_precision: str = "fp16"  # KV-cache precision
    # linear-attention layers' recurrent state: fp32 (default) or 16 bits (bf16, fp16)
    state_precision: str = "fp32"
    tp: int = Field(1, ge=1, le=1024)  # tensor-parallel degree
    pp: int = Field(1, ge=1, le=1024)  # pipeline-parallel degree
    ep: int = Field(1, ge=1, le=1024)  # expert-parallel degree (MoE; divides tp x attention_dp)
    attention_dp: int = Field(1, ge=1, le=1024)  # attention ranks sharing one EP group (MoE)
    cc: bool = False  # confidential-computing mode (wraps the step-time model)
    step_model: StepModelConfig = StepModelConfig()  # where iteration times come from
    engine: EngineConfig = ContinuousConfig()  # the engine, its scheduler and limits
    # the step model's times multiplied by this (a time-compressed replay, e.g. 1/64:
    # sincere.engine.time_scale); 1: real time
    time_scale: float = Field(1.0, gt=0, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _engine_defaults(cls, data: Any) -> Any:
        """A continuous engine block's preset and limits, where it leaves them out, are
        today's engine's on this accelerator (:mod:`sincere.engine.defaults`)."""
        if not isinstance(data, dict):
            return data
        raw = data.get("engine", {})
        if isinstance(raw, ContinuousConfig):
            given: dict[str, Any] = {name: getattr(raw, name) for name in raw.model_fields_set}
        elif isinstance(raw, dict) and _engine_kind(raw) == "continuous":
            given = raw
        else:
            return data
        step = data.get("step_model", {})
        if isinstance(step, StepModelConfig):
            kind, step_cc = step.kind, step.cc
        elif isinstance(step, dict):
            kind, step_cc = str(step.get("kind", "roofline")), bool(step.get("cc", False))
        else:
            return data  # not a step-model block: its validation says so
        engine = fill_engine(
            given,
            _known_accelerator(data.get("accelerator", "H100-SXM")),
            kind,
            bool(data.get("cc", False)) or step_cc,
        )
        return {**data, "engine": engine}

    @model_validator(mode="after")
    def _one_model_field(self) -> DeploymentSpec:
        if (self.model is None) == (self.models is None):
            raise ValueError("give exactly one of model (one model) or models (a list)")
        if self.models is not None and not self.models:
            raise ValueError("models is empty; list at least one catalog model")
        if self.models is not None and len(self.models) > 1 and self.engine.kind != "request-level":
            raise ValueError("several models need engine.kind: request-level")
        return self

    @model_validator(mode="after")
    def _lockstep_group(self) -> DeploymentSpec:
        eng = self.engine
        lockstep = isinstance(eng, ContinuousConfig) and eng.dp_ranks == "lockstep"
        if lockstep and self.attention_dp == 1:
            raise ValueError(
                "engine.dp_ranks: lockstep needs attention_dp > 1 (the ranks stepping "
                "together); attention_dp is 1"
            )
        return self

    @property
    def lockstep_ranks(self) -> int:
        """Attention ranks the instance simulates together: ``attention_dp`` under
        ``engine.dp_ranks: lockstep`` (the instance is the whole group), else 1."""
        eng = self.engine
        if isinstance(eng, ContinuousConfig) and eng.dp_ranks == "lockstep":
            return self.attention_dp
        return 1

    def front_end(self) -> FrontEnd:
        """What a client sees beyond this deployment's engine (its preset's front end, on
        the deployment's clock: ``time_scale`` compresses it with the engine); none for a
        request-level engine."""
        if not isinstance(self.engine, ContinuousConfig):
            return FrontEnd()
        return self.engine.execution_params().frontend.scaled(self.time_scale)

    @property
    def model_names(self) -> list[str]:
        """The models this instance serves, as written."""
        return list(self.models) if self.models is not None else [str(self.model)]

    def deployment_fields(self) -> dict[str, Any]:
        """The fields of the spec itself (what another config extending it copies)."""
        return {name: getattr(self, name) for name in DeploymentSpec.model_fields}
