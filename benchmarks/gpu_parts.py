"""Where a whole prefill's time goes on one GPU: GEMMs, attention by kernel, the rest.

A whole prefill of a tensor-parallel shard (``sincere profile gpu``'s, random weights, the
work around attention compiled as vLLM V1 compiles it) runs 8-13 % slower at the burst
clock than the roofline's burst price on an H200, while its gate/up GEMM alone matches the
GEMM fit within 2 % (benchmarks/README.md, "How deep the clock falls, shard by shard").
This script splits the iteration to say where the rest goes:

``measure`` (a CUDA GPU and PyTorch): for each ``model:tp`` of ``--shards`` and each
prefill size of ``--chunks`` (one sequence, nothing cached), CUDA graphs of

- ``P``: the whole prefill iteration, as ``profile gpu`` and ``gpu_clock.py`` run it;
- ``N``: the same layers with attention left out (its output a fixed tensor): the GEMMs,
  the compiled norms, rotary embedding, activation and residual adds, the KV writes;
- ``G``: the four GEMMs of every layer alone (QKV, O, gate/up, down, each layer's own
  weights), and ``H`` the LM head on the last token;
- ``A <kernel>``: attention alone over every layer, causal, through PyTorch's SDPA with
  one backend each: ``flash-gqa`` (FlashAttention-2 with the shard's KV heads), then with
  the KV heads repeated to the query heads ``flash``, ``cudnn`` (cuDNN's fused attention,
  FlashAttention-3-class on Hopper) and ``efficient``. ``P`` leaves the choice to SDPA;
  ``report`` names the backend whose time is nearest ``P - N`` at the largest size (on
  the H200 with PyTorch 2.11 that was cuDNN's, ``benchmarks/gpu/h200/parts``).

Each is timed alone after 0.7 s idle (the kernel benchmark's clock), the median of three;
a backend the GPU or the build does not offer is recorded as missing. Rows go to
``parts.json`` after every shard, with ``device.json``'s facts.

``report DIR [--accelerator GPU]`` (any machine): per shard and size, the measured parts
against the roofline's at the burst clock (``sustained_compute_ratio`` 1): its GEMMs, its
elementwise and fixed costs (``N - G`` measured), its prefill attention and its LM head.

``kernels --out DIR`` (a CUDA GPU): ``N - G`` is a difference of graphs, so it holds
whatever the compiled layers do differently from the GEMMs alone. This verb runs each
whole prefill ``P`` (not captured: PyTorch's profiler sees into each kernel) under
``torch.profiler`` after two warm-up runs, and sums the GPU's time per kernel by kind
(:func:`kernel_kind`: GEMM, attention, compiled elementwise (Triton), copies, other),
with the ten longest kernels by name. Rows go to ``kernels.json``; ``report`` prints them
beside the parts when the file is there.

    python benchmarks/gpu_parts.py measure --out DIR --shards llama-3.1-8b:1,qwen3-32b:2
    python benchmarks/gpu_parts.py kernels --out DIR --shards llama-3.1-8b:1,qwen3-32b:2
    python benchmarks/gpu_parts.py report DIR
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

from gpu_clock import Runner, accelerator_of, shard_of  # the sibling scripts
from gpu_moe import device_facts

BACKENDS = ("flash", "cudnn", "efficient")
"""SDPA backends timed with the KV heads repeated (``flash-gqa`` is timed besides)."""


def _closures(model: Any, shape: Any, profiler: Any, chunk: int) -> dict[str, Any]:
    """The parts of a ``chunk``-token prefill of ``model`` (module docstring)."""
    from sincere.profile.gpu_model import IterationShape

    torch, dev, dtype = profiler.torch, profiler.device, profiler.dtype
    f = torch.nn.functional
    layers = model.layers
    out: dict[str, Any] = {"P": model.iteration(IterationShape(prefill_seqs=1, chunk=chunk))}

    x0 = model.rand(chunk, shape.hidden)
    cos, sin = model.rope_tables(torch.arange(chunk, device=dev))
    k_cache, v_cache = model.kv_cache(1, chunk)
    attn = model.rand(chunk, shape.heads * shape.head_dim)

    def no_attention() -> Any:
        x = x0
        for w in layers:
            _, k, v = model._pre(x, w["ln1"], w["qkv"], cos, sin)
            for cache, t in ((k_cache, k), (v_cache, v)):
                cache[:, :, :chunk].copy_(t.view(1, chunk, -1, shape.head_dim).transpose(1, 2))
            x = model._post(x, attn, w)
        return x

    out["N"] = no_attention
    a = model.rand(chunk, shape.hidden)
    o_in = model.rand(chunk, shape.heads * shape.head_dim)
    act = model.rand(chunk, shape.inter)

    def gemms() -> list[Any]:
        return [t for w in layers for t in (a @ w["qkv"], o_in @ w["o"], a @ w["gate_up"],
                                            act @ w["down"])]  # fmt: skip

    out["G"] = gemms
    last = model.rand(1, shape.hidden)
    out["H"] = lambda: last @ model.lm_head

    q = torch.randn(1, shape.heads, chunk, shape.head_dim, device=dev, dtype=dtype)
    k = torch.randn(1, shape.kv_heads, chunk, shape.head_dim, device=dev, dtype=dtype)
    v = torch.randn_like(k)
    rep = shape.heads // shape.kv_heads
    k_full, v_full = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    kinds = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
             "efficient": SDPBackend.EFFICIENT_ATTENTION}  # fmt: skip

    def attention(backend: Any, kk: Any, vv: Any, gqa: bool) -> Any:
        def run() -> list[Any]:
            with sdpa_kernel([backend]):
                return [f.scaled_dot_product_attention(q, kk, vv, is_causal=True, enable_gqa=gqa)
                        for _ in layers]  # fmt: skip

        return run

    candidates = {"A flash-gqa": attention(kinds["flash"], k, v, rep > 1)}
    for name in BACKENDS:
        candidates[f"A {name}"] = attention(kinds[name], k_full, v_full, False)
    for name, fn in candidates.items():
        try:  # a backend this GPU or build does not offer says so at its first call
            fn()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
        except RuntimeError as exc:
            print(json.dumps({"chunk": chunk, "part": name, "missing": str(exc)[:160]}), flush=True)
            continue
        out[name] = fn
    return out


def measure(args: argparse.Namespace) -> None:
    """The ``measure`` verb (module docstring)."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    chunks = [int(c) for c in args.chunks.split(",")]
    runs: list[dict[str, Any]] = []
    torch: Any = None

    def save() -> None:  # after every shard: a run cut short keeps what it measured
        facts = device_facts(torch) if torch is not None and args.device == "cuda" else {}
        facts.update(chunks=chunks, seconds=round(time.monotonic() - started, 1))
        (out / "parts.json").write_text(json.dumps({"facts": facts, "runs": runs}) + "\n")

    for spec in (s.strip() for s in args.shards.split(",") if s.strip()):
        shard = shard_of(spec, args.device)
        if shard is None:
            continue
        name, profiler, shape, model = shard
        torch = profiler.torch
        with torch.inference_mode():
            for chunk in chunks:
                runner = Runner(torch, profiler.device, _closures(model, shape, profiler, chunk), 1)
                burst_ms = {k: round(v * 1e3, 4) for k, v in runner.burst_s.items()}
                runs.append({"shard": spec, "model": name, "tp": shape.tp, "chunk": chunk,
                             "layers": shape.num_layers, "burst_ms": burst_ms})  # fmt: skip
                print(json.dumps(runs[-1]), flush=True)
                if args.device != "cuda":  # the smoke test's layers: the model's two
                    runs[-1]["layers"] = len(model.layers)
                del runner
        del model
        profiler.free()
        save()
    save()


