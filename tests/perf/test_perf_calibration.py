"""Default roofline constants: an accelerator's own fit, else the shipped prior."""

from __future__ import annotations

from importlib import resources

import pytest
import yaml

from sincere.catalog import get_accelerator, get_model
from sincere.perf import Batch, Deployment, Roofline, make_step_model
from sincere.perf.calibration import (
    PRIOR_FIELDS,
    default_roofline_params,
    roofline_defaults,
    shipped_fits,
)
from sincere.perf.roofline import RooflineParams


def shipped_a100() -> dict[str, object]:
    """The shipped A100 fit, read straight from the package data."""
    text = (
        resources.files("sincere")
        .joinpath("data", "perf", "roofline", "A100-80GB.yaml")
        .read_text()
    )
    doc: dict[str, object] = yaml.safe_load(text)
    return doc


def test_a100_uses_its_own_fit() -> None:
    """A100-80GB's defaults are the fitted file's parameters, said to be fitted."""
    defaults = roofline_defaults(get_accelerator("A100"))
    assert defaults.params == shipped_a100()["params"]
    assert defaults.origin.startswith("fitted:")
    assert Roofline(
        Deployment(get_model("llama-3-8b"), get_accelerator("A100"))
    ).params == RooflineParams(**defaults.params)


def test_the_fit_names_its_sources_and_command() -> None:
    """The shipped file carries the profile files, the models and the command that made it."""
    info = shipped_a100()["fit"]
    assert isinstance(info, dict)
    assert info["command"].startswith("sincere fit gpu-profiles ")
    assert "mlp_llama-3-8b.csv" in info["files"] and "codellama-34b" in info["models"]
    assert set(shipped_fits()) == {"A100-80GB"}


def test_other_accelerators_take_the_prior() -> None:
    """H100 keeps its datasheet peaks (catalog) and takes the stack's fitted constants."""
    h100 = roofline_defaults(get_accelerator("H100-SXM"))
    a100 = shipped_a100()["params"]
    assert isinstance(a100, dict)
    assert h100.params == {k: a100[k] for k in PRIOR_FIELDS}
    assert h100.origin.startswith("prior:")


def test_explicit_parameters_override_the_defaults() -> None:
    """A config's params win over the fitted ones; the rest stay fitted."""
    dep = Deployment(get_model("llama-3-8b"), get_accelerator("A100"))
    model = make_step_model("roofline", dep, {"mfu_efficiency": 0.5})
    assert isinstance(model, Roofline)
    assert model.params.mfu_efficiency == 0.5
    assert model.params.bw_efficiency == default_roofline_params(dep.accelerator).bw_efficiency
    prefill = Batch.of(prefill=[(2048, 0)])
    assert model.iteration_s(prefill) > Roofline(dep).iteration_s(prefill)


def test_unknown_override_is_named() -> None:
    """A misspelt field raises, listing the fields."""
    with pytest.raises(Exception, match=r"unknown roofline parameter.*mfu_eficiency"):
        default_roofline_params(get_accelerator("A100"), {"mfu_eficiency": 0.4})
