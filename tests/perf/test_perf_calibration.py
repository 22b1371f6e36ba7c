"""Default roofline constants: an accelerator's own fit, else the shipped prior."""

from __future__ import annotations

from importlib import resources

import pytest
import yaml

from sincere.catalog import get_accelerator, get_model
from sincere.perf import Batch, Deployment, Roofline, make_step_model
from sincere.perf.calibration import (
    FIT_TRANSFER,
    PRIOR_FIELDS,
    default_roofline_params,
    roofline_defaults,
    shipped_fits,
)
from sincere.perf.roofline import Gemm, RooflineParams


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
    assert set(shipped_fits()) == {"A100-80GB", "H100-SXM"}


def test_h100_uses_its_own_fit_with_borrowed_attention() -> None:
    """H100-SXM's defaults are its own fit; attention and CPU are the A100's, said so."""
    h100 = roofline_defaults(get_accelerator("H100-SXM"))
    doc = shipped_fits()["H100-SXM"]
    assert h100.origin.startswith("fitted:") and h100.params == doc["params"]
    a100 = shipped_a100()["params"]
    assert isinstance(a100, dict)
    assert h100.params["attn_mfu_efficiency"] == a100["attn_mfu_efficiency"]
    assert h100.params["mfu_efficiency"] != a100["mfu_efficiency"]
    assert doc["fit"]["borrowed"]["from"] == "A100-80GB"


@pytest.mark.parametrize(
    ("variant", "fitted"),
    [("H200", "H100-SXM"), ("H100-PCIe", "H100-SXM"), ("A100-40GB", "A100-80GB")],
)
def test_variants_take_their_chips_fit_whole(variant: str, fitted: str) -> None:
    """A variant of a fitted chip takes its parameters whole, with its own datasheet peaks."""
    defaults = roofline_defaults(get_accelerator(variant))
    assert defaults.params == shipped_fits()[fitted]["params"]
    assert defaults.origin.startswith("transferred:") and fitted in defaults.origin
    acc = get_accelerator(variant)
    dep = Deployment(get_model("llama-3-8b"), acc)
    same = Deployment(get_model("llama-3-8b"), get_accelerator(fitted))
    gemm = Gemm(4096, 2 * 14336)  # one decode token: the GEMM streams its weights
    ratio = Roofline(same).kernels.gemm_s(gemm, 1) / Roofline(dep).kernels.gemm_s(gemm, 1)
    bw = acc.hbm_bandwidth_gbps / get_accelerator(fitted).hbm_bandwidth_gbps
    assert ratio == pytest.approx(bw, rel=0.01)  # memory-bound kernels scale by the bandwidth


def test_transfer_rule_names_catalog_accelerators() -> None:
    """Every entry of the transfer rule is a catalog accelerator with a shipped fit as source."""
    for variant, fitted in FIT_TRANSFER.items():
        assert get_accelerator(variant).name == variant
        assert fitted in shipped_fits()


def test_other_accelerators_take_the_prior() -> None:
    """L4 keeps its datasheet peaks and takes the stack's constants averaged over the fits."""
    l4 = roofline_defaults(get_accelerator("L4"))
    fits = [doc["params"] for doc in shipped_fits().values()]
    assert set(l4.params) == set(PRIOR_FIELDS)
    mean = sum(f["mfu_efficiency"] for f in fits) / len(fits)
    assert l4.params["mfu_efficiency"] == pytest.approx(mean)
    assert l4.params["token_tile"] == min(f["token_tile"] for f in fits)
    assert l4.origin.startswith("prior:")


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


def test_configured_step_models_take_the_transferred_defaults() -> None:
    """A config's roofline block (simulate, emulate, plan, deploy) needs no option for H200."""
    from sincere.perf.factory import StepModelConfig

    dep = Deployment(get_model("llama-3-8b"), get_accelerator("H200"))
    built = StepModelConfig(kind="roofline").build(dep)
    assert isinstance(built, Roofline)
    expected = RooflineParams(**shipped_fits()["H100-SXM"]["params"])
    assert built.params == expected == Roofline(dep).params
