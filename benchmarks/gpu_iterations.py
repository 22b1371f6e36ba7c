"""Whole iterations measured on a real GPU against the step model that prices them.

Three verbs; ``measure`` and ``sustain`` need a CUDA GPU and PyTorch, ``compare`` runs
anywhere:

``measure``: for each model shard asked for, ``sincere profile gpu``'s shard (random
weights; fused QKV and gate/up GEMMs, RMSNorm, rotary embedding, SDPA attention on a KV
cache, LM head on each sequence's last token; with ``--fused``, the default on a GPU, the
work around attention compiled by ``torch.compile`` as vLLM V1 runs it) is timed as
CUDA-graph replays: every linear-work operator by token count and prefill and decode
attention (unless ``--iterations-only``), and whole iterations chosen as a serving engine
runs them (prefills of up to 8,192 tokens, decodes of 1 to 256 sequences at 512 and 2,048
tokens of context, chunks of 256 to 2,048 tokens beside 16 to 128 decodes). The files are
the profiler's own (``mlp_<model>.csv``, ``attention_<model>_tp<N>.csv``,
``iterations.csv``, ``series.csv``), plus ``device.json`` naming the GPU, driver and
PyTorch.

``compare``: each measured iteration against the roofline's GPU parts at the shipped
constants of the named accelerator (linear work, attention, LM head; a shard alone on one
GPU has no all-reduce and no CPU part, so neither is counted), per iteration and as mean
absolute error, max and bias per shard and phase; ``--ratio`` prices it at another
sustained-load compute ratio (1: the kernel benchmark's clock). Where the folder holds
the unfused shard's operator rows, the last column is the measured elementwise kernels at
the iteration's token count times the layers: what an unfused profile spends that an
engine does not.

``sustain``: how fast compute-bound work runs when it runs long: one bf16 GEMM captured
1 to 1,200 times back to back in a CUDA graph (after 2 s idle each), with the SM clock and
power read after each run; then the same GEMM as a share ``d`` of a repeated period whose
rest is memory-bound GEMMs. What ``sincere/data/perf/sustained_clock.yaml`` is made from.

    python benchmarks/gpu_iterations.py measure --out DIR [--shards llama-3.1-8b:1,...]
    python benchmarks/gpu_iterations.py compare DIR [--accelerator H100-SXM] [--ratio R]
    python benchmarks/gpu_iterations.py sustain --out FILE.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from gpu_moe import device_facts  # the sibling script (stdlib-only at import)

from sincere.profile.gpu import GpuProfileConfig, GpuProfiler, IterationPoint, write_outputs
from sincere.profile.gpu_model import IterationShape, ShardShape
from sincere.profile.local import resolve_config
from sincere.profile.series import OutOfTimeError

DEFAULT_SHARDS = "llama-3.1-8b:1,llama-3.1-8b:2,llama-3.1-70b:8,llama-3.1-70b:4,qwen3-32b:2"
# elementwise operators of one layer in the profiler's mlp rows (emb is once per iteration)
ELEMENTWISE = ("input_layernorm", "attn_rope", "post_attention_layernorm", "mlp_act", "add")


def iteration_series(tp: int) -> list[tuple[str, list[IterationPoint]]]:
    """Series of whole iterations as engines run them, each growing (out-of-memory ends
    only its own series), as :meth:`GpuProfiler.iteration_rows` takes them."""
    series = [
        ("prefill one", [IterationShape(prefill_seqs=1, chunk=c) for c in (128, 512, 2048, 8192)]),
        ("prefill many", [IterationShape(prefill_seqs=b, chunk=c)
                          for b, c in ((4, 512), (4, 2048), (16, 512))]),
    ]  # fmt: skip
    for ctx in (512, 2048):
        shapes = [IterationShape(decode_seqs=b, decode_ctx=ctx) for b in (1, 4, 16, 64, 128, 256)]
        series.append((f"decode ctx {ctx}", shapes))
    for chunk in (256, 1024, 2048):
        shapes = [
            IterationShape(prefill_seqs=1, chunk=chunk, decode_seqs=d, decode_ctx=1024)
            for d in (16, 64, 128)
        ]
        series.append((f"mixed chunk {chunk}", shapes))
    return [(f"{name} tp{tp}", [point(it) for it in shapes]) for name, shapes in series]


def point(it: IterationShape) -> IterationPoint:
    """(batch, phase, context, shape): decodes are counted by sequences and context, a
    prefill or mixed iteration by its prompts and chunk."""
    if it.decode_seqs == 0:
        return it.prefill_seqs, "prefill", it.chunk, it
    if it.prefill_seqs == 0:
        return it.decode_seqs, "decode", it.decode_ctx, it
    return it.decode_seqs, "mixed", it.chunk, it


def parse_shard(text: str) -> tuple[str, int]:
    """``MODEL:TP`` -> (model, tp); a clear exit for anything else."""
    model, _, tp = text.partition(":")
    if not model or not tp.isdigit() or int(tp) < 1:
        raise SystemExit(f"--shards: {text!r} is not MODEL:TP (a catalog model, TP >= 1)")
    return model, int(tp)


def measure(args: argparse.Namespace) -> None:
    """The ``measure`` verb (module docstring)."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = GpuProfileConfig(
        device=args.device,
        replays=args.replays,
        max_duration_s=args.max_duration,
        decode_batches=(1, 4, 16, 64, 256),
        decode_contexts=(512, 2048),
        prefill_chunks=(128, 512, 2048),
        kv_sizes=(0, 2048),
        fused=args.fused,
    )
    shards = [parse_shard(s) for s in args.shards.split(",")]
    iterations: list[dict[str, Any]] = []
    series: list[dict[str, Any]] = []
    started = time.monotonic()
    by_model: dict[str, list[int]] = defaultdict(list)
    for model, tp in shards:
        by_model[model].append(tp)
    facts: dict[str, Any] = {}
    for model, tps in by_model.items():
        name, config = resolve_config(model)
        profiler = GpuProfiler(name, config, cfg)
        if not facts and profiler.device.type == "cuda":
            facts = device_facts(profiler.torch)  # gpu_moe.py's, with cuDNN's version
            facts["cudnn"] = profiler.torch.backends.cudnn.version()
        mlp: list[dict[str, Any]] = []
        attention: dict[int, list[dict[str, Any]]] = {}
        model_iterations: list[dict[str, Any]] = []
        try:
            for tp in tps:
                shape = ShardShape.of(config, tp)
                if not args.iterations_only:
                    mlp += profiler.mlp_rows(shape)
                    profiler.free()
                    attention[tp] = profiler.attention_rows(shape)
                    profiler.free()
                model_iterations += profiler.iteration_rows(shape, iteration_series(tp))
                profiler.free()
                print(f"{name} tp{tp}: done at {time.monotonic() - started:.0f} s", flush=True)
        except OutOfTimeError:
            print(f"{name}: time limit reached", flush=True)
        write_outputs(out, name, mlp, attention, model_iterations, [], profiler.log.rows)
        iterations += model_iterations
        series += profiler.log.rows
        if time.monotonic() - started > args.max_duration:
            break
    write_outputs(out, "all", [], {}, iterations, [], series)  # the combined files
    facts["shards"] = args.shards
    facts["seconds"] = round(time.monotonic() - started, 1)
    (out / "device.json").write_text(json.dumps(facts, indent=2) + "\n")
    print(json.dumps(facts), flush=True)


