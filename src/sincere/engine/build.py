"""From a :class:`~sincere.engine.spec.DeploymentSpec` to a running engine.

Each model gets its catalog architecture and accelerator, a
:class:`~sincere.perf.base.Deployment` (TP and PP checked against the architecture's
heads and layers, as vLLM requires), a step-time model (the CC wrapper when ``cc``), and
the instance an engine: a :class:`~sincere.engine.continuous.ContinuousEngine` with its
scheduler, sized by the memory plan (vLLM's KV-cache accounting) unless the config gives
``num_kv_blocks``, or SINCERE's request-level engine. The simulator and the emulator both
build their engines here, so a simulated and an emulated instance of the same spec are
the same engine. Every problem is a :class:`~sincere.core.errors.ConfigError` naming
``where`` in the config.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sincere.catalog import Accelerator, ModelArch, get_accelerator, get_model
from sincere.catalog.specs import PRECISION_BYTES
from sincere.core.errors import ConfigError
from sincere.core.records import RecordArrays
from sincere.core.request import RequestArrays
from sincere.engine.base import Engine, StreamingEngine
from sincere.engine.clock import ClockLevels, EngineClock
from sincere.engine.continuous import ContinuousEngine
from sincere.engine.draft_memory import draft_memory
from sincere.engine.lockstep import lockstep_group
from sincere.engine.request_level import RequestLevelConfig
from sincere.engine.spec import ContinuousConfig, DeploymentSpec
from sincere.engine.speculation import Speculator, build_speculator
from sincere.engine.state import EngineLimits
from sincere.engine.time_scale import TimeScaled
from sincere.perf.base import Deployment, StepTimeModel
from sincere.perf.execution import with_execution
from sincere.perf.factory import StepModelConfig
from sincere.perf.memory import plan_memory
from sincere.perf.roofline import Roofline
from sincere.policy.schedulers import make_scheduler
from sincere.policy.schedulers.base import IterationScheduler


def canonical_model(name: str) -> str:
    """The catalog's name for ``name`` (itself when the catalog does not know it)."""
    try:
        return get_model(name).name
    except ConfigError:
        return name


def valid_tp(arch: ModelArch, max_tp: int = 64) -> list[int]:
    """TP degrees that split ``arch``'s heads evenly (vLLM's rule, up to ``max_tp``).

    Query heads must divide by TP; KV heads must too, or, when there are fewer KV heads
    than GPUs, TP must be a multiple of them (each KV head is then replicated).
    """
    kv = arch.num_kv_heads
    return [
        tp
        for tp in range(1, max_tp + 1)
        if arch.num_heads % tp == 0 and (kv % tp == 0 if kv >= tp else tp % kv == 0)
    ]


def check_parallelism(arch: ModelArch, tp: int, pp: int) -> None:
    """Raise :class:`ConfigError` when ``tp`` / ``pp`` cannot split ``arch`` evenly."""
    if tp not in valid_tp(arch, max(tp, 64)):
        raise ConfigError(
            f"tp={tp} does not split {arch.name}'s {arch.num_heads} attention heads "
            f"({arch.num_kv_heads} KV heads) evenly",
            value=tp,
            allowed=", ".join(map(str, valid_tp(arch))),
        )
    if pp > arch.num_layers:
        raise ConfigError(
            f"pp={pp} is more pipeline stages than {arch.name}'s {arch.num_layers} layers",
            value=pp,
            allowed=f"1..{arch.num_layers}",
        )


def deployment_of(spec: DeploymentSpec, model: str, where: str) -> Deployment:
    """The deployment of one of ``spec``'s models (its TP and PP checked against its shape)."""
    try:
        arch = get_model(model)
        check_parallelism(arch, spec.tp, spec.pp)
        return Deployment(
            arch, get_accelerator(spec.accelerator), spec.precision,
            spec.kv_precision, spec.tp, spec.pp, spec.ep, spec.attention_dp,
            spec.state_precision,
        )  # fmt: skip
    except ConfigError as exc:
        raise ConfigError(str(exc), where=where) from None