KINDS = (
    ("attention", ("flash", "fmha", "attention", "cudnn", "sdpa")),
    (
        "GEMM",
        (
            "gemm",
            "xmma",
            "cutlass",
            "cublas",
            "nvjet",
            "matmul",
            "::mm",
            "addmm",
            "sm90_",
            "sm100_",
        ),
    ),
    ("elementwise (Triton)", ("triton",)),
    ("copies", ("copy", "memcpy", "memset", "cat", "index")),
)
"""Kernel kinds by what their names hold, tried in order (attention before GEMM: a fused
attention kernel's name can hold ``gemm`` too)."""


def kernel_kind(name: str) -> str:
    """The kind of a GPU kernel by its name (:data:`KINDS`); ``other`` for the rest."""
    lowered = name.lower()
    for kind, marks in KINDS:
        if any(mark in lowered for mark in marks):
            return kind
    return "other"


def kernel_times(torch: Any, run: Any, cuda: bool) -> dict[str, float]:
    """Milliseconds of each GPU kernel in one ``run()``, by name (on a CPU, each operator's
    own time: a smoke test)."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(2):
        run()
    if cuda:
        torch.cuda.synchronize()
    activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]
    with profile(activities=activities) as prof:
        run()
        if cuda:
            torch.cuda.synchronize()
    out: dict[str, float] = {}
    for event in prof.events():
        on_gpu = str(getattr(event, "device_type", "")).endswith("CUDA")
        if on_gpu != cuda:
            continue
        us = event.device_time_total if cuda else event.self_cpu_time_total  # its own, in us
        out[event.name] = out.get(event.name, 0.0) + us / 1e3
    return out


def kernels(args: argparse.Namespace) -> None:
    """The ``kernels`` verb (module docstring)."""
    from sincere.profile.gpu_model import IterationShape

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    chunks = [int(c) for c in args.chunks.split(",")]
    runs: list[dict[str, Any]] = []
    for spec in (s.strip() for s in args.shards.split(",") if s.strip()):
        shard = shard_of(spec, args.device)
        if shard is None:
            continue
        name, profiler, shape, model = shard
        torch, cuda = profiler.torch, profiler.device.type == "cuda"
        with torch.inference_mode():
            for chunk in chunks:
                run = model.iteration(IterationShape(prefill_seqs=1, chunk=chunk))
                by_name = kernel_times(torch, run, cuda)
                by_kind: dict[str, float] = {}
                for kernel, ms in by_name.items():
                    kind = kernel_kind(kernel)
                    by_kind[kind] = by_kind.get(kind, 0.0) + ms
                top = sorted(by_name.items(), key=lambda kv: -kv[1])[:10]
                runs.append({"shard": spec, "model": name, "tp": shape.tp, "chunk": chunk,
                             "layers": len(model.layers),
                             "by_kind_ms": {k: round(v, 4) for k, v in by_kind.items()},
                             "top_ms": [[k, round(v, 4)] for k, v in top]})  # fmt: skip
                print(json.dumps(runs[-1]), flush=True)
        del model
        profiler.free()
        facts = device_facts(torch) if cuda else {"device": args.device}
        (out / "kernels.json").write_text(json.dumps({"facts": facts, "runs": runs}) + "\n")


def _kernel_table(path: Path) -> None:
    """``report``'s lines for ``kernels.json``: the GPU's time by kind of kernel."""
    data = json.loads(path.read_text())
    kinds = [k for k, _ in KINDS] + ["other"]
    print("\nThe whole prefill run eagerly under the profiler, the GPU's time by kind of kernel "
          "(ms for the whole stack of layers):\n")  # fmt: skip
    print("| shard | tokens | " + " | ".join(kinds) + " | sum |")
    print("|---|---:|" + "---:|" * (len(kinds) + 1))
    for run in data["runs"]:
        ms = run["by_kind_ms"]
        cells = " | ".join(f"{ms.get(k, 0.0):.2f}" for k in kinds)
        print(f"| {run['shard']} | {run['chunk']} | {cells} | {sum(ms.values()):.2f} |")


def report(args: argparse.Namespace) -> None:
    """The ``report`` verb (module docstring)."""
    from sincere.catalog import get_accelerator, get_model
    from sincere.perf import Batch, Deployment, make_step_model

    if (Path(args.dir) / "kernels.json").is_file():
        _kernel_table(Path(args.dir) / "kernels.json")
    if not (Path(args.dir) / "parts.json").is_file():
        return
    data = json.loads((Path(args.dir) / "parts.json").read_text())
    facts = data["facts"]
    acc = get_accelerator(args.accelerator or accelerator_of(facts))
    print(f"{facts.get('gpu')} ({acc.name}), {facts.get('measured_at')}; the roofline at the "
          "burst clock (sustained ratio 1); ms for the whole stack of layers")  # fmt: skip
    print("\n| shard | tokens | whole P | roofline | P / roofline | GEMMs G / roofline's | "
          "rest N - G / roofline's | attention (P - N) | SDPA flash-gqa / flash / cudnn / "
          "efficient | roofline's attention |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    ratios: dict[str, list[float]] = {"P": [], "G": [], "E": [], "A": []}
    for run in data["runs"]:
        ms = run["burst_ms"]
        dep = Deployment(get_model(run["model"]), acc, "bf16", tp=run["tp"])
        step = make_step_model("roofline", dep, {"sustained_compute_ratio": 1.0})
        roof = getattr(step, "inner", step)
        k = roof.kernels
        t = run["chunk"]
        batch = Batch.of(prefill=[(t, 0)], decode=[])
        layers = run["layers"]
        gemm = layers * (sum(k.projections_s(t)) + sum(k.ffn_s(t))) * 1e3
        rest = layers * k.fixed_and_elementwise_s(t) * 1e3
        attn = layers * k.prefill_attn_s(1.0, 1, t, 0, batch.prefill_attn_pairs) * 1e3
        head = k.lm_head_s(1) * 1e3
        whole = gemm + rest + attn + head
        sdpa = " / ".join(f"{ms[f'A {b}']:.2f}" if f"A {b}" in ms else "—"
                          for b in ("flash-gqa", *BACKENDS))  # fmt: skip
        measured_rest = ms["N"] - ms["G"]
        ratios["P"].append(ms["P"] / whole)
        ratios["G"].append(ms["G"] / gemm)
        ratios["E"].append(measured_rest / rest)
        ratios["A"].append((ms["P"] - ms["N"]) / attn)
        print(f"| {run['shard']} | {t} | {ms['P']:.2f} | {whole:.2f} | {ms['P'] / whole:.3f} | "
              f"{ms['G']:.2f} / {gemm:.2f} | {measured_rest:.2f} / {rest:.2f} | "
              f"{ms['P'] - ms['N']:.2f} | {sdpa} | {attn:.2f} |")  # fmt: skip
    largest = max(data["runs"], key=lambda r: r["chunk"])["chunk"]
    for run in (r for r in data["runs"] if r["chunk"] == largest):
        ms = run["burst_ms"]
        timed = {b: ms[f"A {b}"] for b in ("flash-gqa", *BACKENDS) if f"A {b}" in ms}
        if timed:
            in_place = ms["P"] - ms["N"]
            near = min(timed, key=lambda b: abs(math.log(timed[b] / in_place)))
            print(f"\n{run['shard']} at {largest} tokens: attention in place (P - N) "
                  f"{in_place:.2f} ms, nearest SDPA backend alone: {near} "
                  f"({timed[near]:.2f} ms)")  # fmt: skip
    for key, label in (("P", "whole prefill"), ("G", "GEMMs"), ("E", "the rest (N - G)"),
                       ("A", "attention (P - N)")):  # fmt: skip
        values = ratios[key]
        if values:
            print(f"\n{label}: measured / roofline median {statistics.median(values):.3f} "
                  f"(range {min(values):.3f}-{max(values):.3f})")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    m = verbs.add_parser("measure", help="time the parts on this machine's GPU")
    m.add_argument("--out", required=True)
    m.add_argument("--shards", default="llama-3.1-8b:1,qwen3-32b:2,llama-3.1-70b:4")
    m.add_argument("--chunks", default="512,2048,8192", help="prefill sizes, comma-separated")
    m.add_argument("--device", default="cuda", help="cpu: a smoke test (two layers, no graphs)")
    k = verbs.add_parser("kernels", help="the GPU's time by kind of kernel, profiled")
    k.add_argument("--out", required=True)
    k.add_argument("--shards", default="llama-3.1-8b:1,qwen3-32b:2,llama-3.1-70b:4")
    k.add_argument("--chunks", default="512,8192", help="prefill sizes, comma-separated")
    k.add_argument("--device", default="cuda", help="cpu: a smoke test (two layers)")
    r = verbs.add_parser("report", help="the parts against the roofline's")
    r.add_argument("dir")
    r.add_argument("--accelerator", default=None, help="catalog GPU (default: parts.json's)")
    args = parser.parse_args(argv)
    {"measure": measure, "kernels": kernels, "report": report}[args.verb](args)


if __name__ == "__main__":
    main()
