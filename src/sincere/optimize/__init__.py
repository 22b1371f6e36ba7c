"""Capacity planning: Inferno's queueing analyzer, sizing and allocation optimizer.

Start with :func:`load_problem` (a directory of Inferno JSON files) and :func:`solve`;
:func:`params_from_step_model` plans any sincere step-time model. See docs/planning.md.
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
    ChunkedParams,
    DecodePrefillParams,
    QueueMetrics,
    ReplicaBank,
    affine_replica,
    analyze,
)
from sincere.optimize.saturation import SATURATION_POLICIES
from sincere.optimize.sizing import Targets, max_rate, max_rates, params_from_step_model
from sincere.optimize.solvers import SOLVERS

__all__ = [
    "SATURATION_POLICIES",
    "SOLVERS",
    "AcceleratorSpec",
    "AffineReplica",
    "CandidateTable",
    "ChunkedParams",
    "CurrentAlloc",
    "DecodePrefillParams",
    "Load",
    "ModelPerf",
    "OptimizerSpec",
    "Problem",
    "QueueMetrics",
    "ReplicaBank",
    "Server",
    "ServerAllocation",
    "ServiceClass",
    "Solution",
    "Targets",
    "affine_replica",
    "analyze",
    "build_candidates",
    "load_problem",
    "max_rate",
    "max_rates",
    "meets_slos",
    "params_from_step_model",
    "solve",
    "transition_penalty",
    "with_loads",
    "with_previous",
]
