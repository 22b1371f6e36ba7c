"""Regenerate src/sincere/data/perf/sincere_h100.yaml from SINCERE's measurements.

Usage: python scripts/derive_perf.py [DATA_DIR] [OUT_YAML]
(defaults: ../shared/data/sincere beside the checkout, the shipped yaml).

Per model and mode (CC / non-CC): the median processing time per batch size over all
runs of the batch-profiling CSVs, the first out-of-memory batch size, load / unload
mean and std. Then the CC fit: load and unload ratios, and the call-time floor form
of sincere.perf.cc with the relative RMS error of each candidate form for the record.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy.optimize import curve_fit

from sincere.perf.cc import fit_call_floor
from sincere.perf.table import SINCERE_OUTPUT_TOKENS, read_batch_profiles, read_loading_times

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "sincere"
DEFAULT_OUT = ROOT / "src" / "sincere" / "data" / "perf" / "sincere_h100.yaml"
SMALL_BATCH = 16  # the CC overhead lives at small batch sizes; errors are also kept there
SOURCE = (
    "SINCERE measurements on one NVIDIA H100 80GB, HF transformers pipeline, 50 new tokens "
    "(files batch_profiling_results_red_cuda_20240920_181007_ccmode.csv, "
    "..._20240924_181459_ccmode.csv, ..._20241002_112126_noncc.csv, "
    "model_loading_times_red_cuda_20240906_120028_cc.csv, ..._20241002_105724_noncc.csv); "
    "derived by scripts/derive_perf.py"
)


def _rel_rms(pred: np.ndarray, cc: np.ndarray) -> float:
    return float(np.sqrt(np.mean(((pred - cc) / cc) ** 2)))


def compare_forms(sizes: np.ndarray, noncc: np.ndarray, cc: np.ndarray) -> dict[str, float]:
    """Relative RMS error of cc ≈ noncc + overhead(batch) for candidate overhead forms."""
    weight = 1.0 / cc
    diff = cc - noncc
    out: dict[str, float] = {}
    const = np.sum(diff * weight**2) / np.sum(weight**2)
    out["constant"] = _rel_rms(noncc + const, cc)
    lin = np.polyfit(sizes, diff, 1, w=weight)
    out["linear"] = _rel_rms(noncc + np.polyval(lin, sizes), cc)
    inv = np.sum(diff / sizes * weight**2) / np.sum((weight / sizes) ** 2)
    out["a_over_b"] = _rel_rms(noncc + inv / sizes, cc)

    def decay(b: np.ndarray, a: float, tau: float) -> np.ndarray:
        return np.asarray(a * np.exp(-(b - 1.0) / tau))

    popt, _ = curve_fit(decay, sizes, diff, p0=(0.6, 5.0), sigma=cc, maxfev=10000)
    out["exp_decay"] = _rel_rms(noncc + decay(sizes, *popt), cc)
    out["floor"] = fit_call_floor(noncc, cc)[2]
    return {k: round(v, 4) for k, v in out.items()}


def _mode_entry(profile: Any, swaps: Any, size_gb: float | None) -> dict[str, Any]:
    sizes, medians, oom = profile
    load, unload = swaps
    return {
        "batch_sizes": [int(s) for s in sizes],
        "median_s": [round(float(t), 4) for t in medians],
        "oom_batch_size": oom,
        "load": {"mean_s": load.mean_s, "std_s": load.std_s},
        "unload": {"mean_s": unload.mean_s, "std_s": unload.std_s},
    }


def _cc_fit(noncc: dict[str, Any], cc: dict[str, Any]) -> dict[str, Any]:
    common = sorted(set(noncc["batch_sizes"]) & set(cc["batch_sizes"]))
    n_t = dict(zip(noncc["batch_sizes"], noncc["median_s"], strict=True))
    c_t = dict(zip(cc["batch_sizes"], cc["median_s"], strict=True))
    sizes = np.array(common, dtype=float)
    n_arr = np.array([n_t[s] for s in common])
    c_arr = np.array([c_t[s] for s in common])
    floor, extra, _ = fit_call_floor(n_arr, c_arr)
    return {
        "call_floor_s": round(floor, 4),
        "min_iteration_s": round(floor / SINCERE_OUTPUT_TOKENS, 6),
        "per_call_s": round(extra, 4),
        "load_slowdown": round(cc["load"]["mean_s"] / noncc["load"]["mean_s"], 4),
        "unload_slowdown": round(cc["unload"]["mean_s"] / noncc["unload"]["mean_s"], 4),
        "form_rel_rms_error": compare_forms(sizes, n_arr, c_arr),
        "form_rel_rms_error_batch_le_16": compare_forms(
            sizes[sizes <= SMALL_BATCH], n_arr[sizes <= SMALL_BATCH], c_arr[sizes <= SMALL_BATCH]
        ),
    }


def derive(data_dir: Path) -> dict[str, Any]:
    """The yaml document, from the CSVs under ``data_dir``."""
    cc_prof = read_batch_profiles(sorted(data_dir.glob("batch_profiling_results_*_ccmode.csv")))
    nc_prof = read_batch_profiles(sorted(data_dir.glob("batch_profiling_results_*_noncc.csv")))
    cc_swap = read_loading_times(next(data_dir.glob("model_loading_times_*_cc.csv")))
    nc_swap = read_loading_times(next(data_dir.glob("model_loading_times_*_noncc.csv")))
    models: dict[str, Any] = {}
    fits: dict[str, Any] = {}
    for model in sorted(nc_prof):
        models[model] = {
            "noncc": _mode_entry(nc_prof[model], nc_swap[model], None),
            "cc": _mode_entry(cc_prof[model], cc_swap[model], None),
        }
        fits[model] = _cc_fit(models[model]["noncc"], models[model]["cc"])
    keys = ("min_iteration_s", "per_call_s", "load_slowdown", "unload_slowdown")
    default = {k: round(float(np.mean([f[k] for f in fits.values()])), 6) for k in keys}
    return {
        "source": SOURCE,
        "output_tokens": SINCERE_OUTPUT_TOKENS,
        "aggregate": "median over runs per (model, batch size)",
        "models": models,
        "cc_fit": {
            "form": "cc_call = max(noncc_call, output_tokens * min_iteration_s) + per_call_s",
            "fit": "relative least squares over common batch sizes (sincere.perf.cc)",
            "per_model": fits,
            "default": default,
        },
    }


def main() -> None:
    data_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DATA
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else DEFAULT_OUT
    doc = derive(data_dir)
    header = f"# Generated by scripts/derive_perf.py; do not edit.\n# Source: {SOURCE}\n"
    out.write_text(
        header + yaml.safe_dump(doc, sort_keys=False, width=100, default_flow_style=None)
    )
    print(f"wrote {out}")
    for model, fit in doc["cc_fit"]["per_model"].items():
        print(model, fit)


if __name__ == "__main__":
    main()