def step_model_of(spec: DeploymentSpec, deployment: Deployment, where: str) -> StepTimeModel:
    """``spec``'s step-time model for ``deployment`` (CC mode when ``spec.cc``)."""
    cfg = spec.step_model
    if spec.cc and not cfg.cc:
        cfg = cfg.model_copy(update={"cc": True})
    execution = None
    if isinstance(spec.engine, ContinuousConfig):
        try:
            execution = spec.engine.execution_params()
        except ConfigError as exc:
            raise ConfigError(str(exc), where=f"{where}.engine.preset") from None
        cfg = cfg.for_engine(execution)
    try:
        step = cfg.build(deployment)
    except ConfigError as exc:
        raise ConfigError(str(exc), where=f"{where}.step_model") from None
    if not isinstance(spec.engine, ContinuousConfig) or execution is None:
        _check_unscaled(spec, where)
        return step
    try:
        step = with_execution(step, execution, spec.engine.max_num_seqs)
    except ConfigError as exc:
        raise ConfigError(str(exc), where=f"{where}.engine.preset") from None
    if spec.time_scale == 1.0:
        return step
    _check_unscaled(spec, where)
    return TimeScaled(step, spec.time_scale)


def _check_unscaled(spec: DeploymentSpec, where: str) -> None:
    """Refuse a ``time_scale`` with the times it does not scale (engine/time_scale.py)."""
    if spec.time_scale == 1.0:
        return
    eng = spec.engine
    unscaled = ["a request-level engine (its own swap and batch costs)"]
    if isinstance(eng, ContinuousConfig):
        unscaled = [
            what for what, present in (
                ("kv_offload", eng.kv_offload is not None),
                ("speculation", eng.speculation is not None),
            ) if present
        ]  # fmt: skip
    if unscaled:
        raise ConfigError(
            f"time_scale scales the engine and its front end only; {unscaled[0]} keeps its "
            "own times",
            where=f"{where}.time_scale", value=spec.time_scale,
            allowed="1 (or no kv_offload or speculation, a continuous engine)",
        )  # fmt: skip


def _fit_options(deployment: Deployment) -> str:
    """What would make room: a bigger device, more GPUs, fewer weight bytes."""
    model = deployment.model
    narrower = [
        p for p in model.precisions if PRECISION_BYTES[p] < PRECISION_BYTES[deployment.precision]
    ]
    lower = f"lower precision ({', '.join(narrower)})" if narrower else "lower precision"
    more = "more tp (ep spreads the experts over them)" if model.is_moe else "more tp"
    return f"a larger accelerator, {more}, {lower}, or num_kv_blocks"


def limits_of(eng: ContinuousConfig, deployment: Deployment, where: str) -> EngineLimits:
    """Engine limits; KV blocks from the memory plan unless given (a speculating engine's
    drafter takes its share: :mod:`.draft_memory`)."""
    blocks = eng.num_kv_blocks
    if blocks is None:
        spec = eng.speculation  # a drafter shares the GPUs' memory and KV blocks
        try:
            draft = None if spec is None else draft_memory(spec, deployment, eng.max_num_seqs)
        except ConfigError as exc:
            raise ConfigError(str(exc), where=f"{where}.engine.speculation") from None
        plan = plan_memory(
            deployment,
            gpu_memory_utilization=eng.gpu_memory_utilization,
            share_of=eng.memory_share_of or "total",
            block_size=eng.block_size,
            max_num_seqs=eng.max_num_seqs,
            max_num_batched_tokens=eng.max_num_batched_tokens,
            draft_weight_bytes=0.0 if draft is None else draft.weight_bytes,
            draft_kv_bytes_per_token=0.0 if draft is None else draft.kv_bytes_per_token,
        )
        if not plan.fits or plan.num_kv_blocks < 1:
            raise ConfigError(
                f"{deployment.model.name} does not fit on {deployment.accelerator.name} "
                f"(tp={deployment.tp}, {deployment.precision}): no room for the KV cache",
                where=where,
                allowed=_fit_options(deployment),
            )
        blocks = plan.num_kv_blocks
    return EngineLimits(
        num_kv_blocks=blocks,
        max_num_seqs=eng.max_num_seqs,
        max_num_batched_tokens=eng.max_num_batched_tokens,
        block_size=eng.block_size,
        watermark=eng.watermark,
        # vLLM's default: the model's own context length
        max_model_len=eng.max_model_len or deployment.model.max_context,
        enable_prefix_caching=eng.enable_prefix_caching,
        kv_tiers=None
        if eng.kv_offload is None
        else eng.kv_offload.limits(deployment, eng.block_size, f"{where}.engine.kv_offload"),
    )