# --- compare -----------------------------------------------------------------------------
def _ms(row: dict[str, Any], op: str) -> float:
    return float(row[f"time_stats.{op}.median"])


def elementwise_s(mlp_rows: dict[tuple[str, int], list[dict[str, Any]]], model: str, tp: int,
                  tokens: int) -> float | None:  # fmt: skip
    """One layer's measured elementwise kernels at ``tokens`` (interpolated in log tokens)."""
    rows = sorted(mlp_rows.get((model, tp), []), key=lambda r: int(r["num_tokens"]))
    if not rows:
        return None
    import numpy as np

    xs = np.log([int(r["num_tokens"]) for r in rows])
    ys = [sum(_ms(r, op) for op in ELEMENTWISE) / 1e3 for r in rows]
    return float(np.interp(np.log(tokens), xs, ys))


def compare(args: argparse.Namespace) -> None:
    """The ``compare`` verb (module docstring)."""
    from sincere.catalog import get_accelerator, get_model
    from sincere.fit.gpu_check import _batch, gpu_seconds
    from sincere.perf import Deployment, make_step_model
    from sincere.profile.csvio import read_profile_csv

    folder = Path(args.folder)
    accelerator = get_accelerator(args.accelerator)
    overrides = {} if args.ratio is None else {"sustained_compute_ratio": args.ratio}
    mlp_rows: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for path in sorted(folder.glob("mlp_*.csv")):
        for row in read_profile_csv(path):
            model = path.stem.removeprefix("mlp_")
            mlp_rows[(model, int(row["num_tensor_parallel_workers"]))].append(row)
    rows = [r for r in read_profile_csv(folder / "iterations.csv") if r.get("status") == "ok"]
    table: list[dict[str, Any]] = []
    for row in rows:
        model, tp = str(row["model"]), int(row["tp"])
        dep = Deployment(get_model(model), accelerator, "bf16", tp=tp)
        step = make_step_model("roofline", dep, overrides)
        predicted = gpu_seconds(step, _batch(row))
        measured = float(row["iteration_s"])
        layers = get_model(model).num_layers
        elem = elementwise_s(mlp_rows, model, tp, int(row["num_tokens"]))
        table.append({
            "model": model, "tp": tp, "phase": row["phase"], "batch": int(row["batch_size"]),
            "ctx": int(row["context_tokens"]), "tokens": int(row["num_tokens"]),
            "measured_ms": 1e3 * measured, "predicted_ms": 1e3 * predicted,
            "elementwise_ms": None if elem is None else 1e3 * elem * layers,
            "error": predicted / measured - 1.0,
        })  # fmt: skip
    print("| model | TP | iteration | tokens | measured ms | roofline GPU ms | error | "
          "measured unfused elementwise ms |")  # fmt: skip
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for t in table:
        what = (f"{t['phase']} {t['batch']} x {t['ctx']}" if t["phase"] != "mixed"
                else f"mixed {t['ctx']} + {t['batch']} decodes")  # fmt: skip
        elem = "" if t["elementwise_ms"] is None else f"{t['elementwise_ms']:.2f}"
        print(
            f"| {t['model']} | {t['tp']} | {what} | {t['tokens']} | {t['measured_ms']:.2f} | "
            f"{t['predicted_ms']:.2f} | {100 * t['error']:+.1f} % | {elem} |"
        )
    print()
    by: dict[tuple[str, str], list[float]] = defaultdict(list)
    for t in table:
        by[(f"{t['model']} TP {t['tp']}", t["phase"])].append(t["error"])
        by[("all", t["phase"])].append(t["error"])
    print("| shard | phase | iterations | mean abs error | max | bias |")
    print("|---|---|---:|---:|---:|---:|")
    for (model, phase), errs in sorted(by.items()):
        print(f"| {model} | {phase} | {len(errs)} | "
              f"{100 * statistics.fmean(abs(e) for e in errs):.1f} % | "
              f"{100 * max(abs(e) for e in errs):.1f} % | "
              f"{100 * statistics.fmean(errs):+.1f} % |")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=1) + "\n")


