"""Performance models: step time, model swaps and memory."""

from sincere.perf.base import (
    Batch,
    Deployment,
    StepBreakdown,
    StepParts,
    StepTimeBase,
    StepTimeModel,
    SwapTime,
)
from sincere.perf.calibration import default_roofline_params, roofline_defaults
from sincere.perf.cc import CCParams, Confidential, fit_call_floor, sincere_cc_params
from sincere.perf.factory import (
    STEP_MODELS,
    StepModelConfig,
    StepModelKind,
    load_params_file,
    make_step_model,
)
from sincere.perf.linear import BinnedLinear, InfernoChunked, InfernoLinear, fit_binned_linear
from sincere.perf.memory import MemoryPlan, plan_memory
from sincere.perf.operators import OperatorProfiles, read_operator_profiles
from sincere.perf.profiled import ProfiledStep
from sincere.perf.roofline import Roofline, RooflineParams
from sincere.perf.sincere_runs import (
    RequestLevelCosts,
    RunCalibratedModel,
    RunCalibration,
    SchedulerPlanning,
    calibrated_model,
    load_calibration,
)
from sincere.perf.table import (
    BatchProfileTable,
    IterationTable,
    read_batch_profiles,
    read_loading_times,
    sincere_profile,
)

__all__ = [
    "STEP_MODELS",
    "Batch",
    "BatchProfileTable",
    "BinnedLinear",
    "CCParams",
    "Confidential",
    "Deployment",
    "InfernoChunked",
    "InfernoLinear",
    "IterationTable",
    "MemoryPlan",
    "OperatorProfiles",
    "ProfiledStep",
    "RequestLevelCosts",
    "Roofline",
    "RooflineParams",
    "RunCalibratedModel",
    "RunCalibration",
    "SchedulerPlanning",
    "StepBreakdown",
    "StepModelConfig",
    "StepModelKind",
    "StepParts",
    "StepTimeBase",
    "StepTimeModel",
    "SwapTime",
    "calibrated_model",
    "default_roofline_params",
    "fit_binned_linear",
    "fit_call_floor",
    "load_calibration",
    "load_params_file",
    "make_step_model",
    "plan_memory",
    "read_batch_profiles",
    "read_loading_times",
    "read_operator_profiles",
    "roofline_defaults",
    "sincere_cc_params",
    "sincere_profile",
]
