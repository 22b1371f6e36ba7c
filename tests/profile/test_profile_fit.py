"""``sincere fit``: each fitter recovers known parameters; files load in the simulator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import sincere.cli.fit  # noqa: F401  (registers the command)
from sincere.catalog import get_accelerator, get_model
from sincere.cli.app import app
from sincere.core.errors import ConfigError, DataError
from sincere.fit import (
    FitContext,
    Sample,
    decode_sample,
    evaluate,
    fit,
    fit_profile,
    params_document,
    prefill_sample,
    samples_from_http,
    write_params,
)
from sincere.perf import Deployment, InfernoLinear, Roofline, StepModelConfig
from sincere.perf.calibration import default_roofline_params
from sincere.profile.csvio import read_profile_csv, write_profile_csv
from sincere.profile.local import ITERATION_COLUMNS

runner = CliRunner()
DEP = Deployment(get_model("tiny-llama"), get_accelerator("cpu"), precision="bf16")
CTX = FitContext(DEP)


def grid_samples(model: Roofline | InfernoLinear) -> list[Sample]:
    """Prefill and decode samples of ``model`` over a small grid."""
    out = []
    for c in (1, 2, 4, 8, 16):
        for p in (32, 128, 512):
            pre = prefill_sample(c, p, 0.0, f"p{c},{p}")
            out.append(Sample(pre.batch, model.iteration_s(pre.batch), pre.label))
            dec = decode_sample(c, p, 0.0, f"d{c},{p}")
            out.append(Sample(dec.batch, model.iteration_s(dec.batch), dec.label))
    return out


@given(
    alpha=st.floats(0.1, 50),
    beta=st.floats(0.0, 5),
    gamma=st.floats(0.1, 200),
    delta=st.floats(0.0, 0.5),
)
@settings(max_examples=25, deadline=None)
def test_inferno_fit_recovers_its_parameters(
    alpha: float, beta: float, gamma: float, delta: float
) -> None:
    """Fitting Inferno's form to its own predictions returns α, β, γ, δ."""
    truth = InfernoLinear(alpha, beta, gamma, delta)
    result = fit("inferno", grid_samples(truth), CTX)
    got = result.params
    assert result.kind == "inferno"
    np.testing.assert_allclose(
        [got["alpha_ms"], got["beta_ms"], got["gamma_ms"], got["delta_ms"]],
        [alpha, beta, gamma, delta],
        rtol=1e-6,
        atol=1e-6,
    )
    entry = result.extra["inferno_model_data"]
    assert entry["decodeParms"]["alpha"] == pytest.approx(alpha, abs=1e-6)
    assert entry["maxBatchSize"] == 16 and entry["acc"] == "cpu"


def test_roofline_fit_recovers_efficiencies() -> None:
    """Samples from a roofline with known efficiencies (the rest at the accelerator's
    defaults) fit back to them."""
    truth_params = {"mfu_efficiency": 0.02, "bw_efficiency": 0.3, "overhead_s": 0.004}
    truth = Roofline(DEP, default_roofline_params(DEP.accelerator, truth_params))
    samples = grid_samples(truth)
    result = fit("roofline", samples, CTX)
    for name, value in truth_params.items():
        assert result.params[name] == pytest.approx(value, rel=1e-3)
    assert evaluate(result, samples, DEP).median_relative_error < 1e-4


def test_roofline_fit_models_tensor_parallelism() -> None:
    """Iterations of Llama-2-70B at TP2 (A100) fit back to their constants, not to the
    bounds: the fit prices each GPU's half of the work and the all-reduces."""
    dep = Deployment(get_model("llama-2-70b"), get_accelerator("A100-80GB"), tp=2)
    truth_params = {"mfu_efficiency": 0.6, "bw_efficiency": 0.7, "overhead_s": 0.002}
    truth = Roofline(dep, default_roofline_params(dep.accelerator, truth_params))
    result = fit("roofline", grid_samples(truth), FitContext(dep))
    for name, value in truth_params.items():
        assert result.params[name] == pytest.approx(value, rel=1e-3)
    assert "notes" not in result.extra


