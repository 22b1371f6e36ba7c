"""SINCERE's request-level batching strategies for several models on one GPU.

See :mod:`sincere.policy.batching.base` for the contract and
:mod:`sincere.policy.batching.composed` for how rules combine into strategies.
"""

from sincere.policy.batching.base import (
    DEFAULT_BEST_BATCH,
    SELECT_HORIZONS,
    STRATEGIES,
    BatchDecision,
    BatchingView,
    BatchRule,
    BatchStrategy,
    BestBatchParams,
    BestBatchTable,
    Idle,
    ModelQueueView,
    PartialBatchParams,
    Readiness,
    RunBatch,
    SelectBatchParams,
    SelectHorizon,
    StrategyParams,
    TimerParams,
    WaitUntil,
)
from sincere.policy.batching.best_batch import BestBatch
from sincere.policy.batching.composed import (
    Choice,
    ComposedParams,
    ComposedStrategy,
    make_strategy,
    parse_strategy_name,
    strategy_problems,
    valid_strategy_names,
)
from sincere.policy.batching.fcfs import FcfsBatch
from sincere.policy.batching.partial_batch import PartialBatch
from sincere.policy.batching.select_batch import SelectBatch, closest_size
from sincere.policy.batching.server import ServerRules
from sincere.policy.batching.timer import Timer

__all__ = [
    "DEFAULT_BEST_BATCH",
    "SELECT_HORIZONS",
    "STRATEGIES",
    "BatchDecision",
    "BatchRule",
    "BatchStrategy",
    "BatchingView",
    "BestBatch",
    "BestBatchParams",
    "BestBatchTable",
    "Choice",
    "ComposedParams",
    "ComposedStrategy",
    "FcfsBatch",
    "Idle",
    "ModelQueueView",
    "PartialBatch",
    "PartialBatchParams",
    "Readiness",
    "RunBatch",
    "SelectBatch",
    "SelectBatchParams",
    "SelectHorizon",
    "ServerRules",
    "StrategyParams",
    "Timer",
    "TimerParams",
    "WaitUntil",
    "closest_size",
    "make_strategy",
    "parse_strategy_name",
    "strategy_problems",
    "valid_strategy_names",
]
