"""From a validated :class:`~sincere.sim.config.SimulationConfig` to a runnable cluster.

Each instance's engine is built by :func:`sincere.engine.build.build_engine` from its
deployment spec (the emulator builds its engines there too); the front door (router and
admission) by :func:`sincere.policy.front_door.build_front_door`, as the gateway builds
its own. Random streams: the workload uses ``seed``; the router (``router.seed`` when
set), each request-level engine and a closed loop's think times get independent child
streams of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from sincere.core.errors import ConfigError
from sincere.core.records import RecordArrays
from sincere.core.request import RequestArrays
from sincere.engine.base import Engine
from sincere.engine.build import build_engine, canonical_model
from sincere.engine.clock import ClockLevels
from sincere.engine.instance import InstanceInfo, spec_info
from sincere.perf.base import Deployment, StepTimeModel
from sincere.policy.decision_log import DecisionLog
from sincere.policy.front_door import FrontDoor, build_front_door
from sincere.policy.pd import build_pd_front_door, colocated_role
from sincere.policy.reads import Reads
from sincere.sim.actuation import Actuator
from sincere.sim.actuation_config import check_groups, initial_counts
from sincere.sim.actuation_slots import PoolPlan, pool_plan
from sincere.sim.autoscale import Autoscaler, ScalePlan
from sincere.sim.autoscale_config import check_group
from sincere.sim.autoscale_season import load_profiles
from sincere.sim.cluster import ClosedLoop, Cluster, eligible_instances
from sincere.sim.config import DisaggregationConfig, InstanceConfig, SimulationConfig
from sincere.sim.disagg import (
    PDExtension,
    PDPlan,
    PDRecords,
    check_roles,
    is_disaggregated,
    link_figures,
    role_of,
)
from sincere.sim.extension import Extension
from sincere.sim.frontend import closed_loop_delays, front_end_of, intake_s
from sincere.workload.arrivals import Closed

THINK_STREAM = 50  # the child stream of a closed loop's think times


def _is_closed(config: SimulationConfig) -> bool:
    """Whether the workload is a closed loop (its arrivals decided by the run)."""
    arrival = config.workload.arrival
    return arrival is not None and arrival.kind == "closed"


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream,)))


class _Builder:
    """Builds engines and instance facts for one run."""

    def __init__(self, config: SimulationConfig, requests: RequestArrays) -> None:
        self.config = config
        if _is_closed(config):  # the run writes the arrival times: into an array of its own
            requests = replace(requests, arrival_at=np.zeros(len(requests)))
        self.requests = requests
        self.max_tokens = requests.max_tokens.copy()
        self.engines: list[Engine] = []
        self.infos: list[InstanceInfo] = []
        self.ids: list[str] = []
        # the autoscaled group (if any) is built at its largest size
        self.scaled = None if config.autoscaling is None else scaled_group(config)
        self.counts = [inst.count for inst in config.instances]
        if config.autoscaling is not None and self.scaled is not None:
            self.counts[self.scaled] = config.autoscaling.max_instances
        # the pool's groups (if any) are built with an engine per slot
        self.pool = [] if config.actuation is None else pool_groups(config)
        for pos in self.pool:
            assert config.actuation is not None
            self.counts[pos] = config.actuation.max_slots
        for pos, inst in enumerate(config.instances):
            prefix = inst.name or f"{inst.model_names[0]}-{pos}"
            count = self.counts[pos]
            for k in range(count):
                self.ids.append(prefix if count == 1 else f"{prefix}-{k}")
        if len(set(self.ids)) != len(self.ids):
            raise ConfigError("instance names must be unique", where="instances", value=self.ids)
        self.records = RecordArrays.empty(len(requests), self.ids)
        self.disaggregated = is_disaggregated(config)
        self.deployments: list[Deployment] = []
        self.roles: list[str] = []
        # prefill instances make one token per request: their own output caps
        self.prefill_caps = np.ones(len(requests), dtype=np.int64)
        # step models of each instances entry, shared by its replicas (pure functions)
        self.step_models: dict[str, dict[str, StepTimeModel]] = {}
        self.clock_levels: dict[str, ClockLevels] = {}  # GPU clock levels, shared likewise

    def build(self, decisions: DecisionLog | None, probes: Sequence[Reads] = ()) -> Cluster:
        check_roles(self.config)
        for pos, inst in enumerate(self.config.instances):
            for _ in range(self.counts[pos]):
                self._add(inst, f"instances[{pos}]")
        eligible = eligible_instances(self.requests.models, self.infos)
        pd = self._pd_plan(eligible) if self.disaggregated else None
        extension: Extension | None = None if pd is None else PDExtension(pd)
        if self.scaled is not None:
            extension = Autoscaler(self._scale_plan(self.scaled))
        if self.pool:
            extension = Actuator(self._pool_plan())
        return Cluster(
            self.requests, self.records, self.engines, self.infos, self._front_door(),
            self.max_tokens, decisions, self._closed_loop(), eligible=eligible,
            extension=extension, pd=pd, probes=probes,
        )  # fmt: skip

    def _scale_plan(self, pos: int) -> ScalePlan:
        """The autoscaled group's engines, initial count, load time and GPUs."""
        cfg = self.config.autoscaling
        assert cfg is not None
        start = sum(self.counts[:pos])
        engines = tuple(range(start, start + self.counts[pos]))
        dep = self.deployments[start]
        load_s = cfg.load_seconds(dep.weight_bytes_per_gpu)
        initial = self.config.instances[pos].count
        profiles = load_profiles(cfg, None, self.config.base_dir, "autoscaling")
        profile = None if profiles is None else profiles[0]
        return ScalePlan(cfg, engines, initial, load_s, dep.num_gpus, profile)

    def _pool_plan(self) -> PoolPlan:
        """The pool's engines per group and slot, initial slots and actuation times."""
        cfg, groups = self.config.actuation, self.config.instances
        assert cfg is not None
        starts = [sum(self.counts[:pos]) for pos in self.pool]
        engines = [range(start, start + cfg.max_slots) for start in starts]
        names = [groups[pos].model_names[0] for pos in self.pool]
        deps = [self.deployments[start] for start in starts]
        plan = pool_plan(cfg, names, engines, deps, initial_counts(cfg, groups, self.pool))
        models = [groups[pos].model_names for pos in self.pool]
        profiles = load_profiles(cfg.scaling, models, self.config.base_dir, "actuation.scaling")
        return plan if profiles is None else replace(plan, profiles=tuple(profiles))

    def _closed_loop(self) -> ClosedLoop | None:
        """The workload's closed loop, with its think times drawn (None: open loop)."""
        arrival = self.config.workload.arrival
        if arrival is None or not _is_closed(self.config):
            return None
        process = arrival.build()
        assert isinstance(process, Closed)
        n = len(self.requests)
        think = process.think_times(_rng(self.config.seed, THINK_STREAM), n).tolist()
        front = front_end_of(self.config)
        if front.is_zero:
            return ClosedLoop(process.concurrency, think, process.num_warmup(n))
        if front.intake_servers:  # the loop takes each request through the API processes
            return ClosedLoop(
                process.concurrency, [t + front.output_s for t in think], process.num_warmup(n),
                intake_s=intake_s(self.requests, front).tolist(),
                intake_servers=front.intake_servers,
            )  # fmt: skip
        first, think = closed_loop_delays(self.requests, front, process.concurrency, think)
        return ClosedLoop(process.concurrency, think, process.num_warmup(n), tuple(first))

    def _add(self, inst: InstanceConfig, where: str) -> None:
        ix = len(self.engines)
        role = role_of(inst)
        caps = self.prefill_caps if role == "prefill" else self.max_tokens
        built = build_engine(
            inst, self.ids[ix], self.requests, self.records, ix,
            max_tokens=caps, context_caps=self.max_tokens,
            rng=_rng(self.config.seed, 100 + ix), where=where,
            step_models=self.step_models.get(where),
            clock_levels=self.clock_levels.get(where),
        )  # fmt: skip
        self.step_models[where] = built.step_models
        if built.clock_levels is not None:
            self.clock_levels[where] = built.clock_levels
        if role != "both" and built.engine.kv_intake is None:
            raise ConfigError(
                f"a {role} instance needs an engine that hands over and takes prefilled KV "
                "(a continuous engine)", where=f"{where}.engine.kind",
                value=inst.engine.kind, allowed=["continuous"],
            )  # fmt: skip
        self.engines.append(built.engine)
        self.deployments.append(built.deployment)
        self.roles.append(role)
        self.infos.append(self._info(inst, ix, built.deployment, built.step_model))

    def _pd_plan(self, eligible: list[list[int]]) -> PDPlan:
        """Roles, per-phase candidates, KV sizes and link figures of a disaggregated run.
        Requests not disaggregated go to ``both`` instances, else to decode ones: each
        model's entry of ``eligible`` is narrowed to those."""
        cfg = self.config.disaggregation or DisaggregationConfig()
        roles = self.roles
        prefill_of, decode_of = [], []
        for m, choices in enumerate(eligible):
            prefill_of.append([e for e in choices if roles[e] == "prefill"])
            decode_of.append([e for e in choices if roles[e] == "decode"])
            whole = colocated_role(roles[e] for e in choices)
            eligible[m] = [e for e in choices if roles[e] == whole]
        kv = [d.model.kv_bytes_per_token(d.kv_precision) for d in self.deployments]
        links = [
            link_figures(cfg.kv_link, d.accelerator.interconnect_gbps, d.num_gpus)
            for d in self.deployments
        ]
        door = build_pd_front_door(cfg, self.config.seed)
        state = [d.model.linear_state_bytes_per_seq(d.state_precision) for d in self.deployments]
        return PDPlan(
            door, roles, prefill_of, decode_of, kv, links, PDRecords.empty(len(self.requests)),
            state_bytes=state if any(state) else [],
        )  # fmt: skip

    def _info(
        self, inst: InstanceConfig, ix: int, dep: Deployment, step: StepTimeModel
    ) -> InstanceInfo:
        return spec_info(
            inst, self.ids[ix], dep, step,
            price_in_per_mtok_usd=inst.price_in_per_mtok_usd,
            price_out_per_mtok_usd=inst.price_out_per_mtok_usd,
            quality=inst.quality,
        )  # fmt: skip

    def _front_door(self) -> FrontDoor:
        cfg = self.config
        return build_front_door(cfg.router, cfg.admission, cfg.seed)