def test_roofline_fit_reports_a_bound() -> None:
    """Iterations far slower than any efficiency in (0, 1] explains leave a note, not a fit."""
    dep = Deployment(get_model("llama-2-70b"), get_accelerator("A100-80GB"), tp=2)
    fast = Roofline(dep, default_roofline_params(dep.accelerator))
    samples = [Sample(s.batch, s.time_s / 50.0, s.label) for s in grid_samples(fast)]
    result = fit("roofline", samples, FitContext(dep))
    assert any("at its bound" in note for note in result.extra["notes"])


@pytest.mark.parametrize(
    ("kind", "expected", "max_error"),
    [("niyama", "niyama-binned", 0.05), ("table", "iteration-table", 1e-9)],
)
def test_niyama_and_table_fit_a_linear_model_closely(
    kind: str, expected: str, max_error: float
) -> None:
    """Niyama's regression (one intercept) is close and the table exact on the points."""
    samples = grid_samples(InfernoLinear(5.0, 0.5, 20.0, 0.05))
    result = fit(kind, samples, CTX)
    quality = evaluate(result, samples, DEP)
    assert result.kind == expected
    assert quality.r2 > 0.99
    assert quality.median_relative_error < max_error


def test_params_file_builds_the_same_model_in_the_simulator(tmp_path: Path) -> None:
    """The written file, read by StepModelConfig.params_file, predicts what was fitted."""
    samples = grid_samples(InfernoLinear(5.0, 0.5, 20.0, 0.05))
    for kind in ("inferno", "roofline", "niyama", "table"):
        result = fit(kind, samples, CTX)
        quality = evaluate(result, samples, DEP)
        path = write_params(
            params_document(result, quality, "x.csv", CTX), tmp_path / f"{kind}.yaml"
        )
        model = StepModelConfig(kind=result.kind, params_file=path).build(DEP)
        for point in quality.points[:5]:
            batch = next(s.batch for s in samples if s.label == point.label)
            assert model.iteration_s(batch) == pytest.approx(point.predicted_s, rel=1e-9)


def http_rows(prefill_s: float, step_s: float) -> list[dict[str, object]]:
    """Rows of an http profile of an engine with fixed prefill and decode-step times."""
    rows: list[dict[str, object]] = []
    for c in (1, 2, 4):
        for o in (8, 32):
            proc = prefill_s * c + (o - 1) * step_s * (1 + 0.1 * c)
            rows.append({"model": "m", "batch_size": c, "processing time (s)": proc,
                         "prompt_tokens": 64, "output_tokens": o, "num_errors": 0,
                         "ttft_p50_s": 9.0, "tpot_mean_s": 9.0})  # fmt: skip
    return rows


def test_http_samples_come_from_processing_times() -> None:
    """With two output lengths, prefill and decode step are the line's intercept and slope."""
    samples = samples_from_http(http_rows(0.05, 0.002))
    by_label = {s.label: s.time_s for s in samples}
    assert by_label["prefill c=4 p=64"] == pytest.approx(0.2)
    assert by_label["decode c=4 ctx=74"] == pytest.approx(0.002 * 1.4)


def test_http_samples_fall_back_to_streamed_figures() -> None:
    """With one output length, TTFT p50 and TPOT mean are the samples."""
    rows = [r for r in http_rows(0.05, 0.002) if r["output_tokens"] == 8]
    samples = samples_from_http(rows)
    assert {s.time_s for s in samples} == {9.0}
    assert len(samples) == 6


def test_cli_fit_writes_file_and_reports(tmp_path: Path) -> None:
    """`sincere fit` on a local-profile CSV writes {kind, params, fit} and prints the error."""
    truth = InfernoLinear(2.0, 0.3, 10.0, 0.02)
    rows = []
    for phase in ("prefill", "decode"):
        for c in (1, 2, 4):
            for ctx in (16, 64):
                s = (prefill_sample if phase == "prefill" else decode_sample)(c, ctx, 0, "")
                t = truth.iteration_s(s.batch)
                rows.append({"model": "tiny-llama", "phase": phase, "batch_size": c,
                             "context_tokens": ctx, "iteration_s": t, "device": "cpu",
                             "dtype": "bfloat16"})  # fmt: skip
    csv_path = write_profile_csv(rows, tmp_path / "iterations.csv", ITERATION_COLUMNS)
    out = tmp_path / "params.json"
    args = ["fit", str(csv_path), "--model", "inferno", "--out", str(out), "--verbose"]
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "R² 1.0000" in result.output and "decode c=4 ctx=64" in result.output
    doc = json.loads(out.read_text())
    assert doc["kind"] == "inferno" and doc["fit"]["num_samples"] == 12
    assert doc["params"]["delta_ms"] == pytest.approx(0.02)