def sustain(args: argparse.Namespace) -> None:
    """One GEMM shape replayed back to back in growing runs: does a long run of
    compute-bound kernels (a big prefill) keep the short run's rate, and at what clock?"""
    import torch

    try:
        import pynvml  # nvidia-ml-py

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)

        def clocks() -> tuple[int, float]:
            sm = pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM)
            return sm, pynvml.nvmlDeviceGetPowerUsage(handle) / 1e3
    except Exception:  # no NVML: clocks unknown

        def clocks() -> tuple[int, float]:
            return -1, -1.0

    gen = torch.Generator(device="cuda").manual_seed(0)
    rows = []
    for m, n, k in ((8192, 28672, 4096), (64, 28672, 4096), (2048, 8192, 8192)):
        a = torch.empty(m, k, device="cuda", dtype=torch.bfloat16).normal_(0, 0.02, generator=gen)
        b = torch.empty(k, n, device="cuda", dtype=torch.bfloat16).normal_(0, 0.02, generator=gen)
        for run in (1, 10, 100, 400, 1200) if m == 8192 else (1, 10, 100, 400):
            torch.cuda.synchronize()
            time.sleep(2.0)  # let the clock recover between runs
            graph = torch.cuda.CUDAGraph()
            side = torch.cuda.Stream()
            with torch.cuda.stream(side):
                for _ in range(3):
                    a @ b
            torch.cuda.synchronize()
            with torch.cuda.graph(graph):
                for _ in range(run):
                    a @ b
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            graph.replay()
            end.record()
            end.synchronize()
            sm, watts = clocks()
            per = start.elapsed_time(end) / run
            rows.append({"m": m, "n": n, "k": k, "run": run, "per_gemm_ms": round(per, 5),
                         "tflops": round(2 * m * n * k / per / 1e9, 1), "sm_mhz_after": sm,
                         "watts_after": watts})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
            del graph
    rows += duty_rows(torch, gen, clocks)
    Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")