def scaled_group(config: SimulationConfig) -> int:
    """The position of the instances entry ``config.autoscaling`` scales (checked)."""
    assert config.autoscaling is not None
    if is_disaggregated(config):
        raise ConfigError(
            "autoscaling is not supported with prefill/decode disaggregation; give every "
            "instance the role both, or leave autoscaling out",
            where="autoscaling", value="present", allowed="absent",
        )  # fmt: skip
    pos = check_group(config.autoscaling, config.instances)
    kind = config.instances[pos].engine.kind
    if config.autoscaling.signal == "kv_usage" and kind != "continuous":
        raise ConfigError(
            "the kv_usage signal needs engines that report their KV use (continuous)",
            where=f"instances[{pos}].engine.kind", value=kind, allowed=["continuous"],
        )  # fmt: skip
    return pos


def pool_groups(config: SimulationConfig) -> list[int]:
    """The positions of the instances entries ``config.actuation`` pools (checked)."""
    assert config.actuation is not None
    if config.autoscaling is not None or is_disaggregated(config):
        raise ConfigError(
            "actuation is not supported together with autoscaling or prefill/decode "
            "roles; scale the pool with actuation.scaling",
            where="actuation", value="present", allowed="absent",
        )  # fmt: skip
    positions = check_groups(config.actuation, config.instances)
    signal = config.actuation.scaling.signal
    kinds = {config.instances[pos].engine.kind for pos in positions}
    if signal == "kv_usage" and kinds != {"continuous"}:
        raise ConfigError(
            "the kv_usage signal needs engines that report their KV use (continuous)",
            where="actuation.scaling.signal", value=signal, allowed=["in_flight", "waiting"],
        )  # fmt: skip
    return positions


def canonical_requests(requests: RequestArrays) -> RequestArrays:
    """``requests`` with model names in the catalog's spelling (so instances match)."""
    names = tuple(canonical_model(m) for m in requests.models)
    if names == requests.models:
        return requests
    return replace(requests, models=names)


def build_cluster(
    config: SimulationConfig,
    requests: RequestArrays,
    decisions: DecisionLog | None = None,
    probes: Sequence[Reads] = (),
) -> Cluster:
    """Engines, front door and records for ``requests`` under ``config``.

    ``decisions``: where every front-door call and outcome is logged (None: nowhere).
    ``probes``: what anything else reading the cluster during the run reads (the run's
    shortcuts respect it; :mod:`sincere.sim.plan`).
    """
    return _Builder(config, requests).build(decisions, probes)


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
