"""Planner against simulator for P/D plans: simulate the xPyD answer (and the colocated one).

:func:`pd_sim_config` builds the simulation of a :class:`~sincere.optimize.pd_plan.PDPlan`:
``count`` prefill instances (role ``prefill``, one whole prompt per iteration as the
planner assumes: token budget = the prompt length when lengths are fixed) and ``count``
decode instances (role ``decode``, ``max_num_seqs`` = the planned batch; an instance of
attention ranks as its ranks, each an engine of its own: the simulator steps no group of
prefill or decode ranks together), the plan
input's step model and KV link, every request disaggregated (decider ``always``,
least-outstanding routers for both phases), Poisson arrivals at the load's rate and the
load's lengths (fixed at the means unless the input gives a ``lengths`` block) -- or, when
the lengths come from a trace file, that trace's own arrivals rescaled to the load's rate
(:func:`trace_file`).
:func:`colocated_sim_config` does the same for the colocated plan (an instance of attention
ranks stepping together where the step model can price it, :func:`steps_together`).
:func:`check` runs one and reports mean TTFT, mean TPOT (per request ``(E2E − TTFT)/(O −
1)``, then averaged) and the share of requests within both targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sincere.optimize.pd_input import ColocatedPlan, PlanInput
from sincere.optimize.pd_plan import Candidate, PDPlan, PoolSizing
from sincere.optimize.simsize import _outcome_row
from sincere.optimize.sizing import Targets
from sincere.workload.lengths import length_sources

DEFAULT_ENGINE_TOKENS = 8192


@dataclass(frozen=True, slots=True)
class SimCheck:
    """What the simulator measured for one plan."""

    ttft_ms: float  # mean TTFT of finished requests (the client's: decode side in P/D)
    tpot_ms: float  # mean of per-request TPOT
    attainment: float  # share of requests within both targets (unfinished: misses)
    finished: float  # share of requests finished
    num_requests: int
    prefix_hit_rate: float | None = None  # simulated, when the requests carry block ids
    prefill_ttft_ms: float | None = None  # P/D: mean arrival to the end of the prefill

    def meets(self, inp: PlanInput) -> bool:
        """Mean TTFT and TPOT within the targets and every request finished."""
        return (
            self.ttft_ms <= inp.slo.ttft_ms
            and self.tpot_ms <= inp.slo.tpot_ms
            and self.finished >= 1.0
        )


def trace_file(inp: PlanInput) -> str | None:
    """The trace file the load's lengths come from (``None``: fixed lengths or a table)."""
    source = (inp.load.lengths or {}).get("source")
    return source if isinstance(source, str) and source not in length_sources() else None


def _workload(inp: PlanInput, num_requests: int) -> dict[str, Any]:
    """Poisson arrivals at the load's rate; when the lengths come from a trace file, that
    trace's own arrivals (their burstiness) rescaled to the load's rate, and with
    ``replay: true`` the trace itself (its lengths in order and its block ids: the
    prefix reuse it really has)."""
    lengths = inp.load.lengths or {
        "kind": "independent",
        "prompt": {"kind": "fixed", "tokens": inp.load.prompt_tokens},
        "output": {"kind": "fixed", "tokens": inp.load.output_tokens},
    }  # without a lengths block both token counts are given (LoadConfig checks)
    arrival: dict[str, Any] = {"kind": "poisson", "rate": inp.load.rate_per_s}
    path = trace_file(inp)
    out: dict[str, Any] = {"num_requests": num_requests, "models": {inp.model: 1.0}}
    if path is None:
        return {**out, "arrival": arrival, "lengths": dict(lengths)}
    fmt = {"format": lengths["format"]} if lengths.get("format") else {}
    arrival = {"kind": "trace", "path": path, **fmt, "rate": inp.load.rate_per_s}
    if lengths.get("replay"):
        return {**out, "arrival": arrival, "trace": {"path": path, **fmt}}
    return {**out, "arrival": arrival, "lengths": dict(lengths)}


def _instance(
    inp: PlanInput, cand: Candidate, count: int, together: bool = False
) -> dict[str, Any]:
    """``count`` instances of ``cand``: with attention DP and ``together``, ``count`` groups
    whose ranks step together (``engine.dp_ranks: lockstep``, set by the caller); else
    ``count x attention_dp`` rank instances (the simulator's symmetric ranks: each an
    engine of its own, its experts priced as the group's under even load)."""
    out = {
        "model": inp.model,
        "accelerator": cand.accelerator,
        "tp": cand.tp,
        "count": count if together else count * cand.attention_dp,
        "precision": inp.precision,
        "kv_precision": inp.kv_precision,
        "step_model": inp.step_model.model_dump(mode="json", exclude_none=True),
    }
    if cand.ep > 1:
        out["ep"] = cand.ep
    if cand.attention_dp > 1:
        out["attention_dp"] = cand.attention_dp
    return out


def _pool(inp: PlanInput, pool: PoolSizing, engine: dict[str, Any]) -> dict[str, Any]:
    out = _instance(inp, pool.candidate, pool.count)
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
    if inp.speculation is not None:  # the decode side speculates as planned
        decode["speculation"] = inp.speculation.model_dump(mode="json", exclude_none=True)
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


def steps_together(inp: PlanInput, cand: Candidate) -> bool:
    """Whether ``cand``'s attention ranks are simulated stepping together: an instance of
    ranks under a step model that splits its iterations (the roofline, not in CC mode)."""
    step = inp.step_model
    return cand.attention_dp > 1 and step.kind == "roofline" and not step.cc


