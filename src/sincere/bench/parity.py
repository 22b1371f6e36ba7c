"""Simulation vs live: one trace through the simulator and through gateway + emulators.

DESIGN.md's central claim is that the same policy objects and engine model run in
simulation and on the wall clock. :func:`parity` checks it: it simulates a
:class:`~sincere.sim.config.SimulationConfig`, then starts one emulated engine per
simulated instance (the same deployment spec) and sincere's gateway in front of them --
with the same router (and seed), admission and tiers, each backend declaring its
deployment and reporting its engine load -- in this process, and replays the same
requests through the load generator. (It is the one module of the live side that
imports the simulator: running both is its job.)

It compares three things:

* **decisions** -- both paths log every front-door call. The first call about each
  request is paired across the logs (:mod:`sincere.bench.parity_decisions`); where the
  answers differ, the logged inputs say why (a load read at another moment).
* **replays** -- each log's inputs and outcomes are fed, in order, to a fresh front door
  built by the *other* path from the same config (the simulator's log to the gateway's,
  the gateway's to the simulator's). Every answer must be the logged one: the two paths
  decide with the same logic, parameters, seeds and views. This holds whatever the
  machine's load, because it compares decisions on the same recorded inputs.
* **timings and routing** -- request by request, which instance served it and the TTFT
  and E2E (relative difference ``(live - sim) / sim``), and, because per-request
  agreement cannot hold for load-aware routers under load, the aggregate picture: each
  instance's share, the load imbalance seen at arrivals, unpaired TTFT / E2E quantiles.

Load-dependent routers decide on which requests have finished at the moment of an
arrival. Live, an arrival reaches the router about a millisecond after its scheduled
time, a finish about a millisecond after the engine's iteration ends, and an engine's
load is read every ``scrape_ms``; whenever a finish and an arrival fall within that
jitter (a *race*: :func:`race_margins_s`) the live router may see another load than the
simulated one, and from that decision on the two runs serve different batches.
:meth:`ParityResult.divergence` names the first diverging decision and the finish that
crossed its arrival; the decision diffs list the differing inputs. The run samples its
own event-loop lag (``loop_lag_ms`` in the summary): a run whose loop lagged by tens of
milliseconds says more about the machine than the model.

Use step times well above the jitter (e.g. Llama-3-8B on an A100, 10-50 ms
iterations). Only iteration-level (``continuous``) engines can be emulated.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from sincere.bench.parity_decisions import DecisionDiff, compare_decisions
from sincere.bench.results import BenchResult
from sincere.bench.runner import BenchOptions, run_bench_async
from sincere.core.errors import ConfigError
from sincere.core.request import Request, RequestArrays
from sincere.engine.instance import spec_max_num_seqs
from sincere.engine.spec import ContinuousConfig
from sincere.perf.base import StepTimeModel
from sincere.policy.decision_log import DecisionLog, Mismatch, read_log, replay
from sincere.policy.front_door import FrontDoor, Hold, Reject
from sincere.policy.pd import Local, PDFrontDoor, PDRoute, build_pd_front_door
from sincere.policy.router_base import InstanceView
from sincere.sim.api import SimulationResult, simulate
from sincere.sim.build import build_cluster
from sincere.sim.config import (
    DisaggregationConfig,
    InstanceConfig,
    SimulationConfig,
    load_config,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
T = TypeVar("T")
QUANTILES = {"p10": 10.0, "p50": 50.0, "p90": 90.0}
LAG_QUANTILES = {"p50": 50.0, "p99": 99.0, "max": 100.0}
RACE_S = 0.005  # a finish or another arrival this close to an arrival makes it a race
LAG_INTERVAL_S = 0.005  # period of the event-loop lag sampler
DISTURBED_LAG_S = 0.020  # p99 loop lag above which the live timings are not trustworthy
SCRAPE_MS = 10.0  # how often the gateway reads each emulator's engine load in a parity run


@dataclass(frozen=True, slots=True)
class Divergence:
    """The first request routed differently live, and why (a finish that crossed it)."""

    index: int  # request position (arrival order) of the first differing decision
    arrival_at: float  # its scheduled arrival, seconds
    sim_instance: str  # where the simulator sent it
    live_instance: str  # where the gateway sent it
    race_margin_s: float  # nearest other finish or arrival to it in the simulation
    crossing: int | None  # an earlier request whose finish is on the other side live
    crossing_sim_finish_at: float | None  # its finish in the simulation
    crossing_live_finish_at: float | None  # its finish live (as the client saw it)


Replay = tuple[int, list[Mismatch]]
"""``(calls replayed, mismatches)`` of one log through the other path's front door."""


