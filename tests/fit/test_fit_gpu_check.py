"""`fit gpu-profiles` says when its fit is not to be trusted: large errors on its own rows,
constants stopped at a search bound, and whole iterations (iterations.csv) it misses."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from tests.conftest import write_operator_profiles
from typer.testing import CliRunner

import sincere.cli.fit  # noqa: F401  (registers the command)
from sincere.catalog import get_accelerator, get_model
from sincere.catalog.loader import default_catalog
from sincere.cli.app import app
from sincere.fit.gpu_check import fit_warnings, gpu_seconds, iteration_check
from sincere.fit.gpu_profiles import GpuProfileFit, fit_gpu_profiles
from sincere.perf import Batch, Deployment, make_step_model
from sincere.perf.operators import read_operator_profiles
from sincere.profile.csvio import write_profile_csv
from sincere.profile.gpu import ITERATION_COLUMNS

runner = CliRunner()
H100 = get_accelerator("H100-SXM")


def _fit(folder: Path) -> GpuProfileFit:
    return fit_gpu_profiles(read_operator_profiles(folder, default_catalog()), H100)


def _write_iterations(folder: Path, fit: GpuProfileFit, scale: float) -> None:
    """Prefill, decode and mixed iterations of llama-3-8b at TP 1, timed by the fitted
    roofline's GPU work (what a shard alone on one GPU runs: no CPU part) and multiplied by
    ``scale``."""
    model = make_step_model("roofline", Deployment(get_model("llama-3-8b"), H100), fit.params)
    rows = []
    for phase, pre, dec in (("prefill", 2, 0), ("decode", 0, 8), ("mixed", 1, 8)):
        batch = Batch.of(prefill=[(512, 0)] * pre, decode=[512] * dec)
        rows.append({
            "model": "llama-3-8b", "phase": phase, "batch_size": max(pre, dec),
            "context_tokens": 512, "num_tokens": batch.num_tokens,
            "iteration_s": scale * gpu_seconds(model, batch), "prefill_seqs": pre,
            "prefill_chunk": 512 if pre else 0, "prefill_ctx": 0, "decode_seqs": dec,
            "decode_ctx": 512 if dec else 0, "tp": 1, "dtype": "bfloat16", "status": "ok",
        })  # fmt: skip
    write_profile_csv(rows, folder / "iterations.csv", ITERATION_COLUMNS)


def test_a_good_fit_matches_its_iterations_and_warns_of_nothing(synthetic_profiles: Path) -> None:
    """Profiles made by the roofline's formulas: no constant at a bound, whole iterations
    timed by the fit agree with it, no warning."""
    fit = _fit(synthetic_profiles)
    _write_iterations(synthetic_profiles, fit, 1.0)
    check = iteration_check(fit, synthetic_profiles, default_catalog(), H100)
    assert check is not None and check.num_rows == 3
    assert check.mean_relative_error < 1e-5
    assert fit_warnings(fit, check) == []


def test_the_check_judges_a_shards_gpu_work_without_cpu_or_all_reduce() -> None:
    """A shard timed alone on one GPU runs neither the engine's CPU work nor the TP
    all-reduces: the check's prediction is the step's parts less those."""
    dep = Deployment(get_model("llama-3-8b"), H100, tp=2)
    model = make_step_model("roofline", dep)
    batch = Batch.of(prefill=[(512, 0)], decode=[512] * 8)
    parts = model.parts(batch)  # type: ignore[attr-defined]
    assert parts.overhead_s > 0 and parts.communication_s > 0
    gpu = parts.linear_s + parts.attention_s + parts.lm_head_s
    assert abs(gpu_seconds(model, batch) - gpu) < 1e-12


def test_missed_iterations_are_warned_about(synthetic_profiles: Path) -> None:
    """Iterations three times faster than the fit predicts: a warning with the error and the
    worst row."""
    fit = _fit(synthetic_profiles)
    _write_iterations(synthetic_profiles, fit, 1 / 3)
    check = iteration_check(fit, synthetic_profiles, default_catalog(), H100)
    assert check is not None
    (line,) = fit_warnings(fit, check)
    assert line.startswith("whole iterations (iterations.csv, 3 rows): predicted vs measured")
    assert "error mean 200 %" in line


def test_kernels_far_below_the_datasheet_put_constants_at_their_bounds(tmp_path: Path) -> None:
    """Profiles of a device 200x slower than the H100 it is fitted as (a CPU, say): the
    efficiencies stop at the bottom of their range, and the CLI says which, loudly."""
    folder = write_operator_profiles(tmp_path / "slow", peak_tflops=5.0, hbm_gbps=16.0)
    fit = _fit(folder)
    linear = next(p for p in fit.parts if p.name == "linear")
    assert {"mfu_efficiency", "bw_efficiency"} <= set(linear.at_bounds)
    out = tmp_path / "fit.yaml"
    args = ["fit", "gpu-profiles", str(folder), "--accelerator", "H100-SXM", "--out", str(out)]
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "WARNING: linear: mfu_efficiency = 0.05 sits at the edge of its search range" in (
        result.output
    )
    written = yaml.safe_load(out.read_text())["fit"]
    assert any("bw_efficiency" in w for w in written["warnings"])
    assert "mfu_efficiency" in written["errors"]["linear"]["at_bounds"]
    as_json = runner.invoke(app, [*args, "--json"])
    assert json.loads(as_json.stdout)["fit"]["warnings"] == written["warnings"]
    assert "WARNING: linear: mfu_efficiency" in as_json.stderr
