"""Predictors the policies consult: output length, per-instance latency, SLO odds, quality.

All are clock-free and dependency-light (NumPy only); they learn online from
finished requests through ``observe``.
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
from sincere.predict.quality import model_quality, relative_accuracy
from sincere.predict.slo import LognormalError, normal_cdf, slo_probability

__all__ = [
    "LATENCY_PREDICTORS",
    "LENGTH_PREDICTORS",
    "HistoryMean",
    "LatencyEstimate",
    "LatencyPredictor",
    "LinearLatency",
    "LognormalError",
    "MaxTokens",
    "OutputLengthPredictor",
    "PromptBucket",
    "RecentWindow",
    "RouteContext",
    "default_latency_predictor",
    "default_length_predictor",
    "make_latency_predictor",
    "make_length_predictor",
    "model_quality",
    "normal_cdf",
    "relative_accuracy",
    "slo_probability",
    "step_model_latency",
]