def duty_rows(torch: Any, gen: Any, clocks: Any) -> list[dict[str, Any]]:
    """The compute-bound GEMM's rate when it is only part of the work: a period of one
    8,192-token GEMM and enough 64-token (memory-bound) GEMMs of the same weights to make
    the big one ``duty`` of the period, replayed for 1.5 s, then 20 periods timed. The
    small GEMMs keep their rate (the runs above), so the big one's share of the period
    beyond them gives its rate under that duty."""
    k, n = 4096, 28672
    big = torch.empty(8192, k, device="cuda", dtype=torch.bfloat16).normal_(0, 0.02, generator=gen)
    small = torch.empty(64, k, device="cuda", dtype=torch.bfloat16).normal_(0, 0.02, generator=gen)
    w = torch.empty(k, n, device="cuda", dtype=torch.bfloat16).normal_(0, 0.02, generator=gen)

    def timed(graph: Any, times: int) -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(times):
            graph.replay()
        end.record()
        end.synchronize()
        return float(start.elapsed_time(end)) / times

    def captured(n_big: int, n_small: int) -> Any:
        side = torch.cuda.Stream()
        with torch.cuda.stream(side):
            big @ w, small @ w
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(n_big):
                big @ w
            for _ in range(n_small):
                small @ w
        return graph

    torch.cuda.synchronize()
    time.sleep(2.0)
    big_ms = timed(captured(1, 0), 5)  # burst
    small_ms = timed(captured(0, 40), 5) / 40
    rows = []
    for duty in (1.0, 0.5, 0.25, 0.1):
        n_small = round(big_ms * (1 - duty) / duty / small_ms)
        graph = captured(1, n_small)
        torch.cuda.synchronize()
        time.sleep(2.0)
        period = timed(graph, 1)
        warm = max(1, int(1500.0 / period))
        timed(graph, warm)  # 1.5 s under this duty
        loaded = timed(graph, 20)
        sm, watts = clocks()
        big_loaded = loaded - n_small * small_ms
        rows.append({"duty": duty, "small_gemms": n_small, "period_ms": round(loaded, 4),
                     "big_burst_ms": round(big_ms, 4), "big_loaded_ms": round(big_loaded, 4),
                     "ratio": round(big_ms / big_loaded, 4), "sm_mhz_after": sm,
                     "watts_after": watts})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", required=True)
    m = sub.add_parser("measure", help="time the shards on this machine's GPU")
    m.add_argument("--out", required=True)
    m.add_argument("--shards", default=DEFAULT_SHARDS, help="MODEL:TP,... (catalog models)")
    m.add_argument("--device", default="cuda")
    m.add_argument("--replays", type=int, default=10)
    m.add_argument("--max-duration", type=float, default=420.0, help="whole run, s")
    m.add_argument(
        "--fused",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile around attention (default: on a CUDA device)",
    )
    m.add_argument("--iterations-only", action="store_true", help="no operator rows")
    c = sub.add_parser("compare", help="the step model against a measured folder")
    c.add_argument("folder")
    c.add_argument("--accelerator", default="H100-SXM")
    c.add_argument("--json", default=None, help="also write the per-iteration rows here")
    c.add_argument(
        "--ratio",
        type=float,
        default=None,
        help="sustained_compute_ratio to price with (default: the GPU's default)",
    )
    t = sub.add_parser("sustain", help="one GEMM in growing back-to-back runs (clocks)")
    t.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    {"measure": measure, "compare": compare, "sustain": sustain}[args.verb](args)


if __name__ == "__main__":
    sys.exit(main())
