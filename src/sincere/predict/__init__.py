"""Predictors the policies consult: output length, per-instance latency, SLO odds, quality.

All are clock-free. The online ones (NumPy only) learn from finished requests through
``observe``; the learned ones are trained offline from served records
(:mod:`sincere.predict.lstm_train` needs torch, the ``ml`` extra;
:class:`QuantileLength` trains with NumPy and SciPy) and saved to files
(:mod:`sincere.predict.saved`) that serve with NumPy alone. Importing this package
imports neither torch nor SciPy.
"""

from sincere.predict.latency import (
    LATENCY_PREDICTORS,
    LatencyEstimate,
    LatencyPredictor,
    LinearLatency,
    RecentWindow,
    RouteContext,
    default_latency_predictor,
    make_latency_predictor,
    step_model_latency,
)
from sincere.predict.length import (
    LENGTH_PREDICTORS,
    HistoryMean,
    MaxTokens,
    OutputLengthPredictor,
    PromptBucket,
    default_length_predictor,
    make_length_predictor,
)
from sincere.predict.lstm import LstmLatency
from sincere.predict.quality import model_quality, relative_accuracy
from sincere.predict.quantile_length import QuantileLength
from sincere.predict.saved import ModelHeader, load_model, read_model, save_model
from sincere.predict.slo import (
    LatencyDistribution,
    LognormalError,
    distribution_slo_probability,
    normal_cdf,
    slo_probability,
)

__all__ = [
    "LATENCY_PREDICTORS",
    "LENGTH_PREDICTORS",
    "HistoryMean",
    "LatencyDistribution",
    "LatencyEstimate",
    "LatencyPredictor",
    "LinearLatency",
    "LognormalError",
    "LstmLatency",
    "MaxTokens",
    "ModelHeader",
    "OutputLengthPredictor",
    "PromptBucket",
    "QuantileLength",
    "RecentWindow",
    "RouteContext",
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
