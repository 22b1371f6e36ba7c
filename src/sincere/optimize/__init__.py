"""Capacity planning: Inferno's queueing analyzer, sizing and allocation optimizer.

Start with :func:`load_problem` (a directory of Inferno JSON files) and :func:`solve`;
:func:`params_from_step_model` plans any sincere step-time model;
:func:`choose_deployment` is MaverIQ's deployment choice. See docs/planning.md.
"""

from sincere.optimize.candidates import CandidateTable, build_candidates, transition_penalty
from sincere.optimize.data import (
    AcceleratorSpec,
    CurrentAlloc,
    Load,
    ModelPerf,
    OptimizerSpec,
    Problem,
    Server,
    ServiceClass,
    load_problem,
)
from sincere.optimize.deploy import (
    COST_TYPES,
    DeployDecision,
    DeployRequest,
    FingerprintCosts,
    RankedChoice,
    RooflineCosts,
    StepModelCosts,
    choose_deployment,
    enumerate_configs,
    parse_pool,
)
from sincere.optimize.placement import (
    PLACEMENT_STRATEGIES,
    GpuState,
    Placement,
    ReplicaShape,
    Stage,
    place,
    split_layers,
)
from sincere.optimize.plan import (
    ServerAllocation,
    Solution,
    meets_slos,
    solve,
    with_loads,
    with_previous,
)
from sincere.optimize.queueing import (
    AffineReplica,
    DecodePrefillParams,
    PerfParams,
    QueueMetrics,
    ReplicaBank,
    affine_replica,
    analyze,
)
from sincere.optimize.saturation import SATURATION_POLICIES
from sincere.optimize.sizing import Targets, max_rate, max_rates, params_from_step_model
from sincere.optimize.solvers import SOLVERS

__all__ = [
    "COST_TYPES",
    "PLACEMENT_STRATEGIES",
    "SATURATION_POLICIES",
    "SOLVERS",
    "AcceleratorSpec",
    "AffineReplica",
    "CandidateTable",
    "CurrentAlloc",
    "DecodePrefillParams",
    "DeployDecision",
    "DeployRequest",
    "FingerprintCosts",
    "GpuState",
    "Load",
    "ModelPerf",
    "OptimizerSpec",
    "PerfParams",
    "Placement",
    "Problem",
    "QueueMetrics",
    "RankedChoice",
    "ReplicaBank",
    "ReplicaShape",
    "RooflineCosts",
    "Server",
    "ServerAllocation",
    "ServiceClass",
    "Solution",
    "Stage",
    "StepModelCosts",
    "Targets",
    "affine_replica",
    "analyze",
    "build_candidates",
    "choose_deployment",
    "enumerate_configs",
    "load_problem",
    "max_rate",
    "max_rates",
    "meets_slos",
    "params_from_step_model",
    "parse_pool",
    "place",
    "solve",
    "split_layers",
    "transition_penalty",
    "with_loads",
    "with_previous",
]
