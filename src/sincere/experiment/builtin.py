"""Experiment specs shipped with sincere (``sincere/data/experiments/*.yaml``).

``sincere-study`` is SINCERE's question in simulation and ``niyama-study`` Niyama's
setting (see each file's header). :func:`resolve_spec` accepts a built-in name wherever
a spec path is expected.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from sincere.core.errors import ConfigError
from sincere.experiment.spec import ExperimentSpec, load_spec

_PACKAGE = "sincere.data"
_FOLDER = "experiments"


def builtin_names() -> list[str]:
    """Names of the shipped specs, sorted."""
    folder = resources.files(_PACKAGE).joinpath(_FOLDER)
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


def builtin_text(name: str) -> str:
    """The YAML text of the shipped spec ``name``."""
    if name not in builtin_names():
        raise ConfigError("unknown built-in experiment", value=name, allowed=builtin_names())
    return resources.files(_PACKAGE).joinpath(_FOLDER).joinpath(f"{name}.yaml").read_text("utf-8")


def builtin_descriptions() -> dict[str, str]:
    """Name -> one-line description of each shipped spec."""
    out: dict[str, str] = {}
    for name in builtin_names():
        data = yaml.safe_load(builtin_text(name))
        out[name] = " ".join(str(data.get("description", "")).split())
    return out


def resolve_spec(source: str | Path) -> ExperimentSpec:
    """A spec file, or a built-in spec by name when no such file exists."""
    path = Path(source)
    if path.exists():
        return load_spec(path)
    if str(source) in builtin_names():
        return load_spec(yaml.safe_load(builtin_text(str(source))), where=str(source))
    raise ConfigError(
        "no such experiment spec file or built-in name",
        value=str(source),
        allowed=[*builtin_names(), "a path to a spec YAML"],
    )