@dataclass(eq=False)
class ParityResult:
    """The two runs, their decision logs, and their differences."""

    sim: SimulationResult
    live: BenchResult
    same_instance: npt.NDArray[np.bool_]  # live request went where the simulator sent it
    rel_ttft: FloatArray  # (live - sim) / sim TTFT, NaN where either is missing
    rel_e2e: FloatArray  # (live - sim) / sim E2E
    loop_lag_s: FloatArray = field(default_factory=lambda: np.zeros(0))  # live loop lag
    sim_log: list[dict[str, Any]] = field(default_factory=list)  # the simulator's decisions
    live_log: list[dict[str, Any]] = field(default_factory=list)  # the gateway's decisions
    sim_on_live: Replay = (0, [])  # the simulator's log through the gateway's front door
    live_on_sim: Replay = (0, [])  # the gateway's log through the simulator's front door

    def decision_diffs(self) -> tuple[int, list[DecisionDiff]]:
        """``(requests compared, requests decided differently)`` with the differing inputs."""
        return compare_decisions(self.sim_log, self.live_log)

    def summary(self) -> dict[str, Any]:
        """Decisions, replays, routing agreement, relative differences, balance, loop lag."""
        num_decided, diffs = self.decision_diffs()
        out: dict[str, Any] = {
            "num_requests": len(self.same_instance),
            "num_compared": int(np.isfinite(self.rel_e2e).sum()),
            "same_instance_share": float(self.same_instance.mean()),
            "same_decision_share": 1.0 - len(diffs) / num_decided if num_decided else None,
            "num_decision_diffs": len(diffs),
            "num_unexplained_diffs": sum(not d.explained for d in diffs),
            "replay_sim_on_live": {
                "calls": self.sim_on_live[0],
                "mismatches": len(self.sim_on_live[1]),
            },
            "replay_live_on_sim": {
                "calls": self.live_on_sim[0],
                "mismatches": len(self.live_on_sim[1]),
            },
        }
        for name, rel in (("rel_ttft", self.rel_ttft), ("rel_e2e", self.rel_e2e)):
            out[name] = _quantiles(rel)
            finite = rel[np.isfinite(rel)]
            out[name]["median_abs"] = float(np.median(np.abs(finite))) if len(finite) else None
        # What the live path adds to a first token in milliseconds (its HTTP hops and event
        # loops, which the simulator does not model): a few ms whatever the TTFT's size.
        added = _col(self.live.requests, "ttft_s") - _col(self.sim.requests, "ttft_s")
        out["ttft_added_ms"] = _quantiles(added * 1e3)
        out.update(self.aggregate())
        div = self.divergence()
        out["num_races"] = int((race_margins_s(self.sim.requests) < RACE_S).sum())
        out["first_divergence"] = None if div is None else div.index
        out["loop_lag_ms"] = _quantiles(self.loop_lag_s * 1e3, LAG_QUANTILES)
        out["disturbed"] = _disturbed(self.loop_lag_s)
        return out

    def aggregate(self) -> dict[str, Any]:
        """What must agree even when decisions diverge: shares, imbalance, quantiles."""
        s, m = self.sim.requests, self.live.requests
        return {
            "instance_share": {"sim": instance_shares(s), "live": instance_shares(m)},
            "imbalance_at_arrival": {
                "sim": float(imbalance_at_arrivals(s).mean()),
                "live": float(imbalance_at_arrivals(m).mean()),
            },
            "ttft_quantile_rel": _quantile_rel(s, m, "ttft_s"),
            "e2e_quantile_rel": _quantile_rel(s, m, "e2e_s"),
        }

    def divergence(self) -> Divergence | None:
        """The first request routed differently, with the finish that crossed its arrival."""
        differ = np.flatnonzero(~self.same_instance)
        if not len(differ):
            return None
        k = int(differ[0])
        s, m = self.sim.requests, self.live.requests
        arrival = _col(s, "arrival_at")
        sim_fin, live_fin = _col(s, "finished_at"), _col(m, "finished_at")
        before = np.arange(len(arrival)) < k
        crossed = before & ((sim_fin < arrival[k]) != (live_fin < arrival[k]))
        j = int(np.flatnonzero(crossed)[0]) if crossed.any() else None
        return Divergence(
            k,
            float(arrival[k]),
            str(s.column("instance")[k].as_py()),
            str(m.column("instance")[k].as_py()),
            float(race_margins_s(s)[k]),
            j,
            None if j is None else float(sim_fin[j]),
            None if j is None else float(live_fin[j]),
        )


