"""Inferno's queueing analyzer against the discrete-event simulator, one replica at a time.

The analyzer (:mod:`sincere.optimize.queueing`) models a replica as a
state-dependent M/M/1/K queue whose service rate with ``n`` requests in service is
``n / T(n)``, ``T(n) = prefill(n) + (out − 1)·decode(n)``. The simulator runs the
same replica at iteration level: one continuous-batching engine with
``max_num_seqs = N``, the ``fcfs`` scheduler with a token budget so large that a
prompt is always prefilled whole (as Inferno assumes), KV memory so large that it
never binds, and the ``inferno`` step model, whose iteration times are exactly
Inferno's ``decode(n) = α + β·n`` and ``prefill(n) = γ + δ·in·n`` (a mixed
iteration costs their sum). Inferno's current ``perfParms`` form runs on the
``inferno-chunked`` step model (``α + β·tokens + γ·context`` per iteration), also
with whole-prompt prefill. Arrivals are Poisson at ``λ``; prompt and output
lengths are fixed. What differs is only the queueing abstraction, so the gap
between the two is the analyzer's modelling error: exponential service times,
prefill amortised over the batch instead of stalling every decode, no
iteration-boundary waits.

With ``kv_tokens`` the simulated KV cache holds that many tokens (16-token blocks)
instead of never binding: what the model data's ``maxBatchSize`` sequences of
``atTokens`` tokens occupy, so a planned batch larger than memory allows queues or
preempts as a real continuous-batching engine does (``benchmarks/plan_vs_sim.py``
compares the planner's batch rules this way).

:func:`check_replica` returns both answers side by side; :func:`replica_simulator`
wraps it as the :data:`~sincere.optimize.hooks.ServerSimulator` that
:func:`~sincere.optimize.hooks.cross_check` expects. Rates are requests per second,
times milliseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sincere.core.errors import ConfigError
from sincere.optimize.data import ModelPerf, Problem, Server
from sincere.optimize.hooks import PredictedVsMeasured, ServerSimulator
from sincere.optimize.plan import ServerAllocation
from sincere.optimize.queueing import (
    DEFAULT_QUEUE_FACTOR,
    DecodePrefillParams,
    ModelParams,
    affine_replica,
    analyze,
)

HOST_MODEL = "llama-3-8b"
"""Catalog model the simulated instance is declared as; with the ``inferno`` step model
and an explicit KV-block count it only names the requests' model, timing ignores it."""

HOST_ACCELERATOR = "A100-80GB"
"""Catalog accelerator of the simulated instance (cost reporting only)."""

NUM_KV_BLOCKS = 10_000_000  # so many 16-token blocks that memory never binds
BLOCK_TOKENS = 16  # tokens per simulated KV block
MS_PER_S = 1e3
S_PER_MIN = 60.0


@dataclass(frozen=True, slots=True)
class ReplicaCheck(PredictedVsMeasured):
    """Analyzer and simulator for one replica at one arrival rate."""

    rate_per_s: float  # λ offered, requests per second
    load_fraction: float  # λ / μ(N), the analyzer's maximum rate
    predicted_ttft_ms: float  # analyzer's mean TTFT
    predicted_itl_ms: float  # analyzer's mean ITL
    measured_ttft_ms: float  # simulator's mean TTFT over completed requests
    measured_itl_ms: float  # simulator's mean gap between consecutive tokens
    measured_throughput_rps: float  # simulator's completed requests per second
    num_requests: int  # requests simulated


def _step_and_budget(params: ModelParams, in_tokens: int, max_batch: int) -> tuple[Any, int]:
    """The ``step_model`` block and the per-iteration token budget for ``params``.

    Decode/prefill parameters get the ``inferno`` step model, ``perfParms`` the
    ``inferno-chunked`` one (``α + β·tokens + γ·context``, the iteration Inferno's
    current form averages); both with a budget that fits ``max_batch`` whole prompts,
    so a prompt is prefilled in one iteration as both forms assume.
    """
    if isinstance(params, DecodePrefillParams):
        step = {"alpha_ms": params.alpha, "beta_ms": params.beta}
        step |= {"gamma_ms": params.gamma, "delta_ms": params.delta}
        return {"kind": "inferno", "params": step}, max_batch * (in_tokens + 1)
    step = {"alpha_ms": params.alpha, "beta_ms": params.beta, "gamma_ms": params.gamma}
    return {"kind": "inferno-chunked", "params": step}, max_batch * (in_tokens + 1)


