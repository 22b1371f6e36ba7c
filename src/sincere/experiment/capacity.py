"""Capacity search: the highest arrival rate whose worst tier misses at most 1 % (Niyama).

A rate *passes* when the worst-tier violation rate (the largest share of one tier's
requests missing a target), averaged over the seeds, is at most ``max_violation``.
The search brackets the capacity by doubling (or halving) the rate from
``start_rate`` until the outcome flips, then bisects the bracket until it is narrower
than ``rel_tol`` of its upper end (or ``max_points`` rates were tried). It reports:

* the bracket ``[last passing, first failing]`` -- the capacity lies inside it as far
  as these seeds can tell;
* an estimate, interpolated linearly between the bracket's mean violations (Niyama's
  interpolation over a sweep);
* the seed spread at both ends (min / max violation and seeds passing), which says how
  sure the verdict is: a bracket end where seeds disagree is a coin toss.

The violation rate is assumed to grow with the rate (true of the simulator's queues
in expectation, not for every seed, hence the seed averages). A search needs SLO
targets: without a tier that has one, nothing can be violated and every rate would
pass, so :func:`check_searchable` refuses such a config, and every policy's config is
validated (and its engines built) before the first simulation runs.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sincere.core.errors import ConfigError
from sincere.experiment.metrics import tier_columns
from sincere.experiment.paths import get_path, set_fields, set_path
from sincere.experiment.tables import crossing

Evaluate = Callable[[list[dict[str, Any]]], list[float]]  # configs -> worst-tier violations


@dataclass(frozen=True)
class RatePoint:
    """The outcome at one rate."""

    rate: float  # req/s
    violations: tuple[float, ...]  # worst-tier violation per seed

    @property
    def mean(self) -> float:
        """Mean violation over the seeds."""
        return sum(self.violations) / len(self.violations)

    def passed(self, max_violation: float) -> bool:
        """Whether the seed mean is within the limit."""
        return self.mean <= max_violation

    def num_passing(self, max_violation: float) -> int:
        """Seeds that pass on their own."""
        return sum(v <= max_violation for v in self.violations)


@dataclass(frozen=True)
class CapacityResult:
    """The capacity of one policy."""

    policy: str | None  # the policy value set (None: the config's own)
    max_violation: float  # the limit, e.g. 0.01
    points: list[RatePoint] = field(default_factory=list)  # every rate tried, by rate

    @property
    def last_pass(self) -> RatePoint | None:
        """The highest passing rate below the first failure."""
        fail = self.first_fail
        ok = [p for p in self.points if p.passed(self.max_violation)]
        ok = [p for p in ok if fail is None or p.rate < fail.rate]
        return max(ok, key=lambda p: p.rate) if ok else None

    @property
    def first_fail(self) -> RatePoint | None:
        """The lowest failing rate."""
        bad = [p for p in self.points if not p.passed(self.max_violation)]
        return min(bad, key=lambda p: p.rate) if bad else None

    @property
    def estimate(self) -> float | None:
        """Linear interpolation of the crossing inside the bracket."""
        lo, hi = self.last_pass, self.first_fail
        if lo is None or hi is None:
            return None
        cap, _, _ = crossing([lo.rate, hi.rate], [lo.mean, hi.mean], self.max_violation)
        return cap

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready summary with every point."""
        lo, hi = self.last_pass, self.first_fail
        return {
            "policy": self.policy,
            "capacity_rps": self.estimate,
            "bracket_rps": [lo.rate if lo else None, hi.rate if hi else None],
            "max_violation": self.max_violation,
            "points": [{"rate": p.rate, "violations": list(p.violations)} for p in self.points],
        }


def policy_paths(config: dict[str, Any]) -> list[str]:
    """Each instance's policy field: ``engine.strategy`` (request level) or ``scheduler``."""
    paths = []
    for i, inst in enumerate(config.get("instances") or []):
        engine = inst.get("engine") or {}
        field_name = "strategy" if engine.get("kind") == "request-level" else "scheduler"
        paths.append(f"instances.{i}.engine.{field_name}")
    if not paths:
        raise ConfigError("the config has no instances", where="instances")
    return paths


def with_policy(config: dict[str, Any], policy: str | None, paths: Sequence[str]) -> dict[str, Any]:
    """``config`` with every policy path set (engine blocks created when left out)."""
    out = copy.deepcopy(config)
    if policy is None:
        return out
    for inst in out.get("instances") or []:
        inst.setdefault("engine", {})
    return set_fields(out, [(path, policy) for path in paths])


def policy_label(config: dict[str, Any], paths: Sequence[str]) -> str:
    """The policy ``config`` runs at ``paths`` (what a search without ``policy`` measures)."""
    values = []
    for path in paths:
        try:
            values.append(str(get_path(config, path)))
        except ConfigError:
            values.append("fcfs" if path.endswith(".scheduler") else "best-batch+timer")
    return "/".join(dict.fromkeys(values))


def check_all(config: dict[str, Any], policies: Sequence[str | None], paths: Sequence[str]) -> None:
    """:func:`check_searchable` for every policy; one error naming every problem."""
    from sincere.experiment.grid import problem_lines

    if len(policies) == 1:
        check_searchable(config, policies[0], paths)
        return
    problems: dict[str, list[str]] = {}
    for policy in policies:
        try:
            check_searchable(config, policy, paths)
        except ConfigError as exc:
            for line in problem_lines(exc):
                problems.setdefault(line, []).append(policy or policy_label(config, paths))
    if problems:
        lines = [f"cannot search the capacity of {len(policies)} policies; nothing was run:"]
        lines += [f"  {line} (policy {', '.join(names)})" for line, names in problems.items()]
        raise ConfigError("\n".join(lines))


