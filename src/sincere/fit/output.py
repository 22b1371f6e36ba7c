"""From a profile CSV to a parameter file ``sincere simulate`` and ``sincere plan`` read.

The file is YAML (or JSON by suffix) in the layout
:func:`sincere.perf.factory.load_params_file` accepts: ``kind`` (the factory kind),
``params`` (that kind's parameters), plus ``fit`` (the goodness of fit and where the
profile came from) and, for Inferno, ``inferno_model_data`` (a ``models`` entry of
Inferno's ``model-data.json``). The loader reads only ``kind`` and ``params``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from sincere.fit.models import FitContext, FitResult, fit
from sincere.fit.quality import FitQuality, evaluate
from sincere.fit.samples import Sample, samples_from_rows
from sincere.profile.csvio import read_profile_csv


def fit_profile(
    path: str | Path, kind: str, ctx: FitContext
) -> tuple[FitResult, FitQuality, list[Sample]]:
    """Read the profile at ``path``, fit ``kind`` and evaluate it on the same samples."""
    samples = samples_from_rows(read_profile_csv(path), path)
    result = fit(kind, samples, ctx)
    return result, evaluate(result, samples, ctx.deployment), samples


def params_document(
    result: FitResult, quality: FitQuality, source: str | Path, ctx: FitContext
) -> dict[str, Any]:
    """The parameter file's content (see the module docstring)."""
    dep = ctx.deployment
    info: dict[str, Any] = {
        "source": str(source),
        "model": dep.model.name,
        "accelerator": dep.accelerator.name,
        "precision": dep.precision,
        **quality.as_dict(),
    }
    return {"kind": result.kind, "params": result.params, "fit": info, **result.extra}


def write_params(document: dict[str, Any], path: str | Path) -> Path:
    """Write ``document`` as JSON (``.json``) or YAML (anything else)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".json":
        path.write_text(json.dumps(document, indent=2) + "\n")
    else:
        path.write_text(yaml.safe_dump(document, sort_keys=False, width=100))
    return path
