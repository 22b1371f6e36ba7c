"""From a validated :class:`~sincere.sim.config.SimulationConfig` to a runnable cluster.

Each instance gets its catalog model and accelerator, a
:class:`~sincere.perf.base.Deployment`, a step-time model (the CC wrapper when
``cc``), and an engine: a :class:`~sincere.engine.continuous.ContinuousEngine`
sized by the memory plan (vLLM's KV-cache accounting) or SINCERE's
request-level engine. Random streams: the workload uses ``seed``; the router and
each request-level engine get independent child streams of it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sincere.catalog import ModelArch, get_accelerator, get_model
from sincere.core.errors import ConfigError
from sincere.core.records import RecordArrays
from sincere.core.request import RequestArrays
from sincere.engine.base import Engine
from sincere.engine.continuous import ContinuousEngine, EngineLimits
from sincere.engine.request_level import RequestLevelConfig
from sincere.perf.base import Deployment, StepTimeModel
from sincere.perf.memory import plan_memory
from sincere.policy.router_base import InstanceView, Router
from sincere.policy.routers import make_router
from sincere.policy.schedulers import make_scheduler
from sincere.sim.cluster import Cluster, InstanceInfo
from sincere.sim.config import ContinuousConfig, InstanceConfig, SimulationConfig


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream,)))


def canonical_model(name: str) -> str:
    """The catalog's name for ``name`` (itself when the catalog does not know it)."""
    try:
        return get_model(name).name
    except ConfigError:
        return name


def deployment_of(inst: InstanceConfig, model: str, where: str) -> Deployment:
    """The deployment of one of ``inst``'s models (its TP and PP checked against its shape)."""
    try:
        arch = get_model(model)
        check_parallelism(arch, inst.tp, inst.pp)
        return Deployment(
            arch, get_accelerator(inst.accelerator), inst.precision,
            inst.kv_precision, inst.tp, inst.pp,
        )  # fmt: skip
    except ConfigError as exc:
        raise ConfigError(str(exc), where=where) from None


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


def step_model_of(inst: InstanceConfig, deployment: Deployment, where: str) -> StepTimeModel:
    """``inst``'s step-time model for ``deployment`` (CC mode when ``inst.cc``)."""
    cfg = inst.step_model
    if inst.cc and not cfg.cc:
        cfg = cfg.model_copy(update={"cc": True})
    try:
        return cfg.build(deployment)
    except ConfigError as exc:
        raise ConfigError(str(exc), where=f"{where}.step_model") from None


def limits_of(eng: ContinuousConfig, deployment: Deployment, where: str) -> EngineLimits:
    """Engine limits; KV blocks from the memory plan unless given."""
    blocks = eng.num_kv_blocks
    if blocks is None:
        plan = plan_memory(
            deployment,
            gpu_memory_utilization=eng.gpu_memory_utilization,
            block_size=eng.block_size,
            max_num_seqs=eng.max_num_seqs,
            max_num_batched_tokens=eng.max_num_batched_tokens,
        )
        if not plan.fits or plan.num_kv_blocks < 1:
            raise ConfigError(
                f"{deployment.model.name} does not fit on {deployment.accelerator.name} "
                f"(tp={deployment.tp}, {deployment.precision}): no room for the KV cache",
                where=where,
                allowed="a larger accelerator, more tp, lower precision, or num_kv_blocks",
            )
        blocks = plan.num_kv_blocks
    return EngineLimits(
        num_kv_blocks=blocks,
        max_num_seqs=eng.max_num_seqs,
        max_num_batched_tokens=eng.max_num_batched_tokens,
        block_size=eng.block_size,
        watermark=eng.watermark,
        max_model_len=eng.max_model_len,
    )