def speculator_of(
    spec: DeploymentSpec,
    deployment: Deployment,
    step: StepTimeModel,
    rng: np.random.Generator | None,
    where: str,
) -> Speculator | None:
    """The engine's speculator when ``engine.speculation`` is set (None otherwise): priced
    on ``step``; a draft model runs on the target's GPUs, in its precision and TP."""
    eng = spec.engine
    if not isinstance(eng, ContinuousConfig) or eng.speculation is None:
        return None
    cfg = eng.speculation
    try:
        draft = None
        if cfg.draft_model is not None:
            arch = get_model(cfg.draft_model)
            check_parallelism(arch, deployment.tp, 1)
            dep = Deployment(arch, deployment.accelerator, deployment.precision,
                             deployment.kv_precision, deployment.tp)  # fmt: skip
            execution = eng.execution_params()
            roofline = StepModelConfig(kind="roofline").for_engine(execution).build(dep)
            draft = with_execution(roofline, execution, eng.max_num_seqs)
        return build_speculator(cfg, step, deployment, draft, rng)
    except ConfigError as exc:
        raise ConfigError(str(exc), where=f"{where}.engine.speculation") from None


def scheduler_of(eng: ContinuousConfig, step: StepTimeModel, where: str) -> IterationScheduler:
    """A fresh scheduler of ``eng`` (predictive schedulers read ``step``)."""
    try:
        return make_scheduler(eng.scheduler, eng.scheduler_params, predictor=step)
    except ConfigError as exc:
        raise ConfigError(str(exc), where=f"{where}.engine") from None


@dataclass(frozen=True, slots=True)
class BuiltEngine:
    """An engine and what it was built from (its first model's deployment and timing)."""

    engine: Engine
    deployment: Deployment  # of the spec's first model
    step_model: StepTimeModel  # of the spec's first model
    step_models: dict[str, StepTimeModel]  # of every model it serves, by name
    # its first model's step models at each GPU clock level (None: one clock)
    clock_levels: ClockLevels | None = None


