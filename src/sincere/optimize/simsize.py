"""The simulator in the planning loop: verify an allocation, or size replicas by simulation.

Both run one replica of a candidate on the discrete-event simulator, exactly as
:mod:`sincere.optimize.xcheck` builds it (one continuous-batching engine with the
candidate's max batch, whole-prompt prefill, the step model of the model data's
parameters: ``inferno`` for the older form, ``inferno-chunked`` for ``perfParms``),
with Poisson arrivals at the per-replica rate and the load's length distribution
(fixed at the load's mean lengths unless a ``lengths`` block of the simulation
config is given, e.g. ``{"source": "azure-conv-2023", "max_prompt_tokens": 2048}``).

* :func:`verify` simulates every allocated server at its planned replica count and
  reports the simulated mean TTFT / ITL and SLO attainment (the share of requests
  whose TTFT and whose mean ITL are within the targets) beside the analyzer's.
* :func:`replica_capacity` is the capacity search of one candidate: the highest
  per-replica rate whose simulated mean TTFT and mean ITL meet the class's targets
  (Inferno's SLOs are means) with every request finished and at least
  ``min_attainment`` (default 90 %) of the requests within both targets. It brackets from a start
  rate (the analyzer's) by doubling or halving, then bisects until the bracket is
  narrower than ``rel_tol``. Results are cached on disk, one JSON file per key (a
  hash of everything the answer depends on), so a re-plan of the same candidates
  costs file reads; misses run in parallel over ``workers`` processes.
* :func:`simulated_sizer` plugs those capacities into
  :func:`sincere.optimize.plan.solve`, so the same greedy / MILP allocation runs
  on simulated instead of analytic per-replica rates. A candidate its fitted lines
  misrepresent -- attention ranks stepping together, which the lines price as one even
  engine -- can be searched as deployed instead (:class:`GroupJob`, given by the
  caller: :func:`sincere.optimize.pd_input.plan_colocated`).

Rates are requests per second unless named ``_per_min``; times ms.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sincere.core.errors import ConfigError
from sincere.optimize.candidates import CandidateRow, Sizer, size_replicas
from sincere.optimize.data import Problem
from sincere.optimize.plan import ServerAllocation, Solution
from sincere.optimize.queueing import ModelParams
from sincere.optimize.sizing import Targets
from sincere.optimize.xcheck import replica_sim_config

S_PER_MIN = 60.0
CACHE_VERSION = 1  # bump when what a cached capacity means changes
DEFAULT_THRESHOLD = 0.25
"""Relative gap between the analyzer's and the simulated mean TTFT or ITL above which
:func:`verify` flags a server."""


@dataclass(frozen=True, slots=True)
class SimSettings:
    """How the simulator is run for planning."""

    num_requests: int = 400  # requests per simulated replica and seed
    seeds: tuple[int, ...] = (0,)
    lengths: Mapping[str, Any] | None = None  # simulation ``lengths:`` block; None: fixed means
    rel_tol: float = 0.05  # capacity bracket width, relative to its upper end
    max_points: int = 14  # rates tried per capacity search
    min_attainment: float = 0.9  # share of requests within both targets a replica must reach
    workers: int = 1  # processes for capacity searches that miss the cache
    cache_dir: Path | None = field(default_factory=lambda: default_cache_dir())

    def __post_init__(self) -> None:
        if self.num_requests < 1 or not self.seeds or self.workers < 1:
            raise ConfigError(
                "need num_requests >= 1, at least one seed and workers >= 1",
                value=(self.num_requests, self.seeds, self.workers),
            )
        if not 0.0 <= self.min_attainment <= 1.0:
            raise ConfigError("min_attainment must be in [0, 1]", value=self.min_attainment)
        if not 0.0 < self.rel_tol < 1.0:
            raise ConfigError("rel_tol must be in (0, 1)", value=self.rel_tol)


def default_cache_dir() -> Path:
    """``$SINCERE_CACHE/plan-capacity`` (default ``~/.cache/sincere/plan-capacity``)."""
    root = os.environ.get("SINCERE_CACHE") or str(Path.home() / ".cache" / "sincere")
    return Path(root) / "plan-capacity"


@dataclass(frozen=True, slots=True)
class SimOutcome:
    """One simulated replica at one rate, averaged over the seeds."""

    rate_per_s: float
    ttft_ms: float  # mean TTFT of finished requests
    itl_ms: float  # mean of per-request mean ITL
    attainment: float  # share of requests within both targets (unfinished count as misses)
    finished: float  # share of requests that finished

    def meets(self, targets: Targets, min_attainment: float = 0.0) -> bool:
        """Mean TTFT and ITL within the targets, every request finished and at least
        ``min_attainment`` of them within both targets."""
        ttft_ok = targets.ttft_ms is None or self.ttft_ms <= targets.ttft_ms
        itl_ok = targets.itl_ms is None or self.itl_ms <= targets.itl_ms
        enough = self.attainment >= min_attainment
        return ttft_ok and itl_ok and self.finished >= 1.0 and enough


@dataclass(frozen=True, slots=True)
class ReplicaJob:
    """Everything one simulated replica depends on (also the cache key)."""

    params: ModelParams
    in_tokens: int
    out_tokens: int
    max_batch: int
    targets: Targets
    num_requests: int
    seeds: tuple[int, ...]
    lengths: Mapping[str, Any] | None
    min_attainment: float = 0.0  # see SimOutcome.meets

    def passes(self, outcome: SimOutcome) -> bool:
        """Whether ``outcome`` meets this job's targets and attainment."""
        return outcome.meets(self.targets, self.min_attainment)

    def config(self, rate_per_s: float, seed: int) -> dict[str, Any]:
        """The simulation config of this replica at ``rate_per_s``."""
        cfg = replica_sim_config(
            self.params,
            in_tokens=self.in_tokens,
            out_tokens=self.out_tokens,
            max_batch=self.max_batch,
            rate_per_s=rate_per_s,
            num_requests=self.num_requests,
            seed=seed,
        )
        if self.lengths is not None:
            cfg["workload"]["lengths"] = dict(self.lengths)
        return cfg

    def key(self, extra: Mapping[str, Any]) -> str:
        """A stable hash of the job and ``extra`` search settings."""
        raw = {
            "v": CACHE_VERSION,
            "kind": type(self.params).__name__,
            "params": asdict(self.params),
            "in": self.in_tokens,
            "out": self.out_tokens,
            "batch": self.max_batch,
            "targets": asdict(self.targets),
            "n": self.num_requests,
            "seeds": list(self.seeds),
            "lengths": self.lengths,
            "attainment": self.min_attainment,
            **extra,
        }
        return _digest(raw)