def colocated_sim_config(
    inp: PlanInput, plan: ColocatedPlan, num_requests: int = 300, seed: int = 0
) -> dict[str, Any]:
    """The simulation of the colocated plan: ``count`` instances, ``max_num_seqs`` = its
    batch, a token budget holding a whole prompt beside the batch's decodes. An instance
    of attention ranks runs as its ranks stepping together (a prefill on one rank holds the
    others' decodes, which the plan's even ranks do not show) when the step model can
    price such a group (the roofline, :func:`steps_together`), else as symmetric ranks."""
    together = steps_together(inp, plan.candidate)
    engine = _colocated_engine(inp, plan.batch, together)
    inst = _instance(inp, plan.candidate, plan.count, together)
    return {
        "seed": seed,
        "workload": _workload(inp, num_requests),
        "instances": [{"name": "colocated", **inst, "engine": engine}],
        "router": {"name": "least-outstanding"},
    }


def _colocated_engine(inp: PlanInput, batch: int, together: bool) -> dict[str, Any]:
    """A colocated replica's engine: ``max_num_seqs`` = ``batch`` (each rank's), a token
    budget holding a whole prompt beside the batch's decodes, ranks stepping together."""
    budget = max(DEFAULT_ENGINE_TOKENS, (inp.load.prompt_tokens or 0) + batch)
    engine: dict[str, Any] = {"kind": "continuous", "scheduler": "fcfs"}
    engine["max_num_seqs"] = batch
    engine["max_num_batched_tokens"] = budget
    if inp.speculation is not None:  # the replicas speculate as planned
        engine["speculation"] = inp.speculation.model_dump(mode="json", exclude_none=True)
    if together:
        engine["dp_ranks"] = "lockstep"
    return engine


def group_replica(inp: PlanInput, cand: Candidate, max_batch: int) -> dict[str, Any] | None:
    """One colocated replica of ``cand`` as the simulated capacity search runs it when its
    attention ranks step together (:func:`steps_together`; else ``None``: its fitted lines
    are simulated): the group holding ``max_batch`` requests, each rank its share."""
    if not steps_together(inp, cand):
        return None
    engine = _colocated_engine(inp, max(1, max_batch // cand.attention_dp), True)
    return {"name": "colocated", **_instance(inp, cand, 1, True), "engine": engine}


def check(inp: PlanInput, config: dict[str, Any]) -> SimCheck:
    """Simulate ``config``; its mean TTFT / TPOT and attainment against ``inp``'s SLOs."""
    from sincere.sim import simulate  # heavy; only when a check is asked for

    res = simulate(config)
    targets = Targets(ttft_ms=inp.slo.ttft_ms, itl_ms=inp.slo.tpot_ms)
    ttft, tpot, att, fin = _outcome_row(res.requests_in, res.records, targets)
    hit = (res.summary.get("prefix_cache") or {}).get("hit_rate")
    prefill = ((res.summary.get("disaggregation") or {}).get("prefill_ttft_s") or {}).get("mean")
    return SimCheck(
        ttft, tpot, att, fin, int(config["workload"]["num_requests"]), hit,
        None if prefill is None else prefill * 1e3,
    )  # fmt: skip


TPOT_TOLERANCE = 0.10
"""Simulated mean TPOT more than this share above the planned one is flagged."""


def verify_lines(
    inp: PlanInput, name: str, ttft_ms: float, tpot_ms: float, sim: SimCheck
) -> list[str]:
    """What ``plan --verify`` prints for one plan: planned vs simulated means (TTFT as a
    streaming client sees it), attainment, and warnings: TPOT under-predicted beyond
    :data:`TPOT_TOLERANCE`, requests not finished, a hit rate the simulation lacked."""
    ok = "meets SLO" if sim.meets(inp) else "MISSES SLO"
    prefill = "" if sim.prefill_ttft_ms is None else f" (end of prefill {sim.prefill_ttft_ms:.1f})"
    lines = [
        f"  {name}: TTFT planned {ttft_ms:.1f} ms vs sim {sim.ttft_ms:.1f} ms{prefill}; TPOT "
        f"planned {tpot_ms:.2f} ms vs sim {sim.tpot_ms:.2f} ms; sim attainment "
        f"{100 * sim.attainment:.1f}%, {ok}"
    ]
    if sim.tpot_ms > tpot_ms * (1 + TPOT_TOLERANCE):
        lines.append(
            f"  warning: {name} TPOT under-predicted: planned {tpot_ms:.2f} ms, simulated "
            f"{sim.tpot_ms:.2f} ms (+{100 * (sim.tpot_ms / tpot_ms - 1):.0f} %, over the "
            f"{100 * TPOT_TOLERANCE:.0f} % tolerance)"
        )
    if sim.finished < 1.0:
        lines.append(
            f"  warning: {name}: {100 * (1 - sim.finished):.1f}% of the simulated requests "
            "did not finish (rejected: e.g. over the model's context, or unfinished)"
        )
    hit = inp.load.prefix_hit_rate
    if hit > 0 and sim.prefix_hit_rate is None:
        lines.append(
            f"  note: planned with prefix_hit_rate {hit:g}; the simulated requests share no "
            "prefixes (lengths from a trace with block ids and replay: true bring them)"
        )
    elif sim.prefix_hit_rate is not None and name == "disaggregated":
        lines.append(f"  prefix hit rate: planned {hit:g}, simulated {sim.prefix_hit_rate:.3f}")
    return lines


def arrivals_line(inp: PlanInput) -> str:
    """Which arrivals ``--verify`` simulates."""
    path = trace_file(inp)
    rate = inp.load.rate_per_s
    if path is None:
        return f"arrivals: Poisson at {rate:g} req/s"
    what = (
        "the trace replayed (lengths in order, block ids)"
        if ((inp.load.lengths or {}).get("replay"))
        else "lengths from load.lengths"
    )
    return f"arrivals: the trace's own ({path}), rescaled to {rate:g} req/s; {what}"
