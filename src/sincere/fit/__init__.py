"""Fit step-time models to profiles: samples, fitters, goodness of fit, parameter files."""

from sincere.fit.models import (
    DEFAULT_BIN_EDGES,
    FITTERS,
    ROOFLINE_FITTED,
    FitContext,
    FitResult,
    fit,
    fit_inferno,
    fit_niyama,
    fit_roofline,
    fit_table,
)
from sincere.fit.output import fit_profile, params_document, write_params
from sincere.fit.quality import FitQuality, PointError, evaluate, r_squared
from sincere.fit.samples import (
    Sample,
    decode_sample,
    prefill_sample,
    samples_from_http,
    samples_from_local,
    samples_from_rows,
)

__all__ = [
    "DEFAULT_BIN_EDGES",
    "FITTERS",
    "ROOFLINE_FITTED",
    "FitContext",
    "FitQuality",
    "FitResult",
    "PointError",
    "Sample",
    "decode_sample",
    "evaluate",
    "fit",
    "fit_inferno",
    "fit_niyama",
    "fit_profile",
    "fit_roofline",
    "fit_table",
    "params_document",
    "prefill_sample",
    "r_squared",
    "samples_from_http",
    "samples_from_local",
    "samples_from_rows",
    "write_params",
]
