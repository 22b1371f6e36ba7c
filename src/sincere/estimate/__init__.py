"""MaverIQ's estimator: deployment latency and memory from 1- and 2-layer fingerprints.

:class:`FingerprintBank` reads fingerprint CSVs and estimates any (model, precision, KV
precision, TP, PP, batch) from them with the batch law and the fitted parallelism law;
:class:`FingerprintEstimator` is one configuration as a step-time model. See
docs/estimation.md.
"""

from sincere.estimate.estimator import (
    Estimate,
    FingerprintBank,
    FingerprintEstimator,
    References,
    relative_errors,
    roofline_estimate,
)
from sincere.estimate.fingerprint import (
    ConfigKey,
    Fingerprint,
    FullDepth,
    LayerTerms,
    Measurement,
    batch_law,
    layer_terms,
    read_fingerprints,
    read_measurements,
)
from sincere.estimate.law import (
    Exponents,
    ExponentTable,
    load_exponents,
    memory_law,
    parallelism_law,
)
from sincere.estimate.overhead import TpOverhead

__all__ = [
    "ConfigKey",
    "Estimate",
    "ExponentTable",
    "Exponents",
    "Fingerprint",
    "FingerprintBank",
    "FingerprintEstimator",
    "FullDepth",
    "LayerTerms",
    "Measurement",
    "References",
    "TpOverhead",
    "batch_law",
    "layer_terms",
    "load_exponents",
    "memory_law",
    "parallelism_law",
    "read_fingerprints",
    "read_measurements",
    "relative_errors",
    "roofline_estimate",
]
