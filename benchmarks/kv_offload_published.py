"""Published CPU KV-offload TTFT gains, each one's setup rebuilt in the simulator.

Two headline figures, with their setups as far as their sources state them (the table in
benchmarks/README.md, "Published CPU-offload gains against the model", gives the sources):

1. **vLLM's offloading connector**: a prompt whose KV waits in CPU memory gets its first
   token 2-22x sooner than when it is recomputed (H100, Llama-3.1-8B, one request at a
   time, longer prompts gaining more). Rebuilt: one Llama-3.1-8B instance on H100-SXM;
   a prompt of ``L`` tokens, then unrelated long prompts that push it out of the GPU
   prefix cache, then the same prompt again, alone. The repeat's TTFT with a CPU tier
   (its KV loads over PCIe Gen5, 64 GB/s) against without one (recomputed), per ``L``.
2. **LMCache with vLLM**: "3-10x delay savings" on multi-round QA. Rebuilt on the shape
   of the multi-round QA benchmark those figures come from (vLLM production-stack's
   ``benchmarks/multi-round-qa``: a 1,000-token shared system prompt, a 20,000-token
   history per user, 100-token answers): ``--users`` users take turns (request ``i`` is
   user ``i mod users``'s round ``i // users``, each round's prompt the previous one plus
   a 100-token question and the 100-token answer), Poisson arrivals at each ``--qps``;
   every user's context together is larger than the GPU's KV pool, so a user's next round
   finds its prefix evicted. Mean TTFT with a CPU tier holding every context, against
   GPU only (vLLM's own prefix cache in both).

Both: roofline step model, vLLM-style continuous batching, prefix caching on, loads not
overlapped with compute (the request waits for its KV), seed 1. Prints two markdown tables.

    python benchmarks/kv_offload_published.py [--users 40] [--qps 0.2 0.5 1.0 1.3 1.7]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from sincere.core.request import RequestArrays
from sincere.sim import simulate

MODEL = "llama-3.1-8b"
CHUNK = 256  # tokens per content block (LMCache's default chunk)
SYSTEM, HISTORY, QUESTION, ANSWER = 1000, 20000, 100, 100  # multi-round QA, tokens
FILLER_TOKENS = 100_000  # one unrelated prompt that pushes others out of the GPU cache


def blocks(stream: int, num_tokens: int, shared_tokens: int = 0) -> list[int]:
    """Content ids of the first ``num_tokens`` of token stream ``stream``: blocks wholly
    inside the first ``shared_tokens`` (a shared system prompt) are the same for every
    stream, the others the stream's own."""
    out = []
    for k in range(-(-num_tokens // CHUNK)):
        shared = (k + 1) * CHUNK <= shared_tokens
        out.append(k if shared else (stream + 1) * 1_000_003 + k)
    return out


def config(cpu_gib: float) -> dict[str, Any]:
    """One Llama-3.1-8B instance on H100-SXM; ``cpu_gib`` 0: no CPU tier."""
    engine: dict[str, Any] = {"kind": "continuous", "enable_prefix_caching": True}
    if cpu_gib > 0:
        engine["kv_offload"] = {"cpu_gib": cpu_gib}
    instance = {"name": "h100", "model": MODEL, "accelerator": "H100-SXM", "count": 1,
                "step_model": {"kind": "roofline"}, "engine": engine}  # fmt: skip
    # the workload section is required but unused: the requests are passed in
    placeholder = {"num_requests": 1, "arrival": {"kind": "poisson", "rate": 1.0},
                   "lengths": {"source": "azure-conv-2023"}, "models": {MODEL: 1.0}}  # fmt: skip
    return {"seed": 1, "workload": placeholder, "instances": [instance]}


def ttfts(requests: RequestArrays, cpu_gib: float) -> tuple[np.ndarray, dict[str, Any]]:
    """Every request's TTFT (arrival order) and the run's summary."""
    result = simulate(config(cpu_gib), requests=requests)
    table = result.requests.sort_by("request_id")
    return np.asarray(table.column("ttft_s").to_numpy(zero_copy_only=False)), result.summary


def repeat_after_eviction(prompt_tokens: int, num_fillers: int, gap_s: float) -> RequestArrays:
    """A prompt, ``num_fillers`` unrelated long prompts, then the prompt again; each alone."""
    lengths = [prompt_tokens] + [FILLER_TOKENS] * num_fillers + [prompt_tokens]
    streams = [0, *range(1, num_fillers + 1), 0]
    n = len(lengths)
    return RequestArrays.build(
        np.arange(n) * gap_s, lengths, [1] * n, models=(MODEL,),
        block_ids=[blocks(s, t) for s, t in zip(streams, lengths, strict=True)],
        block_tokens=CHUNK,
    )  # fmt: skip


def multi_round_qa(users: int, rounds: int, qps: float, seed: int) -> RequestArrays:
    """Users taking turns (module docstring), Poisson arrivals at ``qps``."""
    n = users * rounds
    gaps = np.random.default_rng(seed).exponential(1.0 / qps, n)
    arrivals = np.cumsum(gaps) - gaps[0]
    lengths = [SYSTEM + HISTORY + (i // users) * (QUESTION + ANSWER) + QUESTION for i in range(n)]
    return RequestArrays.build(
        arrivals, lengths, [ANSWER] * n, models=(MODEL,),
        block_ids=[blocks(i % users, t, SYSTEM) for i, t in enumerate(lengths)],
        block_tokens=CHUNK,
    )  # fmt: skip


def vllm_rows(args: argparse.Namespace) -> None:
    """Figure 1: the repeat's TTFT, recomputed against loaded from the CPU tier."""
    print("| prompt tokens | recomputed TTFT s | CPU-tier TTFT s | speedup | CPU hit Mtok |")
    print("|---|---|---|---|---|")
    for length in args.prompt_tokens:
        requests = repeat_after_eviction(length, args.fillers, args.gap_s)
        gpu, _ = ttfts(requests, 0)
        cpu, summary = ttfts(requests, args.cpu_gib)
        hits = (summary.get("kv_tiers") or {}).get("cpu_hit_tokens", 0)
        print(f"| {length:,} | {gpu[-1]:.3f} | {cpu[-1]:.3f} | {gpu[-1] / cpu[-1]:.1f}x "
              f"| {hits / 1e6:.3f} |", flush=True)  # fmt: skip


def lmcache_rows(args: argparse.Namespace) -> None:
    """Figure 2: multi-round QA's mean TTFT, GPU only against a CPU tier."""
    print("\n| users x rounds | QPS | GPU-only TTFT mean / p50 s | CPU-tier TTFT mean / p50 s "
          "| mean speedup | hit rate GPU only / tiered | sim wall s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for qps in args.qps:
        requests = multi_round_qa(args.users, args.rounds, qps, seed=1)
        started = time.perf_counter()
        gpu, plain = ttfts(requests, 0)
        cpu, tiered = ttfts(requests, args.qa_cpu_gib)
        wall = time.perf_counter() - started
        hits = f"{plain['prefix_cache']['hit_rate']:.0%} / {tiered['prefix_cache']['hit_rate']:.0%}"
        means = f"{gpu.mean():.2f} / {np.median(gpu):.2f} | {cpu.mean():.2f} / {np.median(cpu):.2f}"
        print(f"| {args.users} x {args.rounds} | {qps:g} | {means} "
              f"| {gpu.mean() / cpu.mean():.1f}x | {hits} | {wall:.0f} |", flush=True)  # fmt: skip


def main() -> None:
    """Parse the arguments and print both tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompt-tokens", type=int, nargs="+",
                        default=[2000, 8000, 32000, 100000])  # fmt: skip
    parser.add_argument("--fillers", type=int, default=6, help="unrelated 100k-token prompts")
    parser.add_argument("--gap-s", type=float, default=60.0, help="between figure 1's requests")
    parser.add_argument("--cpu-gib", type=float, default=512.0, help="figure 1's CPU tier")
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--qps", type=float, nargs="+", default=[0.2, 0.5, 1.0, 1.3, 1.7])
    parser.add_argument("--qa-cpu-gib", type=float, default=160.0, help="figure 2's CPU tier")
    args = parser.parse_args()
    print(f"{MODEL} on one H100-SXM, roofline step model, loads not overlapped\n")
    vllm_rows(args)
    lmcache_rows(args)


if __name__ == "__main__":
    main()