def test_fit_rejects_unknown_models_and_foreign_csvs(tmp_path: Path) -> None:
    """Unknown fit names and CSVs without profile columns raise with what is allowed."""
    with pytest.raises(ConfigError, match=r"unknown fit model.*roofline"):
        fit("spline", [], CTX)
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="not a sincere profile"):
        fit_profile(path, "inferno", CTX)
    with pytest.raises(ConfigError, match=r"inferno \(prefill samples\) fit needs at least 2"):
        fit("inferno", [decode_sample(1, 10, 0.1, "d")], CTX)


def local_profile(tmp_path: Path, model: str, **extra: object) -> Path:
    """A `profile local` iterations CSV of ``model`` (times from an Inferno model)."""
    truth = InfernoLinear(2.0, 0.3, 10.0, 0.02)
    rows = []
    for phase in ("prefill", "decode"):
        for c in (1, 2, 4):
            s = (prefill_sample if phase == "prefill" else decode_sample)(c, 32, 0, "")
            rows.append({"model": model, "phase": phase, "batch_size": c, "context_tokens": 32,
                         "iteration_s": truth.iteration_s(s.batch), **extra})  # fmt: skip
    return write_profile_csv(rows, tmp_path / "iterations.csv", ITERATION_COLUMNS)


def test_fit_labels_the_profile_with_its_own_model_and_device(tmp_path: Path) -> None:
    """A llama-3-8b profile taken on the CPU is labelled llama-3-8b / cpu, not the defaults."""
    path = local_profile(tmp_path, "llama-3-8b", device="cpu", dtype="float32")
    out = tmp_path / "p.json"
    result = runner.invoke(app, ["fit", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    info = json.loads(out.read_text())["fit"]
    assert (info["model"], info["accelerator"], info["precision"]) == ("llama-3-8b", "cpu", "fp32")
    assert json.loads(out.read_text())["inferno_model_data"]["name"] == "llama-3-8b"


def test_fit_needs_the_accelerator_when_the_profile_does_not_name_it(tmp_path: Path) -> None:
    """An http profile (no device column) of a Hugging Face model id needs --accelerator;
    with it, the label is the catalog's names (aliases resolved)."""
    rows = [dict(r, model="meta-llama/Meta-Llama-3-8B") for r in http_rows(0.05, 0.002)]
    path = write_profile_csv(rows, tmp_path / "http.csv", ["model", "batch_size"])
    result = runner.invoke(app, ["fit", "profile", str(path), "--out", str(tmp_path / "x.yaml")])
    assert isinstance(result.exception, ConfigError)
    assert "does not say which accelerator" in str(result.exception)
    out = tmp_path / "h.json"
    args = ["fit", "profile", str(path), "--accelerator", "H100", "--tp", "2", "--out", str(out)]
    assert runner.invoke(app, args).exit_code == 0
    info = json.loads(out.read_text())["fit"]
    assert (info["model"], info["accelerator"], info["tp"]) == ("llama-3-8b", "H100-SXM", 2)


def test_fit_rejects_a_profile_of_an_unknown_or_mixed_model(tmp_path: Path) -> None:
    """A model the catalog does not know, or two models in one file, stop the fit."""
    path = local_profile(tmp_path, "my-private-llm", device="cpu")
    result = runner.invoke(app, ["fit", str(path)])
    assert "not in the catalog; pass --arch" in str(result.exception)
    rows = [*read_profile_csv(path)]
    rows[0]["model"] = "llama-3-8b"
    write_profile_csv(rows, path, ITERATION_COLUMNS)
    result = runner.invoke(
        app, ["fit", str(path), "--arch", "tiny-llama", "-o", str(tmp_path / "p.yaml")]
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["fit", str(path)])
    assert "mixes several values" in str(result.exception)
