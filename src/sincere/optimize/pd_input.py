"""A P/D plan input (one YAML file) and the colocated plan it is compared with.

Shape (docs/disaggregation.md, "Planning")::

    model: llama-3-8b
    load: {rate_per_s: 4.0, prompt_tokens: 2000, output_tokens: 200}
    #   optional: prefix_hit_rate: 0.3 (share of prompt tokens expected cached)
    slo: {ttft_ms: 600, tpot_ms: 40}                 # means
    candidates: [{accelerator: H100-SXM, tp: 1}, {accelerator: A100-80GB, tp: 1}]
    step_model: {kind: roofline}                     # optional, any sincere step model
    capacity: {H100-SXM: 8}                          # optional GPUs per accelerator
    disaggregation:                                  # plan xPyD too (else colocated only)
      kv_link: {kind: nvlink}                        # as the simulator's
      max_batch: 256                                 # decode instance's batch ceiling

The colocated plan is the planner's own (:func:`sincere.optimize.plan.solve`, MILP,
``kv`` batch rule) on Inferno model data derived from the same step model at the
load's mean lengths (:func:`~sincere.optimize.derive.derive_model_data`): one server,
the same load, mean TTFT and ITL (= TPOT) targets; a TP degree above 1 is an
accelerator ``<name>-tp<k>`` of ``k`` units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from sincere.catalog import get_model
from sincere.core.config import read_yaml, validate_config
from sincere.core.errors import ConfigError
from sincere.engine.speculation import SpeculationConfig
from sincere.optimize.candidates import CandidateRow
from sincere.optimize.data import (
    AcceleratorSpec,
    CurrentAlloc,
    Load,
    ModelPerf,
    OptimizerSpec,
    Problem,
    Server,
    ServiceClass,
)
from sincere.optimize.derive import (
    MAX_DERIVED_BATCH,
    DerivedModelData,
    derive_model_data,
    grouped,
)
from sincere.optimize.pd_plan import (
    MAX_DECODE_BATCH,
    Candidate,
    PDLoad,
    PDPlan,
    PDTargets,
    deployment,
    plan_pd,
)
from sincere.optimize.plan import solve
from sincere.optimize.queueing import IntArray
from sincere.optimize.simsize import SimSettings, simulated_sizer
from sincere.optimize.sizing import Targets
from sincere.optimize.speculation import planned_memory, speculating
from sincere.perf.base import Deployment
from sincere.perf.factory import StepModelConfig
from sincere.sim.config import KvLinkConfig
from sincere.workload.config import LengthsConfig

_FROZEN = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
CENTS = 100.0
LENGTH_SAMPLE = 4000
"""Prompt lengths drawn from a ``lengths`` block for the prefill queue's moments."""