@dataclass(frozen=True, slots=True)
class GroupJob:
    """A replica simulated as deployed rather than on fitted lines: an instance of attention
    ranks stepping together (``instance``: its entry of a simulation config, the step model
    and engine included), as :func:`sincere.optimize.pd_check.group_replica` builds it.
    Its lines cannot say that one rank's prefill holds the other ranks' decodes."""

    instance: Mapping[str, Any]
    model: str
    in_tokens: int
    out_tokens: int
    targets: Targets
    num_requests: int
    seeds: tuple[int, ...]
    lengths: Mapping[str, Any] | None
    min_attainment: float = 0.0

    def passes(self, outcome: SimOutcome) -> bool:
        """Whether ``outcome`` meets this job's targets and attainment."""
        return outcome.meets(self.targets, self.min_attainment)

    def config(self, rate_per_s: float, seed: int) -> dict[str, Any]:
        """The simulation config of this replica at ``rate_per_s``."""
        lengths: dict[str, Any] = dict(self.lengths) if self.lengths is not None else {
            "kind": "independent",
            "prompt": {"kind": "fixed", "tokens": self.in_tokens},
            "output": {"kind": "fixed", "tokens": self.out_tokens},
        }  # fmt: skip
        workload = {
            "num_requests": self.num_requests,
            "arrival": {"kind": "poisson", "rate": rate_per_s},
            "lengths": lengths,
            "models": {self.model: 1.0},
        }
        return {"seed": seed, "workload": workload, "instances": [dict(self.instance)]}

    def key(self, extra: Mapping[str, Any]) -> str:
        """A stable hash of the job and ``extra`` search settings."""
        raw = {
            "v": CACHE_VERSION, "kind": "group", "instance": self.instance, "model": self.model,
            "in": self.in_tokens, "out": self.out_tokens, "targets": asdict(self.targets),
            "n": self.num_requests, "seeds": list(self.seeds), "lengths": self.lengths,
            "attainment": self.min_attainment, **extra,
        }  # fmt: skip
        return _digest(raw)