def _col(table: pa.Table, name: str) -> FloatArray:
    return np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)


def _quantiles(values: FloatArray, which: dict[str, float] = QUANTILES) -> dict[str, Any]:
    finite = values[np.isfinite(values)]
    return {k: float(np.percentile(finite, q)) if len(finite) else None for k, q in which.items()}


def _disturbed(lag_s: FloatArray) -> bool:
    return bool(len(lag_s)) and float(np.percentile(lag_s, 99)) > DISTURBED_LAG_S


def _quantile_rel(sim: pa.Table, live: pa.Table, column: str) -> dict[str, float | None]:
    """Unpaired ``(live - sim) / sim`` of the p50 and p90 of ``column``."""
    a, b = _col(sim, column), _col(live, column)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if not len(a) or not len(b):
        return {"p50": None, "p90": None}
    out: dict[str, float | None] = {}
    for name, q in (("p50", 50.0), ("p90", 90.0)):
        qa, qb = float(np.percentile(a, q)), float(np.percentile(b, q))
        out[name] = (qb - qa) / qa if qa > 0 else None
    return out


def instance_shares(table: pa.Table) -> dict[str, float]:
    """Share of the served requests each instance took (rejected ones left out)."""
    names = np.asarray(table.column("instance").to_pylist(), dtype=object)
    served = names[~np.asarray(table.column("rejected").to_numpy(zero_copy_only=False))]
    served = served[served != None]  # noqa: E711 (element-wise comparison)
    if not len(served):
        return {}
    keys, counts = np.unique(served.astype(str), return_counts=True)
    return {str(k): float(c) / len(served) for k, c in zip(keys, counts, strict=True)}


def outstanding_at_arrivals(table: pa.Table) -> tuple[list[str], IntArray]:
    """Requests each instance held (arrived, not finished) at every arrival, from records.

    Returns the instance names and an ``(n_requests, n_instances)`` count matrix; the
    request arriving is not counted. This is the ``num_outstanding`` a least-outstanding
    router saw, rebuilt from arrival and finish times.
    """
    arrival, finish = _col(table, "arrival_at"), _col(table, "finished_at")
    names = np.asarray(table.column("instance").to_pylist(), dtype=object)
    keys = sorted({str(n) for n in names if n is not None})
    counts = np.zeros((len(arrival), len(keys)), dtype=np.int64)
    for c, key in enumerate(keys):
        mine = (names == key) & np.isfinite(finish)
        started = np.searchsorted(np.sort(arrival[mine]), arrival, side="left")
        ended = np.searchsorted(np.sort(finish[mine]), arrival, side="left")
        counts[:, c] = started - ended
    return keys, counts


def imbalance_at_arrivals(table: pa.Table) -> FloatArray:
    """Most minus least outstanding requests across instances at every arrival."""
    _, counts = outstanding_at_arrivals(table)
    if counts.shape[1] == 0:
        return np.zeros(len(counts))
    spread: FloatArray = (counts.max(axis=1) - counts.min(axis=1)).astype(np.float64)
    return spread


def race_margins_s(table: pa.Table) -> FloatArray:
    """Per request, the time from its arrival to the nearest finish or other arrival.

    Below the live path's jitter (a few ms), a load-dependent router may see a
    different count live than in the simulation: the decision is a race.
    """
    arrival = _col(table, "arrival_at")
    finish = np.sort(_col(table, "finished_at"))
    finish = finish[np.isfinite(finish)]
    margin = np.full(len(arrival), np.inf)
    if len(finish):
        k = np.searchsorted(finish, arrival)
        right = finish[np.minimum(k, len(finish) - 1)]
        left = finish[np.maximum(k - 1, 0)]
        margin = np.minimum(np.abs(right - arrival), np.abs(arrival - left))
    order = np.sort(arrival)
    gaps = np.diff(order)
    if len(gaps):
        near = np.minimum(np.append(gaps, np.inf), np.insert(gaps, 0, np.inf))
        by_request = np.empty_like(near)
        by_request[np.argsort(arrival, kind="stable")] = near
        margin = np.minimum(margin, by_request)
    return margin