class LoadConfig(BaseModel):
    """Poisson arrivals and lengths: fixed ``prompt_tokens`` / ``output_tokens``, or a
    simulation ``lengths:`` block (``{kind: trace, source: azure-conv-2023, ...}``), whose
    means the planner takes where the tokens are not given and whose prompt lengths it
    samples (:data:`LENGTH_SAMPLE` draws, seed 0) for the prefill queue.
    ``prefix_hit_rate``: the share of prompt tokens expected in a prefix cache; both
    plans size prefill work on the rest (the KV hand-off still moves the whole prompt)."""

    model_config = _FROZEN
    rate_per_s: float = Field(gt=0)
    prompt_tokens: int | None = Field(None, ge=1)
    output_tokens: int | None = Field(None, ge=2)
    lengths: dict[str, Any] | None = None
    prefix_hit_rate: float = Field(0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _lengths_given(self) -> LoadConfig:
        if self.lengths is None and (self.prompt_tokens is None or self.output_tokens is None):
            raise ValueError("give prompt_tokens and output_tokens, or a lengths block")
        return self


class SloConfig(BaseModel):
    """Mean TTFT and mean TPOT targets, ms."""

    model_config = _FROZEN
    ttft_ms: float = Field(gt=0)
    tpot_ms: float = Field(gt=0)


class CandidateConfig(BaseModel):
    """An instance shape: catalog accelerator and TP degree; for a mixture-of-experts
    model the expert-parallel degree and the attention ranks sharing one expert group
    (:class:`~sincere.optimize.pd_plan.Candidate`)."""

    model_config = _FROZEN
    accelerator: str
    tp: int = Field(1, ge=1, le=64)
    ep: int = Field(1, ge=1, le=1024)
    attention_dp: int = Field(1, ge=1, le=256)


class PDPlanConfig(BaseModel):
    """What asks for xPyD: the KV link and the decode batch ceiling."""

    model_config = _FROZEN
    kv_link: KvLinkConfig = KvLinkConfig()
    max_batch: int = Field(MAX_DECODE_BATCH, ge=1, le=1024)


class PlanInput(BaseModel):
    """One P/D plan input file (module docstring)."""

    model_config = _FROZEN
    model: str
    precision: str = "bf16"
    kv_precision: str = "fp16"
    load: LoadConfig
    slo: SloConfig
    candidates: list[CandidateConfig] = Field(min_length=1)
    step_model: StepModelConfig = StepModelConfig()
    # deployments speculate (the engine.speculation block; optimize/speculation.py)
    speculation: SpeculationConfig | None = None
    capacity: dict[str, int] | None = None
    disaggregation: PDPlanConfig | None = None

    def pd_load(self) -> PDLoad:
        """The load the planner sizes for (lengths sampled once, deterministically)."""
        load = self.load
        if load.lengths is None:
            return PDLoad(
                load.rate_per_s, int(load.prompt_tokens or 0), int(load.output_tokens or 0),
                prefix_hit_rate=load.prefix_hit_rate,
            )  # fmt: skip
        prompts, outputs = sample_lengths(load.lengths)
        p = load.prompt_tokens or max(1, round(float(np.mean(prompts))))
        o = load.output_tokens or max(2, round(float(np.mean(outputs))))
        return PDLoad(load.rate_per_s, p, o, tuple(int(n) for n in prompts), load.prefix_hit_rate)

    def targets(self) -> PDTargets:
        return PDTargets(self.slo.ttft_ms, self.slo.tpot_ms)

    def shapes(self) -> list[Candidate]:
        return [Candidate(c.accelerator, c.tp, c.ep, c.attention_dp) for c in self.candidates]


def sample_lengths(lengths: dict[str, Any]) -> tuple[IntArray, IntArray]:
    """:data:`LENGTH_SAMPLE` (prompt, output) pairs of a ``lengths`` block, seed 0."""
    try:
        joint = LengthsConfig.model_validate(lengths).build()
    except ValueError as exc:  # pydantic's ValidationError is one
        raise ConfigError("load.lengths is not a valid lengths block", value=str(exc)) from None
    prompts, outputs = joint.sample(np.random.default_rng(0), LENGTH_SAMPLE)
    return prompts, outputs


def load_plan_input(source: str | Path | dict[str, Any]) -> PlanInput:
    """A :class:`PlanInput` from a YAML / JSON file or a mapping; errors name the field."""
    where = None if isinstance(source, dict) else str(source)
    data = source if isinstance(source, dict) else read_yaml(source, "plan input")
    if not isinstance(data, dict):
        raise ConfigError("a plan input is a mapping", where=where, value=type(data).__name__)
    inp = validate_config(PlanInput, data, where)
    get_model(inp.model)  # an unknown model lists the catalog's names
    for i, cand in enumerate(inp.shapes()):
        try:  # the shape's own errors (an unknown accelerator, attention_dp on a dense model)
            deployment(inp.model, cand, inp.precision, inp.kv_precision)
        except ConfigError as exc:
            place = f"candidates[{i}]" if where is None else f"{where}: candidates[{i}]"
            raise ConfigError(f"{cand.accelerator} {cand.shape}: {exc}", where=place) from None
    for name, n in (inp.capacity or {}).items():
        if n < 0:
            raise ConfigError("capacity must be >= 0 GPUs", where=f"capacity.{name}", value=n)
    return inp


@dataclass(frozen=True, slots=True)
class ColocatedPlan:
    """The planner's colocated answer: one instance shape, its count and predictions."""

    candidate: Candidate
    num_gpus: int  # per instance
    count: int
    batch: int  # max sequences per engine (per attention rank with attention DP)
    cost_per_hour_usd: float
    ttft_ms: float  # the analyzer's mean TTFT
    tpot_ms: float  # the analyzer's mean ITL


@dataclass(frozen=True, slots=True)
class Comparison:
    """Both plans and which is cheaper; ``None`` where no allocation meets the SLOs."""

    colocated: ColocatedPlan | None
    disaggregated: PDPlan | None
    pd_reason: str | None = None  # why there is no xPyD plan

    @property
    def winner(self) -> str | None:
        """``disaggregated``, ``colocated``, ``tie``, or ``None`` when neither plans."""
        c, d = self.colocated, self.disaggregated
        if c is None or d is None:
            return "colocated" if c else ("disaggregated" if d else None)
        if math.isclose(c.cost_per_hour_usd, d.cost_per_hour_usd, rel_tol=1e-9):
            return "tie"
        return "disaggregated" if d.cost_per_hour_usd < c.cost_per_hour_usd else "colocated"

    @property
    def saving(self) -> float | None:
        """The winner's cost below the other's, as a share of the other's."""
        c, d = self.colocated, self.disaggregated
        if c is None or d is None:
            return None
        hi = max(c.cost_per_hour_usd, d.cost_per_hour_usd)
        return (hi - min(c.cost_per_hour_usd, d.cost_per_hour_usd)) / hi if hi > 0 else 0.0


def _acc_name(cand: Candidate) -> str:
    """The planner's accelerator name of a shape: ``H100-SXM``, ``H100-SXM-tp4``, and with
    expert parallelism ``H100-SXM-tp4-dp2-ep8``."""
    name = cand.accelerator if cand.tp == 1 else f"{cand.accelerator}-tp{cand.tp}"
    if cand.attention_dp > 1:
        name += f"-dp{cand.attention_dp}"
    return name if cand.ep == 1 else f"{name}-ep{cand.ep}"


def _derived(inp: PlanInput, dep: Deployment, p: int, o: int, name: str) -> DerivedModelData | None:
    """Inferno's model data of ``dep``, speculating when ``inp`` does; None when the model
    does not fit it (a bad speculation setting is the input's error, raised)."""
    try:
        step = inp.step_model.build(dep)
    except ConfigError:
        return None
    max_batch = None  # derive's: from the plain memory plan
    if inp.speculation is not None:
        step = speculating(step, dep, inp.speculation)
        plan = planned_memory(dep, inp.speculation, max_num_seqs=MAX_DERIVED_BATCH)
        if not plan.fits:
            return None
        max_batch = max(1, plan.max_batch_at(p + o))  # beside the drafter's share
    try:
        return derive_model_data(
            dep, step, in_tokens=p, out_tokens=o, max_batch=max_batch, acc_name=name
        )
    except ConfigError:
        return None


def colocated_problem(
    inp: PlanInput, load: PDLoad | None = None
) -> tuple[Problem, dict[str, Candidate]]:
    """The planner's problem for the same load and targets, and each accelerator name's
    shape (shapes the model does not fit are left out)."""
    accs: dict[str, AcceleratorSpec] = {}
    models: dict[tuple[str, str], ModelPerf] = {}
    shapes: dict[str, Candidate] = {}
    pd_load = load or inp.pd_load()
    p, o = pd_load.prompt_tokens, pd_load.output_tokens
    for cand in inp.shapes():
        dep = deployment(inp.model, cand, inp.precision, inp.kv_precision)
        name = _acc_name(cand)
        derived = _derived(inp, dep, p, o, name)
        if derived is None:
            continue  # the model does not fit this shape
        derived = grouped(derived, cand.attention_dp)  # a rank's data as the whole instance
        e = derived.entry
        cost = dep.accelerator.price_per_hour_usd * cand.num_gpus * CENTS
        accs[name] = AcceleratorSpec(
            name, cand.accelerator, cand.num_gpus, dep.accelerator.memory_gb, cost
        )
        models[(inp.model, name)] = ModelPerf(
            inp.model, name, 1, e["maxBatchSize"], e["atTokens"], derived.params
        )
        shapes[name] = cand
    targets = Targets(ttft_ms=inp.slo.ttft_ms, itl_ms=inp.slo.tpot_ms)
    offered = Load(inp.load.rate_per_s * 60.0, float(p), float(o), inp.load.prefix_hit_rate)
    problem = Problem(
        accs,
        models,
        {"slo": ServiceClass("slo", 1, {inp.model: targets})},
        (Server("colocated", "slo", inp.model, CurrentAlloc(offered)),),
        dict(inp.capacity or {}),
        OptimizerSpec(unlimited=inp.capacity is None, milp=True, batch_rule="kv"),
    )
    return problem, shapes


COLOCATED_SIZINGS: tuple[str, ...] = ("analyzer", "simulate")
"""How the colocated plan's replicas are sized: Inferno's analyzer (the planner's
default) or the simulator's capacity search (``sincere plan --sizing simulate``)."""


def plan_colocated(
    inp: PlanInput,
    load: PDLoad | None = None,
    sizing: str = "analyzer",
    settings: SimSettings | None = None,
) -> ColocatedPlan | None:
    """The planner's best colocated allocation; ``None`` when none meets the SLOs.

    ``sizing="simulate"`` sizes replicas by :func:`~sincere.optimize.simsize.
    simulated_sizer` with ``settings`` (default: 400 requests, the load's lengths, the
    SLOs held on means -- no attainment floor -- as the xPyD plan holds them); a replica
    of attention ranks that step together (:func:`~sincere.optimize.pd_check.
    steps_together`) is simulated as that group, not on its fitted lines.
    """
    if sizing not in COLOCATED_SIZINGS:
        raise ConfigError("unknown colocated sizing", value=sizing, allowed=COLOCATED_SIZINGS)
    if sizing == "simulate" and inp.speculation is not None:
        raise ConfigError(
            "the simulated capacity search runs engines that do not speculate, so it cannot "
            "size a plan with speculation; size it by the analyzer (--sizing analyzer), "
            "--verify simulates it speculating",
            where="speculation",
            allowed="sizing analyzer",
        )
    problem, shapes = colocated_problem(inp, load)
    if not problem.models:
        return None
    sizer = None
    if sizing == "simulate":
        from sincere.optimize.pd_check import group_replica  # it builds on this module

        sim = settings or SimSettings(lengths=inp.load.lengths, min_attainment=0.0)

        def group(problem: Problem, row: CandidateRow) -> dict[str, Any] | None:
            return group_replica(inp, shapes[row[1]], row[2].max_batch)

        sizer = simulated_sizer(sim, groups=group)
    alloc = solve(problem, sizer=sizer).allocations[0]
    if alloc.accelerator is None or alloc.saturated:
        return None
    cand = shapes[alloc.accelerator]
    return ColocatedPlan(
        cand,
        cand.num_gpus,
        alloc.num_replicas,
        max(1, alloc.max_batch // cand.attention_dp),  # each rank's share of the batch
        alloc.cost / CENTS,
        float(alloc.ttft_ms),
        float(alloc.itl_ms),
    )


def compare(
    inp: PlanInput, sizing: str = "analyzer", settings: SimSettings | None = None
) -> Comparison:
    """The colocated plan (sized by ``sizing``, :func:`plan_colocated`) and, when
    ``disaggregation`` is set, the xPyD plan."""
    load = inp.pd_load()
    colocated = plan_colocated(inp, load, sizing, settings)
    if inp.disaggregation is None:
        return Comparison(colocated, None, "not asked (no disaggregation: block)")
    try:
        pd = plan_pd(
            inp.model,
            inp.shapes(),
            load,
            inp.targets(),
            kv_link=inp.disaggregation.kv_link,
            step_model=inp.step_model,
            speculation=inp.speculation,
            precision=inp.precision,
            kv_precision=inp.kv_precision,
            max_batch=inp.disaggregation.max_batch,
            capacity=inp.capacity,
        )
    except ConfigError as exc:
        return Comparison(colocated, None, str(exc))
    return Comparison(colocated, pd)
