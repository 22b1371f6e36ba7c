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

from sincere.catalog.loader import Catalog, default_catalog
from sincere.core.errors import ConfigError, DataError
from sincere.fit.models import FitContext, FitResult, fit
from sincere.fit.quality import FitQuality, evaluate
from sincere.fit.samples import Sample, profile_kind, samples_from_rows
from sincere.perf.base import Deployment
from sincere.profile.csvio import read_profile_csv

TORCH_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32"}
"""``dtype`` names a ``profile local`` CSV records -> sincere precisions."""


def _column_value(rows: list[dict[str, Any]], column: str, path: str | Path) -> str | None:
    """The one value ``column`` takes in the profile (None when absent or empty)."""
    values = {str(r[column]) for r in rows if r.get(column) not in (None, "")}
    if len(values) > 1:
        raise DataError(
            f"the profile mixes several values; fit one at a time ({', '.join(sorted(values))})",
            path=path,
            column=column,
        )
    return values.pop() if values else None


def profile_deployment(
    path: str | Path,
    *,
    arch: str | None = None,
    accelerator: str | None = None,
    precision: str | None = None,
    tp: int = 1,
    pp: int = 1,
    catalog: Catalog | None = None,
    rows: list[dict[str, Any]] | None = None,
) -> Deployment:
    """The deployment a profile was taken on; ``None`` arguments come from the profile.

    The model is the ``model`` column (a catalog name or alias, as ``sincere profile``
    writes it); the accelerator is the ``device`` column of a ``profile local`` CSV
    (``cpu``; a GPU device is not named there, nor in an ``http`` profile, so it must
    be given); the precision is the ``dtype`` column, else bf16. ``rows``: the profile's
    rows when the caller has read them already (else they are read from ``path``).
    """
    catalog = catalog or default_catalog()
    rows = read_profile_csv(path) if rows is None else rows
    profile_kind(rows, path)  # a file that is no profile says so before naming columns
    arch = arch or _column_value(rows, "model", path)
    if arch is None:
        raise ConfigError("the profile names no model; pass --arch", where=path)
    if not catalog.has_model(arch):
        raise ConfigError(
            "the profile's model is not in the catalog; pass --arch with a catalog model "
            "(sincere catalog models) or add it (docs/catalog.md)",
            where=path,
            value=arch,
        )
    device = _column_value(rows, "device", path)
    accelerator = accelerator or (device if device == "cpu" else None)
    if accelerator is None:
        found = f"device {device!r}" if device else "no device column"
        raise ConfigError(
            f"the profile does not say which accelerator ({found}); pass --accelerator "
            "with a catalog accelerator (sincere catalog accelerators)",
            where=path,
        )
    dtype = _column_value(rows, "dtype", path)
    precision = precision or TORCH_DTYPES.get(dtype or "", dtype or "bf16")
    return Deployment(
        catalog.model(arch), catalog.accelerator(accelerator), precision=precision, tp=tp, pp=pp
    )


def fit_profile(
    path: str | Path, kind: str, ctx: FitContext, rows: list[dict[str, Any]] | None = None
) -> tuple[FitResult, FitQuality, list[Sample]]:
    """Read the profile at ``path`` (unless its ``rows`` are given), fit ``kind`` and
    evaluate it on the same samples."""
    samples = samples_from_rows(read_profile_csv(path) if rows is None else rows, path)
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
        "tp": dep.tp,
        "pp": dep.pp,
        **quality.as_dict(),
    }
    notes = result.extra.get("notes")
    if notes:
        info["notes"] = list(notes)
    extra = {k: v for k, v in result.extra.items() if k != "notes"}
    return {"kind": result.kind, "params": result.params, "fit": info, **extra}


class _ParamsDumper(yaml.SafeDumper):
    """YAML with every list of numbers on one flow line (a shape grid's hundreds of
    factors read as rows, not one number a line)."""


def _represent_list(dumper: yaml.SafeDumper, value: list[Any]) -> yaml.Node:
    flat = all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=flat or None)


_ParamsDumper.add_representer(list, _represent_list)


def write_params(document: dict[str, Any], path: str | Path) -> Path:
    """Write ``document`` as JSON (``.json``) or YAML (anything else)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".json":
        path.write_text(json.dumps(document, indent=2) + "\n")
    else:
        text = yaml.dump(document, Dumper=_ParamsDumper, sort_keys=False, width=100)
        path.write_text(text)
    return path