class LoopLag:
    """Samples how late the event loop wakes a sleeper (scheduling noise of the machine)."""

    def __init__(self, interval_s: float = LAG_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.interval_s)
            self.samples.append(max(0.0, loop.time() - before - self.interval_s))

    def start(self) -> None:
        """Begin sampling on the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> FloatArray:
        """Stop sampling; the lags seen, seconds."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return np.asarray(self.samples, dtype=np.float64)


class Controller(Protocol):
    """A live controller that runs on its own clock (the live autoscaler, the live pool)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def now(self) -> float: ...


async def run_controlled(
    url: str, requests: RequestArrays, controller: Controller, read: Callable[[], T], *,
    lag_until_s: float, end_s: float, time_limit_s: float,
) -> tuple[BenchResult, T, FloatArray]:  # fmt: skip
    """Start ``controller`` (its time 0) and send ``requests`` to the gateway at ``url`` at
    their arrival times; the event loop's lag is sampled until ``lag_until_s`` on the
    controller's clock (the load generator's summing-up afterwards holds the loop, and is
    not what a comparison judges), then the run waits for the last answer and for
    ``end_s``, and ``read()`` takes what the controller decided before it stops. Returns
    the load generator's result, ``read()``'s and the lags (seconds)."""
    lag = LoopLag()
    await controller.start()
    lag.start()
    try:
        options = BenchOptions(time_limit_s=time_limit_s, request_fields=True)
        bench = asyncio.ensure_future(run_bench_async(url, requests, options))
        await asyncio.sleep(max(0.0, lag_until_s - controller.now()))
        lags = np.asarray(lag.samples, dtype=np.float64)
        result = await bench
        await asyncio.sleep(max(0.0, end_s - controller.now()))
        return result, read(), lags
    finally:
        await lag.stop()
        await controller.stop()


def _emulator_configs(config: SimulationConfig, ids: list[str]) -> list[Any]:
    """One emulator per simulated instance, with the instance's deployment spec."""
    from sincere.serve.emulator.config import EmulatorConfig

    configs = []
    for inst, name in zip(_expanded(config), ids, strict=True):
        if not isinstance(inst.engine, ContinuousConfig) or inst.model is None:
            raise ConfigError(
                "only single-model continuous engines can be emulated",
                where=f"instance {name}",
                value=inst.engine.kind,
                allowed="engine.kind: continuous",
            )
        pd: dict[str, Any] = {"role": inst.role or "both"}
        if config.disaggregation is not None:
            pd["kv_link"] = config.disaggregation.kv_link
        configs.append(
            EmulatorConfig(name=name, max_num_requests=1 << 20, **_spec_fields(inst), **pd)
        )
    return configs


def gateway_config(
    config: SimulationConfig, requests: RequestArrays, servers: list[Any], names: list[str]
) -> Any:
    """The gateway's config mirroring ``config``: router, admission, tiers and instances.

    Each backend declares its deployment (so views carry its step-time model) and
    reports its engine load (read every ``SCRAPE_MS``); no in-flight cap and an unbounded
    queue, as in the simulator. ``servers`` are the emulators' (or anything with a
    ``url``), ``names`` the instances' ids in the simulator.
    """
    from sincere.serve.gateway.config import parse_config

    backends = [
        {
            "name": name,
            "url": server.url,
            "models": [inst.model_names[0]],
            "max_in_flight": 1 << 20,
            "max_num_seqs": spec_max_num_seqs(inst),
            "price_in_per_1m_usd": inst.price_in_per_mtok_usd,
            "price_out_per_1m_usd": inst.price_out_per_mtok_usd,
            "quality": inst.quality,
            "load_path": "/sincere/load",
            "deployment": _spec_fields(inst),
            "role": inst.role or "both",
        }
        for inst, server, name in zip(_expanded(config), servers, names, strict=True)
    ]
    tiers = {t.name: {"ttft_s": t.ttft_s, "ttlt_s": t.ttlt_s, "tbt_s": t.tbt_s,
                      "priority": t.priority} for t in requests.tiers}  # fmt: skip
    router = config.router.model_dump()
    router["seed"] = config.seed if router["seed"] is None else router["seed"]
    return parse_config(
        {
            **_disaggregation(config),
            "port": 0,
            "router": router,
            "admission": config.admission.model_dump(),
            "backends": backends,
            "tiers": tiers,
            "default_tier": min(requests.tiers, key=lambda t: t.priority).name,
            "scrape": {"enabled": True, "interval_ms": SCRAPE_MS, "max_age_s": 1.0},
            "queue": {"max_len": 1 << 20, "timeout_s": 3600.0, "shed_early": False},
            "admin": False,
        }
    )