class _Builder:
    """Builds engines and instance facts for one run."""

    def __init__(self, config: SimulationConfig, requests: RequestArrays) -> None:
        self.config = config
        self.requests = requests
        self.max_tokens = requests.max_tokens.copy()
        self.engines: list[Engine] = []
        self.infos: list[InstanceInfo] = []
        self.ids: list[str] = []
        for pos, inst in enumerate(config.instances):
            prefix = inst.name or f"{inst.model_names[0]}-{pos}"
            for k in range(inst.count):
                self.ids.append(prefix if inst.count == 1 else f"{prefix}-{k}")
        if len(set(self.ids)) != len(self.ids):
            raise ConfigError("instance names must be unique", where="instances", value=self.ids)
        self.records = RecordArrays.empty(len(requests), self.ids)

    def build(self) -> Cluster:
        for pos, inst in enumerate(self.config.instances):
            for _ in range(inst.count):
                self._add(inst, f"instances[{pos}]")
        router = self._router()
        return Cluster(
            self.requests, self.records, self.engines, self.infos, router, self.max_tokens
        )

    def _add(self, inst: InstanceConfig, where: str) -> None:
        ix = len(self.engines)
        deps = {m: deployment_of(inst, m, where) for m in inst.model_names}
        steps = {m: step_model_of(inst, d, where) for m, d in deps.items()}
        first = inst.model_names[0]
        engine: Engine
        if isinstance(inst.engine, RequestLevelConfig):
            served = {canonical_model(m): s for m, s in steps.items()}
            engine = inst.engine.build(
                self.ids[ix], self.requests, self.records, ix, served,
                rng=_rng(self.config.seed, 100 + ix),
            )  # fmt: skip
        else:
            engine = self._continuous(inst.engine, ix, deps[first], steps[first], where)
        self.engines.append(engine)
        self.infos.append(self._info(inst, ix, deps[first], steps[first]))

    def _continuous(
        self,
        eng: ContinuousConfig,
        ix: int,
        deployment: Deployment,
        step: StepTimeModel,
        where: str,
    ) -> ContinuousEngine:
        try:
            scheduler = make_scheduler(eng.scheduler, eng.scheduler_params, predictor=step)
        except ConfigError as exc:
            raise ConfigError(str(exc), where=f"{where}.engine") from None
        limits = limits_of(eng, deployment, where)
        return ContinuousEngine(
            self.ids[ix], self.requests, self.records, ix, step, scheduler, limits,
            max_tokens=self.max_tokens,
        )  # fmt: skip

    def _info(
        self, inst: InstanceConfig, ix: int, dep: Deployment, step: StepTimeModel
    ) -> InstanceInfo:
        models = tuple(canonical_model(m) for m in inst.model_names)
        max_seqs = inst.engine.max_num_seqs if isinstance(inst.engine, ContinuousConfig) else 256
        view = InstanceView(
            id=self.ids[ix],
            model=models[0],
            accelerator=dep.accelerator.name,
            precision=inst.precision,
            max_num_seqs=max_seqs,
            price_in_per_token_usd=inst.price_in_per_mtok_usd / 1e6,
            price_out_per_token_usd=inst.price_out_per_mtok_usd / 1e6,
            quality=inst.quality,
            step_model=step,
        )
        return InstanceInfo(
            self.ids[ix], models, dep.accelerator.name, dep.num_gpus,
            dep.accelerator.price_per_hour_usd, view,
        )  # fmt: skip

    def _router(self) -> Router | None:
        cfg = self.config.router
        try:
            return make_router(cfg.name, _rng(self.config.seed, 1), **cfg.params)
        except ConfigError as exc:
            raise ConfigError(str(exc), where="router") from None


def canonical_requests(requests: RequestArrays) -> RequestArrays:
    """``requests`` with model names in the catalog's spelling (so instances match)."""
    names = tuple(canonical_model(m) for m in requests.models)
    if names == requests.models:
        return requests
    from dataclasses import replace

    return replace(requests, models=names)


def build_cluster(config: SimulationConfig, requests: RequestArrays) -> Cluster:
    """Engines, router and records for ``requests`` under ``config``."""
    return _Builder(config, requests).build()


def check_buildable(config: SimulationConfig) -> None:
    """Build ``config``'s engines and router without requests, so that every problem a run
    would meet at start-up (trace files, catalog names, TP, memory, scheduler and router
    parameters) raises :class:`ConfigError` now."""
    missing = config.workload.missing_files(base_dir_of(config))
    if missing:
        raise ConfigError("\n".join(["missing trace files", *missing]))
    models = tuple(canonical_model(m) for m in config.workload.model_mix().models)
    build_cluster(config, RequestArrays.build([], [], [], models=models))


def base_dir_of(config: SimulationConfig) -> Path | None:
    """Folder relative paths of ``config`` resolve against."""
    return Path(config.base_dir) if config.base_dir else None
