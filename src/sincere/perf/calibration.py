"""The roofline constants each accelerator uses by default, fitted to measured kernels.

``sincere fit gpu-profiles DIR --accelerator A`` fits the roofline's constants to an
accelerator's operator profiles and writes a parameter file (``kind: roofline``,
``params``, and ``fit`` with the files, the command and the errors). The files shipped
in ``sincere/data/perf/roofline/`` are those fits; an accelerator with one uses its
fitted constants by default (its datasheet peaks stay the catalog's).

An accelerator without its own fit keeps its datasheet peaks (the catalog's) and takes
its efficiencies and fixed costs by one of two rules:

* **transfer** (:data:`FIT_TRANSFER`): a variant of a fitted chip (same silicon
  generation and kernels, other memory, clocks or board) takes that fit's
  parameters whole: H200 and H100-PCIe from the H100-SXM fit, A100-40GB from the
  A100-80GB fit. Since every term is a datasheet peak times an efficiency, the fitted
  kernel times are scaled by the ratio of the two datasheets' FLOPs (compute-bound
  kernels) and HBM / link bandwidth (memory-bound ones);
* **prior**: any other accelerator takes the figures that describe the software stack
  rather than the chip (:data:`PRIOR_FIELDS`: the efficiencies against the peaks, the
  GEMM overlap exponent and token tile, the attention diagonal factor, the per-kernel
  and per-step fixed costs and the all-reduce latency), averaged over the shipped fits
  (the token tile: the smallest of theirs).

Explicit parameters override either.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from sincere.catalog.loader import default_catalog
from sincere.catalog.specs import Accelerator
from sincere.core.errors import ConfigError, DataError
from sincere.perf.roofline import RooflineParams

FITS_FOLDER = ("data", "perf", "roofline")  # package-relative folder of the shipped fits
PRIOR_FIELDS = (
    "mfu_efficiency",
    "bw_efficiency",
    "elementwise_bw_efficiency",
    "overlap_exponent",
    "token_tile",
    "layer_overhead_s",
    "attn_mfu_efficiency",
    "attn_bw_efficiency",
    "attn_kernel_s",
    "attn_diag_factor",
    "interconnect_efficiency",
    "allreduce_latency_s",
    "overhead_s",
    "overhead_per_seq_s",
)
"""Fitted figures another accelerator takes as its prior (stack, not chip)."""
FIT_TRANSFER = {
    "H200": "H100-SXM",
    "H100-PCIe": "H100-SXM",
    "A100-40GB": "A100-80GB",
}
"""Catalog accelerator -> the fitted chip whose parameters it takes whole (module docstring)."""


@dataclass(frozen=True, slots=True)
class RooflineDefaults:
    """An accelerator's default roofline constants and where they come from."""

    params: dict[str, Any]  # RooflineParams fields (others keep the dataclass defaults)
    origin: str  # "fitted: <file>" or "prior: <files>" or "datasheet assumptions"


@functools.cache
def shipped_fits() -> dict[str, dict[str, Any]]:
    """The shipped fit documents by catalog accelerator name."""
    folder = resources.files("sincere").joinpath(*FITS_FOLDER)
    fits: dict[str, dict[str, Any]] = {}
    if not folder.is_dir():
        return fits
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".yaml"):
            continue
        doc = yaml.safe_load(entry.read_text())
        where = f"sincere/{'/'.join(FITS_FOLDER)}/{entry.name}"
        if not isinstance(doc, dict) or doc.get("kind") != "roofline" or "params" not in doc:
            raise DataError("not a roofline fit (kind: roofline, params: …)", path=where)
        name = str(doc.get("fit", {}).get("accelerator", ""))
        if not default_catalog().has_accelerator(name):
            raise DataError("fit.accelerator is not a catalog accelerator", path=where, value=name)
        doc["file"] = where
        fits[default_catalog().accelerator(name).name] = doc
    return fits


def roofline_defaults(accelerator: Accelerator) -> RooflineDefaults:
    """The accelerator's own fit, a transferred fit, else the prior (module docstring)."""
    fits = shipped_fits()
    own = fits.get(accelerator.name)
    if own is not None:
        return RooflineDefaults(dict(own["params"]), f"fitted: {own['file']}")
    source = fits.get(FIT_TRANSFER.get(accelerator.name, ""))
    if source is not None:
        origin = (
            f"transferred: {source['file']} (a variant of {source['fit']['accelerator']}: "
            f"its efficiencies and fixed costs, {accelerator.name}'s datasheet peaks)"
        )
        return RooflineDefaults(dict(source["params"]), origin)
    if not fits:
        return RooflineDefaults({}, "datasheet assumptions (no shipped fit)")
    prior: dict[str, Any] = {}
    for name in PRIOR_FIELDS:
        values = [float(doc["params"][name]) for doc in fits.values() if name in doc["params"]]
        if values:
            prior[name] = sum(values) / len(values)
    if "token_tile" in prior:
        prior["token_tile"] = min(
            int(doc["params"]["token_tile"])
            for doc in fits.values()
            if "token_tile" in doc["params"]
        )
    files = ", ".join(doc["file"] for doc in fits.values())
    origin = f"prior: the stack's efficiencies and fixed costs from {files}; datasheet peaks"
    return RooflineDefaults(prior, origin)


def default_roofline_params(
    accelerator: Accelerator, overrides: Mapping[str, Any] | None = None
) -> RooflineParams:
    """:class:`RooflineParams` of the accelerator's defaults with ``overrides`` applied."""
    params = {**roofline_defaults(accelerator).params, **(overrides or {})}
    fields = {f.name for f in dataclasses.fields(RooflineParams)}
    unknown = set(params) - fields
    if unknown:
        raise ConfigError("unknown roofline parameter", value=sorted(unknown), allowed=fields)
    return RooflineParams(**params)