def _disaggregation(config: SimulationConfig) -> dict[str, Any]:
    """The gateway's ``disaggregation`` section mirroring the simulator's (the link lives
    in the emulators); each phase's router seeded as the simulator seeds it."""
    if not any((inst.role or "both") != "both" for inst in config.instances):
        return {}
    pd = (config.disaggregation or DisaggregationConfig()).model_dump(exclude={"kv_link"})
    for k, where in enumerate(("prefill_router", "decode_router")):
        if pd[where]["seed"] is None:
            pd[where]["seed"] = config.seed + 1 + k  # build_pd_front_door's streams
    return {"disaggregation": pd}


def _spec_fields(inst: Any) -> dict[str, Any]:
    """The deployment spec of a simulated instance (its first model)."""
    fields = dict(inst.deployment_fields())
    fields.update(model=inst.model_names[0], models=None)
    return fields


def _expanded(config: SimulationConfig) -> list[InstanceConfig]:
    """The config's instances, each repeated ``count`` times (one per simulated instance)."""
    return [inst for inst in config.instances for _ in range(inst.count)]


async def live_run(
    config: SimulationConfig,
    requests: RequestArrays,
    instance_ids: list[str],
    lag: LoopLag | None = None,
    decisions: DecisionLog | None = None,
    on_gateway: Callable[[Any], None] | None = None,
    concurrency: int | None = None,
) -> BenchResult:
    """Replay ``requests`` through gateway + emulated engines built from ``config``.

    ``lag``, when given, samples the event loop's lag while the requests run;
    ``decisions`` receives the gateway's decision log; ``on_gateway`` is called with the
    gateway before the first request. ``concurrency``: send them in a closed loop of that
    many clients (the requests' arrival times are then ignored) instead of at their times.
    """
    from sincere.serve.emulator.server import start_emulators, stop_emulators
    from sincere.serve.gateway.server import Gateway

    emulators = _emulator_configs(config, instance_ids)
    _warm_up(config)
    servers = await start_emulators(emulators)
    try:
        gw_config = gateway_config(config, requests, servers, instance_ids)
        async with Gateway(gw_config, decisions=decisions) as gateway:
            if on_gateway is not None:
                on_gateway(gateway)
            horizon = float(requests.arrival_at[-1]) + 300.0
            options = BenchOptions(
                time_limit_s=horizon, request_fields=True, concurrency=concurrency
            )
            if lag is not None:
                lag.start()
            try:
                return await run_bench_async(gateway.url, requests, options)
            finally:
                if lag is not None:
                    await lag.stop()
    finally:
        await stop_emulators(servers)


def _warm_up(config: SimulationConfig) -> None:
    """Load the prompt tokenizer now: its first use (hundreds of ms) would otherwise delay
    the first request at the gateway and put it out of step with the simulated one."""
    from sincere.serve.protocol import count_prompt_tokens

    for inst in config.instances:
        for model in inst.model_names:
            count_prompt_tokens("warm up", model)


def compare(
    sim: SimulationResult, live: BenchResult, loop_lag_s: FloatArray | None = None
) -> ParityResult:
    """Per-request routing agreement and relative TTFT / E2E differences."""
    s, m = sim.requests, live.requests
    same = np.asarray(s.column("instance").to_pylist(), dtype=object) == np.asarray(
        m.column("instance").to_pylist(), dtype=object
    )

    def rel(column: str) -> FloatArray:
        a = s.column(column).to_numpy(zero_copy_only=False).astype(np.float64)
        b = m.column(column).to_numpy(zero_copy_only=False).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            diff: FloatArray = (b - a) / a
        return diff

    lag = np.zeros(0) if loop_lag_s is None else loop_lag_s
    return ParityResult(sim, live, same, rel("ttft_s"), rel("e2e_s"), lag)


def sim_front_door(
    config: SimulationConfig, requests: RequestArrays
) -> tuple[FrontDoor, dict[str, StepTimeModel]]:
    """A fresh front door as the simulator builds it, and its instances' step models."""
    cluster = build_cluster(config, requests)
    assert cluster.front_door is not None
    return cluster.front_door, {i.id: i.step_model for i in cluster.infos if i.step_model}


