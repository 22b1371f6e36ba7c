"""Planner against simulator for P/D plans: simulate the xPyD answer (and the colocated one).

:func:`pd_sim_config` builds the simulation of a :class:`~sincere.optimize.pd_plan.PDPlan`:
``count`` prefill instances (role ``prefill``, one whole prompt per iteration as the
planner assumes: token budget = the prompt length when lengths are fixed) and ``count``
decode instances (role ``decode``, ``max_num_seqs`` = the planned batch), the plan
input's step model and KV link, every request disaggregated (decider ``always``,
least-outstanding routers for both phases), Poisson arrivals at the load's rate and the
load's lengths (fixed at the means unless the input gives a ``lengths`` block).
:func:`colocated_sim_config` does the same for the colocated plan. :func:`check` runs
one and reports mean TTFT, mean TPOT (per request ``(E2E − TTFT)/(O − 1)``, then
averaged) and the share of requests within both targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sincere.optimize.pd_input import ColocatedPlan, PlanInput
from sincere.optimize.pd_plan import PDPlan, PoolSizing
from sincere.optimize.simsize import _outcome_row
from sincere.optimize.sizing import Targets

DEFAULT_ENGINE_TOKENS = 8192


@dataclass(frozen=True, slots=True)
class SimCheck:
    """What the simulator measured for one plan."""

    ttft_ms: float  # mean TTFT of finished requests
    tpot_ms: float  # mean of per-request TPOT
    attainment: float  # share of requests within both targets (unfinished: misses)
    finished: float  # share of requests finished
    num_requests: int

    def meets(self, inp: PlanInput) -> bool:
        """Mean TTFT and TPOT within the targets and every request finished."""
        return (
            self.ttft_ms <= inp.slo.ttft_ms
            and self.tpot_ms <= inp.slo.tpot_ms
            and self.finished >= 1.0
        )


def _workload(inp: PlanInput, num_requests: int) -> dict[str, Any]:
    lengths = inp.load.lengths or {
        "kind": "independent",
        "prompt": {"kind": "fixed", "tokens": inp.load.prompt_tokens},
        "output": {"kind": "fixed", "tokens": inp.load.output_tokens},
    }  # without a lengths block both token counts are given (LoadConfig checks)
    return {
        "num_requests": num_requests,
        "arrival": {"kind": "poisson", "rate": inp.load.rate_per_s},
        "lengths": dict(lengths),
        "models": {inp.model: 1.0},
    }


def _instance(inp: PlanInput, accelerator: str, tp: int, count: int) -> dict[str, Any]:
    return {
        "model": inp.model,
        "accelerator": accelerator,
        "tp": tp,
        "count": count,
        "precision": inp.precision,
        "kv_precision": inp.kv_precision,
        "step_model": inp.step_model.model_dump(mode="json", exclude_none=True),
    }


def _pool(inp: PlanInput, pool: PoolSizing, engine: dict[str, Any]) -> dict[str, Any]:
    out = _instance(inp, pool.candidate.accelerator, pool.candidate.tp, pool.count)
    return {"name": pool.pool, **out, "role": pool.pool, "engine": engine}


def pd_sim_config(
    inp: PlanInput, plan: PDPlan, num_requests: int = 300, seed: int = 0
) -> dict[str, Any]:
    """The simulation of ``plan`` (module docstring)."""
    budget = plan.load.prompt_tokens if inp.load.lengths is None else DEFAULT_ENGINE_TOKENS
    prefill = {"kind": "continuous", "scheduler": "fcfs", "max_num_seqs": 64}
    prefill["max_num_batched_tokens"] = budget
    batch = plan.decode.batch
    decode = {"kind": "continuous", "scheduler": "fcfs", "max_num_seqs": batch}
    decode["max_num_batched_tokens"] = max(batch, 256)
    link = inp.disaggregation.kv_link if inp.disaggregation else None
    return {
        "seed": seed,
        "workload": _workload(inp, num_requests),
        "instances": [_pool(inp, plan.prefill, prefill), _pool(inp, plan.decode, decode)],
        "disaggregation": {
            "decider": {"name": "always"},
            "prefill_router": {"name": "least-outstanding"},
            "decode_router": {"name": "least-outstanding"},
            "kv_link": link.model_dump(mode="json", exclude_none=True) if link else {},
        },
    }


def colocated_sim_config(
    inp: PlanInput, plan: ColocatedPlan, num_requests: int = 300, seed: int = 0
) -> dict[str, Any]:
    """The simulation of the colocated plan: ``count`` instances, ``max_num_seqs`` = its
    batch, a token budget holding a whole prompt beside the batch's decodes."""
    budget = max(DEFAULT_ENGINE_TOKENS, (inp.load.prompt_tokens or 0) + plan.batch)
    engine = {"kind": "continuous", "scheduler": "fcfs", "max_num_seqs": plan.batch}
    engine["max_num_batched_tokens"] = budget
    inst = _instance(inp, plan.candidate.accelerator, plan.candidate.tp, plan.count)
    return {
        "seed": seed,
        "workload": _workload(inp, num_requests),
        "instances": [{"name": "colocated", **inst, "engine": engine}],
        "router": {"name": "least-outstanding"},
    }


def check(inp: PlanInput, config: dict[str, Any]) -> SimCheck:
    """Simulate ``config``; its mean TTFT / TPOT and attainment against ``inp``'s SLOs."""
    from sincere.sim import simulate  # heavy; only when a check is asked for

    res = simulate(config)
    targets = Targets(ttft_ms=inp.slo.ttft_ms, itl_ms=inp.slo.tpot_ms)
    ttft, tpot, att, fin = _outcome_row(res.requests_in, res.records, targets)
    return SimCheck(ttft, tpot, att, fin, int(config["workload"]["num_requests"]))