def _digest(raw: Mapping[str, Any]) -> str:
    """A job's cache key: the hash of its settings as sorted JSON."""
    text = json.dumps(raw, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


Job = ReplicaJob | GroupJob
"""What a capacity search simulates: one replica on fitted lines, or one as deployed."""
GroupReplica = Callable[[Problem, "CandidateRow"], Mapping[str, Any] | None]
"""A candidate row's replica as deployed (an instance entry of a simulation config), for
rows whose fitted lines miss how it runs (attention ranks stepping together); ``None``
for the rest."""


def simulate_replica(job: Job, rate_per_s: float) -> SimOutcome:
    """Run ``job`` at ``rate_per_s`` for every seed; the seed-averaged outcome."""
    from sincere.sim import simulate  # sim sits below optimize, but is heavy to import

    rows = []
    for seed in job.seeds:
        res = simulate(job.config(rate_per_s, seed))
        rows.append(_outcome_row(res.requests_in, res.records, job.targets))
    ttft, itl, att, fin = (float(np.mean([r[i] for r in rows])) for i in range(4))
    return SimOutcome(rate_per_s, ttft, itl, att, fin)


def _outcome_row(requests: Any, records: Any, targets: Targets) -> tuple[float, ...]:
    """Mean TTFT, mean ITL (ms), attainment and finished share of one run."""
    done = np.isfinite(records.finished_at) & ~records.rejected
    ttft = (records.first_token_at - requests.arrival_at) * 1e3
    steps = np.maximum(records.output_tokens - 1, 1)
    itl = (records.finished_at - records.first_token_at) * 1e3 / steps
    ok = done.copy()
    if targets.ttft_ms is not None:
        ok &= ttft <= targets.ttft_ms
    if targets.itl_ms is not None:
        ok &= itl <= targets.itl_ms
    n = max(len(done), 1)
    if not done.any():
        return (math.inf, math.inf, 0.0, 0.0)
    multi = done & (records.output_tokens > 1)
    mean_itl = float(itl[multi].mean()) if multi.any() else 0.0
    return (float(ttft[done].mean()), mean_itl, float(ok.sum()) / n, float(done.sum()) / n)


def replica_capacity(
    job: Job, start_rate: float, rel_tol: float = 0.05, max_points: int = 14
) -> float:
    """Highest rate (req/s) at which the simulated replica meets ``job.targets``; 0 if none.

    Passing means :meth:`ReplicaJob.passes`. Brackets from ``start_rate`` by doubling /
    halving, then bisects (module docstring).
    """
    if not (start_rate > 0 and math.isfinite(start_rate)):
        raise ConfigError("start rate must be a finite number > 0 (req/s)", value=start_rate)
    lo, hi = 0.0, math.inf
    rate, tried = start_rate, 0
    while tried < max_points and (hi == math.inf or lo == 0.0):
        tried += 1
        if job.passes(simulate_replica(job, rate)):
            lo, rate = rate, rate * 2.0
        else:
            hi, rate = rate, rate / 2.0
        if hi < start_rate * 2.0**-8:  # nothing passes even far below the start
            return 0.0
    while tried < max_points and hi != math.inf and hi - lo > rel_tol * hi:
        tried += 1
        mid = 0.5 * (lo + hi)
        if job.passes(simulate_replica(job, mid)):
            lo = mid
        else:
            hi = mid
    return lo


def _capacity_task(args: tuple[Job, float, float, int]) -> float:
    return replica_capacity(*args)


def capacities(
    jobs: Sequence[Job], start_rates: Sequence[float], settings: SimSettings
) -> list[float]:
    """Per-replica capacity (req/s) of every job, from the cache or by search."""
    extra = {"rel_tol": settings.rel_tol, "max_points": settings.max_points}
    keys = [job.key(extra) for job in jobs]
    out: dict[str, float] = {}
    cache = settings.cache_dir
    for key in set(keys):
        hit = _read_cache(cache, key)
        if hit is not None:
            out[key] = hit
    todo: dict[str, tuple[Job, float, float, int]] = {}
    for job, key, start in zip(jobs, keys, start_rates, strict=True):
        if key not in out and key not in todo:
            todo[key] = (job, max(start, 1e-6), settings.rel_tol, settings.max_points)
    if todo:
        args = list(todo.values())
        if settings.workers > 1 and len(args) > 1:
            with ProcessPoolExecutor(min(settings.workers, len(args))) as pool:
                found = list(pool.map(_capacity_task, args))
        else:
            found = [_capacity_task(a) for a in args]
        for key, rate in zip(todo, found, strict=True):
            out[key] = rate
            _write_cache(cache, key, rate)
    return [out[k] for k in keys]


def _read_cache(cache: Path | None, key: str) -> float | None:
    if cache is None:
        return None
    path = cache / f"{key}.json"
    try:
        value = json.loads(path.read_text())["capacity_rps"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return float(value) if isinstance(value, int | float) else None


def _write_cache(cache: Path | None, key: str, rate: float) -> None:
    if cache is None:
        return
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f"{key}.json.tmp{os.getpid()}"
    tmp.write_text(json.dumps({"capacity_rps": rate}))
    tmp.replace(cache / f"{key}.json")


def job_for(
    problem: Problem, row: CandidateRow, settings: SimSettings, lengths: Mapping[str, Any] | None
) -> ReplicaJob:
    """The simulated replica of one candidate row of ``problem``."""
    s_ix, acc, replica, targets = row
    server = problem.servers[s_ix]
    load = server.current.load
    return ReplicaJob(
        problem.models[(server.model, acc)].params,
        max(1, round(load.avg_in_tokens)),
        max(1, round(load.avg_out_tokens)),
        replica.max_batch,
        targets,
        settings.num_requests,
        settings.seeds,
        lengths,
        settings.min_attainment,
    )


def simulated_sizer(
    settings: SimSettings,
    lengths: Mapping[str, Mapping[str, Any]] | None = None,
    groups: GroupReplica | None = None,
) -> Sizer:
    """A sizer for :func:`sincere.optimize.plan.solve` whose per-replica rates come from
    :func:`replica_capacity`; ``lengths`` maps a server name to its ``lengths`` block
    (servers not in it run at fixed mean lengths, or ``settings.lengths``). Rows for which
    ``groups`` gives an instance are simulated as that instance (:class:`GroupJob`)."""
    per_server = dict(lengths or {})

    def job(problem: Problem, row: CandidateRow) -> Job:
        server = problem.servers[row[0]]
        block = per_server.get(server.name, settings.lengths)
        instance = None if groups is None else groups(problem, row)
        if instance is None:
            return job_for(problem, row, settings, block)
        load = server.current.load
        return GroupJob(
            instance, str(instance["model"]), max(1, round(load.avg_in_tokens)),
            max(1, round(load.avg_out_tokens)), row[3], settings.num_requests,
            settings.seeds, block, settings.min_attainment,
        )  # fmt: skip

    def sizer(problem: Problem, rows: Sequence[CandidateRow]) -> Any:
        start = size_replicas([r[2] for r in rows], [r[3] for r in rows]) / S_PER_MIN
        jobs = [job(problem, row) for row in rows]
        rates = capacities(jobs, [float(x) for x in start], settings)
        return np.asarray(rates, dtype=np.float64) * S_PER_MIN

    return sizer


@dataclass(frozen=True, slots=True)
class Verdict:
    """The analyzer's and the simulator's view of one allocated server."""

    server: str
    replicas: int
    analyzer_ttft_ms: float
    analyzer_itl_ms: float
    sim: SimOutcome
    targets: Targets
    threshold: float
    min_attainment: float = 0.0

    @property
    def sim_meets(self) -> bool:
        """The simulated means meet the class's targets (and the attainment floor)."""
        return self.sim.meets(self.targets, self.min_attainment)

    @property
    def disagrees(self) -> bool:
        """Simulated TTFT or ITL off the analyzer's by more than ``threshold``, or the
        two disagree on whether the SLOs are met."""
        ana_meets = (
            self.targets.ttft_ms is None or self.analyzer_ttft_ms <= self.targets.ttft_ms
        ) and (self.targets.itl_ms is None or self.analyzer_itl_ms <= self.targets.itl_ms)
        return (
            _rel_gap(self.analyzer_ttft_ms, self.sim.ttft_ms) > self.threshold
            or _rel_gap(self.analyzer_itl_ms, self.sim.itl_ms) > self.threshold
            or ana_meets != self.sim_meets
        )

    def line(self) -> str:
        """One line: both answers, attainment and the verdict."""
        flag = "DISAGREE" if self.disagrees else "agree"
        ok = "meets SLO" if self.sim_meets else "MISSES SLO"
        return (
            f"{self.server}: {self.replicas} replicas; TTFT analyzer {self.analyzer_ttft_ms:.0f} "
            f"ms vs sim {self.sim.ttft_ms:.0f} ms; ITL analyzer {self.analyzer_itl_ms:.1f} ms "
            f"vs sim {self.sim.itl_ms:.1f} ms; sim attainment {self.sim.attainment:.1%}, "
            f"{ok} [{flag}]"
        )


def _rel_gap(a: float, b: float) -> float:
    if not (math.isfinite(a) and math.isfinite(b)):
        return math.inf
    return abs(a - b) / max(abs(b), 1e-9)


def verify(
    problem: Problem,
    solution: Solution,
    settings: SimSettings,
    *,
    lengths: Mapping[str, Mapping[str, Any]] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
) -> list[Verdict]:
    """Simulate one replica of every allocated server at its per-replica rate."""
    per_server = dict(lengths or {})
    out = []
    for srv, alloc in zip(problem.servers, solution.allocations, strict=True):
        if alloc.num_replicas < 1 or alloc.accelerator is None:
            continue
        job = _verify_job(problem, srv.model, alloc, settings)
        job = ReplicaJob(
            job.params,
            job.in_tokens,
            job.out_tokens,
            job.max_batch,
            problem.classes[srv.service_class].targets[srv.model],
            job.num_requests,
            job.seeds,
            per_server.get(srv.name, settings.lengths),
        )
        rate = alloc.load.arrival_rate / S_PER_MIN / alloc.num_replicas
        sim = simulate_replica(job, rate) if rate > 0 else SimOutcome(0.0, 0.0, 0.0, 1.0, 1.0)
        out.append(
            Verdict(
                srv.name,
                alloc.num_replicas,
                alloc.ttft_ms,
                alloc.itl_ms,
                sim,
                job.targets,
                threshold,
                settings.min_attainment,
            )
        )
    return out


def _verify_job(
    problem: Problem, model: str, alloc: ServerAllocation, settings: SimSettings
) -> ReplicaJob:
    load = alloc.load
    params = problem.models[(model, alloc.accelerator or "")].params
    return ReplicaJob(
        params,
        max(1, round(load.avg_in_tokens)),
        max(1, round(load.avg_out_tokens)),
        alloc.max_batch,
        Targets(),
        settings.num_requests,
        settings.seeds,
        settings.lengths,
    )


__all__ = [
    "DEFAULT_THRESHOLD",
    "SIZING_CHOICES",
    "GroupJob",
    "ReplicaJob",
    "SimOutcome",
    "SimSettings",
    "SizedPlan",
    "Verdict",
    "capacities",
    "default_cache_dir",
    "plan_with_sizing",
    "replica_capacity",
    "simulate_replica",
    "simulated_sizer",
    "verify",
]


SIZING_CHOICES = ("analyzer", "simulate", "auto")
"""How :func:`plan_with_sizing` sizes replicas: Inferno's analyzer, the simulator, or the
analyzer unless the simulator disagrees with its answer."""


@dataclass(frozen=True, slots=True)
class SizedPlan:
    """A solution and which sizing produced it, with the reason (for decision logs)."""

    solution: Solution
    sizing: str  # "analyzer" or "simulate"
    why: str


def plan_with_sizing(
    problem: Problem, sizing: str, settings: SimSettings, *, solver: str | None = None
) -> SizedPlan:
    """Solve with the chosen sizing; ``auto`` verifies the analyzer's answer and switches
    to the simulated sizing when any server disagrees (:attr:`Verdict.disagrees`)."""
    from sincere.optimize.plan import solve

    if sizing not in SIZING_CHOICES:
        raise ConfigError("unknown sizing", value=sizing, allowed=SIZING_CHOICES)
    if sizing == "simulate":
        sol = solve(problem, solver=solver, sizer=simulated_sizer(settings))
        return SizedPlan(sol, "simulate", "requested")
    analytic = solve(problem, solver=solver)
    if sizing == "analyzer":
        return SizedPlan(analytic, "analyzer", "requested (Inferno's model)")
    off = [v for v in verify(problem, analytic, settings, threshold=0.5) if v.disagrees]
    if not off:
        return SizedPlan(analytic, "analyzer", "simulation agrees with the analyzer")
    sol = solve(problem, solver=solver, sizer=simulated_sizer(settings))
    names = ", ".join(v.server for v in off)
    why = (
        f"analyzer and simulation disagree on {names}; simulated sizing "
        f"{sum(a.num_replicas for a in sol.allocations)} replicas "
        f"({sol.total_cost:.0f} ¢/h) vs analyzer "
        f"{sum(a.num_replicas for a in analytic.allocations)} ({analytic.total_cost:.0f} ¢/h)"
    )
    return SizedPlan(sol, "simulate", why)