def gateway_front_door(gw_config: Any) -> tuple[FrontDoor, dict[str, StepTimeModel]]:
    """A fresh front door as the gateway builds it, and its backends' step models."""
    from sincere.serve.gateway.dispatch import front_door_of
    from sincere.serve.gateway.instances import backend_info

    infos = [backend_info(b) for b in gw_config.backends]
    return front_door_of(gw_config), {i.id: i.step_model for i in infos if i.step_model}


def parity(
    config: SimulationConfig | dict[str, Any] | str,
    seed: int | None = None,
    *,
    requests: RequestArrays | None = None,
) -> ParityResult:
    """Simulate ``config`` and replay its requests live on the wall clock; compare the two.

    ``requests`` replaces the generated workload (e.g. with budgets). Both decision logs
    are kept and each is replayed through the other path's front door.
    """
    cfg = config if isinstance(config, SimulationConfig) else load_config(config)
    sim_lines: list[str] = []
    sim = simulate(cfg, seed, requests=requests, decisions=DecisionLog(sim_lines.append))
    lag, live_lines = LoopLag(), list[str]()
    ids = list(sim.records.instances)
    live = asyncio.run(
        live_run(sim.config, sim.requests_in, ids, lag, DecisionLog(live_lines.append))
    )
    result = compare(sim, live, np.asarray(lag.samples, dtype=np.float64))
    result.sim_log, result.live_log = list(read_log(sim_lines)), list(read_log(live_lines))
    servers = [_Url(f"http://127.0.0.1:{k + 1}") for k in range(len(ids))]
    gw_config = gateway_config(sim.config, sim.requests_in, servers, ids)
    result.sim_on_live = replay(result.sim_log, *gateway_front_door(gw_config))
    result.live_on_sim = replay(result.live_log, *sim_front_door(sim.config, sim.requests_in))
    return result


