"""Predictors the policies consult: output length, per-instance latency, SLO odds, quality.

All are clock-free. The online ones (NumPy only) learn from finished requests through
``observe``; the learned ones are trained offline from served records
(:mod:`sincere.predict.lstm_train` needs torch, the ``ml`` extra;
:class:`QuantileLength` trains with NumPy and SciPy) and saved to files
(:mod:`sincere.predict.saved`) that serve with NumPy alone. Importing this package
imports neither torch nor SciPy, nor the learned models' modules: ``LstmLatency``,
``QuantileLength`` and the model-file functions load on first use.
"""

import importlib
from typing import TYPE_CHECKING, Any

from sincere.predict.latency import (
    LATENCY_PREDICTORS,
    LatencyEstimate,
    LatencyPredictor,
    LinearLatency,
    LinearLatencyParams,
    LstmFileParams,
    RecentWindow,
    RecentWindowParams,
    RouteContext,
    default_latency_predictor,
    make_latency_predictor,
    step_model_latency,
)
from sincere.predict.length import (
    LENGTH_PREDICTORS,
    HistoryMean,
    HistoryMeanParams,
    MaxTokens,
    MaxTokensParams,
    OutputLengthPredictor,
    PromptBucket,
    PromptBucketParams,
    TrainedModelParams,
    default_length_predictor,
    make_length_predictor,
)
from sincere.predict.quality import model_quality, relative_accuracy
from sincere.predict.slo import (
    LatencyDistribution,
    LognormalError,
    LognormalErrorParams,
    distribution_slo_probability,
    normal_cdf,
    slo_probability,
)

__all__ = [
    "LATENCY_PREDICTORS",
    "LENGTH_PREDICTORS",
    "HistoryMean",
    "HistoryMeanParams",
    "LatencyDistribution",
    "LatencyEstimate",
    "LatencyPredictor",
    "LinearLatency",
    "LinearLatencyParams",
    "LognormalError",
    "LognormalErrorParams",
    "LstmFileParams",
    "LstmLatency",
    "MaxTokens",
    "MaxTokensParams",
    "ModelHeader",
    "OutputLengthPredictor",
    "PromptBucket",
    "PromptBucketParams",
    "QuantileLength",
    "RecentWindow",
    "RecentWindowParams",
    "RouteContext",
    "TrainedModelParams",
    "check_model",
    "default_latency_predictor",
    "default_length_predictor",
    "distribution_slo_probability",
    "load_model",
    "make_latency_predictor",
    "make_length_predictor",
    "model_quality",
    "normal_cdf",
    "read_model",
    "relative_accuracy",
    "save_model",
    "slo_probability",
    "step_model_latency",
]

_LAZY = {
    "LstmLatency": "sincere.predict.lstm",
    "QuantileLength": "sincere.predict.quantile_length",
    "ModelHeader": "sincere.predict.saved",
    "check_model": "sincere.predict.saved",
    "load_model": "sincere.predict.saved",
    "read_model": "sincere.predict.saved",
    "save_model": "sincere.predict.saved",
}

if TYPE_CHECKING:
    from sincere.predict.lstm import LstmLatency
    from sincere.predict.quantile_length import QuantileLength
    from sincere.predict.saved import (
        ModelHeader,
        check_model,
        load_model,
        read_model,
        save_model,
    )


def __getattr__(name: str) -> Any:
    """The learned models and model-file functions, imported when first asked for."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sincere.predict' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