def build_engine(
    spec: DeploymentSpec,
    ident: str,
    requests: RequestArrays,
    records: RecordArrays,
    ix: int,
    *,
    max_tokens: npt.NDArray[np.int64] | None = None,
    context_caps: npt.NDArray[np.int64] | None = None,
    rng: np.random.Generator | None = None,
    where: str = "instance",
    step_models: dict[str, StepTimeModel] | None = None,
    clock_levels: ClockLevels | None = None,
) -> BuiltEngine:
    """The engine ``ident`` of ``spec``, at position ``ix`` of the run's records.

    ``max_tokens`` overrides the requests' caps (a router's budget caps; continuous
    engines), ``context_caps`` the ``max_tokens`` checked against the context length
    when they differ (a prefill instance's), ``rng`` drives request-level engines' random
    swap times and a speculating continuous engine's acceptance draws. ``step_models``:
    the step-time models by model name, when another replica of ``spec`` built them
    already (a step model is a pure function of the batch, so replicas may share one:
    one copy of its memo tables instead of one per replica); the engine's are in
    :attr:`BuiltEngine.step_models`. ``clock_levels``: likewise, the step models at each
    GPU clock level (:attr:`BuiltEngine.clock_levels`; engine/clock.py).
    """
    deps = {m: deployment_of(spec, m, where) for m in spec.model_names}
    steps = step_models or {m: step_model_of(spec, d, where) for m, d in deps.items()}
    first = spec.model_names[0]
    if clock_levels is None:
        clock_levels = clock_levels_of(spec, deps[first], steps[first], where)
    engine: Engine
    if isinstance(spec.engine, RequestLevelConfig):
        served = {canonical_model(m): s for m, s in steps.items()}
        engine = spec.engine.build(ident, requests, records, ix, served, rng=rng)
    else:
        limits = limits_of(spec.engine, deps[first], where)
        ranks = []
        for _ in range(spec.lockstep_ranks):
            speculator = speculator_of(spec, deps[first], steps[first], rng, where)
            clock, step = None, steps[first]  # a speculating engine: its own model
            if clock_levels is not None and speculator is None:
                clock = EngineClock(clock_levels)
                step = clock.model(0)  # decode runs at the burst clock (engine/clock.py)
            ranks.append(ContinuousEngine(
                ident, requests, records, ix, step,
                scheduler_of(spec.engine, steps[first], where), limits, max_tokens=max_tokens,
                context_caps=context_caps, speculator=speculator, clock=clock,
            ))  # fmt: skip
        engine = ranks[0] if len(ranks) == 1 else lockstep_group(ident, ranks, where)
    return BuiltEngine(engine, deps[first], steps[first], steps, clock_levels)


def clock_levels_of(
    spec: DeploymentSpec, deployment: Deployment, step_model: StepTimeModel, where: str
) -> ClockLevels | None:
    """The step models of ``spec``'s first model at each GPU clock level (engine/clock.py),
    or None when the clock is held: ``gpu_clock: sustained``, a request-level engine, a
    step model other than the roofline, or a GPU that keeps its whole rate under load
    (a sustained ratio of 1, every GPU but those measured)."""
    eng = spec.engine
    if not isinstance(eng, ContinuousConfig) or eng.gpu_clock != "duty":
        return None
    roofline = step_model
    while not isinstance(roofline, Roofline):
        inner = getattr(roofline, "inner", None)
        if inner is None:
            return None
        roofline = inner
    ratio = roofline.params.sustained_compute_ratio
    if not 0.0 < ratio < 1.0:
        return None
    cfg = spec.step_model

    def build(keep: float) -> StepTimeModel:
        params = {**cfg.params, "sustained_compute_ratio": keep}
        at_keep = spec.model_copy(update={"step_model": cfg.model_copy(update={"params": params})})
        return step_model_of(at_keep, deployment, where)

    return ClockLevels(step_model, ratio, ridge_tokens(deployment.accelerator), build)


def ridge_tokens(accelerator: Accelerator) -> float:
    """Tokens an iteration needs for a 16-bit GEMM to turn compute-bound: the dense bf16
    peak over the HBM bandwidth (a GPU clock's busy share: engine/clock.py)."""
    return accelerator.peak_tflops("bf16") * 1e12 / (accelerator.hbm_bandwidth_gbps * 1e9)


def build_streaming_engine(
    spec: DeploymentSpec, ident: str, requests: RequestArrays, records: RecordArrays, where: str
) -> StreamingEngine:
    """An engine a live driver can stream from (iteration-level engines only)."""
    if not isinstance(spec.engine, ContinuousConfig):
        raise ConfigError(
            "only continuous engines can run live",
            where=where,
            value=spec.engine.kind,
            allowed="engine.kind: continuous",
        )
    if spec.lockstep_ranks > 1:
        raise ConfigError(
            "ranks stepping together (engine.dp_ranks: lockstep) run in the simulator only; "
            "an emulated engine is one rank",
            where=f"{where}.engine.dp_ranks",
            value="lockstep",
            allowed="symmetric",
        )
    engine = build_engine(spec, ident, requests, records, 0, where=where).engine
    assert isinstance(engine, ContinuousEngine)
    cache = engine.state.cache
    if cache is not None and cache.tiers is not None:  # the driver counts prompt sources
        cache.tiers.track_first_loads()
    return engine