def prefix_sessions(
    num_requests: int,
    rate: float,
    seed: int,
    *,
    turns: int = 4,
    system_blocks: int = 32,
    block_tokens: int = 16,
    new_blocks: tuple[int, int] = (4, 24),
    output_tokens: tuple[int, int] = (16, 128),
    think_s: float = 2.0,
    model: str = "llama-3-8b",
) -> RequestArrays:
    """A prefix-heavy workload: multi-turn sessions behind one shared system prompt.

    Sessions start as a Poisson process of ``rate / turns`` per second; each has ``turns``
    turns, the next one an exponential think time (mean ``think_s``) after the previous
    arrival. Every prompt starts with the same ``system_blocks`` blocks; turn ``k`` is turn
    ``k - 1``'s prompt plus ``new_blocks`` (uniform) fresh blocks, so it shares all of the
    previous turn's blocks. Block ids are unique integers; every block is full.
    """
    rng = np.random.default_rng(seed)
    num_sessions = -(-num_requests // turns)
    starts = np.cumsum(rng.exponential(turns / rate, size=num_sessions))
    rows: list[tuple[float, int, list[int], int]] = []
    next_id = system_blocks
    for s, start in enumerate(starts.tolist()):
        blocks = list(range(system_blocks))
        at = start
        for _ in range(turns):
            fresh = int(rng.integers(new_blocks[0], new_blocks[1] + 1))
            blocks = blocks + list(range(next_id, next_id + fresh))
            next_id += fresh
            out = int(rng.integers(output_tokens[0], output_tokens[1] + 1))
            rows.append((at, s, blocks, out))
            at += float(rng.exponential(think_s))
    rows.sort(key=lambda r: r[0])
    rows = rows[:num_requests]
    return RequestArrays.build(
        [r[0] for r in rows],
        [len(r[2]) * block_tokens for r in rows],
        [r[3] for r in rows],
        models=(model,),
        block_ids=[r[2] for r in rows],
        block_tokens=block_tokens,
        sessions=[f"s{r[1]}" for r in rows],
    )


@dataclass(frozen=True, slots=True)
class _Url:
    """A stand-in server for a config that is built but not served (replays)."""

    url: str


def follows_least_outstanding(table: pa.Table) -> npt.NDArray[np.bool_]:
    """Per request, whether it went to the first instance with the fewest outstanding.

    Counts are rebuilt from the table's own arrival and finish times
    (:func:`outstanding_at_arrivals`); on a simulated least-outstanding run every
    decision follows them, and on a live run every decision that is not a race.
    """
    keys, counts = outstanding_at_arrivals(table)
    names = table.column("instance").to_pylist()
    best = np.asarray(keys, dtype=object)[np.argmin(counts, axis=1)] if keys else []
    same: npt.NDArray[np.bool_] = np.asarray(names, dtype=object) == np.asarray(best, dtype=object)
    return same


PD_RACE_S = 0.03
"""An arrival this close to another request's prefill end or finish may see either side
of it live: the prefill's answer crosses two HTTP hops and the gateway's event loop
(about 10-20 ms more than simulated on a loaded 2-core machine)."""


@dataclass(frozen=True, slots=True)
class PhaseDiff:
    """A request whose prefill or decode instance differs between the two paths, and the
    requests each instance held at its arrival on each path (the load-aware routers'
    input, rebuilt from the records: prefill instances from arrival to the prefill's
    end, decode instances from arrival -- the decision -- to the request's end)."""

    position: int
    sim: tuple[str | None, str | None]  # (prefill, decode) instance; prefill None: colocated
    live: tuple[str | None, str | None]
    sim_outstanding: dict[str, int]
    live_outstanding: dict[str, int]
    race_s: float  # from its arrival to the nearest prefill end or finish, either path

    @property
    def explained(self) -> bool:
        """Whether the two paths saw different loads at this arrival, or it raced with
        another request's prefill end or finish (closer than the live path's jitter)."""
        return self.sim_outstanding != self.live_outstanding or self.race_s < PD_RACE_S


@dataclass(frozen=True, slots=True)
class PDCall:
    """One question the gateway's P/D front door answered: its inputs and its answer."""

    request: Request
    prefill: tuple[InstanceView, ...]
    decode: tuple[InstanceView, ...]
    now: float
    answer: tuple[str, str | None, str | None]  # kind, prefill instance, decode instance


def pd_answer(
    decision: PDRoute | Local | Reject | Hold | None,
) -> tuple[str, str | None, str | None]:
    """What must agree of a P/D decision: its kind and each phase's instance."""
    if isinstance(decision, PDRoute):
        return "route", decision.prefill.instance, decision.decode.instance
    if isinstance(decision, Local):
        return "local", None, decision.route.instance
    if decision is None:
        return "colocated", None, None
    return ("reject" if isinstance(decision, Reject) else "hold"), None, None


class PDRecorder:
    """Wraps a gateway's P/D front door to keep every call and answer (in order)."""

    def __init__(self) -> None:
        self.calls: list[PDCall] = []

    def attach(self, gateway: Any) -> None:
        """Record ``gateway``'s P/D decisions from now on."""
        door: PDFrontDoor = gateway.pd_relay.door
        decide = door.decide

        def recorded(
            request: Request,
            prefill: Sequence[InstanceView],
            decode: Sequence[InstanceView],
            now: float,
        ) -> PDRoute | Local | Reject | Hold | None:
            answer = decide(request, prefill, decode, now)
            call = PDCall(request, tuple(prefill), tuple(decode), now, pd_answer(answer))
            self.calls.append(call)
            return answer

        door.decide = recorded  # type: ignore[method-assign]  # this door only, for the run


def replay_pd(calls: Sequence[PDCall], door: PDFrontDoor) -> list[int]:
    """Feed the recorded calls, in order, to ``door``; the positions answered otherwise."""
    return [
        k
        for k, c in enumerate(calls)
        if pd_answer(door.decide(c.request, c.prefill, c.decode, c.now)) != c.answer
    ]


@dataclass(eq=False)
class PDParity:
    """Per request, where each phase ran in the simulator and live; and the gateway's P/D
    decisions replayed through a P/D front door built as the simulator builds it."""

    sim: SimulationResult
    live: BenchResult
    diffs: list[PhaseDiff]
    num_replayed: int = 0
    replay_mismatches: list[int] = field(default_factory=list)  # positions in the calls

    @property
    def num_same(self) -> int:
        """Requests whose prefill and decode instances agree."""
        return len(self.sim.requests) - len(self.diffs)


def phases_of(table: pa.Table) -> list[tuple[str | None, str | None]]:
    """(prefill, decode) instance of each request; colocated: (None, its instance)."""
    instance = table.column("instance").to_pylist()
    if "prefill_instance" not in table.column_names:
        return [(None, name) for name in instance]
    prefill = table.column("prefill_instance").to_pylist()
    return list(zip(prefill, instance, strict=True))


def prefill_done_at(table: pa.Table) -> FloatArray:
    """When each request's prefill ended (NaN: not disaggregated): the bench's
    ``prefill_done_at``, the simulator's KV-ready time less its transfer."""
    if "prefill_done_at" in table.column_names:
        return _col(table, "prefill_done_at")
    if "kv_ready_at" not in table.column_names:
        return np.full(table.num_rows, np.nan)
    return _col(table, "kv_ready_at") - _col(table, "kv_transfer_s")


def _held_at_arrivals(
    names: list[Any], arrival: FloatArray, until: FloatArray
) -> dict[str, IntArray]:
    """Per instance, requests routed there (arrived) and not yet done at every arrival."""
    keys = sorted({str(n) for n in names if n is not None})
    held = np.asarray(names, dtype=object)
    out = {}
    for key in keys:
        mine = (held == key) & np.isfinite(until)
        started = np.searchsorted(np.sort(arrival[mine]), arrival, side="left")
        ended = np.searchsorted(np.sort(until[mine]), arrival, side="left")
        out[key] = started - ended
    return out


def phase_loads(table: pa.Table) -> dict[str, IntArray]:
    """Requests each prefill and decode instance held at every arrival (see PhaseDiff)."""
    arrival = _col(table, "arrival_at")
    loads = _held_at_arrivals(table.column("instance").to_pylist(), arrival,
                              _col(table, "finished_at"))  # fmt: skip
    if "prefill_instance" in table.column_names:
        prefill = table.column("prefill_instance").to_pylist()
        loads.update(_held_at_arrivals(prefill, arrival, prefill_done_at(table)))
    return loads


def _ends(table: pa.Table) -> FloatArray:
    """Every prefill end and finish of ``table``, sorted (NaN left out)."""
    ends = np.concatenate([prefill_done_at(table), _col(table, "finished_at")])
    return np.sort(ends[np.isfinite(ends)])


def _nearest(points: FloatArray, at: float) -> float:
    """Distance from ``at`` to the nearest of sorted ``points`` (inf: none)."""
    if not len(points):
        return math.inf
    k = int(np.searchsorted(points, at))
    near = points[max(k - 1, 0) : k + 1]
    return float(np.abs(near - at).min())


def compare_phases(sim: pa.Table, live: pa.Table) -> list[PhaseDiff]:
    """The requests whose phases ran on other instances live than simulated."""
    s, m = phases_of(sim), phases_of(live)
    s_loads, m_loads = phase_loads(sim), phase_loads(live)
    ends = np.sort(np.concatenate([_ends(sim), _ends(live)]))
    arrival = _col(sim, "arrival_at")
    diffs = []
    for i, (a, b) in enumerate(zip(s, m, strict=True)):
        if a != b:
            keys = sorted({*s_loads, *m_loads})  # an instance one path never used: 0
            seen_sim = {k: int(s_loads[k][i]) if k in s_loads else 0 for k in keys}
            seen_live = {k: int(m_loads[k][i]) if k in m_loads else 0 for k in keys}
            race = _nearest(ends, float(arrival[i]))
            diffs.append(PhaseDiff(i, a, b, seen_sim, seen_live, race))
    return diffs


def pd_parity(config: SimulationConfig | dict[str, Any] | str, seed: int | None = None) -> PDParity:
    """Simulate a disaggregated ``config`` and replay its requests through gateway +
    emulators with the same roles, P/D routing and KV link; compare where each request's
    prefill and decode ran; then replay the gateway's P/D decisions, inputs as it saw them,
    through a P/D front door built from the simulation config as the simulator builds it
    (the same logic, parameters and seeds give the same answers whatever the timing)."""
    cfg = config if isinstance(config, SimulationConfig) else load_config(config)
    sim = simulate(cfg, seed)
    ids = list(sim.records.instances)
    recorder = PDRecorder()
    live = asyncio.run(live_run(sim.config, sim.requests_in, ids, on_gateway=recorder.attach))
    pd = sim.config.disaggregation or DisaggregationConfig()
    mismatches = replay_pd(recorder.calls, build_pd_front_door(pd, sim.config.seed))
    diffs = compare_phases(sim.requests, live.requests)
    return PDParity(sim, live, diffs, len(recorder.calls), mismatches)
