"""The candidate table: every (server, accelerator) pair, sized and priced once.

Both solvers work on this table, so the analyzer runs once per candidate, all
candidates in one vectorised bisection (identical replicas are sized once). For a
server ``s`` on accelerator ``a`` (one that ``model-data`` lists for the server's
model; only the current one if the server keeps its accelerator):

* max batch ``N`` by the optimizer's ``batch_rule`` (:func:`effective_batch`), at
  least 1 and at most :data:`MAX_BATCH`:

  - ``inferno`` (default, Inferno's own rule): the server's ``maxBatchSize`` as it is
    when set, else ``floor(maxBatchSize · atTokens / avgOutTokens)``;
  - ``kv``: ``floor(maxBatchSize · atTokens / (in + out))`` -- the batch the model
    data measured at ``atTokens`` tokens per request, rescaled to this load's whole
    request length, which is what a KV cache holds per sequence -- capped by the
    server's ``maxBatchSize`` when set. Inferno's rule ignores the prompt, so with
    prompts long against outputs it plans batches the KV cache cannot hold
    (``benchmarks/plan_vs_sim.py`` measures what that costs);
* the highest rate per replica meeting the class's SLOs (req/min), from
  :func:`sincere.optimize.sizing.max_rates`;
* replicas ``r = max(ceil(load / rate), minNumReplicas)`` and
  ``cost = r · accCount · cost(a)`` (cents/h);
* Inferno's transition penalty ``0.1·(c_a + c_b) + (c_b − c_a)`` when the server
  runs on another accelerator now (``c_a`` its current cost, ``c_b`` this one's),
  against ``c_b − c_a`` for staying. Up to the constant ``−c_a`` that is
  ``value = cost + penalty`` with ``penalty = 0.1·(c_a + c_b)`` on a move, 0 on a
  stay: what the solvers minimise.

Pairs whose replica cannot meet the SLOs at any rate are left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sincere.optimize.data import Problem, Server
from sincere.optimize.queueing import (
    AffineReplica,
    FloatArray,
    IntArray,
    ReplicaBank,
    affine_replica,
)
from sincere.optimize.sizing import Targets, max_rates

MAX_BATCH = 1024
"""Ceiling on a rescaled max batch (keeps the analyzer's state space bounded)."""

MS_PER_MIN = 60_000.0


@dataclass(frozen=True, slots=True)
class CandidateTable:
    """Feasible (server, accelerator) candidates as parallel arrays, grouped by server."""

    server: IntArray  # index into problem.servers
    accelerator: tuple[str, ...]  # accelerator name per candidate
    type_ix: IntArray  # index into ``types``
    types: tuple[str, ...]  # accelerator types, sorted
    max_batch: IntArray  # N
    rate_per_min: FloatArray  # SLO-meeting rate of one replica, req/min
    replicas: IntArray  # replicas needed alone
    cost_per_replica: FloatArray  # cents/h
    cost: FloatArray  # replicas · cost_per_replica
    penalty: FloatArray  # switching charge 0.1·(c_a + c_b) on a move, else 0; cents/h
    units_per_replica: IntArray  # units of the type one replica occupies
    replica_models: tuple[AffineReplica, ...]  # the analyzed replica of each candidate

    @property
    def value(self) -> FloatArray:
        """What the solvers minimise: cost plus transition penalty."""
        out: FloatArray = self.cost + self.penalty
        return out

    def of_server(self, num_servers: int) -> list[IntArray]:
        """Candidate indices of each server."""
        order = np.argsort(self.server, kind="stable")
        bounds = np.searchsorted(self.server[order], np.arange(num_servers + 1))
        return [order[bounds[i] : bounds[i + 1]] for i in range(num_servers)]


def effective_batch(
    max_batch: int,
    at_tokens: int,
    in_tokens: float,
    out_tokens: float,
    server_cap: int,
    rule: str = "inferno",
) -> int:
    """The max batch of a replica under ``rule`` (module docstring), in [1, MAX_BATCH]."""
    if rule == "inferno" and server_cap > 0:
        return max(1, min(server_cap, MAX_BATCH))
    per_request = out_tokens if rule == "inferno" else in_tokens + out_tokens
    n = max_batch
    if at_tokens > 0:
        n = int(max_batch * at_tokens / max(per_request, 1.0))
    if server_cap > 0:
        n = min(n, server_cap)
    return max(1, min(n, MAX_BATCH))


def current_cost(problem: Problem, server: Server) -> float:
    """Cost of the server's current allocation (given, or priced from the data)."""
    cur = server.current
    if cur.cost is not None or cur.accelerator is None:
        return cur.cost or 0.0
    perf = problem.models.get((server.model, cur.accelerator))
    count = perf.acc_count if perf else 1
    return problem.accelerators[cur.accelerator].cost * count * cur.num_replicas


def _rows(problem: Problem) -> list[tuple[int, str, AffineReplica, Targets]]:
    """Every allowed (server, accelerator) pair with its replica model and targets."""
    rows = []
    for s_ix, s in enumerate(problem.servers):
        load = s.current.load
        targets = problem.classes[s.service_class].targets[s.model]
        keep = s.current.accelerator if s.keep_accelerator else None
        for (model, acc), perf in problem.models.items():
            if model != s.model or (keep is not None and acc != keep):
                continue
            n = effective_batch(
                perf.max_batch,
                perf.at_tokens,
                load.avg_in_tokens,
                load.avg_out_tokens,
                s.max_batch,
                problem.optimizer.batch_rule,
            )
            rep = affine_replica(  # prefill work: the prompt tokens its prefix cache lacks
                perf.params,
                load.uncached_in_tokens,
                load.avg_out_tokens,
                n,
                problem.optimizer.queue_factor,
            )
            rows.append((s_ix, acc, rep, targets))
    return rows


def size_replicas(replicas: list[AffineReplica], targets: list[Targets]) -> FloatArray:
    """SLO-meeting rate (req/min) per replica, sizing each distinct one once.

    Replicas are sized in banks of similar max batch (one per power of two), so a bank's
    padding to its largest batch costs at most twice the states it needs.
    """
    keys = [(r, t) for r, t in zip(replicas, targets, strict=True)]
    unique: dict[tuple[AffineReplica, Targets], int] = {}
    inverse = np.array([unique.setdefault(k, len(unique)) for k in keys], dtype=np.int64)
    firsts = list(unique)
    octave = np.array([r.max_batch.bit_length() for r, _ in firsts], dtype=np.int64)
    rates = np.empty(len(firsts))
    for level in np.unique(octave):
        ix = np.flatnonzero(octave == level)
        bank = ReplicaBank([firsts[i][0] for i in ix])
        rates[ix] = max_rates(bank, [firsts[i][1] for i in ix])
    out: FloatArray = rates[inverse] * MS_PER_MIN
    return out


def build_candidates(problem: Problem) -> CandidateTable:
    """Size and price every allowed (server, accelerator) pair of ``problem``."""
    rows = _rows(problem)
    if not rows:
        return _empty_table(problem)
    rate = size_replicas([r[2] for r in rows], [r[3] for r in rows])
    keep = [i for i, row in enumerate(rows) if rate[i] > 0 or _load(problem, row[0]) == 0]
    rows = [rows[i] for i in keep]
    rate = rate[keep]
    server = np.array([r[0] for r in rows], dtype=np.int64)
    accs = tuple(r[1] for r in rows)
    loads = np.array([_load(problem, s) for s in server])
    mins = np.array([problem.servers[s].min_replicas for s in server], dtype=np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        need = np.where(loads > 0, np.ceil(loads / rate - 1e-9), 0.0)
    replicas = np.maximum(need.astype(np.int64), mins)
    per_rep = np.array(
        [
            problem.accelerators[a].cost * problem.models[(problem.servers[s].model, a)].acc_count
            for s, a in zip(server, accs, strict=True)
        ]
    )
    cost = replicas * per_rep
    return _finish(problem, server, accs, rows, rate, replicas, per_rep, cost)


def _finish(
    problem: Problem,
    server: IntArray,
    accs: tuple[str, ...],
    rows: list[tuple[int, str, AffineReplica, Targets]],
    rate: FloatArray,
    replicas: IntArray,
    per_rep: FloatArray,
    cost: FloatArray,
) -> CandidateTable:
    """Penalties, units and types; assemble the table."""
    types = tuple(sorted({a.type for a in problem.accelerators.values()}))
    type_pos = {t: i for i, t in enumerate(types)}
    penalty = np.zeros(len(rows))
    units = np.empty(len(rows), dtype=np.int64)
    type_ix = np.empty(len(rows), dtype=np.int64)
    for i, (s_ix, acc, _, _) in enumerate(rows):
        srv = problem.servers[s_ix]
        spec = problem.accelerators[acc]
        units[i] = spec.multiplicity * problem.models[(srv.model, acc)].acc_count
        type_ix[i] = type_pos[spec.type]
        if srv.current.accelerator is not None and srv.current.accelerator != acc:
            c_a = current_cost(problem, srv)
            penalty[i] = switch_charge(c_a, float(cost[i]))
    return CandidateTable(
        server,
        accs,
        type_ix,
        types,
        np.array([r[2].max_batch for r in rows], dtype=np.int64),
        rate,
        replicas,
        per_rep,
        cost,
        penalty,
        units,
        tuple(r[2] for r in rows),
    )


def transition_penalty(cost_from: float, cost_to: float) -> float:
    """Inferno's value of moving a server between accelerators (cents/h).

    It is the change of cost ``c_b − c_a`` plus a switching charge ``0.1·(c_a + c_b)``;
    staying on the same accelerator is worth the change of cost alone.
    """
    return 0.1 * (cost_from + cost_to) + (cost_to - cost_from)


def switch_charge(cost_from: float, cost_to: float) -> float:
    """The part of :func:`transition_penalty` beyond the change of cost: ``0.1·(c_a + c_b)``.

    The current cost ``c_a`` is the same for all of a server's candidates, so
    minimising Inferno's transition value is minimising ``cost + switch_charge``.
    """
    return transition_penalty(cost_from, cost_to) - (cost_to - cost_from)


def _load(problem: Problem, s_ix: int) -> float:
    return problem.servers[int(s_ix)].current.load.arrival_rate


def _empty_table(problem: Problem) -> CandidateTable:
    types = tuple(sorted({a.type for a in problem.accelerators.values()}))
    i, f = np.zeros(0, dtype=np.int64), np.zeros(0)
    return CandidateTable(i, (), i, types, i, f, i, f, f, f, i, ())