def left_out_params(config: dict[str, Any], policy: str | None, paths: Sequence[str]) -> list[str]:
    """Policy parameters of ``config`` that ``policy`` does not get (they were given for
    the config's own policy), as ``name`` strings."""
    at_policy = with_policy(config, policy, paths)
    left: list[str] = []
    for path in paths:
        parent, _, name = path.rpartition(".")
        if name != "scheduler":
            continue
        before = _params_at(config, f"{parent}.scheduler_params")
        after = _params_at(at_policy, f"{parent}.scheduler_params")
        left += [k for k in before if k not in after]
    return sorted(set(left))


def _params_at(config: dict[str, Any], path: str) -> dict[str, Any]:
    try:
        value = get_path(config, path)
    except ConfigError:
        return {}
    return value if isinstance(value, dict) else {}


def slo_tiers(config: dict[str, Any]) -> list[str]:
    """Names of the workload's tiers that have at least one latency target."""
    from sincere.sim.config import load_config

    tiers = load_config(config).workload.tier_mix().tiers
    return [t.name for t in tiers if (t.ttft_s, t.ttlt_s, t.tbt_s) != (None, None, None)]


def check_searchable(config: dict[str, Any], policy: str | None, paths: Sequence[str]) -> None:
    """Raise :class:`ConfigError` unless ``config`` under ``policy`` can be searched: valid,
    buildable, and with SLO targets to violate."""
    from sincere.experiment.grid import check_config

    at_policy = with_policy(config, policy, paths)
    check_config(at_policy)
    if not slo_tiers(at_policy):
        raise ConfigError(
            "capacity needs SLO targets, and no tier of the workload has one (every rate "
            "would pass)",
            where="workload.tiers",
            allowed="a preset with targets (niyama, inferno, sincere-40/60/80) or tiers with "
            "ttft_s / ttlt_s / tbt_s",
        )


def _bracket(
    probe: Callable[[float], RatePoint], start: float, limit: float, max_points: int
) -> list[RatePoint]:
    """Double or halve from ``start`` until a pass and a fail are both seen."""
    points = [probe(start)]
    step = 2.0 if points[0].passed(limit) else 0.5
    while len(points) < max_points:
        rate = points[-1].rate * step
        points.append(probe(rate))
        if points[-1].passed(limit) != points[0].passed(limit):
            break
    return points


def search_capacity(
    config: dict[str, Any],
    evaluate: Evaluate,
    *,
    policy: str | None = None,
    policy_fields: Sequence[str] | None = None,
    rate_path: str = "workload.arrival.rate",
    seeds: Sequence[int] = (0, 1, 2),
    start_rate: float = 1.0,
    rel_tol: float = 0.05,
    max_violation: float = 0.01,
    max_points: int = 14,
) -> CapacityResult:
    """Bracket then bisect the capacity of ``config`` under ``policy``."""
    if not seeds:
        raise ConfigError("capacity search needs at least one seed", value=list(seeds))
    if not (start_rate > 0 and math.isfinite(start_rate)):
        raise ConfigError("start_rate must be a finite number > 0", value=start_rate)
    base = with_policy(config, policy, policy_fields or policy_paths(config))

    def probe(rate: float) -> RatePoint:
        at_rate = set_path(base, rate_path, rate)
        return RatePoint(rate, tuple(evaluate([{**at_rate, "seed": s} for s in seeds])))

    result = CapacityResult(
        policy, max_violation, _bracket(probe, start_rate, max_violation, max_points)
    )
    while len(result.points) < max_points:
        lo, hi = result.last_pass, result.first_fail
        if lo is None or hi is None or (hi.rate - lo.rate) <= rel_tol * hi.rate:
            break
        result.points.append(probe((lo.rate + hi.rate) / 2.0))
    result.points.sort(key=lambda p: p.rate)
    return result


def worst_violation(config: dict[str, Any]) -> float:
    """Simulate ``config``; its worst-tier violation rate (1.0 when nothing finished)."""
    from sincere.sim.api import simulate

    value = tier_columns(simulate(config).summary)["worst_tier_violation"]
    return float(value) if isinstance(value, int | float) else 1.0


def pool_evaluator(pool: ProcessPoolExecutor | None) -> Evaluate:
    """Evaluate configs in ``pool`` (in this process when ``None``)."""

    def evaluate(configs: list[dict[str, Any]]) -> list[float]:
        if pool is None:
            return [worst_violation(c) for c in configs]
        return list(pool.map(worst_violation, configs))

    return evaluate


def plot_capacity(results: Sequence[CapacityResult], path: Any, rate_label: str) -> Any:
    """Violation vs rate per policy (seed mean, min-max bars) with the limit line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for i, res in enumerate(results):
        xs = [p.rate for p in res.points]
        ys = [p.mean for p in res.points]
        err = [
            [p.mean - min(p.violations) for p in res.points],
            [max(p.violations) - p.mean for p in res.points],
        ]
        color = plt.get_cmap("tab10")(i % 10)
        label = (
            f"{res.policy or 'config'} (cap ≈ {res.estimate:.3g})"
            if res.estimate
            else (f"{res.policy or 'config'} (no bracket)")
        )
        ax.errorbar(xs, ys, yerr=err, marker="o", ms=3, capsize=2, color=color, label=label)
    limit = results[0].max_violation if results else 0.01
    ax.axhline(limit, color="grey", ls=":", lw=0.9)
    ax.set_yscale("symlog", linthresh=limit)
    ax.set_ylim(0.0, 1.05)
    ax.set_xlabel(f"arrival rate, req/s ({rate_label})")
    ax.set_ylabel("worst-tier violation rate")
    ax.set_title(f"capacity search: violation vs rate (line at {limit:.0%})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