def replica_sim_config(
    params: ModelParams,
    *,
    in_tokens: int,
    out_tokens: int,
    max_batch: int,
    rate_per_s: float,
    num_requests: int,
    seed: int = 0,
    kv_tokens: int | None = None,
) -> dict[str, Any]:
    """The simulation config (a mapping for :func:`sincere.sim.simulate`) of one replica;
    ``kv_tokens``: KV-cache capacity in tokens (``None``: memory never binds)."""
    if in_tokens < 1 or out_tokens < 1 or max_batch < 1 or num_requests < 1:
        raise ConfigError(
            "in_tokens, out_tokens, max_batch and num_requests must be >= 1",
            value=(in_tokens, out_tokens, max_batch, num_requests),
        )
    if not (rate_per_s > 0.0 and math.isfinite(rate_per_s)):
        raise ConfigError("arrival rate must be a finite number > 0 (req/s)", value=rate_per_s)
    if kv_tokens is not None and kv_tokens < in_tokens + out_tokens:
        raise ConfigError(
            "the KV cache must hold at least one whole request (in + out tokens)",
            value=(kv_tokens, in_tokens + out_tokens),
        )
    step, budget = _step_and_budget(params, in_tokens, max_batch)
    lengths = {"prompt": {"kind": "fixed", "tokens": in_tokens}}
    lengths["output"] = {"kind": "fixed", "tokens": out_tokens}
    blocks = NUM_KV_BLOCKS if kv_tokens is None else -(-kv_tokens // BLOCK_TOKENS)
    engine = {"scheduler": "fcfs", "max_num_seqs": max_batch, "num_kv_blocks": blocks}
    engine["max_num_batched_tokens"] = budget
    return {
        "seed": seed,
        "workload": {
            "num_requests": num_requests,
            "arrival": {"kind": "poisson", "rate": rate_per_s},
            "lengths": {"kind": "independent", **lengths},
            "models": {HOST_MODEL: 1.0},
        },
        "instances": [
            {
                "model": HOST_MODEL,
                "accelerator": HOST_ACCELERATOR,
                "step_model": step,
                "engine": engine,
            }
        ],
    }


def check_replica(
    params: ModelParams,
    *,
    in_tokens: int,
    out_tokens: int,
    max_batch: int,
    rate_per_s: float,
    num_requests: int = 20_000,
    seed: int = 0,
    queue_factor: int = DEFAULT_QUEUE_FACTOR,
    kv_tokens: int | None = None,
) -> ReplicaCheck:
    """Predicted and simulated mean TTFT and ITL of one replica under Poisson load ``λ``
    (``kv_tokens``: the simulated KV cache's capacity, see the module docstring)."""
    from sincere.sim import simulate  # sim sits above optimize; import on use only

    cfg = replica_sim_config(
        params,
        in_tokens=in_tokens,
        out_tokens=out_tokens,
        max_batch=max_batch,
        rate_per_s=rate_per_s,
        num_requests=num_requests,
        seed=seed,
        kv_tokens=kv_tokens,
    )
    replica = affine_replica(params, in_tokens, out_tokens, max_batch, queue_factor)
    predicted = analyze(replica, rate_per_s / MS_PER_S)
    summary = simulate(cfg).summary
    return ReplicaCheck(
        rate_per_s=rate_per_s,
        load_fraction=rate_per_s / (replica.max_rate * MS_PER_S),
        predicted_ttft_ms=predicted.ttft_ms,
        predicted_itl_ms=predicted.itl_ms,
        measured_ttft_ms=_ms(summary["ttft_s"]["mean"]),
        measured_itl_ms=_ms(summary["itl_s"]["mean"]),
        measured_throughput_rps=float(summary["throughput_rps"] or 0.0),
        num_requests=num_requests,
    )


def _ms(value_s: float | None) -> float:
    """Seconds to ms; a statistic the run could not produce is NaN."""
    return math.nan if value_s is None else float(value_s) * MS_PER_S


def max_rate_per_s(
    params: ModelParams,
    *,
    in_tokens: int,
    out_tokens: int,
    max_batch: int,
    queue_factor: int = DEFAULT_QUEUE_FACTOR,
) -> float:
    """The analyzer's ``μ(N)`` of one replica, requests per second."""
    replica = affine_replica(params, in_tokens, out_tokens, max_batch, queue_factor)
    return replica.max_rate * MS_PER_S


def replica_simulator(num_requests: int = 20_000, seed: int = 0) -> ServerSimulator:
    """A :data:`ServerSimulator` for :func:`~sincere.optimize.hooks.cross_check`.

    It simulates one replica of the allocation's main accelerator at the server's
    rate divided by its replica count (a Poisson stream split at random stays
    Poisson, which is what the analyzer assumes per replica), with the load's mean
    lengths rounded to whole tokens as fixed lengths. Heterogeneous allocations are
    checked on their main accelerator only.
    """

    def simulate_server(
        problem: Problem, server: Server, allocation: ServerAllocation
    ) -> tuple[float, float]:
        perf = _model_perf(problem, server, allocation)
        load = allocation.load
        rate = load.arrival_rate / S_PER_MIN / allocation.num_replicas
        check = check_replica(
            perf.params,
            in_tokens=max(1, round(load.avg_in_tokens)),
            out_tokens=max(1, round(load.avg_out_tokens)),
            max_batch=allocation.max_batch,
            rate_per_s=rate,
            num_requests=num_requests,
            seed=seed,
            queue_factor=problem.optimizer.queue_factor,
        )
        return check.measured_ttft_ms, check.measured_itl_ms

    return simulate_server


def _model_perf(problem: Problem, server: Server, allocation: ServerAllocation) -> ModelPerf:
    """The ``model-data`` entry of the server's model on the allocation's accelerator."""
    key = (server.model, allocation.accelerator or "")
    if allocation.num_replicas < 1 or key not in problem.models:
        raise ConfigError(
            f"server {server.name!r}: nothing to simulate (needs >= 1 replica on an "
            "accelerator with model data)",
            value=(allocation.accelerator, allocation.num_replicas),
        )
    return problem.models[key]
